from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from tenancy.models import _In

Capability = Literal["voice", "sms"]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Digits = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,15}$")]


class NumberQuery(msgspec.Struct, kw_only=True, frozen=True):
    country: str | None = None
    area_code: str | None = None
    prefix: str | None = None
    contains: str | None = None
    capability: Capability | None = None
    limit: int = 20


class AvailableNumber(msgspec.Struct, kw_only=True, frozen=True):
    e164: str
    country: str
    area_code: str
    capabilities: list[str]


class Number(msgspec.Struct, kw_only=True):
    id: UUID
    e164: str
    country: str
    capabilities: list[str]
    provider: str
    flow_id: UUID | None
    label: str
    purchased_at: datetime


class NumberPurchase(_In):
    e164: Annotated[str, msgspec.Meta(min_length=2, max_length=32)]
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""


class NumberUpdate(_In):
    label: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType = msgspec.UNSET


class AvailableNumbers(msgspec.Struct, kw_only=True):
    data: list[AvailableNumber]

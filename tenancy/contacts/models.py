from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from tenancy.models import _In

MAX_ATTRIBUTES = 50
MAX_NAME = 200
MAX_VALUE = 1000
ATTRIBUTE_KEY = r"^[a-z][a-z0-9_]{0,63}$"

Phone = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        description="E.164 (+12125550101), or national format together with `country`",
    ),
]
Region = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z]{2}$",
        description="ISO 3166-1 alpha-2: the region a national-format `phone` is dialled in",
    ),
]
ContactName = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
AttributeKey = Annotated[str, msgspec.Meta(pattern=ATTRIBUTE_KEY)]
AttributeValue = Annotated[str, msgspec.Meta(max_length=MAX_VALUE)]
Attributes = Annotated[
    dict[AttributeKey, AttributeValue],
    msgspec.Meta(max_length=MAX_ATTRIBUTES, description="Free fields for the agent's screen pop"),
]


class Contact(msgspec.Struct, kw_only=True):
    id: UUID
    phone: str
    """E.164."""
    name: str
    vip: bool
    blocked: bool
    attributes: dict[str, str]
    created_at: datetime
    updated_at: datetime


class ContactCreate(_In):
    phone: Phone
    country: Region | None = None
    """Only read to normalise `phone`; not stored."""
    name: ContactName = ""
    vip: bool = False
    blocked: bool = False
    attributes: Attributes = {}


class ContactUpdate(_In):
    """Only the fields sent change. `attributes` replaces the whole map."""

    phone: Phone | msgspec.UnsetType = msgspec.UNSET
    country: Region | msgspec.UnsetType = msgspec.UNSET
    """Only with `phone`: the region a national-format phone is dialled in."""
    name: ContactName | msgspec.UnsetType = msgspec.UNSET
    vip: bool | msgspec.UnsetType = msgspec.UNSET
    blocked: bool | msgspec.UnsetType = msgspec.UNSET
    attributes: Attributes | msgspec.UnsetType = msgspec.UNSET


class ContactQuery(msgspec.Struct, kw_only=True, frozen=True):
    phone: str | None = None
    country: str | None = None
    vip: bool | None = None
    blocked: bool | None = None


class ImportRowError(msgspec.Struct, kw_only=True):
    line: int
    """The line of the file the row starts on (the header is line 1)."""
    field: str
    """The CSV column at fault, or `row` when the row itself is malformed."""
    message: str


class ContactImport(msgspec.Struct, kw_only=True):
    created: int
    updated: int
    unchanged: int
    """Rows that matched a contact which already said exactly that."""
    errors: list[ImportRowError]
    """Rows that were not applied, and why. The other rows were."""

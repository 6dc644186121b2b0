"""API shapes for flows: a draft you edit, versions you publish, numbers you point at them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from tenancy.models import _In

FlowName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Flow(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    draft: dict[str, Any]
    draft_updated_at: datetime
    published_version: int | None
    created_at: datetime


class FlowCreate(_In):
    name: FlowName
    document: dict[str, Any]
    """The draft: a flow document (see routing/flows.py). Validated before it is stored."""


class FlowUpdate(_In):
    name: FlowName | msgspec.UnsetType = msgspec.UNSET
    document: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class FlowVersion(msgspec.Struct, kw_only=True):
    flow_id: UUID
    version: int
    document: dict[str, Any]
    published_at: datetime
    published_by: UUID | None


class NumberRoute(_In):
    flow_id: UUID | None
    """The flow whose published version answers this number; null stops routing it."""

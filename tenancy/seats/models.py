from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from tenancy.models import _In


class Seat(msgspec.Struct, kw_only=True):
    id: UUID
    label: str
    user_id: UUID | None
    created_at: datetime
    assigned_at: datetime | None


class SeatCreate(_In):
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""
    user_id: UUID | None = None


class SeatAssign(_In):
    user_id: UUID | None
    """The agent to assign, or null to unassign."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

MAX_MAILBOX = 64
Mailbox = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_MAILBOX)]


class Voicemail(msgspec.Struct, kw_only=True):
    """A message a caller left. The audio is at `GET /v1/voicemails/{id}/audio`."""

    id: UUID
    call_id: UUID
    mailbox: str | None
    """The flow's mailbox, when the message was left in one."""
    queue_id: UUID | None
    """The queue whose agents the message is for (its flow node or its overflow)."""
    from_number: str
    duration_ms: int
    recorded_at: datetime
    listened_at: datetime | None
    """When someone first marked it listened; None while it is new."""


class VoicemailQuery(msgspec.Struct, kw_only=True):
    mailbox: str | None = None
    queue_id: UUID | None = None
    listened: bool | None = None

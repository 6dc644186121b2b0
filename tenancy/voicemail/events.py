"""Voicemail events. Subjects: tenant.<tenant_id>.voicemail.<voicemail_id>.<verb>. A new message
is the call's own `call.voicemail` event (from the media node); these say what became of it, so
a wallboard's count of new messages stays right."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class VoicemailListened(Event, frozen=True, kw_only=True, tag="voicemail.listened"):
    voicemail_id: UUID
    mailbox: str | None
    queue_id: UUID | None

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.voicemail.{self.voicemail_id}.listened"


class VoicemailDeleted(Event, frozen=True, kw_only=True, tag="voicemail.deleted"):
    voicemail_id: UUID
    mailbox: str | None
    queue_id: UUID | None
    was_listened: bool

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.voicemail.{self.voicemail_id}.deleted"


codec = EventCodec((VoicemailListened, VoicemailDeleted))

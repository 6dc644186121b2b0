"""Call events the media node publishes. Subjects: tenant.<tenant_id>.call.<call_id>.<verb>.

Call-control events borrow SIP's vocabulary. They carry numbers and timings, never audio or
credentials. `call.ended` carries the whole timeline so a CDR can be written from it alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from bus.events import Event, EventCodec

Direction = Literal["inbound", "outbound"]


class _CallEvent(Event, frozen=True, kw_only=True):
    call_id: UUID
    node_id: str

    _verb: ClassVar[str] = ""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.call.{self.call_id}.{self._verb}"


class CallStarted(_CallEvent, frozen=True, kw_only=True, tag="call.started"):
    _verb = "started"
    direction: Direction
    from_number: str
    to_number: str
    number_id: UUID | None = None
    trunk: str
    sip_call_id: str


class CallRinging(_CallEvent, frozen=True, kw_only=True, tag="call.ringing"):
    _verb = "ringing"


class CallAnswered(_CallEvent, frozen=True, kw_only=True, tag="call.answered"):
    _verb = "answered"
    codec: str


class CallHeld(_CallEvent, frozen=True, kw_only=True, tag="call.held"):
    _verb = "held"
    by: Literal["caller", "node"]


class CallResumed(_CallEvent, frozen=True, kw_only=True, tag="call.resumed"):
    _verb = "resumed"
    by: Literal["caller", "node"]


class CallDtmf(_CallEvent, frozen=True, kw_only=True, tag="call.dtmf"):
    _verb = "dtmf"
    digit: str


class CallEnded(_CallEvent, frozen=True, kw_only=True, tag="call.ended"):
    """`cause` says who or what ended the call; `sip_status` is the final status for a call
    that was never answered (404, 486, 487, ...)."""

    _verb = "ended"
    direction: Direction
    cause: str
    sip_status: int | None = None
    reason: str | None = None
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime
    duration_ms: int
    talk_ms: int
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0


codec = EventCodec(
    (CallStarted, CallRinging, CallAnswered, CallHeld, CallResumed, CallDtmf, CallEnded)
)

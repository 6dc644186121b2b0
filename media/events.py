"""Call events the media node publishes. Subjects: tenant.<tenant_id>.call.<call_id>.<verb>.

Call-control events borrow SIP's vocabulary. They carry numbers and timings, never audio or
credentials. `call.ended` carries the whole timeline so a CDR can be written from it alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from bus.events import Event, EventCodec

Direction = Literal["inbound", "outbound"]
OfferFailure = Literal[
    "no_answer", "busy", "rejected", "unreachable", "caller_gone", "answered_elsewhere", "refused"
]


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
    by: Literal["caller", "node", "agent"]


class CallResumed(_CallEvent, frozen=True, kw_only=True, tag="call.resumed"):
    _verb = "resumed"
    by: Literal["caller", "node", "agent"]


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
    agent_id: UUID | None = None
    """The agent who talked to the caller, if one did."""
    queue_id: UUID | None = None
    """The queue the call waited in, if it did."""


class CallFlowStep(_CallEvent, frozen=True, kw_only=True, tag="call.flow_step"):
    """One node of the call's flow ran: a supervisor sees the path the caller took."""

    _verb = "flow_step"
    node: str
    node_type: str
    outcome: str | None = None
    detail: dict[str, str] = {}


class CallQueued(_CallEvent, frozen=True, kw_only=True, tag="call.queued"):
    """The caller waits in a queue, hearing its hold music; the router drives the call now.
    `skills` maps a skill name (as the flow spells it) to the minimum level wanted."""

    _verb = "queued"
    queue_id: UUID
    priority: int
    skills: dict[str, int]
    attributes: dict[str, str]
    context: dict[str, Any] = {}
    """What the flow learned for the agent's screen pop: the caller's contact record under
    "contact", HTTP lookup answers under their `store_as` names."""
    from_number: str
    to_number: str
    callback_number: str | None = None


class CallOfferRinging(_CallEvent, frozen=True, kw_only=True, tag="call.offer_ringing"):
    _verb = "offer_ringing"
    agent_id: UUID


class CallOfferAnswered(_CallEvent, frozen=True, kw_only=True, tag="call.offer_answered"):
    """The agent took the call: caller and agent are bridged."""

    _verb = "offer_answered"
    agent_id: UUID


class CallOfferFailed(_CallEvent, frozen=True, kw_only=True, tag="call.offer_failed"):
    _verb = "offer_failed"
    agent_id: UUID
    reason: OfferFailure


class CallCallbackRequested(_CallEvent, frozen=True, kw_only=True, tag="call.callback_requested"):
    """The caller asked to be called back on `number` and hung up; the call keeps its place."""

    _verb = "callback_requested"
    queue_id: UUID
    number: str


class CallCallbackFailed(_CallEvent, frozen=True, kw_only=True, tag="call.callback_failed"):
    """The agent answered a dial-back but the customer could not be reached."""

    _verb = "callback_failed"
    agent_id: UUID
    reason: str


class CallVoicemail(_CallEvent, frozen=True, kw_only=True, tag="call.voicemail"):
    _verb = "voicemail"
    mailbox: str | None
    queue_id: UUID | None
    voicemail_id: UUID
    duration_ms: int
    from_number: str


class CallTransferred(_CallEvent, frozen=True, kw_only=True, tag="call.transferred"):
    """The call was handed on to `to` (a number, a queue id or an agent id, by `to_kind`).

    By the flow or the node (`agent_id` None), to a number: `outcome` is the dial's result,
    "answered", "busy", "no_answer", "failed" or "refused:<code>". By the agent `agent_id`
    who was talking on the call: sent as the agent lets go, before anything else happens to
    the call, with `outcome` "offered" (to an agent), "queued" (to a queue) or "dialing" (to
    a number, whose result follows as a transfer by the node; a number that does not answer
    returns the caller to their queue)."""

    _verb = "transferred"
    to: str
    outcome: str
    to_kind: Literal["number", "queue", "agent"] = "number"
    agent_id: UUID | None = None
    attended: bool = False
    """The agent talked to `to` first (see call.consult); `outcome` is then "connected"."""


class CallDialed(_CallEvent, frozen=True, kw_only=True, tag="call.dialed"):
    """An agent placed this outbound call from their softphone (click-to-dial); it follows
    its call.started, and the call's other events follow as usual."""

    _verb = "dialed"
    agent_id: UUID
    to_number: str


class CallConsulted(_CallEvent, frozen=True, kw_only=True, tag="call.consult"):
    """An attended transfer in progress: the agent `agent_id`, with the caller on hold, rings
    `to` (an agent id or a number, by `to_kind`) to talk first. `state` "ringing", then
    "connected" when they answer, then "completed" (the call is theirs now; a call.transferred
    follows) or "ended" (no answer, hung up or cancelled: the caller stays with the agent)."""

    _verb = "consult"
    agent_id: UUID
    to_kind: Literal["number", "agent"]
    to: str
    state: Literal["ringing", "connected", "completed", "ended"]
    reason: str | None = None


class CallMonitored(_CallEvent, frozen=True, kw_only=True, tag="call.monitored"):
    """A supervisor joined the call, changed how they take part, or left ("ended"): "listen"
    (hears both sides, heard by neither), "whisper" (heard by the agent only) or "barge"
    (heard by both)."""

    _verb = "monitored"
    supervisor_id: UUID
    agent_id: UUID
    mode: Literal["listen", "whisper", "barge", "ended"]


codec = EventCodec(
    (
        CallStarted,
        CallRinging,
        CallAnswered,
        CallHeld,
        CallResumed,
        CallDtmf,
        CallEnded,
        CallFlowStep,
        CallQueued,
        CallOfferRinging,
        CallOfferAnswered,
        CallOfferFailed,
        CallCallbackRequested,
        CallCallbackFailed,
        CallVoicemail,
        CallTransferred,
        CallMonitored,
        CallDialed,
        CallConsulted,
    )
)

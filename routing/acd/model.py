"""The ACD's vocabulary: what it is configured with (queues, agents), what comes in (calls),
what it decides (offers, dial-backs, overflows, announcements, agent changes) and what it shows
(agent, queue and call views). Configuration shapes are frozen dataclasses that check
themselves when built, so bad input never reaches the core."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args
from uuid import UUID

import msgspec

AgentState = Literal["offline", "available", "reserved", "ringing", "on_call", "wrap_up", "away"]
PresenceState = Literal["offline", "available", "away"]
"""The states an agent (or a supervisor) may ask for; the others follow from calls."""
Strategy = Literal["longest_idle", "round_robin", "fewest_calls", "skills_based", "ring_all"]
OverflowAction = Literal["queue", "voicemail", "callback", "hangup"]
CallState = Literal["waiting", "offered", "connected"]
LeftWhy = Literal["answered", "abandoned", "overflow", "callback_failed"]

AGENT_STATES: tuple[str, ...] = get_args(AgentState)
PRESENCE_STATES: tuple[str, ...] = get_args(PresenceState)
STRATEGIES: tuple[str, ...] = get_args(Strategy)
OVERFLOW_ACTIONS: tuple[str, ...] = get_args(OverflowAction)

AGING_SECONDS = 30.0
"""One level of call or queue priority is worth this much waiting time."""
OFFER_GRACE_SECONDS = 5.0
"""An offer nobody reported on by its timeout plus this much is treated as not answered."""
DEFAULT_AHT_SECONDS = 180.0

Skills = Mapping[str, int]


class AcdError(Exception):
    """A request the ACD refuses; it changed nothing."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PresenceRefused(AcdError):
    pass


class UnknownQueue(AcdError, KeyError):
    def __init__(self, queue_id: UUID) -> None:
        super().__init__("unknown_queue", f"queue {queue_id} is not configured")

    def __str__(self) -> str:
        return self.message


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {value!r}")


def _check_positive(what: str, value: float, *, zero_ok: bool = False) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{what} must be a {'non-negative' if zero_ok else 'positive'} number")


def _skills(what: str, skills: Mapping[str, int]) -> dict[str, int]:
    """Skill names compared without case; levels 1-10."""
    out: dict[str, int] = {}
    for name, level in skills.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what}: a skill name must be a non-empty string")
        key = name.strip().lower()
        if key in out:
            raise ValueError(f"{what}: skill {name!r} is named twice (names ignore case)")
        if type(level) is not int or not 1 <= level <= 10:
            raise ValueError(f"{what}: level of {name!r} must be a whole number from 1 to 10")
        out[key] = level
    return out


@dataclass(frozen=True, slots=True)
class OverflowSpec:
    """What happens to a call that waited the queue's `max_wait_seconds`."""

    action: OverflowAction
    queue_id: UUID | None = None
    mailbox: str | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if self.action not in OVERFLOW_ACTIONS:
            raise ValueError(f"overflow action must be one of {OVERFLOW_ACTIONS}")
        if self.action == "queue" and self.queue_id is None:
            raise ValueError("an overflow to a queue needs the queue_id")


_QUEUE_SECONDS = (
    "max_wait_seconds",
    "wrap_up_seconds",
    "offer_timeout_seconds",
    "announce_every_seconds",
    "service_level_seconds",
)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    queue_id: UUID
    strategy: Strategy
    priority: int = 5
    required_skills: Skills = field(default_factory=dict)
    """Skill name → minimum level an agent needs for any of this queue's calls."""
    max_wait_seconds: float = 600.0
    overflow: OverflowSpec = field(default_factory=lambda: OverflowSpec("hangup"))
    wrap_up_seconds: float = 30.0
    offer_timeout_seconds: float = 20.0
    announce_position: bool = False
    announce_ewt: bool = False
    announce_every_seconds: float = 45.0
    service_level_seconds: float = 20.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        _check_range("queue priority", self.priority, 0, 10)
        object.__setattr__(self, "required_skills", _skills("queue", self.required_skills))
        for name in _QUEUE_SECONDS:
            value = getattr(self, name)
            _check_positive(name, value, zero_ok=name == "wrap_up_seconds")
            object.__setattr__(self, name, float(value))  # 30 and 30.0 persist alike
        if self.overflow.action == "queue" and self.overflow.queue_id == self.queue_id:
            raise ValueError("a queue cannot overflow to itself")

    @property
    def announces(self) -> bool:
        return self.announce_position or self.announce_ewt


@dataclass(frozen=True, slots=True)
class AgentSpec:
    agent_id: UUID
    skills: Skills = field(default_factory=dict)
    """Skill name → level (1-10)."""
    queues: Mapping[UUID, int] = field(default_factory=dict)
    """Queue → member priority (1-10): members of a higher priority are offered first."""
    device: str | None = None
    """Where offers ring (a SIP URI or an E.164 number); an agent without one cannot be
    available."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", _skills("agent", self.skills))
        for queue_id, priority in self.queues.items():
            _check_range(f"member priority in queue {queue_id}", priority, 1, 10)
        object.__setattr__(self, "queues", dict(self.queues))
        if self.device is not None and not self.device.strip():
            raise ValueError("device must be a SIP URI or a number, or None")


@dataclass(frozen=True, slots=True)
class CallSpec:
    call_id: UUID
    queue_id: UUID
    priority: int
    skills: Skills
    """Skill name → minimum level, on top of the queue's own requirements."""
    node_id: str
    from_number: str
    to_number: str

    def __post_init__(self) -> None:
        _check_range("call priority", self.priority, 0, 10)
        object.__setattr__(self, "skills", _skills("call", self.skills))


# --- decisions --------------------------------------------------------------------------------


class Offer(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Ring these agents (all reserved from now on) for this waiting call."""

    call_id: UUID
    queue_id: UUID
    node_id: str
    agent_ids: tuple[UUID, ...]
    devices: tuple[str, ...]
    timeout_seconds: float


class DialBack(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A callback's turn came: ring the (reserved) agent, then call the customer."""

    call_id: UUID
    queue_id: UUID
    node_id: str
    agent_id: UUID
    device: str
    number: str
    caller_id: str
    timeout_seconds: float


class Overflow(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The call waited too long. For "queue" the call has already moved to `spec.queue_id`;
    for "callback" it keeps its place while the caller is offered a call back; "voicemail"
    and "hangup" have removed it."""

    call_id: UUID
    queue_id: UUID
    node_id: str
    spec: OverflowSpec


class Announce(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Tell the waiting caller their place and/or estimated wait (None: not announced)."""

    call_id: UUID
    queue_id: UUID
    node_id: str
    position: int | None
    ewt_seconds: int | None


class AgentChanged(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The agent's state or reason changed, or a state they asked for is now pending."""

    agent_id: UUID
    state: AgentState
    reason: str | None
    since: float
    call_id: UUID | None = None
    pending: PresenceState | None = None


class CallLeft(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The call left this queue for good (an overflow to another queue leaves this one)."""

    call_id: UUID
    queue_id: UUID
    why: LeftWhy


Decision = Offer | DialBack | Overflow | Announce | AgentChanged | CallLeft


# --- views ------------------------------------------------------------------------------------


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: UUID
    state: AgentState
    reason: str | None
    since: float
    call_id: UUID | None
    calls_handled: int
    pending: PresenceState | None
    """The state the agent asked for while busy; applied when the work is done."""
    pending_reason: str | None
    idle_since: float
    wrap_up_until: float | None
    device: str | None


class QueueView(msgspec.Struct, frozen=True, kw_only=True):
    queue_id: UUID
    waiting: int
    """Calls holding a place, callbacks included."""
    callbacks: int
    offered: int
    """Calls ringing agents right now."""
    longest_wait_seconds: float
    agents: dict[str, int]
    """Member agents by state."""
    staffed: int
    """Members neither offline nor away."""
    ewt_seconds: int
    """Estimated wait for a call arriving now."""
    aht_seconds: float
    arrivals_per_hour: float | None
    answered: int
    answered_within_service_level: int
    abandoned: int
    overflowed: int


class CallView(msgspec.Struct, frozen=True, kw_only=True):
    call_id: UUID
    queue_id: UUID
    node_id: str
    state: CallState
    priority: int
    skills: dict[str, int]
    enqueued_at: float
    virtual_time: float
    """Calls go in order of this: arrival time less AGING_SECONDS per priority level."""
    position: int | None
    agent_ids: tuple[UUID, ...]
    callback_number: str | None
    overflowed: bool

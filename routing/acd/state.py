"""The ACD's mutable records and their persisted form. Everything that decides what happens
next lives in these records; the indexes the core keeps beside them are rebuilt from them."""

from __future__ import annotations

from uuid import UUID

import msgspec

from routing.acd.model import (
    DEFAULT_AHT_SECONDS,
    AgentSpec,
    AgentState,
    CallSpec,
    CallState,
    PresenceState,
    QueueSpec,
)

SNAPSHOT_VERSION = 1
EWMA_WEIGHT = 0.2
"""Weight of the newest sample in the arrival-interval and handle-time averages."""

Signature = tuple[tuple[str, int], ...]
"""A call's own skill requirements, sorted: calls alike in this wait in one ordered group."""
OrderKey = tuple[float, int, UUID]
"""(virtual time, sequence, call id): the order in which waiting calls are served."""


class AgentRecord(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    spec: AgentSpec
    seq: int
    """Order the agent became known in: the member order round robin rotates over and the
    last tie-break everywhere, so choices never depend on container order."""
    state: AgentState = "offline"
    reason: str | None = None
    since: float = 0.0
    idle_since: float = 0.0
    call_id: UUID | None = None
    calls_handled: int = 0
    pending: PresenceState | None = None
    pending_reason: str | None = None
    wrap_up_until: float | None = None
    wrap_up_started: float = 0.0
    work_queue_id: UUID | None = None
    """Queue of the call being talked or wrapped up; its handle time gets the sample."""
    talk_started: float | None = None
    talk_seconds: float = 0.0


class CallRecord(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    spec: CallSpec
    seq: int
    queue_id: UUID
    """The queue the call waits in now (after an overflow to a queue, not the one it came to)."""
    enqueued_at: float
    virtual_time: float
    signature: Signature
    state: CallState = "waiting"
    offered_to: list[UUID] = msgspec.field(default_factory=list)
    """Agents whose offer is still out."""
    offer_deadline: float | None = None
    agent_id: UUID | None = None
    overflow_at: float | None = None
    overflowed: bool = False
    next_announce_at: float | None = None
    callback_number: str | None = None
    caller_left: bool = False
    """For a callback: the original caller's own leg has ended (it ends once)."""
    wrap_up_seconds: float = 0.0
    left: bool = False
    """Set once the call is no longer the core's (so its timers lapse); never in a snapshot."""
    handed_on: bool = False
    """An agent transferred the call to another agent: answered once already, so the second
    answer does not count in the queue's statistics again."""

    @property
    def key(self) -> OrderKey:
        return (self.virtual_time, self.seq, self.spec.call_id)


class QueueStats(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    queue_id: UUID
    last_arrival_at: float | None = None
    mean_interarrival: float | None = None
    aht_seconds: float = DEFAULT_AHT_SECONDS
    aht_samples: int = 0
    arrived: int = 0
    answered: int = 0
    answered_within_service_level: int = 0
    abandoned: int = 0
    overflowed: int = 0
    round_robin_last: int | None = None
    """Sequence of the member last offered a call by round robin."""

    def arrival(self, now: float) -> None:
        self.arrived += 1
        if self.last_arrival_at is not None:
            interval = max(0.0, now - self.last_arrival_at)
            if self.mean_interarrival is None:
                self.mean_interarrival = interval
            else:
                self.mean_interarrival += EWMA_WEIGHT * (interval - self.mean_interarrival)
        self.last_arrival_at = now

    def handled(self, seconds: float) -> None:
        if self.aht_samples == 0:
            self.aht_seconds = seconds
        else:
            self.aht_seconds += EWMA_WEIGHT * (seconds - self.aht_seconds)
        self.aht_samples += 1

    def arrivals_per_second(self, now: float) -> float | None:
        """The live rate; a long silence since the last arrival lowers it."""
        if self.mean_interarrival is None or self.last_arrival_at is None:
            return None
        interval = max(self.mean_interarrival, now - self.last_arrival_at)
        return 1.0 / interval if interval > 0 else None


class Snapshot(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    version: int
    clock: float
    next_seq: int
    queues: list[QueueSpec]
    stats: list[QueueStats]
    agents: list[AgentRecord]
    calls: list[CallRecord]

"""The ACD's ledger: its records, the indexes kept beside them, the timers, the read side and
persistence. The decisions themselves are made in `core`.

Waiting calls are kept per queue in sorted lists of (virtual time, sequence, call id), once for
the whole queue (positions) and once per group of calls needing the same skills (matching).
Available agents are listed under each queue they qualify for. Timers are heaps whose entries
are checked against the records when they reach the top, so nothing is ever scanned whole."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Mapping
from heapq import heappop, heappush
from uuid import UUID

import msgspec

from routing.acd.erlang import estimated_wait_seconds
from routing.acd.model import (
    AGENT_STATES,
    AGING_SECONDS,
    AcdError,
    AgentChanged,
    AgentSpec,
    AgentView,
    CallState,
    CallView,
    DialBack,
    Offer,
    Overflow,
    OverflowSpec,
    QueueSpec,
    QueueView,
    UnknownQueue,
)
from routing.acd.state import (
    SNAPSHOT_VERSION,
    AgentRecord,
    CallRecord,
    OrderKey,
    QueueStats,
    Signature,
    Snapshot,
)

CallTimer = tuple[float, int, CallRecord]
AgentTimer = tuple[float, int, AgentRecord]
Due = tuple[float, int, CallRecord | AgentRecord]
"""(when, kind: 0 offer timeout, 1 wrap-up end, 2 overflow, 3 announcement, record)."""

_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(Snapshot)
_fields_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
"""Reads the version, which leads a snapshot of any version, before the rest."""


def meets(levels: Mapping[str, int], required: Mapping[str, int]) -> bool:
    return all(levels.get(name, 0) >= level for name, level in required.items())


def satisfies(levels: Mapping[str, int], signature: Signature) -> bool:
    return all(levels.get(name, 0) >= level for name, level in signature)


def _discard(keys: list[OrderKey], key: OrderKey) -> None:
    i = bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]


class Book:
    """State of one tenant's ACD and everything derived from it."""

    def __init__(self) -> None:
        self._clock = 0.0
        self._seq = 0
        self._queues: dict[UUID, QueueSpec] = {}
        self._stats: dict[UUID, QueueStats] = {}
        self._agents: dict[UUID, AgentRecord] = {}
        self._calls: dict[UUID, CallRecord] = {}
        # Indexes, rebuilt from the records on restore.
        self._members: dict[UUID, dict[UUID, AgentRecord]] = {}
        self._state_counts: dict[UUID, dict[str, int]] = {}
        self._order: dict[UUID, list[OrderKey]] = {}
        self._groups: dict[UUID, dict[Signature, list[OrderKey]]] = {}
        self._available: dict[UUID, dict[UUID, AgentRecord]] = {}
        self._indexed: dict[UUID, tuple[UUID, ...]] = {}
        self._offered: dict[UUID, int] = {}
        self._count_rows: dict[int, list[dict[str, int]]] = {}
        self._offer_timers: list[CallTimer] = []
        self._wrap_up_timers: list[AgentTimer] = []
        self._overflow_timers: list[CallTimer] = []
        self._announce_timers: list[CallTimer] = []

    # --- timers ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `tick` next has work to do (possibly already past)."""
        due = self._due()
        return None if due is None else due[0]

    def _due(self) -> Due | None:
        """The earliest timer with work to do, dropping lapsed entries on the way."""
        best: Due | None = None
        heap = self._offer_timers
        while heap and not self._offer_timer_valid(heap[0]):
            heappop(heap)
        if heap:
            best = (heap[0][0], 0, heap[0][2])
        wrap_ups = self._wrap_up_timers
        while wrap_ups and not self._wrap_up_timer_valid(wrap_ups[0]):
            heappop(wrap_ups)
        if wrap_ups and (best is None or wrap_ups[0][0] < best[0]):
            best = (wrap_ups[0][0], 1, wrap_ups[0][2])
        heap = self._overflow_timers
        while heap and not self._overflow_timer_valid(heap[0]):
            heappop(heap)
        if heap and (best is None or heap[0][0] < best[0]):
            best = (heap[0][0], 2, heap[0][2])
        announce = self._next_announcement()
        if announce is not None and (best is None or announce[0] < best[0]):
            best = (announce[0], 3, announce[2])
        return best

    def _next_announcement(self) -> CallTimer | None:
        heap = self._announce_timers
        while heap and not self._announce_timer_valid(heap[0]):
            heappop(heap)
        return heap[0] if heap else None

    @staticmethod
    def _offer_timer_valid(entry: CallTimer) -> bool:
        call = entry[2]
        return call.state == "offered" and not call.left and call.offer_deadline == entry[0]

    @staticmethod
    def _wrap_up_timer_valid(entry: AgentTimer) -> bool:
        agent = entry[2]
        return agent.state == "wrap_up" and agent.wrap_up_until == entry[0]

    @staticmethod
    def _overflow_timer_valid(entry: CallTimer) -> bool:
        call = entry[2]
        return (
            call.state == "waiting"
            and not call.left
            and not call.overflowed
            and call.callback_number is None
            and call.overflow_at == entry[0]
        )

    @staticmethod
    def _announce_timer_valid(entry: CallTimer) -> bool:
        call = entry[2]
        return (
            call.state == "waiting"
            and not call.left
            and call.callback_number is None
            and call.next_announce_at == entry[0]
        )

    # --- waiting calls ---------------------------------------------------------------------------

    def _place(self, call: CallRecord) -> None:
        """Put the call in its place in its queue and arm its timers."""
        key = call.key
        insort(self._order.setdefault(call.queue_id, []), key)
        groups = self._groups.setdefault(call.queue_id, {})
        insort(groups.setdefault(call.signature, []), key)
        self._set_call_state(call, "waiting")
        if call.overflow_at is not None and not call.overflowed and call.callback_number is None:
            heappush(self._overflow_timers, (call.overflow_at, call.seq, call))
        if call.next_announce_at is not None:
            heappush(self._announce_timers, (call.next_announce_at, call.seq, call))

    def _unplace(self, call: CallRecord) -> None:
        key = call.key
        order = self._order.get(call.queue_id)
        if order is not None:
            _discard(order, key)
        groups = self._groups.get(call.queue_id)
        if groups is not None:
            keys = groups.get(call.signature)
            if keys is not None:
                _discard(keys, key)
                if not keys:
                    del groups[call.signature]

    def _set_call_state(self, call: CallRecord, state: CallState) -> None:
        if call.state == "offered":
            self._offered[call.queue_id] -= 1
        if state == "offered":
            self._offered[call.queue_id] = self._offered.get(call.queue_id, 0) + 1
        call.state = state

    def _forget(self, call: CallRecord) -> None:
        """The call is no longer the core's."""
        if call.state == "waiting":
            self._unplace(call)
        if call.state == "offered":
            self._offered[call.queue_id] -= 1
        call.left = True
        del self._calls[call.spec.call_id]

    def _position(self, call: CallRecord) -> int:
        return bisect_left(self._order[call.queue_id], call.key) + 1

    @staticmethod
    def _virtual_time(enqueued_at: float, priority: int, queue: QueueSpec) -> float:
        return enqueued_at - AGING_SECONDS * (priority + queue.priority)

    def _stats_of(self, call: CallRecord) -> QueueStats:
        return self._stats.get(call.queue_id) or QueueStats(queue_id=call.queue_id)

    # --- agents ----------------------------------------------------------------------------------

    def _index(self, agent: AgentRecord) -> None:
        """List an available agent under each configured queue it qualifies for."""
        agent_id = agent.spec.agent_id
        queues = []
        for queue_id in agent.spec.queues:
            queue = self._queues.get(queue_id)
            if queue is not None and meets(agent.spec.skills, queue.required_skills):
                self._available.setdefault(queue_id, {})[agent_id] = agent
                queues.append(queue_id)
        self._indexed[agent_id] = tuple(queues)

    def _unindex(self, agent: AgentRecord) -> None:
        agent_id = agent.spec.agent_id
        for queue_id in self._indexed.pop(agent_id, ()):
            available = self._available.get(queue_id)
            if available is not None:
                available.pop(agent_id, None)

    def _join(self, agent: AgentRecord) -> None:
        rows = []
        for queue_id in agent.spec.queues:
            self._members.setdefault(queue_id, {})[agent.spec.agent_id] = agent
            counts = self._state_counts.get(queue_id)
            if counts is None:
                counts = self._state_counts[queue_id] = dict.fromkeys(AGENT_STATES, 0)
            rows.append(counts)
        self._count_rows[agent.seq] = rows
        self._count(agent, 1)

    def _leave(self, agent: AgentRecord) -> None:
        self._count(agent, -1)
        del self._count_rows[agent.seq]
        for queue_id in agent.spec.queues:
            members = self._members.get(queue_id)
            if members is not None:
                members.pop(agent.spec.agent_id, None)

    def _count(self, agent: AgentRecord, delta: int) -> None:
        """Keep the member counts by state of the agent's queues."""
        state = agent.state
        for counts in self._count_rows[agent.seq]:
            counts[state] += delta

    def _staffed(self, queue_id: UUID) -> int:
        counts = self._state_counts.get(queue_id)
        if counts is None:
            return 0
        return sum(counts.values()) - counts["offline"] - counts["away"]

    # --- decisions -------------------------------------------------------------------------------

    @staticmethod
    def _offer_decision(
        call: CallRecord, agents: list[AgentRecord], timeout: float
    ) -> Offer | DialBack:
        if call.callback_number is not None:
            first = agents[0]
            return DialBack(
                call_id=call.spec.call_id,
                queue_id=call.queue_id,
                node_id=call.spec.node_id,
                agent_id=first.spec.agent_id,
                device=first.spec.device or "",
                number=call.callback_number,
                caller_id=call.spec.to_number,
                timeout_seconds=timeout,
            )
        return Offer(
            call_id=call.spec.call_id,
            queue_id=call.queue_id,
            node_id=call.spec.node_id,
            agent_ids=tuple(agent.spec.agent_id for agent in agents),
            devices=tuple(agent.spec.device or "" for agent in agents),
            timeout_seconds=timeout,
        )

    @staticmethod
    def _overflow_decision(call: CallRecord, queue_id: UUID, spec: OverflowSpec) -> Overflow:
        return Overflow(
            call_id=call.spec.call_id, queue_id=queue_id, node_id=call.spec.node_id, spec=spec
        )

    @staticmethod
    def _changed(agent: AgentRecord) -> AgentChanged:
        return AgentChanged(
            agent_id=agent.spec.agent_id,
            state=agent.state,
            reason=agent.reason,
            since=agent.since,
            call_id=agent.call_id,
            pending=agent.pending,
        )

    # --- small helpers ---------------------------------------------------------------------------

    def _advance(self, now: float) -> float:
        if not math.isfinite(now):
            raise ValueError("now must be a finite number of seconds")
        if now > self._clock:
            self._clock = now
        return now

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- read side -------------------------------------------------------------------------------

    def agent(self, agent_id: UUID) -> AgentView:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise AcdError("unknown_agent", f"agent {agent_id} is not known")
        return self._agent_view(agent)

    def agents(self) -> list[AgentView]:
        return [self._agent_view(agent) for agent in self._agents.values()]

    @staticmethod
    def _agent_view(agent: AgentRecord) -> AgentView:
        return AgentView(
            agent_id=agent.spec.agent_id,
            state=agent.state,
            reason=agent.reason,
            since=agent.since,
            call_id=agent.call_id,
            calls_handled=agent.calls_handled,
            pending=agent.pending,
            pending_reason=agent.pending_reason,
            idle_since=agent.idle_since,
            wrap_up_until=agent.wrap_up_until,
            device=agent.spec.device,
        )

    def queue_stats(self, queue_id: UUID, now: float) -> QueueView:
        if queue_id not in self._queues:
            raise UnknownQueue(queue_id)
        stats = self._stats[queue_id]
        order = self._order.get(queue_id, [])
        waiting = [self._calls[key[2]] for key in order]
        staffed = self._staffed(queue_id)
        rate = stats.arrivals_per_second(now)
        ewt = estimated_wait_seconds(
            arrivals_per_second=rate,
            aht_seconds=stats.aht_seconds,
            staffed=staffed,
            position=len(waiting) + 1,
        )
        return QueueView(
            queue_id=queue_id,
            waiting=len(waiting),
            callbacks=sum(1 for call in waiting if call.callback_number is not None),
            offered=self._offered.get(queue_id, 0),
            longest_wait_seconds=max((now - call.enqueued_at for call in waiting), default=0.0),
            agents=dict(self._state_counts.get(queue_id, dict.fromkeys(AGENT_STATES, 0))),
            staffed=staffed,
            ewt_seconds=math.ceil(ewt),
            aht_seconds=stats.aht_seconds,
            arrivals_per_hour=None if rate is None else rate * 3600.0,
            answered=stats.answered,
            answered_within_service_level=stats.answered_within_service_level,
            abandoned=stats.abandoned,
            overflowed=stats.overflowed,
        )

    def queue_ids(self) -> list[UUID]:
        return list(self._queues)

    def agent_spec(self, agent_id: UUID) -> AgentSpec | None:
        agent = self._agents.get(agent_id)
        return None if agent is None else agent.spec

    def offers_in_flight(self) -> list[Offer | DialBack]:
        """The offers (and dial-backs) still out, as first decided: to send again after a
        restore (only the agents whose offer is still out)."""
        out: list[Offer | DialBack] = []
        for call in self._calls.values():
            if call.state == "offered" and call.offered_to:
                queue = self._queues.get(call.queue_id)
                agents = [self._agents[a] for a in call.offered_to]
                timeout = queue.offer_timeout_seconds if queue is not None else 20.0
                out.append(self._offer_decision(call, agents, timeout))
        return out

    def position(self, call_id: UUID) -> int | None:
        """1 for the next call served in its queue; None unless the call is waiting."""
        call = self._calls.get(call_id)
        if call is None or call.state != "waiting":
            return None
        return self._position(call)

    def calls(self, queue_id: UUID | None = None) -> list[CallView]:
        return [
            self._call_view(call)
            for call in self._calls.values()
            if queue_id is None or call.queue_id == queue_id
        ]

    def _call_view(self, call: CallRecord) -> CallView:
        agents: tuple[UUID, ...] = tuple(call.offered_to)
        if call.state == "connected" and call.agent_id is not None:
            agents = (call.agent_id,)
        return CallView(
            call_id=call.spec.call_id,
            queue_id=call.queue_id,
            node_id=call.spec.node_id,
            state=call.state,
            priority=call.spec.priority,
            skills=dict(call.spec.skills),
            enqueued_at=call.enqueued_at,
            virtual_time=call.virtual_time,
            position=self._position(call) if call.state == "waiting" else None,
            agent_ids=agents,
            callback_number=call.callback_number,
            overflowed=call.overflowed,
        )

    # --- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state (msgpack), for `restore`."""
        return _encoder.encode(
            Snapshot(
                version=SNAPSHOT_VERSION,
                clock=self._clock,
                next_seq=self._seq,
                queues=list(self._queues.values()),
                stats=list(self._stats.values()),
                agents=list(self._agents.values()),
                calls=list(self._calls.values()),
            )
        )

    @classmethod
    def _load(cls, data: bytes) -> Snapshot:
        try:
            fields = _fields_decoder.decode(data)
            version = msgspec.msgpack.decode(fields[0], type=int) if fields else None
            if version != SNAPSHOT_VERSION:
                raise ValueError(f"ACD snapshot version {version} is not supported")
            return _decoder.decode(data)
        except msgspec.DecodeError as error:
            raise ValueError(f"not an ACD snapshot: {error}") from error

    def _rebuild(self, snapshot: Snapshot) -> None:
        """Take over a snapshot's records and rebuild the indexes and timers from them."""
        self._clock = snapshot.clock
        self._seq = snapshot.next_seq
        self._queues = {spec.queue_id: spec for spec in snapshot.queues}
        self._stats = {stats.queue_id: stats for stats in snapshot.stats}
        for agent in snapshot.agents:
            self._agents[agent.spec.agent_id] = agent
            self._join(agent)
            if agent.state == "available":
                self._index(agent)
            elif agent.state == "wrap_up" and agent.wrap_up_until is not None:
                heappush(self._wrap_up_timers, (agent.wrap_up_until, agent.seq, agent))
        for call in snapshot.calls:
            self._calls[call.spec.call_id] = call
            state, call.state = call.state, "connected"  # counted afresh from a neutral state
            if state == "waiting":
                self._place(call)
            elif state == "offered":
                self._set_call_state(call, "offered")
                if call.offer_deadline is not None:
                    heappush(self._offer_timers, (call.offer_deadline, call.seq, call))

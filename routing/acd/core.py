"""The ACD decision core for one tenant: inputs in, decisions out, no I/O and no clock of its
own (every input carries `now`, in seconds).

Order of calls: each waiting call has a fixed virtual time, its arrival less AGING_SECONDS per
level of call and queue priority; smaller goes first, so a call can be passed over only by
calls that arrived at most AGING_SECONDS x 20 after it and nobody starves. An agent who becomes
available takes the first call it is eligible for across its queues (looking only at the heads
of the skill groups it satisfies); a call that starts waiting goes to its queue's eligible
available members, chosen by the queue's strategy. After every input no available agent is
left eligible for a waiting call, and no agent holds two calls."""

from __future__ import annotations

import math
from heapq import heappush
from uuid import UUID

from routing.acd import strategies
from routing.acd.book import Book, satisfies
from routing.acd.erlang import positional_wait_seconds
from routing.acd.model import (
    OFFER_GRACE_SECONDS,
    PRESENCE_STATES,
    AgentSpec,
    AgentState,
    Announce,
    CallLeft,
    CallSpec,
    Decision,
    OverflowSpec,
    PresenceRefused,
    PresenceState,
    QueueSpec,
    UnknownQueue,
)
from routing.acd.state import AgentRecord, CallRecord, OrderKey, QueueStats

BUSY: frozenset[str] = frozenset({"reserved", "ringing", "on_call", "wrap_up"})
HANGUP = OverflowSpec("hangup")


class Acd(Book):
    """Queues, agents and waiting calls of one tenant, and who gets offered what."""

    # --- configuration ------------------------------------------------------------------------

    def configure_queue(self, spec: QueueSpec, now: float | None = None) -> list[Decision]:
        """Add or change a queue. Agents it newly lets take waiting calls get offers (timed at
        `now`, or at the latest time the core has seen)."""
        now = self._clock if now is None else self._advance(now)
        queue_id = spec.queue_id
        old = self._queues.get(queue_id)
        out: list[Decision] = []
        if old == spec:
            return out
        self._queues[queue_id] = spec
        self._stats.setdefault(queue_id, QueueStats(queue_id=queue_id))
        if old is not None:
            self._requeue_settings(old, spec, now)
        for agent in self._members.get(queue_id, {}).values():
            if agent.state == "available":
                self._unindex(agent)
                self._index(agent)
        for agent in sorted(self._available.get(queue_id, {}).values(), key=strategies.idle_key):
            if agent.state == "available":
                self._serve_agent(agent, now, out)
        return out

    def _requeue_settings(self, old: QueueSpec, spec: QueueSpec, now: float) -> None:
        queue_calls = [c for c in self._calls.values() if c.queue_id == spec.queue_id]
        for call in queue_calls:
            if call.state == "connected":
                continue
            waiting = call.state == "waiting"
            if waiting:
                self._unplace(call)
            call.virtual_time = self._virtual_time(call.enqueued_at, call.spec.priority, spec)
            if not call.overflowed and call.callback_number is None:
                call.overflow_at = call.enqueued_at + spec.max_wait_seconds
            if call.callback_number is None:
                if not spec.announces:
                    call.next_announce_at = None
                elif not old.announces or call.next_announce_at is None:
                    call.next_announce_at = now
            if waiting:
                self._place(call)

    def remove_queue(self, queue_id: UUID, now: float) -> list[Decision]:
        """Forget a queue: its waiting calls are hung up (callbacks dropped). Calls ringing an
        agent or talking finish; one that comes back finds no queue and is hung up."""
        self._advance(now)
        if self._queues.pop(queue_id, None) is None:
            return []
        self._stats.pop(queue_id, None)
        for agent in list(self._available.pop(queue_id, {}).values()):
            self._indexed[agent.spec.agent_id] = tuple(
                q for q in self._indexed.get(agent.spec.agent_id, ()) if q != queue_id
            )
        self._groups.pop(queue_id, None)
        out: list[Decision] = []
        for key in self._order.pop(queue_id, []):
            call = self._calls.pop(key[2])
            call.left = True
            if call.callback_number is None:
                out.append(self._overflow_decision(call, queue_id, HANGUP))
            out.append(CallLeft(call_id=key[2], queue_id=queue_id, why="overflow"))
        return out

    def set_agent(self, spec: AgentSpec, now: float) -> list[Decision]:
        """Add an agent (offline) or change its skills, queues or device."""
        self._advance(now)
        agent = self._agents.get(spec.agent_id)
        out: list[Decision] = []
        if agent is None:
            agent = AgentRecord(spec=spec, seq=self._next_seq(), since=now, idle_since=now)
            self._agents[spec.agent_id] = agent
            self._join(agent)
            out.append(self._changed(agent))
            return out
        if agent.spec == spec:
            return out
        self._leave(agent)
        if agent.state == "available":
            self._unindex(agent)
        agent.spec = spec
        self._join(agent)
        if agent.state == "available":
            if spec.device is None:
                self._set_state(agent, "away", "no_device", now, out)
            else:
                self._index(agent)
                self._serve_agent(agent, now, out)
        return out

    def remove_agent(self, agent_id: UUID, now: float) -> list[Decision]:
        """Forget an agent. An offer still out to them counts as not answered; a call they are
        talking on goes on without them."""
        self._advance(now)
        agent = self._agents.get(agent_id)
        if agent is None:
            return []
        out: list[Decision] = []
        self._set_state(agent, "offline", "removed", now, out)
        self._leave(agent)
        del self._agents[agent_id]
        call = self._calls.get(agent.call_id) if agent.call_id is not None else None
        if call is not None and call.agent_id == agent_id:
            call.agent_id = None  # the talk goes on; its end owes this agent nothing
        if call is not None and call.state == "offered" and agent_id in call.offered_to:
            call.offered_to.remove(agent_id)
            if not call.offered_to:
                self._return_call(call, now, out)
                self._serve_waiting_call(call, now, out)
        return out

    # --- presence -----------------------------------------------------------------------------

    def set_presence(
        self, agent_id: UUID, state: PresenceState, reason: str | None, now: float
    ) -> list[Decision]:
        """An agent (or supervisor) asks for a state. While the agent works a call the request
        waits, shown as `pending`, and applies when the work is done."""
        agent = self._agents.get(agent_id)
        if agent is None:
            raise PresenceRefused("unknown_agent", f"agent {agent_id} is not known")
        if state not in PRESENCE_STATES:
            raise PresenceRefused(
                "bad_state", f"an agent can ask for {', '.join(PRESENCE_STATES)}, not {state!r}"
            )
        if state == "available" and agent.spec.device is None:
            raise PresenceRefused("no_device", "the agent has no device to take calls on")
        self._advance(now)
        out: list[Decision] = []
        if agent.state in BUSY:
            pending: PresenceState | None = None if state == "available" else state
            pending_reason = reason if pending is not None else None
            if (pending, pending_reason) != (agent.pending, agent.pending_reason):
                agent.pending, agent.pending_reason = pending, pending_reason
                out.append(self._changed(agent))
            return out
        if state == "available":
            if agent.state != "available":
                agent.idle_since = now
                self._set_state(agent, "available", None, now, out)
                self._serve_agent(agent, now, out)
        elif (state, reason) != (agent.state, agent.reason):
            self._set_state(agent, state, reason, now, out)
        return out

    def end_wrap_up(self, agent_id: UUID, now: float) -> list[Decision]:
        """The agent finished their after-call work early."""
        agent = self._agents.get(agent_id)
        if agent is None:
            raise PresenceRefused("unknown_agent", f"agent {agent_id} is not known")
        if agent.state != "wrap_up":
            raise PresenceRefused("not_in_wrap_up", f"the agent is {agent.state}, not wrap_up")
        self._advance(now)
        out: list[Decision] = []
        self._finish_wrap_up(agent, now, out)
        return out

    # --- calls --------------------------------------------------------------------------------

    def enqueue(self, call: CallSpec, now: float) -> list[Decision]:
        """A call starts waiting; a call already known is left alone."""
        queue = self._queues.get(call.queue_id)
        if queue is None:
            raise UnknownQueue(call.queue_id)
        self._advance(now)
        if call.call_id in self._calls:
            return []
        self._stats[call.queue_id].arrival(now)
        record = CallRecord(
            spec=call,
            seq=self._next_seq(),
            queue_id=call.queue_id,
            enqueued_at=now,
            virtual_time=self._virtual_time(now, call.priority, queue),
            signature=tuple(sorted(call.skills.items())),
            overflow_at=now + queue.max_wait_seconds,
        )
        self._calls[call.call_id] = record
        out: list[Decision] = []
        self._place(record)
        self._serve_waiting_call(record, now, out)
        if record.state == "waiting" and queue.announces:
            self._announce(record, now, out)
        return out

    def offer_ringing(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        self._advance(now)
        call = self._calls.get(call_id)
        agent = self._agents.get(agent_id)
        out: list[Decision] = []
        if (
            call is not None
            and agent is not None
            and call.state == "offered"
            and agent_id in call.offered_to
            and agent.state == "reserved"
        ):
            self._set_state(agent, "ringing", None, now, out)
        return out

    def offer_answered(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        """The agent took the call. An answer arriving after the offer was given up on still
        counts (the node has bridged them) unless the agent is busy with another call."""
        self._advance(now)
        call = self._calls.get(call_id)
        agent = self._agents.get(agent_id)
        out: list[Decision] = []
        if call is None or agent is None or call.state == "connected":
            return out
        if agent.call_id not in (None, call_id) or agent.state in ("on_call", "wrap_up"):
            return out
        if call.state == "waiting":
            self._unplace(call)
        others = [a for a in call.offered_to if a != agent_id]
        self._set_call_state(call, "connected")
        call.offered_to = []
        call.offer_deadline = None
        call.agent_id = agent_id
        queue = self._queues.get(call.queue_id)
        call.wrap_up_seconds = queue.wrap_up_seconds if queue is not None else 0.0
        agent.call_id = call_id
        agent.calls_handled += 1
        agent.talk_started = now
        agent.work_queue_id = call.queue_id
        self._set_state(agent, "on_call", None, now, out)
        stats = self._stats.get(call.queue_id)
        if stats is not None and call.callback_number is None and not call.handed_on:
            stats.answered += 1
            if queue is not None and now - call.enqueued_at <= queue.service_level_seconds:
                stats.answered_within_service_level += 1
        out.append(CallLeft(call_id=call_id, queue_id=call.queue_id, why="answered"))
        for other_id in others:
            other = self._agents.get(other_id)
            if other is not None:
                self._become_free(other, now, out, idle_again=False)
        return out

    def offer_failed(
        self, call_id: UUID, agent_id: UUID, reason: str, now: float
    ) -> list[Decision]:
        """An offer ended unanswered. The call goes back to its place; an agent who did not
        pick up goes away ("no_answer"); "caller_gone" ends the call."""
        self._advance(now)
        call = self._calls.get(call_id)
        agent = self._agents.get(agent_id)
        out: list[Decision] = []
        if call is None or agent is None or call.state != "offered":
            return out
        if agent_id not in call.offered_to:
            return out
        self._offer_failed(call, agent, reason, now, out)
        return out

    def _offer_failed(
        self, call: CallRecord, agent: AgentRecord, reason: str, now: float, out: list[Decision]
    ) -> None:
        call.offered_to.remove(agent.spec.agent_id)
        if reason == "caller_gone" and call.callback_number is None:
            released = [agent, *(self._agents[a] for a in call.offered_to if a in self._agents)]
            call.offered_to = []
            self._forget(call)
            if not call.handed_on:
                self._stats_of(call).abandoned += 1
            out.append(CallLeft(call_id=call.spec.call_id, queue_id=call.queue_id, why="abandoned"))
            for each in released:
                self._become_free(each, now, out, idle_again=False)
            return
        if not call.offered_to:
            self._return_call(call, now, out)
        if reason in ("caller_gone", "answered_elsewhere"):
            self._become_free(agent, now, out, idle_again=False)
        else:
            self._did_not_answer(
                agent, "offer_refused" if reason == "refused" else "no_answer", now, out
            )
        self._serve_waiting_call(call, now, out)

    def call_ended(self, call_id: UUID, now: float, agent_id: UUID | None = None) -> list[Decision]:
        """The caller hung up while waiting or ringing (abandoned), or the talk ended (the agent
        goes to wrap-up). A callback's call id ends twice: first the original caller's leg
        (after asking for the callback; changes nothing), then the dial-back, whose end
        carries the agent."""
        self._advance(now)
        call = self._calls.get(call_id)
        out: list[Decision] = []
        if call is None:
            agent = self._agents.get(agent_id) if agent_id is not None else None
            if agent is not None and agent.state == "on_call" and agent.call_id == call_id:
                # The end of a call the agent dialed themself: no queue, no wrap-up time.
                self._start_wrap_up(agent, 0.0, now, out)
            return out
        if call.callback_number is not None:
            if agent_id is None and not call.caller_left:
                call.caller_left = True
                return out
            if call.state != "connected" or agent_id not in (None, call.agent_id):
                return out
        if call.state == "connected":
            self._forget(call)
            agent = self._agents.get(call.agent_id) if call.agent_id is not None else None
            if agent is not None and agent.state == "on_call" and agent.call_id == call_id:
                self._start_wrap_up(agent, call.wrap_up_seconds, now, out)
            return out
        released = [self._agents[a] for a in call.offered_to if a in self._agents]
        call.offered_to = []
        self._forget(call)
        if not call.handed_on:
            self._stats_of(call).abandoned += 1
        out.append(CallLeft(call_id=call_id, queue_id=call.queue_id, why="abandoned"))
        for agent in released:
            self._become_free(agent, now, out, idle_again=False)
        return out

    def transferred(
        self, call_id: UUID, agent_id: UUID, now: float, to_agent_id: UUID | None = None
    ) -> list[Decision]:
        """The agent talking on the call handed it on; they go to wrap-up. Handed to another
        agent (`to_agent_id`), the call is offered to them at once when they are available, and
        otherwise waits in its queue in its old place (as it does when they do not answer), with
        its overflow clock restarted. Handed to a queue or a number, the call is no longer the
        core's: a queue transfer enqueues it again as a new arrival there."""
        self._advance(now)
        call = self._calls.get(call_id)
        out: list[Decision] = []
        if call is None or call.state != "connected" or call.agent_id != agent_id:
            return out
        agent = self._agents.get(agent_id)
        if agent is not None and agent.state == "on_call" and agent.call_id == call_id:
            self._start_wrap_up(agent, call.wrap_up_seconds, now, out)
        queue = self._queues.get(call.queue_id)
        if to_agent_id is None or queue is None:
            self._forget(call)
            return out
        call.agent_id = None
        call.handed_on = True
        self._set_call_state(call, "waiting")
        call.overflow_at = now + queue.max_wait_seconds
        target = self._agents.get(to_agent_id)
        if target is not None and target.state == "available":
            self._offer(call, [target], now, out)
        else:
            self._place(call)
            self._serve_waiting_call(call, now, out)
        return out

    def consult_started(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        """The agent talking on the call is ringing `agent_id` to consult before handing the
        call over (an attended transfer): that agent is busy (on_call with this call) from now
        on, as if they had dialed a call of their own."""
        return self.dialing(call_id, agent_id, now)

    def consult_ended(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        """The consulted agent is off the consultation without taking the call: free again (the
        call stays with the agent who consulted them)."""
        self._advance(now)
        agent = self._agents.get(agent_id)
        out: list[Decision] = []
        call = self._calls.get(call_id)
        if agent is None or agent.state != "on_call" or agent.call_id != call_id:
            return out
        if call is not None and call.agent_id == agent_id:
            return out  # they took it over already
        agent.talk_started = None
        self._become_free(agent, now, out, idle_again=False)
        return out

    def consult_completed(
        self, call_id: UUID, agent_id: UUID, to_agent_id: UUID, now: float
    ) -> list[Decision]:
        """The attended transfer is done: the consulted agent has the call, the one who
        consulted goes to wrap-up."""
        self._advance(now)
        call = self._calls.get(call_id)
        out: list[Decision] = []
        target = self._agents.get(to_agent_id)
        if call is None or call.state != "connected" or call.agent_id != agent_id:
            return out
        agent = self._agents.get(agent_id)
        if agent is not None and agent.state == "on_call" and agent.call_id == call_id:
            self._start_wrap_up(agent, call.wrap_up_seconds, now, out)
        call.agent_id = to_agent_id
        call.handed_on = True
        if target is not None:
            target.call_id = call_id
            target.work_queue_id = call.queue_id
            if target.state != "on_call":
                target.talk_started = now
                self._set_state(target, "on_call", None, now, out)
        return out

    def dialing(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        """The agent placed an outbound call of their own: busy (on_call) until it ends. An
        agent who was away returns to away afterwards; one in wrap-up ends it now. An agent
        being offered a call is left alone (their line is taken, so that offer fails)."""
        self._advance(now)
        agent = self._agents.get(agent_id)
        out: list[Decision] = []
        if agent is None or agent.state in ("on_call", "reserved", "ringing"):
            return out
        if agent.state == "away" and agent.pending is None:
            agent.pending, agent.pending_reason = "away", agent.reason
        elif agent.state == "offline":
            agent.pending, agent.pending_reason = "offline", None
        agent.wrap_up_until = None
        agent.call_id = call_id
        agent.talk_started = now
        agent.work_queue_id = None
        self._set_state(agent, "on_call", None, now, out)
        return out

    def callback_requested(self, call_id: UUID, number: str, now: float) -> list[Decision]:
        """The caller asked to be called back on `number`: the call keeps its place without a
        caller holding; when its turn comes the decision is a DialBack."""
        if not number.strip():
            raise ValueError("a callback needs the number to call back")
        self._advance(now)
        call = self._calls.get(call_id)
        if call is None or call.state == "connected" or call.callback_number is not None:
            return []
        call.callback_number = number
        call.overflow_at = None
        call.next_announce_at = None
        return []

    def callback_failed(self, call_id: UUID, agent_id: UUID, now: float) -> list[Decision]:
        """The customer did not answer the dial-back: the callback is over, the agent wraps
        up."""
        self._advance(now)
        call = self._calls.get(call_id)
        out: list[Decision] = []
        if call is None or call.callback_number is None:
            return out
        if call.agent_id != agent_id and agent_id not in call.offered_to:
            return out
        released = [self._agents[a] for a in call.offered_to if a in self._agents]
        call.offered_to = []
        self._forget(call)
        out.append(CallLeft(call_id=call_id, queue_id=call.queue_id, why="callback_failed"))
        agent = self._agents.get(agent_id)
        if agent is not None and agent.state == "on_call" and agent.call_id == call_id:
            self._start_wrap_up(agent, call.wrap_up_seconds, now, out)
        for each in released:
            self._become_free(each, now, out, idle_again=False)
        return out

    # --- timers -------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Decision]:
        """Whatever fell due by `now`, oldest first: offer timeouts (as no answer), wrap-up
        ends, overflows (once per call), announcements."""
        self._advance(now)
        out: list[Decision] = []
        while True:
            due = self._due()
            if due is None or due[0] > now:
                return out
            _, kind, record = due
            if isinstance(record, AgentRecord):
                self._finish_wrap_up(record, now, out)
            elif kind == 0:
                for agent_id in list(record.offered_to):
                    self._offer_failed(record, self._agents[agent_id], "no_answer", now, out)
            elif kind == 2:
                self._overflow(record, now, out)
            else:
                self._announce_due(record, now, out)

    def _announce_due(self, first: CallRecord, now: float, out: list[Decision]) -> None:
        """Announcements in a row: they only ever arm later announcements, so all those due
        before any other timer go without looking at the other timers again. (A lapsed entry
        at the top of another heap only ends the row early.)"""
        others = [
            heap[0][0]
            for heap in (self._offer_timers, self._wrap_up_timers, self._overflow_timers)
            if heap
        ]
        before = min(others, default=math.inf)
        call: CallRecord | None = first
        while call is not None:
            self._announce(call, now, out)
            head = self._next_announcement()
            call = head[2] if head is not None and head[0] <= now and head[0] < before else None

    # --- matching -----------------------------------------------------------------------------

    def _serve_agent(self, agent: AgentRecord, now: float, out: list[Decision]) -> None:
        """An available agent takes the first waiting call (smallest virtual time) among
        those it is eligible for in all its queues."""
        levels = agent.spec.skills
        best: OrderKey | None = None
        for queue_id in self._indexed.get(agent.spec.agent_id, ()):
            groups = self._groups.get(queue_id)
            if not groups:
                continue
            for signature, keys in groups.items():
                head = keys[0]
                if (best is None or head < best) and satisfies(levels, signature):
                    best = head
        if best is not None:
            call = self._calls[best[2]]
            self._unplace(call)
            self._offer(call, [agent], now, out)

    def _serve_waiting_call(self, call: CallRecord, now: float, out: list[Decision]) -> None:
        """A call (back) in its place is offered to its queue's eligible available agents,
        chosen by the queue's strategy."""
        if call.state != "waiting" or call.spec.call_id not in self._calls:
            return
        available = self._available.get(call.queue_id)
        if not available:
            return
        queue_id = call.queue_id
        signature = call.signature
        candidates = [
            (agent.spec.queues[queue_id], agent)
            for agent in available.values()
            if satisfies(agent.spec.skills, signature)
        ]
        if not candidates:
            return
        queue = self._queues[queue_id]
        chosen = strategies.choose(
            queue.strategy,
            candidates,
            skill_names={*queue.required_skills, *(name for name, _ in signature)},
            round_robin_last=self._stats[queue_id].round_robin_last,
            single=call.callback_number is not None,
        )
        self._unplace(call)
        self._offer(call, chosen, now, out)

    def _offer(
        self, call: CallRecord, agents: list[AgentRecord], now: float, out: list[Decision]
    ) -> None:
        queue = self._queues[call.queue_id]
        call_id = call.spec.call_id
        self._set_call_state(call, "offered")
        call.offered_to = [agent.spec.agent_id for agent in agents]
        call.offer_deadline = now + queue.offer_timeout_seconds + OFFER_GRACE_SECONDS
        heappush(self._offer_timers, (call.offer_deadline, call.seq, call))
        if queue.strategy == "round_robin":
            self._stats[call.queue_id].round_robin_last = agents[0].seq
        out.append(self._offer_decision(call, agents, queue.offer_timeout_seconds))
        for agent in agents:
            agent.call_id = call_id
            self._set_state(agent, "reserved", None, now, out)

    # --- call bookkeeping ---------------------------------------------------------------------

    def _return_call(self, call: CallRecord, now: float, out: list[Decision]) -> None:
        """Nobody took the offer: back to the call's own place (same virtual time)."""
        call.offered_to = []
        call.offer_deadline = None
        if call.queue_id not in self._queues:
            self._forget(call)
            if call.callback_number is None:
                out.append(self._overflow_decision(call, call.queue_id, HANGUP))
            out.append(CallLeft(call_id=call.spec.call_id, queue_id=call.queue_id, why="overflow"))
            return
        queue = self._queues[call.queue_id]
        if call.next_announce_at is None and call.callback_number is None and queue.announces:
            call.next_announce_at = now  # offered on arrival, so never told its place
        self._place(call)

    def _overflow(self, call: CallRecord, now: float, out: list[Decision]) -> None:
        queue_id = call.queue_id
        spec = self._queues[queue_id].overflow
        call.overflowed = True
        call.overflow_at = None
        self._stats[queue_id].overflowed += 1
        target = None
        if spec.action == "queue":
            target = self._queues.get(spec.queue_id) if spec.queue_id is not None else None
            if target is None:
                spec = OverflowSpec("hangup", message=spec.message)
        out.append(self._overflow_decision(call, queue_id, spec))
        if spec.action == "callback":
            return  # the caller keeps their place while offered a call back
        out.append(CallLeft(call_id=call.spec.call_id, queue_id=queue_id, why="overflow"))
        if target is None:
            self._forget(call)
            return
        self._unplace(call)
        call.queue_id = target.queue_id
        call.virtual_time = self._virtual_time(call.enqueued_at, call.spec.priority, target)
        call.next_announce_at = None
        self._place(call)
        self._serve_waiting_call(call, now, out)
        if call.state == "waiting" and target.announces:
            self._announce(call, now, out)

    def _announce(self, call: CallRecord, now: float, out: list[Decision]) -> None:
        queue = self._queues[call.queue_id]
        if not queue.announces or call.callback_number is not None:
            call.next_announce_at = None
            return
        position = self._position(call)
        ewt = None
        if queue.announce_ewt:
            stats = self._stats[call.queue_id]
            wait = positional_wait_seconds(
                position, stats.aht_seconds, self._staffed(call.queue_id)
            )
            ewt = math.ceil(wait)
        out.append(
            Announce(
                call_id=call.spec.call_id,
                queue_id=call.queue_id,
                node_id=call.spec.node_id,
                position=position if queue.announce_position else None,
                ewt_seconds=ewt,
            )
        )
        every = queue.announce_every_seconds
        last = now if call.next_announce_at is None else call.next_announce_at
        # Missed turns are skipped, not replayed, and the call keeps its own rhythm, so
        # callers who waited through a pause are not all announced to at one instant after.
        due = last + every * (math.floor((now - last) / every) + 1)
        call.next_announce_at = due
        heappush(self._announce_timers, (due, call.seq, call))

    # --- agent bookkeeping --------------------------------------------------------------------

    def _set_state(
        self,
        agent: AgentRecord,
        state: AgentState,
        reason: str | None,
        now: float,
        out: list[Decision],
    ) -> None:
        was_available = agent.state == "available"
        self._count(agent, -1)
        agent.state = state
        agent.reason = reason
        agent.since = now
        self._count(agent, 1)
        if was_available and state != "available":
            self._unindex(agent)
        elif state == "available" and not was_available:
            self._index(agent)
        out.append(self._changed(agent))

    def _become_free(
        self, agent: AgentRecord, now: float, out: list[Decision], *, idle_again: bool
    ) -> None:
        """Work (or an offer) is over: the pending state, else available and served.
        `idle_again`: idle from now (after a call), or still idle since before (an offer that
        never rang through)."""
        pending, pending_reason = agent.pending, agent.pending_reason
        agent.pending = agent.pending_reason = None
        agent.call_id = None
        agent.wrap_up_until = None
        if pending is not None and pending != "available":
            self._set_state(agent, pending, pending_reason, now, out)
        elif agent.spec.device is None:
            self._set_state(agent, "away", "no_device", now, out)
        else:
            if idle_again:
                agent.idle_since = now
            self._set_state(agent, "available", None, now, out)
            self._serve_agent(agent, now, out)

    def _did_not_answer(
        self, agent: AgentRecord, reason: str, now: float, out: list[Decision]
    ) -> None:
        pending, pending_reason = agent.pending, agent.pending_reason
        agent.pending = agent.pending_reason = None
        agent.call_id = None
        if pending is not None and pending != "available":
            self._set_state(agent, pending, pending_reason, now, out)
        else:
            self._set_state(agent, "away", reason, now, out)

    def _start_wrap_up(
        self, agent: AgentRecord, seconds: float, now: float, out: list[Decision]
    ) -> None:
        agent.talk_seconds = now - agent.talk_started if agent.talk_started is not None else 0.0
        agent.talk_started = None
        agent.wrap_up_started = now
        if seconds <= 0:
            self._finish_wrap_up(agent, now, out)
            return
        agent.wrap_up_until = now + seconds
        self._set_state(agent, "wrap_up", None, now, out)
        heappush(self._wrap_up_timers, (agent.wrap_up_until, agent.seq, agent))

    def _finish_wrap_up(self, agent: AgentRecord, now: float, out: list[Decision]) -> None:
        if agent.work_queue_id is not None and (stats := self._stats.get(agent.work_queue_id)):
            stats.handled(agent.talk_seconds + max(0.0, now - agent.wrap_up_started))
        agent.work_queue_id = None
        agent.talk_seconds = 0.0
        self._become_free(agent, now, out, idle_again=True)

    # --- persistence --------------------------------------------------------------------------

    @classmethod
    def restore(cls, data: bytes) -> Acd:
        """An ACD in exactly the state `snapshot` saved."""
        acd = cls()
        acd._rebuild(cls._load(data))
        return acd

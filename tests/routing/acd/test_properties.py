"""Properties under random traffic: any interleaving of calls, presence changes, offer
outcomes, hang-ups and time keeps the ACD's promises, and a restored copy behaves the same."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from routing.acd import (
    AGING_SECONDS,
    Acd,
    AcdError,
    AgentChanged,
    AgentSpec,
    CallSpec,
    CallView,
    Decision,
    DialBack,
    Offer,
    OverflowSpec,
    QueueSpec,
)
from routing.acd.model import OverflowAction
from tests.routing.acd.support import Desk, aid, cid, qid

QUEUES = [qid(f"q{n}") for n in range(3)]
AGENTS = [aid(f"a{n}") for n in range(6)]
SKILL_NAMES = ("spanish", "Billing", "VIP")
STRATEGIES = ("longest_idle", "round_robin", "fewest_calls", "skills_based", "ring_all")
REASONS = (
    "no_answer",
    "busy",
    "rejected",
    "unreachable",
    "caller_gone",
    "answered_elsewhere",
    "refused",
)

call_skills = st.sampled_from(({}, {}, {"spanish": 1}, {"BILLING": 2}, {"vip": 1}))
agent_skills = st.dictionaries(st.sampled_from(SKILL_NAMES), st.integers(1, 3), max_size=3)


@st.composite
def queue_specs(draw: st.DrawFn, queue_id: UUID) -> QueueSpec:
    action: OverflowAction = draw(st.sampled_from(("queue", "voicemail", "callback", "hangup")))
    target = draw(st.sampled_from([q for q in QUEUES if q != queue_id]))
    return QueueSpec(
        queue_id=queue_id,
        strategy=draw(st.sampled_from(STRATEGIES)),
        priority=draw(st.integers(0, 10)),
        required_skills=draw(
            st.dictionaries(st.sampled_from(SKILL_NAMES), st.integers(1, 2), max_size=1)
        ),
        max_wait_seconds=draw(st.sampled_from((30.0, 120.0, 600.0))),
        overflow=OverflowSpec(action, queue_id=target if action == "queue" else None),
        wrap_up_seconds=draw(st.sampled_from((0.0, 10.0, 45.0))),
        offer_timeout_seconds=draw(st.sampled_from((5.0, 20.0))),
        announce_position=draw(st.booleans()),
        announce_ewt=draw(st.booleans()),
        announce_every_seconds=30.0,
    )


@st.composite
def agent_specs(draw: st.DrawFn, agent_id: UUID) -> AgentSpec:
    return AgentSpec(
        agent_id=agent_id,
        skills=draw(agent_skills),
        queues=draw(
            st.dictionaries(st.sampled_from(QUEUES), st.integers(1, 10), min_size=2, max_size=3)
        ),
        device=draw(st.sampled_from((f"sip:{agent_id.hex[:6]}@10.0.0.9:5060", "+15550100", None))),
    )


def meets(levels: Mapping[str, int], required: Mapping[str, int]) -> bool:
    return all(levels.get(name.lower(), 0) >= level for name, level in required.items())


class AcdMachine(RuleBasedStateMachine):
    """The core under random inputs, with an optional twin restored from a snapshot that must
    answer every later input identically."""

    def __init__(self) -> None:
        super().__init__()
        self.acd = Acd()
        self.twin: Acd | None = None
        self.now = 1000.0
        self.queues: dict[UUID, QueueSpec] = {}
        self.calls: list[UUID] = []
        self.offers = 0

    # --- plumbing ---------------------------------------------------------------------------

    def apply(self, method: str, *args: Any) -> list[Decision]:
        before = self.acd.snapshot()
        waiting_before = {c.call_id: c for c in self.acd.calls() if c.state == "waiting"}
        states_before = {a.agent_id: a.state for a in self.acd.agents()}
        try:
            out: list[Decision] = getattr(self.acd, method)(*args)
        except (AcdError, ValueError) as error:
            assert self.acd.snapshot() == before, f"refused {method} changed the state"
            if self.twin is not None:
                try:
                    getattr(self.twin, method)(*args)
                except type(error):
                    pass
                else:
                    raise AssertionError(f"the restored twin accepted {method}") from None
            return []
        if self.twin is not None:
            assert getattr(self.twin, method)(*args) == out, f"twin decided otherwise on {method}"
            assert self.twin.snapshot() == self.acd.snapshot()
        self.check_decisions(out, states_before, waiting_before)
        return out

    def check_decisions(
        self,
        out: list[Decision],
        states_before: Mapping[UUID, str],
        waiting_before: dict[UUID, CallView],
    ) -> None:
        """Offers go only to eligible agents who were available at that point of the input,
        and never to an agent who could have taken a call that waits ahead of it."""
        state = dict(states_before)
        calls = {c.call_id: c for c in self.acd.calls()}
        waiting_after = {k: c for k, c in calls.items() if c.state == "waiting"}
        for decision in out:
            if isinstance(decision, AgentChanged):
                state[decision.agent_id] = decision.state
                continue
            if isinstance(decision, Offer):
                agent_ids = decision.agent_ids
                assert len(agent_ids) == len(set(agent_ids)) >= 1
                devices = decision.devices
            elif isinstance(decision, DialBack):
                agent_ids = (decision.agent_id,)
                devices = (decision.device,)
            else:
                continue
            self.offers += 1
            call_skills = self.skills_of[decision.call_id]
            for agent_id, device in zip(agent_ids, devices, strict=True):
                spec = self.acd.agent_spec(agent_id)
                assert spec is not None
                assert device == spec.device
                assert state.get(agent_id) == "available", "offered an agent who was not available"
                assert self.eligible(agent_id, decision.queue_id, call_skills)
                # Nobody is passed over: no call still waiting ahead of this one was
                # open to this agent.
                offered_vt = self.virtual_times[decision.call_id]
                for other_id, other in waiting_after.items():
                    was = waiting_before.get(other_id)
                    if (
                        was is not None
                        and was.queue_id == other.queue_id
                        and self.eligible(agent_id, other.queue_id, other.skills)
                    ):
                        assert other.virtual_time >= offered_vt, "a waiting call was passed over"

    def eligible(self, agent_id: UUID, queue_id: UUID, call_skills: Mapping[str, int]) -> bool:
        spec = self.acd.agent_spec(agent_id)
        queue = self.queues.get(queue_id)
        return (
            spec is not None
            and queue is not None
            and queue_id in spec.queues
            and spec.device is not None
            and meets(spec.skills, queue.required_skills)
            and meets(spec.skills, call_skills)
        )

    @property
    def skills_of(self) -> dict[UUID, dict[str, int]]:
        return {c.call_id: c.skills for c in self.acd.calls()}

    @property
    def virtual_times(self) -> dict[UUID, float]:
        return {c.call_id: c.virtual_time for c in self.acd.calls()}

    def later(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    # --- rules ------------------------------------------------------------------------------

    @initialize(data=st.data())
    def set_up(self, data: st.DataObject) -> None:
        for queue_id in QUEUES:
            spec = data.draw(queue_specs(queue_id))
            self.queues[queue_id] = spec
            self.apply("configure_queue", spec, self.now)
        for agent_id in AGENTS:
            self.apply("set_agent", data.draw(agent_specs(agent_id)), self.now)
            self.apply("set_presence", agent_id, "available", None, self.now)
        for _ in range(data.draw(st.integers(0, 6))):
            self.enqueue(
                queue_index=data.draw(st.integers(0, 2)),
                priority=data.draw(st.integers(0, 10)),
                call_skills=data.draw(call_skills),
                again=False,
                gap=data.draw(st.floats(0, 5)),
            )

    @rule(agent_index=st.integers(0, 5))
    def available(self, agent_index: int) -> None:
        self.apply("set_presence", AGENTS[agent_index], "available", None, self.later(1))

    @rule(data=st.data())
    def reconfigure_queue(self, data: st.DataObject) -> None:
        queue_id = data.draw(st.sampled_from(QUEUES))
        spec = data.draw(queue_specs(queue_id))
        self.queues[queue_id] = spec
        self.apply("configure_queue", spec, self.later(data.draw(st.floats(0, 5))))

    @rule(queue_index=st.integers(0, 2))
    def remove_queue(self, queue_index: int) -> None:
        self.queues.pop(QUEUES[queue_index], None)
        self.apply("remove_queue", QUEUES[queue_index], self.now)

    @rule(data=st.data())
    def change_agent(self, data: st.DataObject) -> None:
        agent_id = data.draw(st.sampled_from(AGENTS))
        self.apply(
            "set_agent", data.draw(agent_specs(agent_id)), self.later(data.draw(st.floats(0, 5)))
        )

    @rule(agent_index=st.integers(0, 5))
    def remove_agent(self, agent_index: int) -> None:
        self.apply("remove_agent", AGENTS[agent_index], self.now)

    @rule(
        agent_index=st.integers(0, 5),
        state=st.sampled_from(("available", "away", "offline", "on_call")),
        reason=st.sampled_from((None, "break")),
    )
    def presence(self, agent_index: int, state: str, reason: str | None) -> None:
        self.apply("set_presence", AGENTS[agent_index], state, reason, self.later(1))

    @rule(agent_index=st.integers(0, 5))
    def end_wrap_up(self, agent_index: int) -> None:
        wrapping = [a.agent_id for a in self.acd.agents() if a.state == "wrap_up"]
        agent_id = wrapping[agent_index % len(wrapping)] if wrapping else AGENTS[agent_index]
        self.apply("end_wrap_up", agent_id, self.later(1))

    @rule(
        queue_index=st.integers(0, 3),
        priority=st.integers(0, 10),
        call_skills=call_skills,
        again=st.booleans(),
        gap=st.floats(0, 20),
    )
    def enqueue(
        self, queue_index: int, priority: int, call_skills: dict[str, int], again: bool, gap: float
    ) -> None:
        if again and self.calls:
            call_id = self.calls[-1]
        else:
            call_id = cid(f"call-{len(self.calls)}")
            self.calls.append(call_id)
        queue_id = QUEUES[queue_index] if queue_index < 3 else qid("unknown")
        spec = CallSpec(
            call_id=call_id,
            queue_id=queue_id,
            priority=priority,
            skills=call_skills,
            node_id="node-1",
            from_number="+15550001",
            to_number="+15550002",
        )
        self.apply("enqueue", spec, self.later(gap))

    @rule(data=st.data())
    def burst(self, data: st.DataObject) -> None:
        """Several calls at once, and agents coming back for them."""
        for _ in range(data.draw(st.integers(1, 4))):
            self.enqueue(
                queue_index=data.draw(st.integers(0, 2)),
                priority=data.draw(st.integers(0, 10)),
                call_skills=data.draw(call_skills),
                again=False,
                gap=data.draw(st.floats(0, 3)),
            )
        for agent_id in AGENTS:
            view = [a for a in self.acd.agents() if a.agent_id == agent_id]
            if view and view[0].state in ("away", "offline") and data.draw(st.booleans()):
                self.apply("set_presence", agent_id, "available", None, self.later(1))

    @rule(data=st.data())
    def answer_everything(self, data: st.DataObject) -> None:
        """Every offer out is answered or fails, in a random order."""
        pairs = [
            (c.call_id, a) for c in self.acd.calls() if c.state == "offered" for a in c.agent_ids
        ]
        for call_id, agent_id in data.draw(st.permutations(pairs)):
            if data.draw(st.integers(0, 3)):
                self.apply("offer_answered", call_id, agent_id, self.later(1))
            else:
                self.apply("offer_failed", call_id, agent_id, "no_answer", self.later(1))

    def offered_pair(self, data: st.DataObject) -> tuple[UUID, UUID] | None:
        pairs = [
            (c.call_id, a) for c in self.acd.calls() if c.state == "offered" for a in c.agent_ids
        ]
        if pairs and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(pairs))
        if not self.calls:
            return None
        return data.draw(st.sampled_from(self.calls)), data.draw(st.sampled_from(AGENTS))

    @rule(data=st.data())
    def ringing(self, data: st.DataObject) -> None:
        pair = self.offered_pair(data)
        if pair is not None:
            self.apply("offer_ringing", *pair, self.later(1))

    @rule(data=st.data())
    def answered(self, data: st.DataObject) -> None:
        pair = self.offered_pair(data)
        if pair is not None:
            self.apply("offer_answered", *pair, self.later(1))

    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def failed(self, data: st.DataObject, reason: str) -> None:
        pair = self.offered_pair(data)
        if pair is not None:
            self.apply("offer_failed", *pair, reason, self.later(1))

    @rule(data=st.data(), with_agent=st.booleans())
    def ended(self, data: st.DataObject, with_agent: bool) -> None:
        live = [c.call_id for c in self.acd.calls()]
        if self.calls:
            mostly_live: int = data.draw(st.integers(0, 4))
            pool = live if live and mostly_live else self.calls
            call_id = data.draw(st.sampled_from(pool))
            views = [c for c in self.acd.calls() if c.call_id == call_id and c.agent_ids]
            agent = views[0].agent_ids[0] if views and with_agent else None
            self.apply("call_ended", call_id, self.later(data.draw(st.floats(0, 60))), agent)

    @rule(data=st.data())
    def callback(self, data: st.DataObject) -> None:
        if self.calls:
            call_id = data.draw(st.sampled_from(self.calls))
            self.apply("callback_requested", call_id, "+15550009999", self.later(1))

    @rule(data=st.data())
    def callback_failed(self, data: st.DataObject) -> None:
        pair = self.offered_pair(data)
        connected = [
            (c.call_id, c.agent_ids[0])
            for c in self.acd.calls()
            if c.state == "connected" and c.agent_ids
        ]
        use_connected: bool = data.draw(st.booleans())
        if connected and use_connected:
            pair = data.draw(st.sampled_from(connected))
        if pair is not None:
            self.apply("callback_failed", *pair, self.later(1))

    @rule(seconds=st.sampled_from((0.0, 1.0, 10.0, 26.0, 50.0, 200.0)))
    def tick(self, seconds: float) -> None:
        self.apply("tick", self.later(seconds))
        deadline = self.acd.next_deadline()
        assert deadline is None or deadline > self.now

    @rule()
    def fork(self) -> None:
        self.twin = Acd.restore(self.acd.snapshot())

    def teardown(self) -> None:
        event("offers: " + ("0" if not self.offers else "1-9" if self.offers < 10 else "10+"))
        event(f"forked: {self.twin is not None}")

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def no_agent_holds_two_calls(self) -> None:
        holders: dict[UUID, UUID] = {}
        for call in self.acd.calls():
            if call.state == "waiting":
                assert call.agent_ids == ()
                continue
            for agent_id in call.agent_ids:
                assert agent_id not in holders, "an agent is booked for two calls"
                holders[agent_id] = call.call_id
        for agent in self.acd.agents():
            if agent.state in ("reserved", "ringing"):
                held = holders.get(agent.agent_id)
                assert held is not None
                assert held == agent.call_id
                assert [c.state for c in self.acd.calls() if c.call_id == held] == ["offered"]
            elif agent.state == "on_call":
                assert holders.get(agent.agent_id) == agent.call_id
            else:
                assert agent.agent_id not in holders
            if agent.state == "available":
                assert agent.device is not None

    @invariant()
    def work_is_conserved(self) -> None:
        available = [a.agent_id for a in self.acd.agents() if a.state == "available"]
        for call in self.acd.calls():
            if call.state == "waiting":
                for agent_id in available:
                    assert not self.eligible(agent_id, call.queue_id, call.skills), (
                        "an available agent is left eligible for a waiting call"
                    )

    @invariant()
    def positions_follow_virtual_time(self) -> None:
        for queue_id in self.acd.queue_ids():
            waiting = [c for c in self.acd.calls(queue_id) if c.state == "waiting"]
            ordered = sorted(waiting, key=lambda c: c.position or 0)
            assert [c.position for c in ordered] == list(range(1, len(waiting) + 1))
            times = [c.virtual_time for c in ordered]
            assert times == sorted(times)


AcdMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_random_traffic_keeps_every_promise = AcdMachine.TestCase


# --- starvation -------------------------------------------------------------------------------


def serve_stream(
    arrivals: list[tuple[float, int]], talk: list[float], queue_priority: int
) -> tuple[list[float], list[int]]:
    """One agent serves a stream of calls (gap since the previous arrival, priority) back to
    back. Returns the arrival times and the order the calls were served in; checks that each
    time the agent took the waiting call with the smallest virtual time."""
    desk = Desk()
    desk.queue("main", priority=queue_priority, wrap_up_seconds=0, max_wait_seconds=10**6)
    agent = desk.agent("ann", {"main": 5}, available=False)
    desk.acd.set_presence(agent, "available", None, desk.at(0))
    times: list[float] = []
    for gap, _ in arrivals:
        times.append((times[-1] if times else 0.0) + gap)
    index_of = {cid(f"c{n}"): n for n in range(len(arrivals))}
    served: list[int] = []
    arrived = 0
    busy_until: float | None = None
    for _ in range(4 * len(arrivals)):
        if len(served) == len(arrivals):
            break
        next_arrival = times[arrived] if arrived < len(arrivals) else float("inf")
        if busy_until is not None and busy_until <= next_arrival:
            talking = desk.acd.agent(agent).call_id
            assert talking is not None
            desk.acd.call_ended(talking, desk.at(busy_until))
            busy_until = None
        else:
            desk.at(next_arrival)
            desk.call(f"c{arrived}", "main", priority=arrivals[arrived][1])
            arrived += 1
        view = desk.acd.agent(agent)
        if view.state == "reserved" and view.call_id is not None:
            taken = index_of[view.call_id]
            waiting = [c.call_id for c in desk.acd.calls() if c.state == "waiting"]
            vt = {c.call_id: c.virtual_time for c in desk.acd.calls()}
            assert all(vt[c] >= vt[view.call_id] for c in waiting), "took a call out of order"
            served.append(taken)
            desk.acd.offer_answered(view.call_id, agent, desk.now)
            busy_until = desk.now - 1000.0 + talk[len(served) % len(talk)]
    assert sorted(served) == list(range(len(arrivals))), "some call was never served"
    return times, served


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.floats(0, 120), st.integers(0, 10)), min_size=1, max_size=40),
    talk=st.lists(st.floats(1, 300), min_size=1, max_size=10),
    queue_priority=st.integers(0, 10),
)
def test_no_call_waits_forever_behind_later_higher_priority_calls(
    arrivals: list[tuple[float, int]], talk: list[float], queue_priority: int
) -> None:
    """A call is overtaken only by calls with a smaller virtual time, and those all arrived
    within AGING_SECONDS x 10 after it: however many high-priority calls keep coming, a call
    is served after a bounded number of others."""
    times, served = serve_stream(arrivals, talk, queue_priority)
    priority = [p for _, p in arrivals]
    for position, index in enumerate(served):
        overtakers = [n for n in served[:position] if times[n] > times[index]]
        for n in overtakers:
            assert (
                times[n] - AGING_SECONDS * priority[n]
                < times[index] - AGING_SECONDS * priority[index]
            )
            assert times[n] - times[index] <= AGING_SECONDS * 10

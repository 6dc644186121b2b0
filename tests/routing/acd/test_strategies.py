"""Who a call is offered to: each strategy, member priority tiers, and skills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from routing.acd import AgentSpec, DialBack, Offer, QueueSpec
from tests.routing.acd.support import Desk, aid, cid, of


@dataclass
class Member:
    name: str
    priority: int = 5
    skills: dict[str, int] = field(default_factory=dict)
    handled: int = 0
    """Calls answered before the test call (through a queue of their own)."""
    idle_at: float = 0.0
    """When they became available (seconds into the test)."""


@dataclass
class Case:
    id: str
    strategy: str
    members: list[Member]
    expected: tuple[str, ...]
    call_skills: dict[str, int] = field(default_factory=dict)
    queue: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "longest_idle picks the agent idle the longest",
        "longest_idle",
        [Member("ann", idle_at=20), Member("bob", idle_at=10), Member("cyd", idle_at=30)],
        ("bob",),
    ),
    Case(
        "longest_idle prefers a higher member priority over a longer idle time",
        "longest_idle",
        [Member("ann", priority=2, idle_at=1), Member("bob", priority=9, idle_at=50)],
        ("bob",),
    ),
    Case(
        "round_robin starts with the first member in member order",
        "round_robin",
        [Member("ann", idle_at=30), Member("bob", idle_at=10), Member("cyd", idle_at=20)],
        ("ann",),
    ),
    Case(
        "round_robin stays within the top member priority tier",
        "round_robin",
        [Member("ann", priority=1), Member("bob", priority=7), Member("cyd", priority=7)],
        ("bob",),
    ),
    Case(
        "fewest_calls picks the agent who answered the fewest calls",
        "fewest_calls",
        [
            Member("ann", handled=3, idle_at=1),
            Member("bob", handled=1, idle_at=20),
            Member("cyd", handled=2, idle_at=5),
        ],
        ("bob",),
    ),
    Case(
        "fewest_calls breaks a tie by the longest idle time",
        "fewest_calls",
        [
            Member("ann", handled=1, idle_at=30),
            Member("bob", handled=1, idle_at=10),
            Member("cyd", handled=4, idle_at=1),
        ],
        ("bob",),
    ),
    Case(
        "fewest_calls prefers a higher member priority over fewer calls",
        "fewest_calls",
        [Member("ann", priority=3), Member("bob", priority=8, handled=5)],
        ("bob",),
    ),
    Case(
        "skills_based picks the best match over the queue's and the call's skills",
        "skills_based",
        [
            Member("ann", skills={"spanish": 3, "billing": 2}, idle_at=1),
            Member("bob", skills={"spanish": 5, "billing": 4}, idle_at=20),
            Member("cyd", skills={"spanish": 6, "billing": 1, "french": 10}, idle_at=5),
        ],
        ("bob",),
        call_skills={"billing": 1},
        queue={"required_skills": {"spanish": 1}},
    ),
    Case(
        "skills_based breaks an equal match by the longest idle time",
        "skills_based",
        [
            Member("ann", skills={"spanish": 4, "billing": 4}, idle_at=20),
            Member("bob", skills={"spanish": 6, "billing": 2}, idle_at=10),
            Member("cyd", skills={"spanish": 1, "billing": 1}, idle_at=1),
        ],
        ("bob",),
        call_skills={"billing": 1},
        queue={"required_skills": {"spanish": 1}},
    ),
    Case(
        "skills_based looks at the top member priority tier first",
        "skills_based",
        [
            Member("ann", priority=2, skills={"spanish": 10}),
            Member("bob", priority=6, skills={"spanish": 2}),
        ],
        ("bob",),
        queue={"required_skills": {"spanish": 1}},
    ),
    Case(
        "ring_all rings every eligible member of the top tier, longest idle first",
        "ring_all",
        [
            Member("ann", idle_at=20),
            Member("bob", idle_at=10),
            Member("cyd", priority=1, idle_at=1),
            Member("dan", skills={"french": 1}, idle_at=2),
        ],
        ("bob", "ann"),
        call_skills={"german": 1},
    ),
]
# dan is the only one without german in the last case: give the others the skill.
for member in CASES[-1].members:
    if member.name != "dan":
        member.skills["german"] = 2


def setup(case: Case) -> Desk:
    desk = Desk()
    desk.queue("main", case.strategy, **case.queue)
    for member in case.members:
        desk.queue("warm-" + member.name, "longest_idle")
        agent = desk.agent(
            member.name,
            {"main": member.priority, "warm-" + member.name: 1},
            skills=member.skills,
            available=False,
        )
        desk.acd.set_presence(agent, "available", None, desk.now)
        for n in range(member.handled):
            desk.call(f"warm-{member.name}-{n}", "warm-" + member.name)
            desk.serve(agent)
        desk.acd.set_presence(agent, "away", "setup", desk.now)
    for member in sorted(case.members, key=lambda m: m.idle_at):
        desk.at(member.idle_at)
        desk.acd.set_presence(aid(member.name), "available", None, desk.now)
    desk.at(100)
    return desk


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_strategy_offers_the_call_to_the_agent_it_should(case: Case) -> None:
    desk = setup(case)
    decisions = desk.call("test", "main", skills=case.call_skills)
    offers = of(Offer, decisions)
    assert len(offers) == 1
    assert offers[0].call_id == cid("test")
    assert offers[0].agent_ids == tuple(aid(name) for name in case.expected)
    assert offers[0].devices == tuple(f"sip:{name}@10.0.0.1:5060" for name in case.expected)
    for member in case.members:
        expected_state = "reserved" if member.name in case.expected else "available"
        assert desk.state(aid(member.name)) == expected_state


def test_round_robin_rotates_over_the_members_and_wraps_around() -> None:
    desk = Desk()
    desk.queue("main", "round_robin")
    agents = [desk.agent(name, {"main": 5}) for name in ("ann", "bob", "cyd")]
    chosen = []
    for n in range(5):
        decisions = desk.call(f"c{n}", "main")
        (offer,) = of(Offer, decisions)
        chosen.append(offer.agent_ids[0])
        desk.serve(offer.agent_ids[0])
    assert chosen == [agents[0], agents[1], agents[2], agents[0], agents[1]]


def test_round_robin_skips_a_member_who_is_busy() -> None:
    desk = Desk()
    desk.queue("main", "round_robin")
    ann, bob, cyd = (desk.agent(name, {"main": 5}) for name in ("ann", "bob", "cyd"))
    assert desk.offers(desk.call("c1", "main")) == [(cid("c1"), (ann,))]
    desk.acd.set_presence(bob, "away", "lunch", desk.now)
    assert desk.offers(desk.call("c2", "main")) == [(cid("c2"), (cyd,))]


def test_a_lower_tier_member_is_offered_calls_when_the_top_tier_is_busy() -> None:
    desk = Desk()
    desk.queue("main", "longest_idle")
    top = desk.agent("top", {"main": 9})
    low = desk.agent("low", {"main": 2})
    assert desk.offers(desk.call("c1", "main")) == [(cid("c1"), (top,))]
    assert desk.offers(desk.call("c2", "main")) == [(cid("c2"), (low,))]


# --- skills -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "call_skills", "agent_skills", "offered"),
    [
        ({}, {}, {}, True),
        ({"spanish": 2}, {}, {"spanish": 2}, True),
        ({"spanish": 2}, {}, {"spanish": 1}, False),
        ({"spanish": 2}, {}, {"french": 9}, False),
        ({}, {"billing": 3}, {"billing": 3}, True),
        ({}, {"billing": 3}, {"billing": 2}, False),
        ({"spanish": 1}, {"billing": 3}, {"spanish": 5}, False),
        ({"spanish": 1}, {"billing": 3}, {"spanish": 5, "billing": 4}, True),
        ({"Spanish": 2}, {"BILLING": 1}, {"spanish": 2, "Billing": 1}, True),
        ({"spanish": 2}, {"billing": 1}, {"SPANISH": 3, "billing": 1}, True),
    ],
)
def test_an_agent_is_offered_a_call_only_with_the_queue_and_call_skills(
    required: dict[str, int],
    call_skills: dict[str, int],
    agent_skills: dict[str, int],
    offered: bool,
) -> None:
    desk = Desk()
    desk.queue("main", "longest_idle", required_skills=required)
    agent = desk.agent("ann", {"main": 5}, skills=agent_skills)
    decisions = desk.call("c1", "main", skills=call_skills)
    assert desk.offers(decisions) == ([(cid("c1"), (agent,))] if offered else [])
    assert desk.state(agent) == ("reserved" if offered else "available")
    assert desk.acd.position(cid("c1")) == (None if offered else 1)


def test_a_skilled_agent_becoming_available_takes_the_call_an_unskilled_one_could_not() -> None:
    desk = Desk()
    desk.queue("main", "longest_idle")
    plain = desk.agent("plain", {"main": 5})
    assert desk.offers(desk.call("c1", "main", skills={"Spanish": 4})) == []
    assert desk.state(plain) == "available"
    skilled = desk.agent("skilled", {"main": 5}, skills={"spanish": 4})
    assert desk.acd.agent(skilled).call_id == cid("c1")
    assert desk.state(skilled) == "reserved"


def test_an_agent_gaining_a_skill_takes_the_call_waiting_for_it() -> None:
    desk = Desk()
    desk.queue("main", "longest_idle")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main", skills={"french": 2})
    spec = desk.acd.agent_spec(ann)
    assert spec is not None
    decisions = desk.acd.set_agent(
        AgentSpec(agent_id=ann, skills={"French": 2}, queues=spec.queues, device=spec.device),
        desk.now,
    )
    assert desk.offers(decisions) == [(cid("c1"), (ann,))]


def test_loosening_a_queue_requirement_offers_waiting_calls_at_once() -> None:
    desk = Desk()
    desk.queue("main", "longest_idle", required_skills={"spanish": 5})
    ann = desk.agent("ann", {"main": 5}, skills={"spanish": 2})
    desk.call("c1", "main")
    assert desk.state(ann) == "available"
    decisions = desk.acd.configure_queue(
        QueueSpec(queue_id=desk.acd.queue_ids()[0], strategy="longest_idle"), desk.now
    )
    assert desk.offers(decisions) == [(cid("c1"), (ann,))]


def test_a_ring_all_callback_rings_only_the_longest_idle_agent() -> None:
    desk = Desk()
    desk.queue("main", "ring_all")
    desk.call("c1", "main")
    desk.acd.callback_requested(cid("c1"), "+15550001111", desk.now)
    ann = desk.agent("ann", {"main": 5})
    assert desk.acd.agent(ann).call_id == cid("c1")
    desk.at(1)
    bob = desk.agent("bob", {"main": 5})
    desk.at(2)
    desk.agent("cyd", {"main": 5})
    decisions = desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now)
    (dial_back,) = of(DialBack, decisions)
    assert of(Offer, decisions) == []
    assert (dial_back.agent_id, dial_back.number) == (bob, "+15550001111")
    assert dial_back.device == "sip:bob@10.0.0.1:5060"
    assert dial_back.caller_id == "+15559870000"

"""Offers from start to end: answered, not answered, timed out, abandoned, ring-all races."""

from __future__ import annotations

import pytest

from routing.acd import AgentChanged, CallLeft, CallSpec, Offer, UnknownQueue
from tests.routing.acd.support import Desk, aid, changes, cid, of, qid


def test_an_answered_call_leaves_the_queue_and_the_agent_is_on_call() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    assert desk.state(ann) == "reserved"
    assert changes(desk.acd.offer_ringing(cid("c1"), ann, desk.now), ann) == [("ringing", None)]
    desk.at(3)
    decisions = desk.acd.offer_answered(cid("c1"), ann, desk.now)
    assert of(CallLeft, decisions) == [
        CallLeft(call_id=cid("c1"), queue_id=qid("main"), why="answered")
    ]
    view = desk.acd.agent(ann)
    assert (view.state, view.call_id, view.calls_handled) == ("on_call", cid("c1"), 1)
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.waiting, stats.answered, stats.answered_within_service_level) == (0, 1, 1)


@pytest.mark.parametrize(
    ("reason", "away_reason"),
    [
        ("no_answer", "no_answer"),
        ("busy", "no_answer"),
        ("rejected", "no_answer"),
        ("unreachable", "no_answer"),
        ("refused", "offer_refused"),
    ],
)
def test_an_unanswered_offer_puts_the_call_back_in_its_place_and_the_agent_away(
    reason: str, away_reason: str
) -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("first", "main")
    desk.at(10)
    desk.call("second", "main")
    assert desk.acd.position(cid("second")) == 1
    desk.at(20)
    decisions = desk.acd.offer_failed(cid("first"), ann, reason, desk.now)
    assert changes(decisions, ann) == [("away", away_reason)]
    assert desk.acd.position(cid("first")) == 1
    assert desk.acd.position(cid("second")) == 2
    (first,) = [c for c in desk.acd.calls() if c.call_id == cid("first")]
    assert first.enqueued_at == 1000.0
    # The next agent to come along gets the call that was offered first.
    bob = desk.agent("bob", {"main": 5})
    assert desk.acd.agent(bob).call_id == cid("first")


def test_an_unanswered_offer_goes_straight_to_the_next_available_agent() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    bob = desk.agent("bob", {"main": 5})
    decisions = desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now)
    assert desk.offers(decisions) == [(cid("c1"), (bob,))]


def test_an_offer_nobody_reports_on_times_out_after_the_grace_period() -> None:
    desk = Desk()
    desk.queue("main", offer_timeout_seconds=15)
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.acd.offer_ringing(cid("c1"), ann, desk.now)
    assert desk.acd.next_deadline() == desk.now + 20
    assert desk.acd.tick(desk.now + 19.9) == []
    assert desk.state(ann) == "ringing"
    decisions = desk.acd.tick(desk.now + 20)
    assert changes(decisions, ann) == [("away", "no_answer")]
    assert desk.acd.position(cid("c1")) == 1
    # A report arriving after the timeout changes nothing more.
    assert desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now + 21) == []


def test_a_caller_hanging_up_while_waiting_abandons_and_others_move_up() -> None:
    desk = Desk()
    desk.queue("main")
    for n in range(3):
        desk.call(f"c{n}", "main")
    decisions = desk.acd.call_ended(cid("c0"), desk.now + 5)
    assert decisions == [CallLeft(call_id=cid("c0"), queue_id=qid("main"), why="abandoned")]
    assert desk.acd.position(cid("c0")) is None
    assert [desk.acd.position(cid(f"c{n}")) for n in (1, 2)] == [1, 2]
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.waiting, stats.abandoned) == (2, 1)


def test_a_caller_hanging_up_while_ringing_frees_the_agent_for_the_next_call() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.call("c2", "main")
    desk.acd.offer_ringing(cid("c1"), ann, desk.now)
    decisions = desk.acd.call_ended(cid("c1"), desk.now)
    assert of(CallLeft, decisions)[0].why == "abandoned"
    assert desk.offers(decisions) == [(cid("c2"), (ann,))]
    # The node's own report of the dropped offer comes later and is ignored.
    assert desk.acd.offer_failed(cid("c1"), ann, "caller_gone", desk.now) == []
    assert desk.acd.agent(ann).call_id == cid("c2")


def test_caller_gone_ends_the_call_and_frees_every_agent_it_rang() -> None:
    desk = Desk()
    desk.queue("main", "ring_all")
    ann = desk.agent("ann", {"main": 5})
    bob = desk.agent("bob", {"main": 5})
    desk.call("c1", "main")
    decisions = desk.acd.offer_failed(cid("c1"), ann, "caller_gone", desk.now)
    assert of(CallLeft, decisions)[0].why == "abandoned"
    assert desk.state(ann) == desk.state(bob) == "available"
    assert desk.acd.calls() == []


def test_ring_all_first_answer_wins_and_the_others_are_free_at_once() -> None:
    desk = Desk()
    desk.queue("main", "ring_all")
    ann = desk.agent("ann", {"main": 5})
    bob = desk.agent("bob", {"main": 5})
    desk.call("c1", "main")
    desk.call("c2", "main")  # waits: everyone is ringing for c1
    decisions = desk.acd.offer_answered(cid("c1"), bob, desk.now)
    assert desk.state(bob) == "on_call"
    assert desk.offers(decisions) == [(cid("c2"), (ann,))]
    assert desk.acd.offer_failed(cid("c1"), ann, "answered_elsewhere", desk.now) == []
    assert desk.acd.agent(ann).call_id == cid("c2")


def test_ring_all_call_returns_only_when_every_offer_failed() -> None:
    desk = Desk()
    desk.queue("main", "ring_all")
    ann = desk.agent("ann", {"main": 5})
    bob = desk.agent("bob", {"main": 5})
    desk.call("c1", "main")
    desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now)
    assert desk.acd.position(cid("c1")) is None
    assert desk.state(bob) == "reserved"
    desk.acd.offer_failed(cid("c1"), bob, "busy", desk.now)
    assert desk.acd.position(cid("c1")) == 1


def test_an_answer_after_the_timeout_still_connects_the_agent() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.acd.tick(desk.now + 25)
    assert desk.state(ann) == "away"
    decisions = desk.acd.offer_answered(cid("c1"), ann, desk.now + 26)
    assert desk.state(ann) == "on_call"
    assert of(CallLeft, decisions)[0].why == "answered"
    assert desk.acd.position(cid("c1")) is None


def test_an_answer_from_an_agent_busy_with_another_call_is_ignored() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.call("c2", "main")
    assert desk.acd.offer_answered(cid("c2"), ann, desk.now) == []
    assert desk.acd.agent(ann).call_id == cid("c1")
    assert desk.acd.position(cid("c2")) == 1


def test_enqueueing_the_same_call_twice_changes_nothing() -> None:
    desk = Desk()
    desk.queue("main")
    desk.call("c1", "main")
    before = desk.acd.snapshot()
    assert desk.call("c1", "main") == []
    assert desk.acd.snapshot() == before


def test_a_call_for_an_unknown_queue_is_refused_and_changes_nothing() -> None:
    desk = Desk()
    desk.queue("main")
    before = desk.acd.snapshot()
    with pytest.raises(UnknownQueue) as refused:
        desk.acd.enqueue(
            CallSpec(
                call_id=cid("x"),
                queue_id=qid("nope"),
                priority=0,
                skills={},
                node_id="n",
                from_number="+1",
                to_number="+2",
            ),
            desk.now + 1,
        )
    assert refused.value.code == "unknown_queue"
    assert desk.acd.snapshot() == before


@pytest.mark.parametrize("event", ["ringing", "answered", "failed", "ended", "callback_failed"])
def test_events_for_unknown_calls_or_agents_change_nothing(event: str) -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    before = desk.acd.snapshot()
    stranger, ghost = aid("stranger"), cid("ghost")
    if event == "ringing":
        out = desk.acd.offer_ringing(cid("c1"), stranger, desk.now)
        out += desk.acd.offer_ringing(ghost, ann, desk.now)
    elif event == "answered":
        out = desk.acd.offer_answered(cid("c1"), stranger, desk.now)
        out += desk.acd.offer_answered(ghost, ann, desk.now)
    elif event == "failed":
        out = desk.acd.offer_failed(cid("c1"), stranger, "no_answer", desk.now)
        out += desk.acd.offer_failed(ghost, ann, "no_answer", desk.now)
    elif event == "ended":
        out = desk.acd.call_ended(ghost, desk.now)
    else:
        out = desk.acd.callback_failed(cid("c1"), ann, desk.now)
    assert out == []
    assert desk.acd.snapshot() == before


def test_every_state_change_is_reported_with_its_call() -> None:
    desk = Desk()
    desk.queue("main", wrap_up_seconds=10)
    ann = desk.agent("ann", {"main": 5})
    out = desk.call("c1", "main")
    out += desk.acd.offer_ringing(cid("c1"), ann, desk.now)
    out += desk.acd.offer_answered(cid("c1"), ann, desk.now)
    out += desk.acd.call_ended(cid("c1"), desk.now + 60)
    out += desk.acd.tick(desk.now + 70)
    seen = [(d.state, d.call_id, d.since) for d in of(AgentChanged, out)]
    assert seen == [
        ("reserved", cid("c1"), 1000.0),
        ("ringing", cid("c1"), 1000.0),
        ("on_call", cid("c1"), 1000.0),
        ("wrap_up", cid("c1"), 1060.0),
        ("available", None, 1070.0),
    ]
    assert of(Offer, out)[0].timeout_seconds == 20

"""Calls that wait too long, queues that go away, and callbacks."""

from __future__ import annotations

import pytest

from routing.acd import (
    CallLeft,
    DialBack,
    Offer,
    Overflow,
    OverflowSpec,
    QueueSpec,
)
from tests.routing.acd.support import Desk, aid, changes, cid, of, qid


@pytest.mark.parametrize(
    ("action", "stays"),
    [("voicemail", False), ("hangup", False), ("callback", True)],
)
def test_overflow_after_max_wait_applies_the_queues_action_once(action: str, stays: bool) -> None:
    desk = Desk()
    spec = OverflowSpec(action, mailbox="sales" if action == "voicemail" else None)  # type: ignore[arg-type]
    desk.queue("main", max_wait_seconds=60, overflow=spec)
    desk.call("c1", "main")
    desk.at(30)
    desk.call("c2", "main")
    assert desk.acd.next_deadline() == 1060.0
    assert desk.acd.tick(desk.at(59)) == []
    decisions = desk.acd.tick(desk.at(60))
    assert of(Overflow, decisions) == [
        Overflow(call_id=cid("c1"), queue_id=qid("main"), node_id="node-1", spec=spec)
    ]
    assert desk.acd.position(cid("c1")) == (1 if stays else None)
    assert desk.acd.position(cid("c2")) == (2 if stays else 1)
    assert of(CallLeft, decisions) == (
        [] if stays else [CallLeft(call_id=cid("c1"), queue_id=qid("main"), why="overflow")]
    )
    # Only c2 overflows later; c1 never again.
    later = desk.acd.tick(desk.at(1000))
    assert [d.call_id for d in of(Overflow, later)] == [cid("c2")]
    assert desk.acd.queue_stats(qid("main"), desk.now).overflowed == 2


def test_overflow_to_a_queue_moves_the_call_and_keeps_its_waiting_time() -> None:
    desk = Desk()
    desk.queue("backup", max_wait_seconds=30)
    spec = OverflowSpec("queue", queue_id=qid("backup"))
    desk.queue("main", max_wait_seconds=60, overflow=spec)
    desk.call("c1", "main")
    desk.at(50)
    desk.call("b1", "backup")
    decisions = desk.acd.tick(desk.at(60))
    assert of(Overflow, decisions)[0].spec == spec
    (moved,) = [c for c in desk.acd.calls() if c.call_id == cid("c1")]
    assert (moved.queue_id, moved.enqueued_at, moved.overflowed) == (qid("backup"), 1000.0, True)
    # It waited longer than b1, so it goes first in its new queue.
    assert desk.acd.position(cid("c1")) == 1
    assert desk.acd.position(cid("b1")) == 2
    # The backup queue's own max wait does not move it again (b1 does overflow: hangup).
    later = desk.acd.tick(desk.at(500))
    assert [d.call_id for d in of(Overflow, later)] == [cid("b1")]
    ann = desk.agent("ann", {"backup": 5})
    assert desk.acd.agent(ann).call_id == cid("c1")


def test_overflow_to_a_queue_with_an_available_agent_is_offered_at_once() -> None:
    desk = Desk()
    desk.queue("backup")
    desk.queue("main", max_wait_seconds=60, overflow=OverflowSpec("queue", queue_id=qid("backup")))
    ann = desk.agent("ann", {"backup": 5})
    desk.call("c1", "main")
    decisions = desk.acd.tick(desk.at(60))
    assert desk.offers(decisions) == [(cid("c1"), (ann,))]
    assert of(Offer, decisions)[0].queue_id == qid("backup")


def test_overflow_to_a_queue_that_is_gone_hangs_up_with_the_message() -> None:
    desk = Desk()
    spec = OverflowSpec("queue", queue_id=qid("nowhere"), message="Sorry")
    desk.queue("main", max_wait_seconds=60, overflow=spec)
    desk.call("c1", "main")
    (overflow,) = of(Overflow, desk.acd.tick(desk.at(60)))
    assert overflow.spec == OverflowSpec("hangup", message="Sorry")
    assert desk.acd.calls() == []


def test_a_call_ringing_an_agent_at_its_max_wait_overflows_only_if_it_comes_back() -> None:
    desk = Desk()
    desk.queue("main", max_wait_seconds=60, offer_timeout_seconds=100)
    ann = desk.agent("ann", {"main": 5}, available=False)
    desk.at(50)
    desk.call("c1", "main")  # max wait reached at 110
    desk.acd.set_presence(ann, "available", None, desk.at(100))
    assert desk.acd.agent(ann).call_id == cid("c1")
    assert of(Overflow, desk.acd.tick(desk.at(120))) == []
    desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.at(130))
    assert desk.acd.next_deadline() == 1110.0
    assert [d.call_id for d in of(Overflow, desk.acd.tick(desk.now))] == [cid("c1")]


def test_removing_a_queue_hangs_up_its_waiting_calls() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.call("c2", "main")
    decisions = desk.acd.remove_queue(qid("main"), desk.now)
    assert of(Overflow, decisions) == [
        Overflow(
            call_id=cid("c2"), queue_id=qid("main"), node_id="node-1", spec=OverflowSpec("hangup")
        )
    ]
    assert desk.acd.queue_ids() == []
    # The call that was ringing ann comes back to no queue and is hung up too.
    back = desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now)
    assert [d.call_id for d in of(Overflow, back)] == [cid("c1")]
    assert desk.acd.calls() == []


# --- callbacks --------------------------------------------------------------------------------


def callback_desk() -> Desk:
    desk = Desk()
    desk.queue("main", max_wait_seconds=60, overflow=OverflowSpec("callback"), wrap_up_seconds=20)
    for n in range(3):
        desk.at(n)
        desk.call(f"c{n}", "main")
    return desk


def test_a_callback_keeps_its_place_without_the_caller_holding() -> None:
    desk = callback_desk()
    assert [d.call_id for d in of(Overflow, desk.acd.tick(desk.at(61)))] == [cid("c0"), cid("c1")]
    assert desk.acd.callback_requested(cid("c1"), "+15550001111", desk.now) == []
    # The caller hangs up after asking; that is not an abandon.
    assert desk.acd.call_ended(cid("c1"), desk.now) == []
    assert [desk.acd.position(cid(f"c{n}")) for n in range(3)] == [1, 2, 3]
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.waiting, stats.callbacks, stats.abandoned) == (3, 1, 0)


def test_a_callback_whose_turn_comes_reserves_the_agent_and_dials_back() -> None:
    desk = callback_desk()
    desk.acd.callback_requested(cid("c0"), "+15550001111", desk.now)
    desk.acd.call_ended(cid("c0"), desk.now)
    ann = desk.agent("ann", {"main": 5})
    decisions = desk.acd.tick(desk.now)
    view = desk.acd.agent(ann)
    assert (view.state, view.call_id) == ("reserved", cid("c0"))
    assert decisions == []
    # The dial-back rings the agent, who answers, then the customer is called and talks.
    desk.acd.offer_ringing(cid("c0"), ann, desk.now)
    desk.acd.offer_answered(cid("c0"), ann, desk.now)
    assert desk.state(ann) == "on_call"
    decisions = desk.acd.call_ended(cid("c0"), desk.at(200), agent_id=ann)
    assert changes(decisions, ann) == [("wrap_up", None)]


def test_the_dial_back_decision_carries_the_number_and_caller_id() -> None:
    desk = callback_desk()
    ann = desk.agent("ann", {"main": 5}, available=False)
    desk.acd.callback_requested(cid("c0"), "+15550001111", desk.now)
    decisions = desk.acd.set_presence(ann, "available", None, desk.now)
    assert of(DialBack, decisions) == [
        DialBack(
            call_id=cid("c0"),
            queue_id=qid("main"),
            node_id="node-1",
            agent_id=ann,
            device="sip:ann@10.0.0.1:5060",
            number="+15550001111",
            caller_id="+15559870000",
            timeout_seconds=20,
        )
    ]
    assert of(Offer, decisions) == []


def test_a_dial_back_the_agent_misses_goes_back_to_its_place() -> None:
    desk = callback_desk()
    ann = desk.agent("ann", {"main": 5}, available=False)
    desk.acd.callback_requested(cid("c0"), "+15550001111", desk.now)
    desk.acd.set_presence(ann, "available", None, desk.now)
    decisions = desk.acd.offer_failed(cid("c0"), ann, "no_answer", desk.now)
    assert changes(decisions, ann) == [("away", "no_answer")]
    assert desk.acd.position(cid("c0")) == 1


def test_a_failed_callback_ends_it_and_the_agent_wraps_up() -> None:
    desk = callback_desk()
    ann = desk.agent("ann", {"main": 5}, available=False)
    desk.acd.callback_requested(cid("c0"), "+15550001111", desk.now)
    desk.acd.set_presence(ann, "available", None, desk.now)
    desk.acd.offer_answered(cid("c0"), ann, desk.now)
    decisions = desk.acd.callback_failed(cid("c0"), ann, desk.now)
    assert of(CallLeft, decisions) == [
        CallLeft(call_id=cid("c0"), queue_id=qid("main"), why="callback_failed")
    ]
    assert changes(decisions, ann) == [("wrap_up", None)]
    assert cid("c0") not in [c.call_id for c in desk.acd.calls()]


def test_a_dial_back_ends_even_when_its_end_does_not_name_the_agent() -> None:
    desk = callback_desk()
    ann = desk.agent("ann", {"main": 5}, available=False)
    desk.acd.callback_requested(cid("c0"), "+15550001111", desk.now)
    desk.acd.set_presence(ann, "available", None, desk.now)
    desk.acd.offer_answered(cid("c0"), ann, desk.now)
    # The original caller's leg ends first (that changes nothing), then the dial-back.
    assert desk.acd.call_ended(cid("c0"), desk.now) == []
    assert desk.state(ann) == "on_call"
    assert changes(desk.acd.call_ended(cid("c0"), desk.now), ann) == [("wrap_up", None)]


def test_a_callback_asked_for_while_ringing_returns_as_a_callback_when_the_caller_goes() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.acd.callback_requested(cid("c1"), "+15550001111", desk.now)
    decisions = desk.acd.offer_failed(cid("c1"), ann, "caller_gone", desk.now)
    # ann is free again and the callback is hers at once.
    assert of(CallLeft, decisions) == []
    assert [d.agent_id for d in of(DialBack, decisions)] == [ann]


def test_a_callback_without_a_number_is_refused() -> None:
    desk = callback_desk()
    before = desk.acd.snapshot()
    with pytest.raises(ValueError, match="number"):
        desk.acd.callback_requested(cid("c0"), " ", desk.now + 1)
    assert desk.acd.snapshot() == before


def test_a_bad_overflow_spec_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="queue_id"):
        OverflowSpec("queue")
    with pytest.raises(ValueError, match="itself"):
        QueueSpec(
            queue_id=qid("a"), strategy="longest_idle", overflow=OverflowSpec("queue", qid("a"))
        )
    assert aid("x") != qid("x")

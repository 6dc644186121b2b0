"""An agent hands a connected call on: the agent goes to wrap-up; the call goes to another
agent (at once if they are free, else first in its queue), or leaves the core (a queue or a
number); the queue's statistics count the call once."""

from __future__ import annotations

from tests.routing.acd.support import Desk, aid, changes, cid, qid


def _talking(desk: Desk) -> None:
    desk.queue("main", wrap_up_seconds=30)
    desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.acd.offer_answered(cid("c1"), aid("ann"), desk.now)


def test_to_a_free_agent_the_call_is_offered_to_them_and_counted_once() -> None:
    desk = Desk()
    _talking(desk)
    bob = desk.agent("bob", {}, available=True)  # in no queue: any agent may take a transfer
    desk.at(40)
    decisions = desk.acd.transferred(cid("c1"), aid("ann"), desk.now, to_agent_id=bob)
    assert changes(decisions, aid("ann")) == [("wrap_up", None)]
    assert desk.offers(decisions) == [(cid("c1"), (bob,))]
    assert desk.state(bob) == "reserved"
    desk.acd.offer_answered(cid("c1"), bob, desk.now)
    assert desk.acd.agent(bob).call_id == cid("c1")
    ended = desk.acd.call_ended(cid("c1"), desk.now, bob)
    assert changes(ended, bob) == [("wrap_up", None)]
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.answered, stats.abandoned) == (1, 0)


def test_to_a_busy_agent_the_call_waits_first_in_its_queue_and_anyone_may_take_it() -> None:
    desk = Desk()
    _talking(desk)
    bob = desk.agent("bob", {"main": 5}, available=False)
    desk.at(5)
    desk.call("c2", "main")  # arrived later: waits behind the transferred call
    desk.at(40)
    decisions = desk.acd.transferred(cid("c1"), aid("ann"), desk.now, to_agent_id=bob)
    assert desk.offers(decisions) == []
    assert desk.acd.position(cid("c1")) == 1
    assert desk.acd.position(cid("c2")) == 2
    carl = desk.agent("carl", {"main": 5})
    assert desk.acd.agent(carl).call_id == cid("c1")


def test_when_the_agent_does_not_answer_the_transfer_the_call_goes_back_to_its_queue() -> None:
    desk = Desk()
    _talking(desk)
    bob = desk.agent("bob", {"main": 5})
    desk.acd.transferred(cid("c1"), aid("ann"), desk.now, to_agent_id=bob)
    decisions = desk.acd.offer_failed(cid("c1"), bob, "no_answer", desk.now)
    assert changes(decisions, bob) == [("away", "no_answer")]
    assert desk.acd.position(cid("c1")) == 1
    # The caller hangs up while waiting: not counted as abandoned, it was answered once.
    desk.acd.call_ended(cid("c1"), desk.now)
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.answered, stats.abandoned) == (1, 0)


def test_to_a_queue_the_call_leaves_and_comes_back_as_a_new_arrival() -> None:
    desk = Desk()
    _talking(desk)
    desk.queue("billing")
    dana = desk.agent("dana", {"billing": 5})
    decisions = desk.acd.transferred(cid("c1"), aid("ann"), desk.now)
    assert changes(decisions, aid("ann")) == [("wrap_up", None)]
    assert desk.acd.calls() == []
    again = desk.call("c1", "billing")
    assert desk.offers(again) == [(cid("c1"), (dana,))]
    desk.acd.offer_answered(cid("c1"), dana, desk.now)
    assert desk.acd.queue_stats(qid("billing"), desk.now).answered == 1


def test_a_transfer_by_someone_not_on_the_call_changes_nothing() -> None:
    desk = Desk()
    _talking(desk)
    bob = desk.agent("bob", {"main": 5})
    assert desk.acd.transferred(cid("c1"), bob, desk.now, to_agent_id=bob) == []
    assert desk.acd.transferred(cid("nope"), aid("ann"), desk.now) == []
    assert desk.acd.agent(aid("ann")).call_id == cid("c1")
    assert desk.state(aid("ann")) == "on_call"


def test_a_consulted_agent_is_busy_then_free_again_or_takes_the_call() -> None:
    desk = Desk()
    _talking(desk)
    bob = desk.agent("bob", {"main": 5})
    assert changes(desk.acd.consult_started(cid("c1"), bob, desk.now), bob) == [("on_call", None)]
    assert changes(desk.acd.consult_ended(cid("c1"), bob, desk.now), bob) == [("available", None)]
    assert desk.state(aid("ann")) == "on_call"

    desk.acd.consult_started(cid("c1"), bob, desk.now)
    desk.at(50)
    done = desk.acd.consult_completed(cid("c1"), aid("ann"), bob, desk.now)
    assert changes(done, aid("ann")) == [("wrap_up", None)]
    assert desk.acd.agent(bob).call_id == cid("c1")
    assert changes(desk.acd.call_ended(cid("c1"), desk.now, bob), bob) == [("wrap_up", None)]
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert (stats.answered, stats.abandoned) == (1, 0)

"""Agent presence: asking for a state, refusals, wrap-up and requests that wait for it."""

from __future__ import annotations

from typing import Any

import pytest

from routing.acd import AgentChanged, AgentSpec, PresenceRefused, QueueSpec
from tests.routing.acd.support import Desk, aid, changes, cid, of, qid


def in_call(desk: Desk, name: str = "ann", wrap_up: float = 30) -> Any:
    desk.queue("main", wrap_up_seconds=wrap_up)
    agent = desk.agent(name, {"main": 5})
    desk.call("c1", "main")
    desk.acd.offer_answered(cid("c1"), agent, desk.now)
    return agent


def test_wrap_up_lasts_the_queues_time_then_the_agent_takes_the_next_call() -> None:
    desk = Desk()
    ann = in_call(desk, wrap_up=30)
    desk.call("c2", "main")
    desk.at(100)
    decisions = desk.acd.call_ended(cid("c1"), desk.now)
    assert changes(decisions, ann) == [("wrap_up", None)]
    assert desk.acd.agent(ann).wrap_up_until == desk.now + 30
    assert desk.acd.next_deadline() == desk.now + 30
    assert desk.acd.tick(desk.now + 29) == []
    decisions = desk.acd.tick(desk.now + 30)
    assert changes(decisions, ann) == [("available", None), ("reserved", None)]
    assert desk.offers(decisions) == [(cid("c2"), (ann,))]


def test_ending_wrap_up_early_makes_the_agent_available_now() -> None:
    desk = Desk()
    ann = in_call(desk)
    desk.acd.call_ended(cid("c1"), desk.at(50))
    decisions = desk.acd.end_wrap_up(ann, desk.at(55))
    assert changes(decisions, ann) == [("available", None)]
    view = desk.acd.agent(ann)
    assert (view.since, view.idle_since, view.wrap_up_until) == (1055.0, 1055.0, None)
    # The wrap-up timer that was armed no longer does anything.
    assert desk.acd.tick(desk.at(200)) == []


def test_no_wrap_up_time_makes_the_agent_available_when_the_call_ends() -> None:
    desk = Desk()
    ann = in_call(desk, wrap_up=0)
    decisions = desk.acd.call_ended(cid("c1"), desk.now)
    assert changes(decisions, ann) == [("available", None)]


@pytest.mark.parametrize("asked", ["away", "offline"])
def test_a_state_asked_for_during_a_call_applies_after_wrap_up(asked: str) -> None:
    desk = Desk()
    ann = in_call(desk)
    decisions = desk.acd.set_presence(ann, asked, "lunch", desk.now)  # type: ignore[arg-type]
    (change,) = of(AgentChanged, decisions)
    assert (change.state, change.pending) == ("on_call", asked)
    view = desk.acd.agent(ann)
    assert (view.state, view.pending, view.pending_reason) == ("on_call", asked, "lunch")
    desk.call("c2", "main")
    desk.acd.call_ended(cid("c1"), desk.at(60))
    assert desk.state(ann) == "wrap_up"
    decisions = desk.acd.tick(desk.at(90))
    assert changes(decisions, ann) == [(asked, "lunch")]
    assert desk.offers(decisions) == []
    assert desk.acd.agent(ann).pending is None
    assert desk.acd.position(cid("c2")) == 1


def test_asking_for_available_during_a_call_cancels_a_pending_break() -> None:
    desk = Desk()
    ann = in_call(desk)
    desk.acd.set_presence(ann, "away", "lunch", desk.now)
    desk.acd.set_presence(ann, "available", None, desk.now)
    assert desk.acd.agent(ann).pending is None
    desk.acd.call_ended(cid("c1"), desk.now)
    assert changes(desk.acd.end_wrap_up(ann, desk.now), ann) == [("available", None)]


def test_a_pending_offline_while_ringing_applies_when_the_offer_fails() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    desk.acd.set_presence(ann, "offline", None, desk.now)
    decisions = desk.acd.offer_failed(cid("c1"), ann, "no_answer", desk.now)
    assert changes(decisions, ann) == [("offline", None)]


def test_an_agent_going_away_is_not_offered_calls_and_coming_back_takes_one() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    assert changes(desk.acd.set_presence(ann, "away", "break", desk.now), ann) == [
        ("away", "break")
    ]
    assert desk.offers(desk.call("c1", "main")) == []
    decisions = desk.acd.set_presence(ann, "available", None, desk.at(30))
    assert changes(decisions, ann) == [("available", None), ("reserved", None)]
    assert desk.offers(decisions) == [(cid("c1"), (ann,))]


def test_asking_for_the_state_one_is_in_changes_nothing() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    assert desk.acd.set_presence(ann, "available", None, desk.at(5)) == []
    assert desk.acd.agent(ann).idle_since == 1000.0


def ask(desk: Desk, name: str, state: str) -> None:
    if state == "end_wrap_up":
        desk.acd.end_wrap_up(aid(name), desk.now + 1)
    else:
        desk.acd.set_presence(aid(name), state, None, desk.now + 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setup", "asked", "code"),
    [
        ("none", ("stranger", "available"), "unknown_agent"),
        ("no_device", ("ann", "available"), "no_device"),
        ("idle", ("ann", "on_call"), "bad_state"),
        ("idle", ("ann", "ringing"), "bad_state"),
        ("idle", ("ann", "end_wrap_up"), "not_in_wrap_up"),
        ("none", ("stranger", "end_wrap_up"), "unknown_agent"),
        ("on_call", ("ann", "end_wrap_up"), "not_in_wrap_up"),
    ],
)
def test_refused_presence_requests_say_why_and_change_nothing(
    setup: str, asked: tuple[str, str], code: str
) -> None:
    desk = Desk()
    desk.queue("main")
    if setup == "no_device":
        desk.agent("ann", {"main": 5}, device=None, available=False)
    elif setup == "idle":
        desk.agent("ann", {"main": 5})
    elif setup == "on_call":
        in_call(desk)
    before = desk.acd.snapshot()
    name, state = asked
    with pytest.raises(PresenceRefused) as refused:
        ask(desk, name, state)
    assert refused.value.code == code
    assert refused.value.message
    assert desk.acd.snapshot() == before


def test_an_available_agent_losing_the_device_goes_away() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    decisions = desk.acd.set_agent(AgentSpec(agent_id=ann, queues={qid("main"): 5}), desk.now)
    assert changes(decisions, ann) == [("away", "no_device")]
    assert desk.offers(desk.call("c1", "main")) == []


def test_an_agent_leaving_a_queue_gets_no_more_of_its_calls() -> None:
    desk = Desk()
    desk.queue("main")
    desk.queue("other")
    ann = desk.agent("ann", {"main": 5, "other": 5})
    device = desk.acd.agent(ann).device
    desk.acd.set_agent(AgentSpec(agent_id=ann, queues={qid("other"): 5}, device=device), desk.now)
    assert desk.offers(desk.call("c1", "main")) == []
    assert desk.offers(desk.call("c2", "other")) == [(cid("c2"), (ann,))]
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert sum(stats.agents.values()) == 0


def test_removing_an_agent_with_an_offer_out_gives_the_call_to_someone_else() -> None:
    desk = Desk()
    desk.queue("main")
    ann = desk.agent("ann", {"main": 5})
    desk.call("c1", "main")
    bob = desk.agent("bob", {"main": 5})
    decisions = desk.acd.remove_agent(ann, desk.now)
    assert changes(decisions, ann) == [("offline", "removed")]
    assert desk.offers(decisions) == [(cid("c1"), (bob,))]
    assert [a.agent_id for a in desk.acd.agents()] == [bob]


def test_handle_time_learns_from_talk_and_wrap_up() -> None:
    desk = Desk()
    ann = in_call(desk, wrap_up=30)
    assert desk.acd.queue_stats(qid("main"), desk.now).aht_seconds == 180
    desk.acd.call_ended(cid("c1"), desk.at(100))
    desk.acd.end_wrap_up(ann, desk.at(120))
    assert desk.acd.queue_stats(qid("main"), desk.now).aht_seconds == 120
    desk.call("c2", "main")
    desk.acd.offer_answered(cid("c2"), ann, desk.now)
    desk.acd.call_ended(cid("c2"), desk.at(140))
    desk.acd.tick(desk.at(170))
    # 20 s talk + 30 s wrap-up = 50 s, weighted 0.2 against 120 s.
    assert desk.acd.queue_stats(qid("main"), desk.now).aht_seconds == pytest.approx(106.0)


def test_member_counts_by_state_follow_the_agents() -> None:
    desk = Desk()
    desk.queue("main")
    desk.agent("ann", {"main": 5})
    bob = desk.agent("bob", {"main": 5})
    desk.agent("cyd", {"main": 5}, available=False)
    desk.acd.set_presence(bob, "away", "break", desk.now)
    desk.call("c1", "main")
    stats = desk.acd.queue_stats(qid("main"), desk.now)
    assert {k: v for k, v in stats.agents.items() if v} == {
        "reserved": 1,
        "away": 1,
        "offline": 1,
    }
    assert stats.staffed == 1
    desk.acd.configure_queue(QueueSpec(queue_id=qid("main"), strategy="ring_all"), desk.now)
    assert desk.acd.queue_stats(qid("main"), desk.now).staffed == 1

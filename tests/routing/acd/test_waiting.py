"""What waiting callers hear and what supervisors see: order with priority aging, positions,
announcements, estimated wait and the Erlang C arithmetic behind it."""

from __future__ import annotations

import math

import pytest

from routing.acd import (
    Announce,
    agents_for_service_level,
    erlang_b,
    erlang_c,
    estimated_wait_seconds,
    mean_wait_seconds,
    service_level,
)
from routing.acd.erlang import positional_wait_seconds
from tests.routing.acd.support import Desk, cid, of, qid


def served_order(desk: Desk, agent_name: str, queues: dict[str, int], count: int) -> list[str]:
    """Let one agent take `count` calls back to back; the calls' names in the order taken."""
    names = {cid(f"c{n}"): f"c{n}" for n in range(50)}
    agent = desk.agent(agent_name, queues)
    order = []
    for _ in range(count):
        call_id = desk.acd.agent(agent).call_id
        assert call_id is not None
        order.append(names[call_id])
        desk.serve(agent)
    return order


# --- order ------------------------------------------------------------------------------------


def test_equal_priority_calls_are_served_first_come_first_served() -> None:
    desk = Desk()
    desk.queue("main")
    for n in range(4):
        desk.at(n)
        desk.call(f"c{n}", "main")
    assert served_order(desk, "ann", {"main": 5}, 4) == ["c0", "c1", "c2", "c3"]


def test_a_higher_priority_call_overtakes_calls_that_arrived_a_little_earlier() -> None:
    desk = Desk()
    desk.queue("main", priority=0)
    desk.call("c0", "main", priority=0)
    desk.at(100)
    desk.call("c1", "main", priority=5)  # worth 150 s of waiting: ahead of c0
    desk.at(200)
    desk.call("c2", "main", priority=5)  # 200 - 150 = 50 > 0: behind c0
    assert [desk.acd.position(cid(f"c{n}")) for n in range(3)] == [2, 1, 3]
    assert served_order(desk, "ann", {"main": 5}, 3) == ["c1", "c0", "c2"]


def test_a_low_priority_call_is_served_before_later_high_priority_arrivals() -> None:
    desk = Desk()
    desk.queue("main")
    desk.call("c0", "main", priority=0)
    # High-priority calls keep arriving; after 300 s (10 levels x 30 s) they no longer pass it.
    for n in range(1, 12):
        desk.at(n * 40)
        desk.call(f"c{n}", "main", priority=10)
    order = served_order(desk, "ann", {"main": 5}, 12)
    assert order.index("c0") == 7
    assert order[:7] == [f"c{n}" for n in range(1, 8)]


def test_an_agent_in_several_queues_takes_the_call_that_queue_priority_puts_first() -> None:
    desk = Desk()
    desk.queue("vip", priority=8)
    desk.queue("general", priority=2)
    desk.call("c0", "general")  # virtual time 0 - 60 = -60
    desk.at(100)
    desk.call("c1", "vip")  # 100 - 240 = -140: first
    desk.at(200)
    desk.call("c2", "vip")  # 200 - 240 = -40: after c0
    order = served_order(desk, "ann", {"vip": 1, "general": 10}, 3)
    assert order == ["c1", "c0", "c2"]


def test_calls_view_shows_the_order_and_why() -> None:
    desk = Desk()
    desk.queue("main", priority=1)
    desk.call("c0", "main", priority=2, skills={"Billing": 3})
    (view,) = desk.acd.calls(qid("main"))
    assert (view.state, view.position, view.virtual_time) == ("waiting", 1, 1000.0 - 90)
    assert view.skills == {"billing": 3}


# --- announcements ----------------------------------------------------------------------------


def test_waiting_callers_hear_their_position_on_arrival_and_every_interval() -> None:
    desk = Desk()
    desk.queue("main", announce_position=True, announce_every_seconds=45)
    first = desk.call("c0", "main")
    assert of(Announce, first) == [
        Announce(
            call_id=cid("c0"), queue_id=qid("main"), node_id="node-1", position=1, ewt_seconds=None
        )
    ]
    desk.at(10)
    assert [(a.call_id, a.position) for a in of(Announce, desk.call("c1", "main"))] == [
        (cid("c1"), 2)
    ]
    assert desk.acd.next_deadline() == 1045.0
    assert desk.acd.tick(desk.at(44)) == []
    assert [(a.call_id, a.position) for a in of(Announce, desk.acd.tick(desk.at(45)))] == [
        (cid("c0"), 1)
    ]
    desk.acd.call_ended(cid("c0"), desk.at(50))
    assert [(a.call_id, a.position) for a in of(Announce, desk.acd.tick(desk.at(55)))] == [
        (cid("c1"), 1)
    ]
    # A late tick does not replay missed announcements: one, then the call's own rhythm
    # (10 + 45 n) goes on.
    assert len(of(Announce, desk.acd.tick(desk.at(500)))) == 1
    assert desk.acd.next_deadline() == 1505.0


def test_announcements_carry_the_estimated_wait_from_position_and_handle_time() -> None:
    desk = Desk()
    desk.queue("main", announce_ewt=True)
    ann = desk.agent("ann", {"main": 5})
    desk.agent("bob", {"main": 5})
    desk.call("c0", "main")
    desk.call("c1", "main")
    announced = of(Announce, desk.call("c2", "main"))
    # Position 1, two staffed agents, 180 s handle time before any data: 90 s.
    assert [(a.position, a.ewt_seconds) for a in announced] == [(None, 90)]
    desk.acd.set_presence(ann, "away", "break", desk.now)  # pending: ann is still reserved
    assert desk.acd.agent(ann).pending == "away"


def test_no_announcements_while_ringing_or_for_callbacks() -> None:
    desk = Desk()
    desk.queue("main", announce_position=True)
    ann = desk.agent("ann", {"main": 5})
    desk.call("c0", "main")
    desk.call("c1", "main")
    desk.acd.callback_requested(cid("c1"), "+15550001111", desk.now)
    assert of(Announce, desk.acd.tick(desk.at(20))) == []
    desk.acd.offer_failed(cid("c0"), ann, "no_answer", desk.now)
    assert [a.call_id for a in of(Announce, desk.acd.tick(desk.now))] == [cid("c0")]


# --- estimated wait and Erlang C --------------------------------------------------------------


def test_queue_ewt_is_erlang_c_mean_wait_from_the_live_arrival_rate() -> None:
    desk = Desk()
    desk.queue("main")
    for n in range(10):
        desk.agent(f"a{n}", {"main": 5})
    # A call every 22.5 s and 180 s handle time: 8 erlangs on 10 agents.
    for n in range(4):
        desk.at(n * 22.5)
        desk.call(f"c{n}", "main")
    view = desk.acd.queue_stats(qid("main"), desk.now)
    assert view.staffed == 10
    assert view.arrivals_per_hour == pytest.approx(160.0)
    # P(wait) = 0.40918, mean wait = 0.40918 x 180 / (10 - 8) = 36.8 s.
    assert view.ewt_seconds == 37


def test_queue_ewt_falls_back_to_position_when_the_load_meets_the_staff() -> None:
    desk = Desk()
    desk.queue("main")
    for n in range(2):
        desk.agent(f"a{n}", {"main": 5})
    for n in range(5):
        desk.at(n * 10)
        desk.call(f"c{n}", "main")
    view = desk.acd.queue_stats(qid("main"), desk.now)
    # 18 erlangs on 2 agents: 3 waiting, a new call would be 4th: 4 x 180 / 2.
    assert (view.waiting, view.offered, view.ewt_seconds) == (3, 2, 360)
    assert view.longest_wait_seconds == 20


def test_queue_ewt_without_arrival_data_uses_the_position() -> None:
    desk = Desk()
    desk.queue("main")
    view = desk.acd.queue_stats(qid("main"), desk.now)
    assert (view.arrivals_per_hour, view.staffed, view.ewt_seconds) == (None, 0, 180)


def factorial_erlang_c(n: int, a: float) -> float:
    top = a**n / math.factorial(n) * n / (n - a)
    return top / (sum(a**k / math.factorial(k) for k in range(n)) + top)


@pytest.mark.parametrize(
    ("n", "a", "expected"),
    [(10, 8.0, 0.4092), (1, 0.5, 0.5), (2, 1.0, 1 / 3), (5, 2.0, 0.0597), (20, 15.0, 0.1604)],
)
def test_erlang_c_matches_hand_computed_values(n: int, a: float, expected: float) -> None:
    assert erlang_c(n, a) == pytest.approx(expected, abs=5e-5)
    assert erlang_c(n, a) == pytest.approx(factorial_erlang_c(n, a), rel=1e-12)


def test_erlang_c_edges() -> None:
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(3, 5.0) == 1.0
    assert erlang_c(0, 1.0) == 1.0
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_b(1, 1.0) == 0.5
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="negative"):
        erlang_b(-1, 1.0)


def test_mean_wait_and_service_level_follow_erlang_c() -> None:
    assert mean_wait_seconds(10, 8.0, 180) == pytest.approx(36.826, abs=1e-3)
    assert mean_wait_seconds(2, 2.0, 180) == math.inf
    # 1 - 0.40918 x e^(-2 x 20 / 180) = 1 - 0.40918 x 0.80074 = 0.6724
    assert service_level(10, 8.0, 180, 20) == pytest.approx(0.6724, abs=1e-4)


def test_agents_for_service_level_is_the_fewest_meeting_the_target() -> None:
    # 100 calls per half hour, 180 s handle time = 10 erlangs; 80 % within 20 s.
    needed = agents_for_service_level(100 / 1800, 180, 20, 0.8)
    assert needed == 14
    # 13 agents answer 79.6 % within 20 s, 14 agents 88.8 %.
    assert service_level(14, 10.0, 180, 20) >= 0.8 > service_level(13, 10.0, 180, 20)
    assert agents_for_service_level(0, 180, 20) == 0
    with pytest.raises(ValueError, match="target_share"):
        agents_for_service_level(1, 180, 20, 1.5)


def test_estimated_wait_uses_erlang_c_below_capacity_and_position_above() -> None:
    erlang = estimated_wait_seconds(
        arrivals_per_second=8 / 180, aht_seconds=180, staffed=10, position=3
    )
    assert erlang == pytest.approx(36.826, abs=1e-3)
    over = estimated_wait_seconds(arrivals_per_second=1.0, aht_seconds=180, staffed=10, position=3)
    assert over == positional_wait_seconds(3, 180, 10) == 54
    unknown = estimated_wait_seconds(
        arrivals_per_second=None, aht_seconds=120, staffed=0, position=2
    )
    assert unknown == 240

"""Snapshot and restore: the whole state survives, and the restored core carries on exactly
as the original would have."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from routing.acd import Acd, CallSpec, Decision, DialBack, Offer, OverflowSpec
from tests.routing.acd.support import Desk, aid, cid, of, qid


def busy_desk() -> Desk:
    """A tenant mid-flight: talking, ringing, wrapping up, pending breaks, waiting calls of
    several priorities, a callback, an overflowed call, announcements and learned averages."""
    desk = Desk()
    desk.queue(
        "main",
        "longest_idle",
        wrap_up_seconds=30,
        offer_timeout_seconds=120,
        announce_position=True,
        announce_ewt=True,
    )
    desk.queue(
        "vip",
        "ring_all",
        priority=8,
        max_wait_seconds=60,
        overflow=OverflowSpec("queue", qid("main")),
    )
    desk.queue(
        "skill",
        "skills_based",
        required_skills={"spanish": 2},
        overflow=OverflowSpec("callback"),
        max_wait_seconds=90,
    )
    ann = desk.agent("ann", {"main": 5, "vip": 5})
    bob = desk.agent("bob", {"main": 5, "vip": 9})
    cyd = desk.agent("cyd", {"main": 3, "skill": 7}, skills={"spanish": 4})
    dan = desk.agent("dan", {"vip": 5, "main": 1})
    desk.agent("eve", {"main": 5}, device=None, available=False)
    desk.call("first", "main")  # ann: top tier, longest idle
    desk.acd.offer_answered(cid("first"), ann, desk.now)
    desk.at(5)
    desk.call("second", "main")  # bob: the rest of the top tier
    desk.acd.offer_ringing(cid("second"), bob, desk.now)
    desk.at(10)
    desk.call("third", "skill", skills={"billing": 1})  # cyd lacks billing: waits
    desk.call("fourth", "vip")  # ring_all: dan alone is left in vip
    desk.acd.offer_answered(cid("fourth"), dan, desk.now)
    desk.acd.set_presence(ann, "away", "lunch", desk.now)
    desk.acd.set_presence(cyd, "away", "training", desk.now)
    for n, priority in enumerate((0, 3, 9, 1)):
        desk.at(41 + n)
        desk.call(f"w{n}", "main", priority=priority)
    desk.call("v1", "vip", priority=2)
    desk.acd.callback_requested(cid("w1"), "+15550002222", desk.now)
    desk.acd.call_ended(cid("w1"), desk.now)
    desk.acd.call_ended(cid("w3"), desk.at(50))  # abandoned
    desk.acd.call_ended(cid("fourth"), desk.at(80))  # dan wraps up until 110
    desk.acd.tick(desk.at(101))  # announcements; "third" overflows to a callback prompt
    return desk


def views(acd: Acd, now: float) -> tuple[object, ...]:
    return (
        acd.agents(),
        acd.calls(),
        [acd.queue_stats(q, now) for q in acd.queue_ids()],
        acd.next_deadline(),
        acd.offers_in_flight(),
    )


def test_a_restored_core_has_the_same_state_and_views() -> None:
    desk = busy_desk()
    data = desk.acd.snapshot()
    restored = Acd.restore(data)
    assert restored.snapshot() == data
    assert views(restored, desk.now) == views(desk.acd, desk.now)
    # The state really is mid-flight.
    states = {a.agent_id: (a.state, a.pending) for a in desk.acd.agents()}
    assert states[aid("ann")] == ("on_call", "away")
    assert states[aid("bob")][0] == "ringing"
    assert states[aid("dan")][0] == "wrap_up"
    assert [c.callback_number for c in desk.acd.calls() if c.callback_number] == ["+15550002222"]
    assert any(c.overflowed for c in desk.acd.calls())


def late_vip_call() -> CallSpec:
    return CallSpec(
        call_id=cid("late"),
        queue_id=qid("vip"),
        priority=10,
        skills={},
        node_id="node-2",
        from_number="+1",
        to_number="+2",
    )


FOLLOW_UP: list[Callable[[Acd, float], list[Decision]]] = [
    lambda acd, now: acd.offer_answered(cid("second"), aid("bob"), now),
    lambda acd, now: acd.tick(now + 1),
    lambda acd, now: acd.call_ended(cid("first"), now + 2),
    lambda acd, now: acd.tick(now + 40),
    lambda acd, now: acd.set_presence(aid("cyd"), "available", None, now + 41),
    lambda acd, now: acd.enqueue(late_vip_call(), now + 42),
    lambda acd, now: acd.call_ended(cid("second"), now + 43),
    lambda acd, now: acd.tick(now + 200),
    lambda acd, now: acd.tick(now + 400),
    lambda acd, now: acd.set_presence(aid("ann"), "available", None, now + 401),
    lambda acd, now: acd.tick(now + 900),
]


def test_a_restored_core_decides_exactly_as_the_original_would() -> None:
    desk = busy_desk()
    restored = Acd.restore(desk.acd.snapshot())
    offered = 0
    for step in FOLLOW_UP:
        original_out = step(desk.acd, desk.now)
        restored_out = step(restored, desk.now)
        assert restored_out == original_out
        assert restored.snapshot() == desk.acd.snapshot()
        offered += len(of(Offer, original_out)) + len(of(DialBack, original_out))
    assert offered >= 3


def test_offers_in_flight_are_listed_for_sending_again() -> None:
    desk = busy_desk()
    restored = Acd.restore(desk.acd.snapshot())
    (offer,) = restored.offers_in_flight()
    assert isinstance(offer, Offer)
    assert (offer.call_id, offer.agent_ids) == (cid("second"), (aid("bob"),))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00garbage", msgspec.msgpack.encode({"version": 1}), msgspec.msgpack.encode([1, 0.0])],
)
def test_restoring_something_that_is_not_a_snapshot_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        Acd.restore(data)


def test_restoring_a_snapshot_of_another_version_is_refused() -> None:
    raw = msgspec.msgpack.decode(Desk().acd.snapshot())
    assert raw[0] == 1  # the version leads the snapshot
    raw[0] = 99
    with pytest.raises(ValueError, match="version 99"):
        Acd.restore(msgspec.msgpack.encode(raw))
    with pytest.raises(ValueError, match="version 2 is not supported"):
        Acd.restore(msgspec.msgpack.encode([2, "a layout of its own"]))

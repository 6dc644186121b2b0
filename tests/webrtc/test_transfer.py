"""Blind transfers from a browser agent: to another agent (who hears the caller once they
answer, while the first goes to wrap-up), to a queue (a new arrival there), and to a number
that cannot be called (the caller comes back to their queue). Refused targets change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import MailCatcher, Services
from tests.media.capture import can_capture
from tests.media.tones import tone_power
from tests.routing.center import Agent, add_agents, add_queue
from tests.webrtc.floor import AGENT_TONE, CALLER_TONE, Caller, Floor, open_floor
from tests.webrtc.softphone import PySoftphone

pytestmark = pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)")

SECOND_TONE = 1400.0


@pytest.fixture
async def two_floor(
    services: Services,
    database: str,
    smtp: tuple[MailCatcher, int],
    admin_conn: asyncpg.Connection,
    tmp_path: Path,
) -> AsyncIterator[Floor]:
    """Agent 0 in the Support queue the number leads to; agent 1 only in a Billing queue."""
    async with open_floor(
        services, database, smtp, admin_conn, tmp_path, wrap_up_seconds=60
    ) as floor:
        (second,) = await add_agents(floor.api, floor.center, 1, start=1)
        await add_queue(floor.api, floor.center, "Billing", [second], wrap_up_seconds=60)
        floor.agents.append(second)
        yield floor


async def _available(floor: Floor, agent: Agent, tone: float) -> PySoftphone:
    phone = PySoftphone(floor.ws_url, floor.token(agent), tone)
    await phone.open()
    await phone.connect_media()
    presence = await phone.ask({"type": "presence", "state": "available"}, "presence")
    assert presence["state"] == "available"
    return phone


async def _talking(floor: Floor, phone: PySoftphone) -> tuple[Caller, str]:
    caller = floor.call()
    offered = await phone.expect("offered", timeout=20)
    call_id: str = offered["call_id"]
    await phone.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
    await asyncio.sleep(1.0)
    assert await caller.hears(AGENT_TONE) > 0.5
    return caller, call_id


async def test_a_blind_transfer_to_another_agent_connects_them_and_wraps_up_the_first(
    two_floor: Floor,
) -> None:
    floor = two_floor
    first = await _available(floor, floor.agents[0], AGENT_TONE)
    second = await _available(floor, floor.agents[1], SECOND_TONE)
    try:
        caller, call_id = await _talking(floor, first)
        start = len(first.messages)
        await first.ask(
            {"type": "transfer", "call_id": call_id, "to_kind": "agent", "to": floor.agents[1].id},
            "call",
            state="ended",
        )
        ended = await first.expect("call", lambda m: m["state"] == "ended", after=start)
        assert ended["cause"] == "transferred"
        wrap = await first.expect("presence", lambda m: m["state"] == "wrap_up", after=start)
        assert wrap["call_id"] in (None, call_id)

        offered = await second.expect("offered", timeout=20)
        assert offered["call_id"] == call_id
        # Until the second agent answers the caller hears hold music, not either agent.
        assert await caller.hears(AGENT_TONE) < 0.1
        await second.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(1.0)
        assert await caller.hears(SECOND_TONE) > 0.5
        assert tone_power(second.last_heard(1.0), second.heard_rate, CALLER_TONE) > 0.5
        # The first agent hears nothing of the call any more.
        heard_since = len(first.heard)
        await asyncio.sleep(0.5)
        assert tone_power(bytes(first.heard[heard_since:]), first.heard_rate, CALLER_TONE) < 0.1

        await second.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        result = await caller.result()
        assert result.ok, result.explain()

        timeline = floor.timeline
        (transferred,) = timeline.of("call.transferred")
        assert transferred["agent_id"] == floor.agents[0].id
        assert (transferred["to_kind"], transferred["to"]) == ("agent", floor.agents[1].id)
        assert transferred["outcome"] == "offered"
        answered = [e["agent_id"] for e in timeline.of("call.offer_answered")]
        assert answered == [floor.agents[0].id, floor.agents[1].id]
        (call_ended,) = await timeline.wait("call.ended")
        assert call_ended["agent_id"] == floor.agents[1].id
        kinds = [e["type"] for e in timeline.all if e.get("call_id") == call_id]
        answered_at = [i for i, kind in enumerate(kinds) if kind == "call.offer_answered"]
        assert answered_at[0] < kinds.index("call.transferred") < answered_at[1]
        await second.expect("presence", lambda m: m["state"] == "wrap_up")
    finally:
        await first.close()
        await second.close()


async def test_a_blind_transfer_to_a_queue_is_a_new_arrival_there(two_floor: Floor) -> None:
    floor = two_floor
    first = await _available(floor, floor.agents[0], AGENT_TONE)
    second = await _available(floor, floor.agents[1], SECOND_TONE)
    billing = floor.center.queues["Billing"]
    try:
        caller, call_id = await _talking(floor, first)
        await first.ask(
            {"type": "transfer", "call_id": call_id, "to_kind": "queue", "to": billing["id"]},
            "call",
            state="ended",
        )
        offered = await second.expect("offered", timeout=20)
        assert offered["call_id"] == call_id
        assert offered["queue_id"] == billing["id"]
        await second.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(1.0)
        assert await caller.hears(SECOND_TONE) > 0.5
        await second.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        assert (await caller.result()).ok

        queued = [e["queue_id"] for e in floor.timeline.of("call.queued")]
        assert queued == [floor.queue["id"], billing["id"]]
        (transferred,) = floor.timeline.of("call.transferred")
        assert transferred["outcome"] == "queued"
        (call_ended,) = await floor.timeline.wait("call.ended")
        assert call_ended["queue_id"] == billing["id"]
    finally:
        await first.close()
        await second.close()


async def test_bad_transfer_targets_are_refused_and_the_call_goes_on(two_floor: Floor) -> None:
    floor = two_floor
    first = await _available(floor, floor.agents[0], AGENT_TONE)
    try:
        caller, call_id = await _talking(floor, first)
        refusals = {
            ("agent", floor.agents[0].id): "invalid_input",  # themself
            ("agent", floor.agents[1].id): "agent_unavailable",  # signed out
            ("agent", "00000000-0000-4000-8000-000000000000"): "not_found",
            ("queue", "00000000-0000-4000-8000-000000000000"): "unknown_queue",
            ("queue", "billing"): "invalid_input",
            ("number", "0800 123"): "invalid_input",
        }
        for (kind, to), code in refusals.items():
            start = len(first.messages)
            await first.send({"type": "transfer", "call_id": call_id, "to_kind": kind, "to": to})
            error = await first.expect("error", after=start)
            assert error["code"] == code, (kind, to, error)
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) > 0.5  # still talking
        assert not floor.timeline.of("call.transferred")

        # A number the tenant may not call: the caller is back in their queue, and rings the
        # agent again once their wrap-up is over.
        await first.ask(
            {"type": "transfer", "call_id": call_id, "to_kind": "number", "to": "+442071838750"},
            "call",
            state="ended",
        )
        transfers = await floor.timeline.wait("call.transferred", 2)
        assert [(t["agent_id"], t["outcome"]) for t in transfers] == [
            (floor.agents[0].id, "dialing"),
            (None, "refused:international_not_allowed"),
        ]
        queued = await floor.timeline.wait("call.queued", 2)
        assert [q["queue_id"] for q in queued] == [floor.queue["id"]] * 2
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) < 0.1
        assert floor.node.node.calls, "the caller is still on the line"
        start = len(first.messages)
        await first.send({"type": "wrap_up", "call_id": call_id})
        again = await first.expect("offered", after=start, timeout=20)
        assert again["call_id"] == call_id
        await first.ask({"type": "reject", "call_id": call_id}, "call")
    finally:
        await first.close()
    caller.task.cancel()


async def _consult(floor: Floor, first: PySoftphone, second: PySoftphone, call_id: str) -> int:
    """The first agent consults the second, who answers; returns where the first agent's
    messages stood before."""
    start = len(first.messages)
    await first.send(
        {
            "type": "transfer",
            "call_id": call_id,
            "to_kind": "agent",
            "to": floor.agents[1].id,
            "attended": True,
        }
    )
    await first.expect("consult", lambda m: m["state"] == "ringing", after=start)
    offered = await second.expect("offered")
    assert offered["call_id"] == call_id
    assert offered["context"]["consult_from"] == floor.agents[0].id
    await second.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
    await first.expect("consult", lambda m: m["state"] == "connected", after=start)
    return start


async def test_an_attended_transfer_lets_the_agents_talk_first_then_hands_the_call_over(
    two_floor: Floor,
) -> None:
    floor = two_floor
    first = await _available(floor, floor.agents[0], AGENT_TONE)
    second = await _available(floor, floor.agents[1], SECOND_TONE)
    try:
        caller, call_id = await _talking(floor, first)
        start = await _consult(floor, first, second, call_id)
        await asyncio.sleep(1.0)
        # The agents hear each other; the caller, on hold, hears neither.
        assert tone_power(first.last_heard(0.8), first.heard_rate, SECOND_TONE) > 0.5
        assert tone_power(second.last_heard(0.8), second.heard_rate, AGENT_TONE) > 0.5
        assert await caller.hears(AGENT_TONE) < 0.1
        assert await caller.hears(SECOND_TONE) < 0.1
        busy = [e["state"] for e in floor.timeline.of("agent.state")]
        assert "on_call" in busy

        await first.ask({"type": "transfer_complete", "call_id": call_id}, "call", state="ended")
        await asyncio.sleep(1.0)
        assert await caller.hears(SECOND_TONE) > 0.5
        assert tone_power(second.last_heard(0.8), second.heard_rate, CALLER_TONE) > 0.5
        await first.expect("presence", lambda m: m["state"] == "wrap_up", after=start)

        await second.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        assert (await caller.result()).ok
        consults = [e["state"] for e in floor.timeline.of("call.consult")]
        assert consults == ["ringing", "connected", "completed"]
        (transferred,) = floor.timeline.of("call.transferred")
        assert (transferred["attended"], transferred["outcome"]) == (True, "connected")
        (ended,) = await floor.timeline.wait("call.ended")
        assert ended["agent_id"] == floor.agents[1].id
        await second.expect("presence", lambda m: m["state"] == "wrap_up")
    finally:
        await first.close()
        await second.close()


async def test_a_cancelled_consultation_returns_the_agent_to_the_caller(two_floor: Floor) -> None:
    floor = two_floor
    first = await _available(floor, floor.agents[0], AGENT_TONE)
    second = await _available(floor, floor.agents[1], SECOND_TONE)
    try:
        caller, call_id = await _talking(floor, first)
        await _consult(floor, first, second, call_id)
        second_start = len(second.messages)
        await first.ask({"type": "transfer_cancel", "call_id": call_id}, "call", state="connected")
        ended = await second.expect("call", lambda m: m["state"] == "ended", after=second_start)
        assert ended["cause"] == "consult_ended"
        await asyncio.sleep(1.0)
        assert await caller.hears(AGENT_TONE) > 0.5
        assert tone_power(first.last_heard(0.8), first.heard_rate, CALLER_TONE) > 0.5
        # The consulted agent is free again, with no wrap-up.
        await second.expect("presence", lambda m: m["state"] == "available", after=second_start)
        # A consultation goes to a person, not a queue.
        start = len(first.messages)
        await first.send(
            {
                "type": "transfer",
                "call_id": call_id,
                "to_kind": "queue",
                "to": floor.queue["id"],
                "attended": True,
            }
        )
        assert (await first.expect("error", after=start))["code"] == "not_supported"
        await first.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        assert (await caller.result()).ok
        consults = [(e["state"], e["reason"]) for e in floor.timeline.of("call.consult")]
        assert consults == [("ringing", None), ("connected", None), ("ended", "cancelled")]
        (ended_call,) = await floor.timeline.wait("call.ended")
        assert ended_call["agent_id"] == floor.agents[0].id
        assert not floor.timeline.of("call.transferred")
    finally:
        await first.close()
        await second.close()

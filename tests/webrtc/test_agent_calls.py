"""Browser agents take calls over their persistent WebRTC leg: the caller (SIPp, playing one
tone) and the agent (a Python softphone on the agent WebSocket, playing another) hear each
other, hold puts the caller on hold music, and events agree with what happened."""

from __future__ import annotations

import asyncio

import pytest

from tests.media.capture import can_capture
from tests.media.tones import tone_power
from tests.webrtc.floor import AGENT_TONE, CALLER, CALLER_TONE, Floor
from tests.webrtc.softphone import PySoftphone

pytestmark = pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)")


async def _signed_in(floor: Floor) -> PySoftphone:
    agent = floor.agents[0]
    phone = PySoftphone(floor.ws_url, floor.token(agent), AGENT_TONE)
    hello = await phone.open()
    assert hello["agent_id"] == agent.id
    assert hello["tenant_id"] == floor.center.tenant_id
    await phone.connect_media()
    presence = await phone.ask({"type": "presence", "state": "available"}, "presence")
    assert presence["state"] == "available"
    return phone


async def test_a_caller_and_a_browser_agent_hear_each_other_through_hold_and_hang_up(
    floor: Floor,
) -> None:
    phone = await _signed_in(floor)
    try:
        caller = floor.call()
        offered = await phone.expect("offered", timeout=20)
        assert offered["from_number"] == CALLER
        assert offered["queue_id"] == floor.queue["id"]
        assert offered["waited_seconds"] >= 0
        call_id = offered["call_id"]

        await phone.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(1.5)
        # Each hears the other's tone, not merely packets.
        assert tone_power(phone.last_heard(1.0), phone.heard_rate, CALLER_TONE) > 0.5
        assert await caller.hears(AGENT_TONE) > 0.5

        await phone.ask({"type": "hold", "call_id": call_id}, "call", state="held")
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) < 0.1  # hold music, not the agent
        held_at = len(phone.heard)
        await asyncio.sleep(0.5)
        heard_on_hold = bytes(phone.heard[held_at:])
        # The agent hears nothing of the caller while the caller is on hold.
        assert tone_power(heard_on_hold, phone.heard_rate, CALLER_TONE) < 0.1

        await phone.ask({"type": "resume", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(0.3)
        assert await caller.hears(AGENT_TONE) > 0.5

        await phone.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        result = await caller.result()
        assert result.ok, result.explain()

        ended = (await floor.timeline.wait("call.ended"))[0]
        assert ended["agent_id"] == floor.agents[0].id
        assert ended["queue_id"] == floor.queue["id"]
        answered = floor.timeline.of("call.offer_answered")
        assert [e["agent_id"] for e in answered] == [floor.agents[0].id]
        assert [e["by"] for e in floor.timeline.of("call.held")] == ["agent"]
        assert [e["by"] for e in floor.timeline.of("call.resumed")] == ["agent"]
        assert not floor.timeline.of("call.offer_failed")
    finally:
        await phone.close()


async def test_the_softphone_socket_refuses_bad_tokens_and_bad_messages(floor: Floor) -> None:
    bad = PySoftphone(floor.ws_url, "not-a-token", AGENT_TONE)
    import websockets

    await bad.open_socket()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await bad.expect("hello", timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    await bad.close()

    phone = PySoftphone(floor.ws_url, floor.token(floor.agents[0]), AGENT_TONE)
    await phone.open()
    try:
        await phone.send({"type": "presence", "state": "available"})
        refused = await phone.expect("error")
        assert refused["code"] == "no_media"
        start = len(phone.messages)
        await phone._ws.send("{not json")
        assert (await phone.expect("error", after=start))["code"] == "invalid_message"
        start = len(phone.messages)
        await phone.send(
            {"type": "dtmf", "call_id": "00000000-0000-0000-0000-000000000000", "digits": "12x"}
        )
        assert (await phone.expect("error", after=start))["code"] == "invalid_message"
        start = len(phone.messages)
        await phone.send({"type": "sdp_offer", "sdp": "v=0\r\nthis is not an offer\r\n"})
        assert (await phone.expect("error", after=start))["code"] in (
            "invalid_sdp",
            "negotiation_failed",
        )
        start = len(phone.messages)
        await phone.send({"type": "answer", "call_id": "00000000-0000-0000-0000-000000000000"})
        assert (await phone.expect("error", after=start))["code"] == "no_media"
    finally:
        await phone.close()


async def test_when_the_agents_connection_drops_the_caller_hears_hold_music_until_it_is_back(
    floor: Floor,
) -> None:
    phone = await _signed_in(floor)
    try:
        caller = floor.call()
        offered = await phone.expect("offered", timeout=20)
        call_id = offered["call_id"]
        await phone.ask({"type": "answer", "call_id": call_id}, "call", state="connected")
        await asyncio.sleep(1.0)
        assert await caller.hears(AGENT_TONE) > 0.5

        # The browser's connection goes away mid-call.
        assert phone.pc is not None
        start = len(phone.messages)
        await phone.pc.close()
        await phone.expect("leg", lambda m: m["state"] in ("closed", "failed"), after=start)
        await asyncio.sleep(0.3)
        on_hold = await caller.hears(AGENT_TONE)
        assert on_hold < 0.1
        assert floor.node.node.calls, "the caller is still on the line"

        # The softphone renegotiates; the same call carries on.
        start = len(phone.messages)
        await phone.connect_media()
        await phone.expect("leg", lambda m: m["state"] == "connected", after=start)
        await asyncio.sleep(0.5)
        assert await caller.hears(AGENT_TONE) > 0.5
        heard_from = len(phone.heard)
        await asyncio.sleep(1.0)
        assert tone_power(bytes(phone.heard[heard_from:]), phone.heard_rate, CALLER_TONE) > 0.5

        await phone.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        result = await caller.result()
        assert result.ok, result.explain()
        assert len(floor.timeline.of("call.offer_answered")) == 1
    finally:
        await phone.close()

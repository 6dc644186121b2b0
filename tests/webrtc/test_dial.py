"""Click-to-dial: a browser agent calls a customer through the tenant's trunk (SIPp as the far
end, playing a tone) with one of the tenant's numbers as caller ID; both hear each other, the
router counts the agent busy until the call ends, and bad requests change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from runtime.embedded import free_port
from tests.media.capture import UdpCapture, can_capture
from tests.media.sipp import start_sipp_server
from tests.media.tones import decode_rtp_payloads, tone_power, write_tone_pcap
from tests.webrtc.floor import AGENT_TONE, NUMBER, Floor
from tests.webrtc.softphone import PySoftphone
from tests.webrtc.test_harness import _scenario

pytestmark = pytest.mark.skipif(not can_capture(), reason="capturing RTP needs AF_PACKET (root)")

CUSTOMER = "+14155550123"
CUSTOMER_TONE = 440.0


async def _presence(floor: Floor, agent_id: str, state: str) -> None:
    async with asyncio.timeout(10):
        while not any(
            e["agent_id"] == agent_id and e["state"] == state
            for e in floor.timeline.of("agent.state")
        ):
            await asyncio.sleep(0.05)


def _states(floor: Floor, agent_id: str) -> list[str]:
    return [e["state"] for e in floor.timeline.of("agent.state") if e["agent_id"] == agent_id]


async def test_an_agent_dials_a_customer_and_they_talk(
    floor: Floor, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    trunk_port = await admin_conn.fetchval(
        "select port from platform_trunks where name = 'carrier-a'"
    )
    pcap = tmp_path / "customer.pcap"
    write_tone_pcap(pcap, CUSTOMER_TONE, 30.0, codec="PCMU")
    media_port = free_port()
    heard = UdpCapture(media_port)
    heard.start()
    customer = await start_sipp_server(
        _scenario("uas_play_pcap.xml", tmp_path, PCAP=str(pcap), CODEC="PCMU", PAYLOAD_TYPE="0"),
        tmp_path,
        port=trunk_port,
        media_port=media_port,
    )
    agent = floor.agents[0]
    phone = PySoftphone(floor.ws_url, floor.token(agent), AGENT_TONE)
    try:
        await phone.open()
        await phone.connect_media()
        await phone.ask({"type": "presence", "state": "available"}, "presence")
        await asyncio.sleep(0.3)

        dialing = await phone.ask(
            {"type": "dial", "number": CUSTOMER, "caller_id": NUMBER}, "dialing"
        )
        call_id = dialing["call_id"]
        connected = await phone.expect(
            "call", lambda m: m["call_id"] == call_id and m["state"] == "connected"
        )
        assert (connected["direction"], connected["to_number"]) == ("outbound", CUSTOMER)
        await _presence(floor, agent.id, "on_call")

        await asyncio.sleep(1.5)
        assert tone_power(phone.last_heard(1.0), phone.heard_rate, CUSTOMER_TONE) > 0.5
        got = [d for packets in list(heard.by_source.values()) for d in list(packets)]
        assert tone_power(decode_rtp_payloads(got[-50:]), 8000, AGENT_TONE) > 0.5

        # On a call, the line is taken: a second dial is refused.
        start = len(phone.messages)
        await phone.send({"type": "dial", "number": CUSTOMER, "caller_id": NUMBER})
        assert (await phone.expect("error", after=start))["code"] == "busy"

        await phone.ask({"type": "hangup", "call_id": call_id}, "call", state="ended")
        _, err = await asyncio.wait_for(customer.communicate(), 15)
        assert customer.returncode == 0, err.decode(errors="replace")
        ended = (await floor.timeline.wait("call.ended"))[0]
        assert (ended["call_id"], ended["agent_id"]) == (call_id, agent.id)
        (started,) = floor.timeline.of("call.started")
        assert (started["direction"], started["from_number"]) == ("outbound", NUMBER)
        (dialed,) = floor.timeline.of("call.dialed")
        assert (dialed["agent_id"], dialed["to_number"]) == (agent.id, CUSTOMER)
        # Free again once the router has seen the end (its state change may trail call.ended).
        async with asyncio.timeout(10):
            while _states(floor, agent.id)[-2:] != ["on_call", "available"]:
                await asyncio.sleep(0.05)
    finally:
        heard.stop()
        await phone.close()
        if customer.returncode is None:
            customer.kill()
            await customer.wait()


async def test_dialing_with_a_number_the_tenant_does_not_own_or_without_audio_is_refused(
    floor: Floor,
) -> None:
    phone = PySoftphone(floor.ws_url, floor.token(floor.agents[0]), AGENT_TONE)
    try:
        await phone.open()
        start = len(phone.messages)
        await phone.send({"type": "dial", "number": CUSTOMER, "caller_id": NUMBER})
        assert (await phone.expect("error", after=start))["code"] == "no_media"
        await phone.connect_media()
        for body, code in [
            ({"number": CUSTOMER, "caller_id": "+12125550100"}, "caller_id_not_owned"),
            ({"number": "4155550123", "caller_id": NUMBER}, "invalid_message"),
            ({"number": "+442071838750", "caller_id": NUMBER}, "international_not_allowed"),
        ]:
            start = len(phone.messages)
            await phone.send({"type": "dial", **body})
            assert (await phone.expect("error", after=start))["code"] == code, body
        await asyncio.sleep(0.2)
        assert not floor.timeline.of("call.started")
        assert not floor.timeline.of("call.dialed")
    finally:
        await phone.close()

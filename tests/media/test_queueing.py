"""Queued callers on a media node, driven the way the router drives them: by commands on
`media.<node_id>.<verb>`, with the node's events read back from NATS.

SIPp is the carrier (the caller) and, with one UAS, the agents' phones: the Request-URI user
says how a phone behaves (see scenarios/agent_devices.xml). Agents' phones echo what they hear
(SIPp -rtp_echo), so audio coming back from an agent's phone proves the caller's audio got there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import socket
import sys
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest

from bus.requests import send_command
from media.audio import PcmAudio
from media.control import CallControl
from media.directory import InboundRoute, VoicemailRecord
from media.g711 import alaw_encode
from media.node import recording_aad
from media.queueing import announcement_text
from media.recorder import read_recording
from media.rtp import RtpPacket
from runtime.embedded import free_port
from switchboard.media_role import RunningNode
from tests.conftest import Api
from tests.media.capture import UdpCapture, can_capture
from tests.media.sipp import SippResult, run_sipp, scenario, sipp_binary
from tests.media.test_node import NUMBER, Tenant, provision, running_node

QUEUE = UUID("6b0f1f5e-4a43-4c55-9a3e-8f1d1c0a0001")
CALLER = "+15550001000"
"""The number the caller scenarios call from."""
CUSTOMER = "+14155552671"


def media_port() -> int:
    """A port for SIPp's media, with the three above it free too (SIPp binds some of them),
    below both the nodes' RTP ranges and the ephemeral ports, where nothing else lands."""
    for _ in range(200):
        low = random.randrange(12000, 20000, 4)
        if all(_udp_free(port) for port in range(low, low + 4)):
            return low
    raise RuntimeError("no free media ports")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tone(freq: float, seconds: float) -> PcmAudio:
    count = round(8000 * seconds)
    samples = array(
        "h", (round(9000 * math.sin(2 * math.pi * freq * i / 8000)) for i in range(count))
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return PcmAudio(samples=samples.tobytes(), duration_ms=round(seconds * 1000))


HOLD_MUSIC = _tone(523.0, 1.5)


class QueueDirectory:
    """The catalog, with this test's flow on every number (it puts the caller in QUEUE at
    once), this test's hold music, and voicemails kept in memory."""

    def __init__(self, catalog: Any) -> None:
        self._catalog = catalog
        self.script: Callable[[CallControl], Awaitable[None]] = _queue_flow
        self.voicemails: list[tuple[UUID, VoicemailRecord]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)

    async def inbound_route(self, e164: str) -> InboundRoute | None:
        route: InboundRoute | None = await self._catalog.inbound_route(e164)
        return None if route is None else dataclasses.replace(route, script=self.script)

    async def hold_music(self, tenant_id: UUID, queue_id: UUID) -> PcmAudio:
        assert queue_id == QUEUE
        return HOLD_MUSIC

    async def store_voicemail(self, tenant_id: UUID, voicemail: VoicemailRecord) -> None:
        self.voicemails.append((tenant_id, voicemail))


async def _queue_flow(call: CallControl) -> None:
    call.step("queue", "enqueue")
    await call.enqueue(QUEUE, priority=7, skills={"Spanish": 3}, attributes={"tier": "gold"})


class Events:
    """Every call event of the tenant, in arrival order."""

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.all if e["type"] == kind]

    def kinds(self, prefix: str = "call.") -> list[str]:
        return [e["type"] for e in self.all if e["type"].startswith(prefix)]

    async def wait(self, kind: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.02)
        return self.of(kind)

    def offers(self, agent: str) -> list[str]:
        """The offer events of one agent, in order: "ringing", "answered", "failed:<reason>"."""
        out = []
        for e in self.all:
            if e["type"].startswith("call.offer_") and e["agent_id"] == agent:
                verb = e["type"].removeprefix("call.offer_")
                out.append(f"failed:{e['reason']}" if verb == "failed" else verb)
        return out


@dataclasses.dataclass
class Scene:
    api: Api
    admin_conn: asyncpg.Connection
    tenant: Tenant
    running: RunningNode
    directory: QueueDirectory
    events: Events
    devices_port: int
    tmp: Path

    @property
    def node(self) -> Any:
        return self.running.node

    async def command(self, verb: str, **body: Any) -> dict[str, Any]:
        reply = await send_command(
            self.api.resources.bus,
            f"media.node-test.{verb}",
            msgspec.json.encode({"tenant_id": self.tenant.id, **body}),
        )
        return dict(msgspec.json.decode(reply))

    def device(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.devices_port}"

    def caller(
        self, media: str = "", *, hangs_up: bool = False, port: int | None = None
    ) -> asyncio.Task[SippResult]:
        """A carrier's caller (SIPp) calling NUMBER, running in the background."""
        name = "queue_caller_hangs_up.xml" if hangs_up else "queue_caller.xml"
        return asyncio.create_task(
            run_sipp(
                f"127.0.0.1:{self.node.sip_ports['udp']}",
                scenario(name, self.tmp, MEDIA=media, CALLER=CALLER),
                self.tmp,
                service=NUMBER.lstrip("+"),
                media_port=port or media_port(),
                timeout=45,
            )
        )

    async def queued_call(self) -> str:
        queued = await self.events.wait("call.queued")
        return str(queued[-1]["call_id"])

    async def settled(self) -> None:
        """The node holds no call, agent leg, dialog or RTP port."""
        node = self.node
        async with asyncio.timeout(10):
            while (
                node.calls
                or node.queues.legs
                or node.ports.in_use
                or (node.ua is not None and node.ua.calls())
            ):
                await asyncio.sleep(0.05)
        assert node.heartbeat()["queued"] == 0
        assert node.heartbeat()["agent_legs"] == 0


async def start_devices(
    tmp: Path, *, port: int, calls: int, echo: bool = True, numbers_answer: bool = True
) -> asyncio.subprocess.Process:
    """SIPp as agents' (or customers') phones on 127.0.0.1:`port`, until `calls` calls ended.
    Phone numbers answer and talk, or with `numbers_answer` False ring until cancelled."""
    work = tmp / f"devices-{port}"
    work.mkdir()
    numbers = "" if numbers_answer else '<nop next="ring" test="is_number"/>'
    return await asyncio.create_subprocess_exec(
        sipp_binary(),
        "-sf",
        str(scenario("agent_devices.xml", work, NUMBERS=numbers)),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(media_port()),
        "-m",
        str(calls),
        *(["-rtp_echo"] if echo else []),
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(work / "devices.errors"),
        "-trace_msg",
        "-message_file",
        str(work / "devices.messages"),
        "-default_behaviors",
        "all,-abortunexp",
        cwd=work,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, tmp: Path, port: int) -> str:
    """Wait for a devices SIPp to end; it must have ended every call cleanly."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    messages_file = tmp / f"devices-{port}" / "devices.messages"
    messages = messages_file.read_text(errors="replace") if messages_file.exists() else ""
    assert proc.returncode == 0, (out[-2000:], err[-2000:], messages[-6000:])
    return messages


@pytest.fixture
async def scene(api: Api, admin_conn: asyncpg.Connection, tmp_path: Path) -> AsyncIterator[Scene]:
    tenant = await provision(api, admin_conn)
    events = Events()

    async def on_event(msg: Any) -> None:
        events.all.append(msgspec.json.decode(msg.data))

    sub = await api.resources.bus.nc.subscribe(f"tenant.{tenant.id}.call.>", cb=on_event)
    async with running_node(
        api,
        trunk_keepalive_seconds=0,
        settings_overrides={"agent_device_networks": ["127.0.0.0/8"]},
    ) as running:
        directory = QueueDirectory(running.node.directory)
        running.node.directory = directory
        yield Scene(api, admin_conn, tenant, running, directory, events, free_port(), tmp_path)
    await sub.unsubscribe()


def _hear(capture: UdpCapture) -> bytes:
    """The A-law audio of the one RTP stream the capture saw."""
    audio = bytearray()
    streams = [d for d in capture.by_source.values() if d]
    assert len(streams) <= 1
    for data in list(streams[0]) if streams else []:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            continue
        if packet.payload_type == 8:
            audio += packet.payload
    return bytes(audio)


async def _eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def _both(sipp: Awaitable[SippResult]) -> SippResult:
    result = await sipp
    assert result.ok, result.explain()
    return result


PLAY_VOICE = '<nop><action><exec play_pcap_audio="@PCAP_DIR@/g711a.pcap"/></action></nop>'


def _pause(ms: int) -> str:
    return f'<pause milliseconds="{ms}"/>'


def _press(key: str) -> str:
    return f'<nop><action><exec play_pcap_audio="@PCAP_DIR@/dtmf_2833_{key}.pcap"/></action></nop>'


async def test_a_queued_caller_hears_hold_music_and_its_place_then_talks_to_the_agent(
    scene: Scene,
) -> None:
    agent = str(uuid4())
    devices = await start_devices(scene.tmp, port=scene.devices_port, calls=1)
    caller_port = media_port()
    capture = UdpCapture(caller_port) if can_capture() else None
    if capture is None and os.geteuid() == 0:
        pytest.fail("running as root but cannot open an AF_PACKET socket")
    voice = scene.tmp / "voice.alaw"
    voice.write_bytes(alaw_encode(_tone(800.0, 2.0).samples))
    try:
        if capture is not None:
            capture.start()
        # The caller talks all along: an A-law stream SIPp loops until the call ends.
        caller = scene.caller(
            f'<nop><action><exec rtp_stream="{voice},-1,8"/></action></nop>', port=caller_port
        )
        call_id = await scene.queued_call()
        call = scene.node.calls[UUID(call_id)]
        assert scene.node.heartbeat()["queued"] == 1
        text = announcement_text(3, 130)
        assert text == "You are caller number 3. Your estimated wait is about 2 minutes."

        if capture is not None:
            # What reached the caller: the hold music, looped; the announcement in full; then
            # the hold music again from its start.
            hold = alaw_encode(HOLD_MUSIC.samples)
            await _eventually(lambda: len(_hear(capture)) > len(hold) + 8000)
            assert _hear(capture).startswith(hold + hold[:8000])
            reply = await scene.command("announce", call_id=call_id, position=3, ewt_seconds=130)
            assert reply == {"ok": True}
            speech = alaw_encode((await scene.directory.speech(text, "en-us")).samples)
            speech += alaw_encode(bytes(2 * (-len(speech) % 160)))  # the last frame's padding
            await _eventually(lambda: speech + hold[:8000] in _hear(capture))
        else:
            await _eventually(lambda: call.stream.stats().packets_sent > 100)
            reply = await scene.command("announce", call_id=call_id, position=3, ewt_seconds=130)
            assert reply == {"ok": True}

        reply = await scene.command(
            "offer", call_id=call_id, agent_id=agent, device=scene.device("hangup1"), record=True
        )
        assert reply == {"ok": True}
        await scene.events.wait("call.offer_answered")
        assert scene.node.heartbeat()["queued"] == 0
        assert scene.node.heartbeat()["agent_legs"] == 1
        (leg,) = scene.node.queues.legs
        # The phone echoes what it hears: the caller's voice came through the bridge.
        await _eventually(lambda: leg.stream.stats().packets_received > 50, timeout=5)
        assert call.stream.stats().packets_sent > 0
        ended = (await scene.events.wait("call.ended"))[0]
        await _both(caller)
        await scene.settled()
        key = await scene.running.directory.recording_key(UUID(scene.tenant.id))
    finally:
        if capture is not None:
            capture.stop()
    await finished(devices, scene.tmp, scene.devices_port)

    queued = scene.events.of("call.queued")[0]
    assert queued["queue_id"] == str(QUEUE)
    assert queued["priority"] == 7
    assert queued["skills"] == {"Spanish": 3}
    assert queued["attributes"] == {"tier": "gold"}
    assert (queued["from_number"], queued["to_number"]) == (CALLER, NUMBER)
    step = scene.events.of("call.flow_step")[0]
    assert (step["node"], step["node_type"], step["call_id"]) == ("queue", "enqueue", call_id)
    assert scene.events.offers(agent) == ["ringing", "answered"]
    assert scene.events.kinds().index("call.offer_answered") < scene.events.kinds().index(
        "call.ended"
    )
    # The agent hung up after three seconds: the caller was hung up too.
    assert (ended["cause"], ended["reason"]) == ("local_hangup", "agent_hangup")
    assert ended["agent_id"] == agent
    assert ended["queue_id"] == str(QUEUE)
    assert not [e for e in scene.events.all if e["type"] == "call.started"][1:]

    path = scene.node.config.recordings_dir / scene.tenant.id / f"{call_id}.sbrec"
    recording = read_recording(path, key, recording_aad(UUID(scene.tenant.id), UUID(call_id)))
    assert 2000 <= recording.duration_ms <= 4500
    assert max(abs(s) for s in memoryview(recording.samples).cast("h")) > 1000


async def test_ring_all_the_first_agent_to_answer_gets_the_call_and_the_others_stop_ringing(
    scene: Scene,
) -> None:
    first, second, third = str(uuid4()), str(uuid4()), str(uuid4())
    mobile_port = free_port()
    trunk_id = await _customer_trunk(scene, mobile_port)
    devices = await start_devices(scene.tmp, port=scene.devices_port, calls=2)
    # The third agent takes calls on a mobile phone, dialed through the tenant's trunk.
    mobiles = await start_devices(
        scene.tmp, port=mobile_port, calls=1, echo=False, numbers_answer=False
    )
    caller = scene.caller(PLAY_VOICE + _pause(4000), hangs_up=True)
    call_id = await scene.queued_call()
    for agent, device in (
        (second, scene.device("ring2")),
        (third, CUSTOMER),
        (first, scene.device("agent1")),
    ):
        reply = await scene.command(
            "offer", call_id=call_id, agent_id=agent, device=device, trunk_id=trunk_id
        )
        assert reply == {"ok": True}, reply
    await scene.events.wait("call.offer_failed", 2)
    assert scene.node.heartbeat()["agent_legs"] == 1, scene.events.all
    ended = (await scene.events.wait("call.ended"))[0]
    await _both(caller)
    await scene.settled()
    messages = await finished(devices, scene.tmp, scene.devices_port)
    mobile = await finished(mobiles, scene.tmp, mobile_port)

    assert scene.events.offers(first) == ["ringing", "answered"]
    assert scene.events.offers(second) == ["ringing", "failed:answered_elsewhere"]
    assert scene.events.offers(third) == ["ringing", "failed:answered_elsewhere"]
    assert "CANCEL sip:ring2" in messages
    assert f"X-Switchboard-Call-Id: {call_id}" in messages
    # The mobile saw the number the caller dialed as the caller ID, and no internal headers.
    assert f"CANCEL sip:{CUSTOMER}@" in mobile
    assert f"From: <sip:{NUMBER}@" in mobile
    assert "X-Switchboard" not in mobile
    # The caller hung up; the agent's phone got a BYE.
    assert ended["cause"] == "remote_bye"
    assert ended["agent_id"] == first
    assert "BYE sip:device@" in messages


async def test_offers_that_fail_leave_the_caller_waiting_until_the_queue_overflows(
    scene: Scene,
) -> None:
    slow, busy, elsewhere, abroad = (str(uuid4()) for _ in range(4))
    devices = await start_devices(scene.tmp, port=scene.devices_port, calls=2)
    caller = scene.caller()
    call_id = await scene.queued_call()

    reply = await scene.command(
        "offer", call_id=call_id, agent_id=slow, device=scene.device("ring1"), timeout_seconds=1
    )
    assert reply == {"ok": True}
    reply = await scene.command(
        "offer", call_id=call_id, agent_id=busy, device=scene.device("busy1")
    )
    assert reply == {"ok": True}
    await scene.events.wait("call.offer_failed", 2)
    await _eventually(lambda: not scene.node.queues.legs, timeout=5)

    reply = await scene.command(
        "offer", call_id=call_id, agent_id=elsewhere, device="sip:agent@10.9.8.7:5060"
    )
    assert reply["error"] == "device_not_allowed"
    reply = await scene.command("offer", call_id=call_id, agent_id=abroad, device="+442079460000")
    assert reply["error"] == "international_not_allowed"
    other_tenant = await send_command(
        scene.api.resources.bus,
        "media.node-test.offer",
        msgspec.json.encode(
            {"tenant_id": str(uuid4()), "call_id": call_id, "agent_id": slow, "device": "x"}
        ),
    )
    assert msgspec.json.decode(other_tenant)["error"] == "call_not_found"
    reply = await scene.command(
        "offer", call_id=call_id, agent_id=slow, device=scene.device("x"), timeout_seconds=0
    )
    assert reply["error"] == "invalid_command"
    assert scene.node.heartbeat()["queued"] == 1

    reply = await scene.command(
        "overflow", call_id=call_id, action="hangup", queue_id=str(QUEUE), message="Goodbye."
    )
    assert reply == {"ok": True}
    ended = (await scene.events.wait("call.ended"))[0]
    await _both(caller)
    await scene.settled()
    messages = await finished(devices, scene.tmp, scene.devices_port)

    assert scene.events.offers(slow) == ["ringing", "failed:no_answer"]
    assert scene.events.offers(busy) == ["failed:busy"]
    assert scene.events.offers(elsewhere) == ["failed:refused"]
    assert scene.events.offers(abroad) == ["failed:refused"]
    assert "CANCEL sip:ring1" in messages
    assert (ended["reason"], ended["agent_id"], ended["queue_id"]) == (
        "queue_overflow",
        None,
        str(QUEUE),
    )


async def test_a_caller_who_hangs_up_while_an_agent_is_rung_ends_the_offer_as_caller_gone(
    scene: Scene,
) -> None:
    agent = str(uuid4())
    devices = await start_devices(scene.tmp, port=scene.devices_port, calls=1)
    caller = scene.caller(_pause(1500), hangs_up=True)
    call_id = await scene.queued_call()
    reply = await scene.command(
        "offer", call_id=call_id, agent_id=agent, device=scene.device("ring1")
    )
    assert reply == {"ok": True}
    await scene.events.wait("call.offer_failed")
    await _both(caller)
    await scene.settled()
    messages = await finished(devices, scene.tmp, scene.devices_port)
    assert scene.events.offers(agent) == ["ringing", "failed:caller_gone"]
    assert "CANCEL sip:ring1" in messages
    assert scene.events.of("call.ended")[0]["agent_id"] is None


async def test_overflow_to_voicemail_keeps_the_callers_message_sealed_for_the_tenant(
    scene: Scene,
) -> None:
    caller = scene.caller(_pause(2500) + PLAY_VOICE + _pause(5000) + _press("pound"))
    call_id = await scene.queued_call()
    reply = await scene.command(
        "overflow",
        call_id=call_id,
        action="voicemail",
        queue_id=str(QUEUE),
        mailbox="sales",
        message="Leave a message.",
    )
    assert reply == {"ok": True}
    again = await scene.command("overflow", call_id=call_id, action="hangup", queue_id=str(QUEUE))
    assert again["error"] == "already_overflowing"
    voicemail = (await scene.events.wait("call.voicemail"))[0]
    ended = (await scene.events.wait("call.ended"))[0]
    await _both(caller)
    await scene.settled()
    key = await scene.running.directory.recording_key(UUID(scene.tenant.id))

    assert (voicemail["mailbox"], voicemail["queue_id"]) == ("sales", str(QUEUE))
    assert voicemail["from_number"] == CALLER
    assert 3000 <= voicemail["duration_ms"] <= 9000
    ((tenant_id, stored),) = scene.directory.voicemails
    assert tenant_id == UUID(scene.tenant.id)
    assert (stored.voicemail_id, stored.call_id) == (UUID(voicemail["voicemail_id"]), UUID(call_id))
    assert stored.path.is_relative_to(scene.node.config.recordings_dir / scene.tenant.id)
    message = read_recording(
        stored.path, key, recording_aad(UUID(scene.tenant.id), stored.voicemail_id)
    )
    assert abs(message.duration_ms - stored.duration_ms) < 100
    assert max(abs(s) for s in memoryview(message.samples).cast("h")) > 1000  # the voice
    assert ended["reason"] == "voicemail"


async def test_overflow_to_callback_takes_a_press_of_one_as_a_callback_request(
    scene: Scene,
) -> None:
    caller = scene.caller(_pause(2000) + _press("1"))
    call_id = await scene.queued_call()
    reply = await scene.command("overflow", call_id=call_id, action="callback", queue_id=str(QUEUE))
    assert reply == {"ok": True}
    requested = (await scene.events.wait("call.callback_requested"))[0]
    ended = (await scene.events.wait("call.ended"))[0]
    await _both(caller)
    await scene.settled()
    assert (requested["call_id"], requested["number"]) == (call_id, CALLER)
    assert requested["queue_id"] == str(QUEUE)
    assert ended["reason"] == "callback_requested"


async def _customer_trunk(scene: Scene, port: int) -> str:
    response = await scene.api.client.post(
        "/v1/trunks",
        json={
            "name": "Carrier C",
            "host": "127.0.0.1",
            "port": port,
            "inbound": {"allowed_sources": ["127.0.0.1"]},
            "codecs": ["PCMA"],
        },
        headers=scene.tenant.auth,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_dial_back_rings_the_agent_then_the_customer_and_bridges_them(
    scene: Scene,
) -> None:
    agent, callback = str(uuid4()), str(uuid4())
    customer_port = free_port()
    trunk_id = await _customer_trunk(scene, customer_port)
    agents = await start_devices(scene.tmp, port=scene.devices_port, calls=1)
    customers = await start_devices(scene.tmp, port=customer_port, calls=1, echo=False)
    await asyncio.sleep(0.3)
    reply = await scene.command(
        "dial_back",
        call_id=callback,
        agent_id=agent,
        device=scene.device("hangup1"),
        number=CUSTOMER,
        caller_id=NUMBER,
        trunk_id=trunk_id,
        queue_id=str(QUEUE),
    )
    assert reply == {"ok": True}, reply
    again = await scene.command(
        "dial_back",
        call_id=callback,
        agent_id=agent,
        device=scene.device("agent1"),
        number=CUSTOMER,
        caller_id=NUMBER,
    )
    assert again["error"] == "call_exists"
    await scene.events.wait("call.answered")
    (leg,) = scene.node.queues.legs
    # The customer talks; the agent's phone echoes it back: the two are bridged.
    await _eventually(lambda: leg.stream.stats().packets_received > 50, timeout=5)
    ended = (await scene.events.wait("call.ended"))[0]
    await scene.settled()
    await finished(agents, scene.tmp, scene.devices_port)
    await finished(customers, scene.tmp, customer_port)

    kinds = [e["type"] for e in scene.events.all if e["call_id"] == callback]
    assert kinds[:3] == ["call.offer_ringing", "call.offer_answered", "call.started"]
    assert kinds[-1] == "call.ended"
    started = scene.events.of("call.started")[0]
    assert (started["direction"], started["to_number"], started["from_number"]) == (
        "outbound",
        CUSTOMER,
        NUMBER,
    )
    assert (ended["agent_id"], ended["queue_id"]) == (agent, str(QUEUE))
    assert ended["reason"] == "agent_hangup"
    assert ended["talk_ms"] > 1500


async def test_a_dial_back_the_customer_does_not_answer_hangs_up_the_agent(scene: Scene) -> None:
    agent, callback = str(uuid4()), str(uuid4())
    customer_port = free_port()
    trunk_id = await _customer_trunk(scene, customer_port)
    agents = await start_devices(scene.tmp, port=scene.devices_port, calls=1)
    customers = await start_devices(
        scene.tmp, port=customer_port, calls=1, echo=False, numbers_answer=False
    )
    await asyncio.sleep(0.3)
    reply = await scene.command(
        "dial_back",
        call_id=callback,
        agent_id=agent,
        device=scene.device("agent1"),
        number=CUSTOMER,
        caller_id=NUMBER,
        trunk_id=trunk_id,
        customer_timeout_seconds=2,
    )
    assert reply == {"ok": True}, reply
    failed = (await scene.events.wait("call.callback_failed"))[0]
    await scene.settled()
    await finished(agents, scene.tmp, scene.devices_port)
    assert "CANCEL sip:+" in await finished(customers, scene.tmp, customer_port)
    assert scene.events.offers(agent) == ["ringing", "answered"]
    assert (failed["agent_id"], failed["call_id"]) == (agent, callback)
    assert failed["reason"] == "no_answer"
    ended = scene.events.of("call.ended")[0]
    assert (ended["call_id"], ended["agent_id"], ended["talk_ms"]) == (callback, agent, 0)


async def test_a_message_the_flow_records_is_kept_when_the_caller_hangs_up_while_recording(
    scene: Scene,
) -> None:
    async def voicemail_flow(call: CallControl) -> None:
        message = await call.record_message(max_seconds=30)
        assert message is not None
        await call.leave_voicemail(message, mailbox="support")

    scene.directory.script = voicemail_flow
    caller = scene.caller(_pause(500) + PLAY_VOICE + _pause(3000), hangs_up=True)
    voicemail = (await scene.events.wait("call.voicemail"))[0]
    await _both(caller)
    await scene.settled()
    key = await scene.running.directory.recording_key(UUID(scene.tenant.id))

    assert scene.events.kinds()[-2:] == ["call.ended", "call.voicemail"]
    assert scene.events.of("call.ended")[0]["cause"] == "remote_bye"
    assert (voicemail["mailbox"], voicemail["queue_id"]) == ("support", None)
    assert 2500 <= voicemail["duration_ms"] <= 5000
    ((_, stored),) = scene.directory.voicemails
    message = read_recording(
        stored.path, key, recording_aad(UUID(scene.tenant.id), stored.voicemail_id)
    )
    assert max(abs(s) for s in memoryview(message.samples).cast("h")) > 1000


async def test_a_flow_transfers_the_caller_to_a_number_that_answers(scene: Scene) -> None:
    customer_port = free_port()
    await scene.admin_conn.execute(
        "update platform_trunks set port = $1 where name = 'carrier-a'", customer_port
    )
    outcomes: list[str] = []

    async def transferring_flow(call: CallControl) -> None:
        outcomes.append(await call.transfer(CUSTOMER, caller_id=NUMBER, timeout_seconds=10))

    scene.directory.script = transferring_flow
    customers = await start_devices(scene.tmp, port=customer_port, calls=1, echo=False)
    await asyncio.sleep(0.3)
    caller = scene.caller(_pause(4000), hangs_up=True)
    ended = await scene.events.wait("call.ended", 2)
    await _both(caller)
    await scene.settled()
    messages = await finished(customers, scene.tmp, customer_port)

    assert outcomes == ["answered"]
    (transferred,) = scene.events.of("call.transferred")
    assert (transferred["to"], transferred["outcome"]) == (CUSTOMER, "answered")
    inbound, outbound = scene.events.of("call.started")
    assert transferred["call_id"] == inbound["call_id"]
    assert (outbound["direction"], outbound["to_number"]) == ("outbound", CUSTOMER)
    by_call = {e["call_id"]: e for e in ended}
    assert by_call[inbound["call_id"]]["cause"] == "remote_bye"
    assert by_call[outbound["call_id"]]["reason"] == "bridged_leg_ended"
    assert by_call[outbound["call_id"]]["talk_ms"] > 2000
    assert "BYE sip:device@" in messages

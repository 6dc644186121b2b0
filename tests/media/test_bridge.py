"""Legs joined together: a bridge passes audio through untouched when both legs speak the same
G.711 law and translates between μ-law and A-law when they do not; a mixer gives each leg the
sum of the others, with supervisors listening or whispering."""

from __future__ import annotations

import asyncio
import statistics
import struct
from array import array
from collections.abc import AsyncIterator

import pytest

from media.bridge import Bridge, Mixer
from media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW, ulaw_decode, ulaw_encode
from media.player import Ticker
from media.ports import PortRange
from media.rtp import RtpPacket
from media.stream import RtpStream
from tests.media.rtp_peer import HOST, Peer, audio_packet, negotiated, port_range

# Every μ-law code from 0x60 up, 0x7F (negative zero) included: a decode and re-encode would
# turn it into 0xFF, so only true pass-through keeps these bytes.
PAYLOAD = bytes(range(0x60, 0x100))


class Leg:
    def __init__(self, stream: RtpStream, peer: Peer) -> None:
        self.stream = stream
        self.peer = peer

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.stream.local_port)


@pytest.fixture
def ports() -> PortRange:
    return port_range()


@pytest.fixture
async def legs(ports: PortRange) -> AsyncIterator[list[Leg]]:
    opened: list[Leg] = []
    yield opened
    for leg in opened:
        await leg.stream.close()
        leg.peer.close()


async def add_leg(legs: list[Leg], ports: PortRange, codec: str = "PCMU") -> Leg:
    stream = await RtpStream.open(HOST, ports)
    peer = await Peer.open()
    stream.configure(negotiated(codec), peer.address)
    leg = Leg(stream, peer)
    legs.append(leg)
    return leg


async def test_a_bridge_between_mu_law_legs_passes_payloads_through_untouched(
    legs: list[Leg], ports: PortRange
) -> None:
    caller, agent = await add_leg(legs, ports), await add_leg(legs, ports)
    bridge = Bridge(caller.stream, agent.stream)
    bridge.start()
    for seq in range(50, 55):
        caller.peer.send(audio_packet(seq, PAYLOAD, ssrc=0xCA11), caller.address)
    heard = await agent.peer.packets(5)
    assert [p.payload for p in heard] == [PAYLOAD] * 5
    assert {(p.payload_type, p.ssrc) for p in heard} == {(0, agent.stream.ssrc)}
    assert [p.sequence for p in heard] == [(heard[0].sequence + i) & 0xFFFF for i in range(5)]
    assert [p.timestamp - heard[0].timestamp for p in heard] == [0, 160, 320, 480, 640]

    agent.peer.send(audio_packet(7, PAYLOAD[::-1], ssrc=0xA6E7), agent.address)
    (back,) = await caller.peer.packets(1)
    assert (back.payload, back.ssrc) == (PAYLOAD[::-1], caller.stream.ssrc)


async def test_a_bridge_translates_between_mu_law_and_a_law(
    legs: list[Leg], ports: PortRange
) -> None:
    caller, agent = await add_leg(legs, ports, "PCMU"), await add_leg(legs, ports, "PCMA")
    Bridge(caller.stream, agent.stream).start()
    caller.peer.send(audio_packet(1, PAYLOAD), caller.address)
    (to_agent,) = await agent.peer.packets(1)
    assert to_agent.payload_type == 8
    assert to_agent.payload == PAYLOAD.translate(ULAW_TO_ALAW)

    alaw = bytes(range(0x20, 0xC0))
    agent.peer.send(audio_packet(1, alaw, pt=8), agent.address)
    (to_caller,) = await caller.peer.packets(1)
    assert to_caller.payload_type == 0
    assert to_caller.payload == alaw.translate(ALAW_TO_ULAW)


async def test_a_stopped_bridge_forwards_nothing(legs: list[Leg], ports: PortRange) -> None:
    caller, agent = await add_leg(legs, ports), await add_leg(legs, ports)
    bridge = Bridge(caller.stream, agent.stream)
    bridge.start()
    caller.peer.send(audio_packet(1, PAYLOAD), caller.address)
    await agent.peer.packets(1)
    bridge.stop()
    caller.peer.send(audio_packet(2, PAYLOAD), caller.address)
    assert await agent.peer.until_quiet(0.1) == []
    assert caller.stream.on_datagram is None


async def test_bridged_audio_continues_the_prompts_numbering(
    legs: list[Leg], ports: PortRange
) -> None:
    caller, agent = await add_leg(legs, ports), await add_leg(legs, ports)
    for _ in range(3):
        agent.stream.send_payload(PAYLOAD, source="ringback")
    Bridge(caller.stream, agent.stream).start()
    caller.peer.send(audio_packet(30000, PAYLOAD, ssrc=5), caller.address)
    caller.peer.send(audio_packet(30001, PAYLOAD, ssrc=5), caller.address)
    packets = await agent.peer.packets(5)
    assert [p.sequence for p in packets] == [(packets[0].sequence + i) & 0xFFFF for i in range(5)]
    assert [p.marker for p in packets] == [True, False, False, True, False]


# --- mixer ---------------------------------------------------------------------------------


def level(value: int) -> bytes:
    """A constant signal as μ-law: what a leg says, easy to recognise in a sum."""
    return ulaw_encode(struct.pack("<h", value) * 160)


def decoded(value: int) -> int:
    return array("h", ulaw_decode(level(value)))[0]


def heard_as(*values: int) -> int:
    """What a leg hears of these others, after the mixer's decode, sum and encode."""
    total = sum(decoded(v) for v in values)
    return array("h", ulaw_decode(ulaw_encode(struct.pack("<h", total))))[0]


async def talk(legs: dict[str, tuple[Leg, int]], ticks: int = 14) -> dict[str, int | None]:
    """Each leg's far end says its level every 20 ms; returns what each far end heard most
    (None: nothing at all)."""
    for leg, _ in legs.values():
        leg.peer.drain()
    for tick in range(ticks):
        for leg, value in legs.values():
            leg.peer.send(audio_packet(tick, level(value), ssrc=value), leg.address)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.06)
    heard: dict[str, int | None] = {}
    for name, (leg, _) in legs.items():
        # The mixer never goes quiet (it sends silence when no one speaks): take what came.
        packets = []
        while not leg.peer.queue.empty():
            packets.append(RtpPacket.parse(leg.peer.queue.get_nowait()[0]))
        levels = [int(statistics.median(array("h", ulaw_decode(p.payload)))) for p in packets]
        heard[name] = statistics.mode(levels[3:]) if levels[3:] else None
    return heard


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    clock = Ticker()
    yield clock
    await clock.stop()


async def test_each_conference_member_hears_the_others_but_not_itself(
    legs: list[Leg], ports: PortRange, ticker: Ticker
) -> None:
    members = [await add_leg(legs, ports) for _ in range(3)]
    mixer = Mixer(ticker)
    for leg in members:
        mixer.add(leg.stream)
    heard = await talk({"a": (members[0], 1000), "b": (members[1], 2000), "c": (members[2], 4000)})
    assert heard == {
        "a": heard_as(2000, 4000),
        "b": heard_as(1000, 4000),
        "c": heard_as(1000, 2000),
    }


async def test_a_listening_supervisor_hears_everyone_and_is_heard_by_no_one(
    legs: list[Leg], ports: PortRange, ticker: Ticker
) -> None:
    caller, agent, supervisor = [await add_leg(legs, ports) for _ in range(3)]
    mixer = Mixer(ticker)
    mixer.add(caller.stream)
    mixer.add(agent.stream)
    mixer.add(supervisor.stream, "listen")
    heard = await talk(
        {"caller": (caller, 1000), "agent": (agent, 2000), "supervisor": (supervisor, 8000)}
    )
    assert heard == {
        "caller": heard_as(2000),
        "agent": heard_as(1000),
        "supervisor": heard_as(1000, 2000),
    }


async def test_a_whisper_is_heard_only_by_the_leg_whispered_to(
    legs: list[Leg], ports: PortRange, ticker: Ticker
) -> None:
    caller, agent, supervisor = [await add_leg(legs, ports) for _ in range(3)]
    mixer = Mixer(ticker)
    mixer.add(caller.stream)
    mixer.add(agent.stream)
    mixer.add(supervisor.stream, "whisper", whisper_to=agent.stream)
    parties = {"caller": (caller, 1000), "agent": (agent, 2000), "supervisor": (supervisor, 500)}
    heard = await talk(parties)
    assert heard == {
        "caller": heard_as(2000),
        "agent": heard_as(1000, 500),
        "supervisor": heard_as(1000, 2000),
    }

    # Barge: the supervisor joins the conversation.
    mixer.add(supervisor.stream, "full")
    heard = await talk(parties)
    assert heard["caller"] == heard_as(2000, 500)


async def test_a_loud_conference_is_clipped_not_wrapped_around(
    legs: list[Leg], ports: PortRange, ticker: Ticker
) -> None:
    members = [await add_leg(legs, ports) for _ in range(3)]
    mixer = Mixer(ticker)
    for leg in members:
        mixer.add(leg.stream)
    heard = await talk({str(i): (leg, 30000) for i, leg in enumerate(members)})
    assert set(heard.values()) == {decoded(32767)}


async def test_a_leg_removed_from_the_mixer_is_no_longer_heard(
    legs: list[Leg], ports: PortRange, ticker: Ticker
) -> None:
    members = [await add_leg(legs, ports) for _ in range(3)]
    mixer = Mixer(ticker)
    for leg in members:
        mixer.add(leg.stream)
    mixer.remove(members[2].stream)
    assert members[2].stream.on_media is None
    heard = await talk({"a": (members[0], 1000), "b": (members[1], 2000), "c": (members[2], 4000)})
    assert heard == {"a": heard_as(2000), "b": heard_as(1000), "c": None}


def test_whispering_needs_a_leg_of_the_mixer_to_whisper_to() -> None:
    mixer = Mixer(Ticker())
    with pytest.raises(ValueError, match="whisper"):
        mixer.add(object(), "whisper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="full, listen or whisper"):
        mixer.add(object(), "shout")  # type: ignore[arg-type]

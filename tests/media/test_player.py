"""Prompts played into a call leg: every 20 ms frame of the audio, in order, paced by the shared
ticker; looping music; a new prompt replacing the one playing; cancelling stops at once."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from array import array
from collections.abc import AsyncIterator, Callable

import pytest

from media.audio import PcmAudio
from media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from media.player import Player, Ticker
from media.ports import PortRange
from media.rtp import RtpPacket
from media.stream import RtpStream
from tests.media.rtp_peer import HOST, Peer, negotiated, port_range


def tone(hz: float, ms: int) -> PcmAudio:
    count = ms * 8
    samples = array(
        "h", (round(8000 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(count))
    )
    return PcmAudio(samples=samples.tobytes(), duration_ms=ms)


@pytest.fixture
def ports() -> PortRange:
    return port_range()


@pytest.fixture
async def ticker() -> AsyncIterator[Ticker]:
    clock = Ticker()
    yield clock
    await clock.stop()


@pytest.fixture
async def leg(ports: PortRange) -> AsyncIterator[tuple[RtpStream, Peer]]:
    stream = await RtpStream.open(HOST, ports)
    peer = await Peer.open()
    stream.configure(negotiated(), peer.address)
    yield stream, peer
    await stream.close()
    peer.close()


async def test_a_prompt_arrives_as_paced_frames_of_its_own_audio(
    ticker: Ticker, leg: tuple[RtpStream, Peer]
) -> None:
    stream, peer = leg
    prompt = tone(440, 150)  # 7.5 frames: the last one is padded with silence
    await Player(ticker).play(stream, prompt)
    arrived = await peer.until_quiet()
    packets = [RtpPacket.parse(data) for data, _, _ in arrived]
    assert len(packets) == 8
    heard = b"".join(ulaw_decode(p.payload) for p in packets)
    padded = prompt.samples + bytes(len(heard) - len(prompt.samples))
    assert heard == ulaw_decode(ulaw_encode(padded))
    assert [p.marker for p in packets] == [True] + [False] * 7
    # Paced, not sent in a burst: eight frames span about seven ticks.
    assert arrived[-1][2] - arrived[0][2] >= 0.1


async def test_a_prompt_is_encoded_for_the_legs_codec(ports: PortRange, ticker: Ticker) -> None:
    stream = await RtpStream.open(HOST, ports)
    peer = await Peer.open()
    try:
        stream.configure(negotiated("PCMA"), peer.address)
        prompt = tone(1000, 40)
        await Player(ticker).play(stream, prompt)
        packets = await peer.packets(2)
    finally:
        await stream.close()
        peer.close()
    assert {p.payload_type for p in packets} == {8}
    heard = b"".join(alaw_decode(p.payload) for p in packets)
    assert heard == alaw_decode(alaw_encode(prompt.samples))


async def test_looping_music_repeats_until_cancelled(
    ticker: Ticker, leg: tuple[RtpStream, Peer]
) -> None:
    stream, peer = leg
    music = tone(310, 40)  # two frames that differ
    player = Player(ticker)
    playing = asyncio.create_task(player.play(stream, music, loop=True))
    packets = await peer.packets(7)
    assert not playing.done()
    playing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await playing
    first, second = packets[0].payload, packets[1].payload
    assert first != second
    assert [p.payload for p in packets] == [first, second] * 3 + [first]
    assert not player.playing(stream)
    peer.drain()
    assert await peer.until_quiet(0.1) == []  # nothing more once cancelled


async def test_a_new_prompt_replaces_the_one_playing(
    ticker: Ticker, leg: tuple[RtpStream, Peer]
) -> None:
    stream, peer = leg
    player = Player(ticker)
    long_prompt = tone(300, 2000)
    short_prompt = tone(1200, 60)
    first = asyncio.create_task(player.play(stream, long_prompt))
    await peer.packets(3)
    await player.play(stream, short_prompt)
    await asyncio.wait_for(first, 1)  # the replaced play returns
    packets = [RtpPacket.parse(data) for data, _, _ in await peer.until_quiet()]
    short_frames = [ulaw_encode(short_prompt.samples[i : i + 320]) for i in range(0, 960, 320)]
    assert [p.payload for p in packets[-3:]] == short_frames
    # At most one more frame of the old prompt after the new play began.
    assert len(packets) <= 4
    assert packets[-3].marker


async def test_many_playouts_share_one_ticker_and_each_gets_every_frame(
    ports: PortRange, ticker: Ticker
) -> None:
    player = Player(ticker)
    prompt = tone(500, 100)
    legs = []
    try:
        for _ in range(5):
            stream = await RtpStream.open(HOST, ports)
            peer = await Peer.open()
            stream.configure(negotiated(), peer.address)
            legs.append((stream, peer))
        await asyncio.gather(*(player.play(stream, prompt) for stream, _ in legs))
        for _, peer in legs:
            packets = await peer.packets(5)
            assert b"".join(ulaw_decode(p.payload) for p in packets) == ulaw_decode(
                ulaw_encode(prompt.samples)
            )
    finally:
        for stream, peer in legs:
            await stream.close()
            peer.close()


async def test_the_ticker_catches_up_after_a_blocked_loop_without_an_endless_burst() -> None:
    ticker = Ticker(period=0.01)
    ticks: list[int] = []
    ticker.add(lambda: ticks.append(ticker.ticks))
    ticker.start()
    try:
        await asyncio.sleep(0.015)
        count = len(ticks)
        time.sleep(0.2)
        await asyncio.sleep(0.005)
        burst = len(ticks) - count
    finally:
        await ticker.stop()
    assert count >= 1
    # Twenty ticks were missed; only a few are run late, the rest are skipped.
    assert 1 <= burst <= 6
    assert ticker.skipped >= 10


class CoarseClockLoop:
    """Just what a Ticker uses of a loop, with a clock the test sets (uvloop's clock and timers
    have millisecond resolution, so its timers fire up to a millisecond "early")."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> CoarseClockLoop:
        self.timers.append((when, callback))
        return self  # stands for the timer handle: the test never cancels

    def cancel(self) -> None:
        self.timers.clear()

    def fire(self, at: float) -> None:
        self.now = at
        _, callback = self.timers.pop(0)
        callback()


def test_a_timer_firing_a_little_early_by_the_loops_clock_still_ticks_once() -> None:
    loop = CoarseClockLoop()
    ticker = Ticker(loop)  # type: ignore[arg-type]
    ticks: list[float] = []
    ticker.add(lambda: ticks.append(loop.now))
    ticker.start()
    assert [when for when, _ in loop.timers] == [pytest.approx(0.020)]
    loop.fire(0.0195)
    assert ticks == [0.0195]
    assert [when for when, _ in loop.timers] == [pytest.approx(0.040)]
    loop.fire(0.041)
    loop.fire(0.0605)
    assert len(ticks) == 3
    assert [when for when, _ in loop.timers] == [pytest.approx(0.080)]


async def test_a_failing_tick_listener_is_removed_and_the_others_keep_ticking() -> None:
    ticker = Ticker(period=0.005)
    good: list[int] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    ticker.add(broken)
    ticker.add(lambda: good.append(1))
    ticker.start()
    try:
        await asyncio.sleep(0.05)
    finally:
        await ticker.stop()
    assert len(good) >= 3

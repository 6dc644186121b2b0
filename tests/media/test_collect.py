"""Collecting a caller's keys: the terminator ends the entry, so does the maximum or a pause;
nothing pressed gives ""; type-ahead can be flushed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media.collect import collect_digits, flush_digits
from media.dtmf import EventSender
from media.rtp import RtpPacket
from media.stream import RtpStream
from tests.media.rtp_peer import HOST, Peer, negotiated, port_range


@pytest.fixture
async def stream() -> AsyncIterator[RtpStream]:
    opened = await RtpStream.open(HOST, port_range())
    yield opened
    await opened.close()


def press(stream: RtpStream, keys: str) -> None:
    for key in keys:
        stream.digits.put_nowait(key)


def press_later(stream: RtpStream, key: str, delay: float) -> None:
    asyncio.get_running_loop().call_later(delay, stream.digits.put_nowait, key)


async def test_the_terminator_ends_the_entry_and_is_not_part_of_it(stream: RtpStream) -> None:
    press(stream, "12#3")
    assert await collect_digits(stream, max_digits=10, timeout=1) == "12"
    assert stream.digits.get_nowait() == "3"  # keys after the terminator stay for later


async def test_collection_stops_at_the_maximum(stream: RtpStream) -> None:
    press(stream, "12345")
    assert await collect_digits(stream, max_digits=3, timeout=1) == "123"
    assert stream.digits.qsize() == 2


async def test_without_a_terminator_the_hash_key_is_a_digit(stream: RtpStream) -> None:
    press(stream, "1#2")
    assert await collect_digits(stream, max_digits=3, timeout=1, terminator=None) == "1#2"


async def test_a_pause_between_keys_ends_the_entry(stream: RtpStream) -> None:
    press_later(stream, "4", 0.02)
    press_later(stream, "2", 0.06)
    press_later(stream, "9", 0.5)  # too late: the caller paused
    assert await collect_digits(stream, max_digits=5, timeout=0.15) == "42"


async def test_the_first_key_may_be_given_longer_than_the_pause_between_keys(
    stream: RtpStream,
) -> None:
    press_later(stream, "7", 0.2)
    got = await collect_digits(stream, max_digits=2, timeout=0.1, first_timeout=0.5)
    assert got == "7"


async def test_nothing_pressed_gives_an_empty_entry(stream: RtpStream) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await collect_digits(stream, max_digits=4, timeout=5, first_timeout=0.05) == ""
    assert loop.time() - started < 1


async def test_flushing_forgets_keys_pressed_before(stream: RtpStream) -> None:
    press(stream, "999")
    flush_digits(stream)
    press_later(stream, "1", 0.01)
    assert await collect_digits(stream, max_digits=1, timeout=0.5) == "1"


async def test_keys_sent_as_rfc_4733_events_are_collected(stream: RtpStream) -> None:
    peer = await Peer.open()
    try:
        stream.configure(negotiated(), peer.address)
        seq = 0
        for index, key in enumerate("314#"):
            for event in EventSender(key, 60):
                seq += 1
                peer.send(
                    RtpPacket(101, seq, 1000 * (index + 1), 9, event.payload, event.marker),
                    (HOST, stream.local_port),
                )
        assert await collect_digits(stream, max_digits=8, timeout=1) == "314"
    finally:
        peer.close()

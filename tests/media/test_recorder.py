"""Recordings: what a leg receives comes back from the file as the same audio, the file itself
holds no plaintext audio, and a wrong key, wrong aad or tampered file is refused."""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import struct
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from media import recorder as recorder_module
from media.g711 import ulaw_decode, ulaw_encode
from media.ports import PortRange
from media.recorder import Recorder, RecordingError, read_recording
from media.rtp import RtpPacket
from media.stream import RtpStream
from tests.media.rtp_peer import HOST, Peer, audio_packet, negotiated, port_range

KEY = bytes(range(32))
AAD = b"tenant-1/call-42"


def sine_payloads(count: int, hz: float = 440.0) -> list[bytes]:
    samples = array(
        "h", (round(9000 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(160 * count))
    )
    encoded = ulaw_encode(samples.tobytes())
    return [encoded[i * 160 : (i + 1) * 160] for i in range(count)]


def constant_payload(value: int) -> bytes:
    return ulaw_encode(struct.pack("<h", value) * 160)


@pytest.fixture
def ports() -> PortRange:
    return port_range()


@pytest.fixture
async def leg(ports: PortRange) -> AsyncIterator[tuple[RtpStream, Peer]]:
    stream = await RtpStream.open(HOST, ports)
    peer = await Peer.open()
    stream.configure(negotiated(), peer.address)
    yield stream, peer
    await stream.close()
    peer.close()


async def send_and_wait(stream: RtpStream, peer: Peer, packets: list[RtpPacket]) -> None:
    """Send to the stream and wait until all of it went through its receive path."""
    seen: asyncio.Queue[RtpPacket] = asyncio.Queue()
    stream.on_media = seen.put_nowait
    for packet in packets:
        peer.send(packet, (HOST, stream.local_port))
    for _ in packets:
        await asyncio.wait_for(seen.get(), 2)


async def test_a_recording_reads_back_as_the_audio_the_leg_received(
    leg: tuple[RtpStream, Peer], tmp_path: Path
) -> None:
    stream, peer = leg
    payloads = sine_payloads(25)
    recorder = Recorder(tmp_path / "call.rec", KEY, AAD)
    recorder.attach(stream)
    await send_and_wait(stream, peer, [audio_packet(i, p) for i, p in enumerate(payloads)])
    info = await recorder.close()

    audio = read_recording(info.path, KEY, AAD)
    expected = b"".join(ulaw_decode(p) for p in payloads)
    lead = audio.samples.find(expected)
    assert lead >= 0
    assert lead % 2 == 0
    assert audio.samples[:lead] == bytes(lead)  # only the silence before the first packet
    assert audio.samples[lead + len(expected) :] == b""
    assert info.duration_ms == audio.duration_ms
    assert 500 <= audio.duration_ms < 700
    assert info.bytes_written == (tmp_path / "call.rec").stat().st_size


async def test_the_file_holds_no_plaintext_audio(
    leg: tuple[RtpStream, Peer], tmp_path: Path
) -> None:
    stream, peer = leg
    payloads = sine_payloads(10)
    recorder = Recorder(tmp_path / "call.rec", KEY, AAD)
    recorder.attach(stream)
    await send_and_wait(stream, peer, [audio_packet(i, p) for i, p in enumerate(payloads)])
    await recorder.close()
    stored = (tmp_path / "call.rec").read_bytes()
    pcm = ulaw_decode(payloads[3])
    assert pcm[:32] not in stored
    assert payloads[3][:16] not in stored
    assert os.stat(tmp_path / "call.rec").st_mode & 0o077 == 0  # only the node may read it


async def test_a_wrong_key_or_aad_cannot_read_the_recording(
    leg: tuple[RtpStream, Peer], tmp_path: Path
) -> None:
    stream, peer = leg
    recorder = Recorder(tmp_path / "call.rec", KEY, AAD)
    recorder.attach(stream)
    await send_and_wait(stream, peer, [audio_packet(i, sine_payloads(1)[0]) for i in range(3)])
    info = await recorder.close()
    with pytest.raises(RecordingError, match="cannot be decrypted"):
        read_recording(info.path, bytes(32), AAD)
    with pytest.raises(RecordingError, match="cannot be decrypted"):
        read_recording(info.path, KEY, b"tenant-2/call-42")


async def test_records_moved_around_in_the_file_are_refused(
    leg: tuple[RtpStream, Peer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "CHUNK_SAMPLES", 800)
    monkeypatch.setattr(recorder_module, "LATE_SAMPLES", 400)
    stream, peer = leg
    payloads = sine_payloads(30)
    recorder = Recorder(tmp_path / "call.rec", KEY, AAD)
    recorder.attach(stream)
    await send_and_wait(stream, peer, [audio_packet(i, p) for i, p in enumerate(payloads)])
    info = await recorder.close()
    expected = b"".join(ulaw_decode(p) for p in payloads)
    assert expected in read_recording(info.path, KEY, AAD).samples

    data = info.path.read_bytes()
    offset = len(recorder_module.MAGIC)
    records = []
    while offset < len(data):
        (length,) = struct.unpack_from("!I", data, offset)
        records.append(data[offset : offset + 4 + length])
        offset += 4 + length
    assert len(records) >= 4
    swapped = recorder_module.MAGIC + records[1] + records[0] + b"".join(records[2:])
    info.path.write_bytes(swapped)
    with pytest.raises(RecordingError):
        read_recording(info.path, KEY, AAD)

    # A file cut short mid-record (a crash) still gives the audio sealed before.
    info.path.write_bytes(recorder_module.MAGIC + records[0] + records[1][:-5])
    assert read_recording(info.path, KEY, AAD).duration_ms == 100


async def test_a_bridge_recording_mixes_both_legs(ports: PortRange, tmp_path: Path) -> None:
    streams = [await RtpStream.open(HOST, ports) for _ in range(2)]
    peers = [await Peer.open() for _ in range(2)]
    try:
        for stream, peer in zip(streams, peers, strict=True):
            stream.configure(negotiated(), peer.address)
        recorder = Recorder(tmp_path / "bridge.rec", KEY, AAD)
        for stream in streams:
            recorder.attach(stream)
        caller = [audio_packet(i, constant_payload(1000)) for i in range(20)]
        agent = [audio_packet(i, constant_payload(2000), ssrc=77) for i in range(20)]
        await asyncio.gather(
            send_and_wait(streams[0], peers[0], caller),
            send_and_wait(streams[1], peers[1], agent),
        )
        info = await recorder.close()
    finally:
        for stream in streams:
            await stream.close()
        for peer in peers:
            peer.close()
    samples = array("h", read_recording(info.path, KEY, AAD).samples)
    middle = samples[len(samples) // 2 - 800 : len(samples) // 2 + 800]
    one, two = (array("h", ulaw_decode(constant_payload(v)))[0] for v in (1000, 2000))
    assert statistics.median(middle) == one + two


async def test_a_key_that_is_not_256_bits_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Recorder(tmp_path / "x.rec", b"short", AAD)
    assert not (tmp_path / "x.rec").exists()


async def test_an_existing_recording_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "call.rec").write_bytes(b"earlier")
    with pytest.raises(FileExistsError):
        Recorder(tmp_path / "call.rec", KEY, AAD)
    assert (tmp_path / "call.rec").read_bytes() == b"earlier"

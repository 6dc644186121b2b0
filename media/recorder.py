"""Call recordings, encrypted as they are written so a recording is never plaintext on disk.

A recording file is a magic line, then records: a 4-byte big-endian length and a blob sealed
with AES-256-GCM (`runtime.crypto.seal`). Each record's associated data is the caller's `aad`
followed by the record's index, so records cannot be reordered, dropped from the middle or moved
between recordings unnoticed. A record holds a kind byte (audio or end) and then 8 kHz s16le PCM.
The end record tells a finished recording from one cut short by a crash; both can be read.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag

from media.audio import SAMPLE_RATE, PcmAudio
from media.g711 import alaw_decode, ulaw_decode
from media.rtp import RtpPacket
from media.stream import RtpStream
from runtime.crypto import seal, unseal

__all__ = ["Recorder", "RecordingError", "RecordingInfo", "read_recording"]

MAGIC = b"SWITCHBOARD-RECORDING 1\n"
CHUNK_SAMPLES = SAMPLE_RATE
"""One second of audio per record."""
LATE_SAMPLES = SAMPLE_RATE // 2
"""How long a chunk is kept open for late packets before it is sealed."""
REANCHOR_SAMPLES = SAMPLE_RATE
"""A leg whose timestamps stray this far from the wall clock is placed by the clock again."""
_KIND_AUDIO = 0
_KIND_END = 1
_LENGTH = struct.Struct("!I")
_DECODERS = {"PCMU": ulaw_decode, "PCMA": alaw_decode}


class RecordingError(Exception):
    """A recording that cannot be read: wrong key or aad, or a damaged file."""


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    path: Path
    duration_ms: int
    bytes_written: int


def _record_aad(aad: bytes, index: int) -> bytes:
    return aad + index.to_bytes(8, "big")


def _mix(into: bytes | bytearray, pcm: bytes) -> bytes:
    """Sum of two equally long s16le signals, clipped to 16 bits."""
    a = array("h", into)
    b = array("h", pcm)
    if sys.byteorder == "big":
        a.byteswap()
        b.byteswap()
    mixed = array(
        "h",
        (32767 if s > 32767 else -32768 if s < -32768 else s for s in map(int.__add__, a, b)),
    )
    if sys.byteorder == "big":
        mixed.byteswap()
    return mixed.tobytes()


class _Leg:
    """Places one stream's packets on the recording's timeline by their RTP timestamps, anchored
    to the wall clock at the first packet and again whenever the far end's clock jumps."""

    def __init__(self, recorder: Recorder, stream: RtpStream) -> None:
        self.recorder = recorder
        self.stream = stream
        self.ssrc: int | None = None
        self.base_position = 0
        self.base_timestamp = 0

    def receive(self, packet: RtpPacket) -> None:
        recorder = self.recorder
        now = recorder.clock_position()
        if packet.ssrc != self.ssrc:
            self._anchor(packet, now)
        offset = (packet.timestamp - self.base_timestamp + 0x80000000) % (1 << 32) - 0x80000000
        position = self.base_position + offset
        if abs(position - now) > REANCHOR_SAMPLES:
            self._anchor(packet, now)
            position = now
        decode = _DECODERS.get(self.stream.codec)
        if decode is not None:
            recorder.add(position, decode(packet.payload))

    def _anchor(self, packet: RtpPacket, now: int) -> None:
        self.ssrc = packet.ssrc
        self.base_position = now
        self.base_timestamp = packet.timestamp


class Recorder:
    """Writes one leg's (or a bridge's) received audio as decoded PCM chunks sealed with AES-256-GCM
    (runtime.crypto.seal with a caller-given 32-byte key and aad), so a recording is never
    plaintext on disk. Several attached legs are mixed into one track."""

    def __init__(self, path: Path, key: bytes, aad: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a recording key is 32 bytes (AES-256)")
        self.path = path
        self._key = key
        self._aad = aad
        self._loop = asyncio.get_running_loop()
        # Never overwrite a recording; only the node's user may read the file.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._bytes_written = 0
        self._write(MAGIC)
        self._index = 0
        self._started_at = self._loop.time()
        self._legs: list[_Leg] = []
        self._pieces: list[tuple[int, bytes]] = []
        self._sealed_until = 0
        """Timeline position (in samples) up to which audio has been written."""
        self._end = 0

    def clock_position(self) -> int:
        """Now, in samples since the recording started."""
        return int((self._loop.time() - self._started_at) * SAMPLE_RATE)

    def attach(self, stream: RtpStream) -> None:
        """Record what `stream` receives, alongside whoever else consumes its media."""
        leg = _Leg(self, stream)
        self._legs.append(leg)
        stream.add_tap(leg.receive)

    def detach(self, stream: RtpStream) -> None:
        for leg in [leg for leg in self._legs if leg.stream is stream]:
            stream.remove_tap(leg.receive)
            self._legs.remove(leg)

    def add(self, position: int, pcm: bytes) -> None:
        """Put s16le audio at `position` (samples since the start) on the timeline."""
        if self._fd is None:
            return
        if position < self._sealed_until:
            skip = self._sealed_until - position
            pcm = pcm[2 * skip :]
            position = self._sealed_until
        if not pcm:
            return
        self._pieces.append((position, pcm))
        self._end = max(self._end, position + len(pcm) // 2)
        while self._end - self._sealed_until >= CHUNK_SAMPLES + LATE_SAMPLES:
            self._seal_until(self._sealed_until + CHUNK_SAMPLES)

    def _seal_until(self, until: int) -> None:
        start = self._sealed_until
        out = bytearray(2 * (until - start))  # silence where nothing was received
        covered = start
        kept: list[tuple[int, bytes]] = []
        for position, pcm in sorted(self._pieces, key=lambda piece: piece[0]):
            end = position + len(pcm) // 2
            if position >= until:
                kept.append((position, pcm))
                continue
            if end > until:
                kept.append((until, pcm[2 * (until - position) :]))
                pcm = pcm[: 2 * (until - position)]
                end = until
            at = 2 * (position - start)
            overlap = min(end, covered) - position
            if overlap > 0:
                # Two legs at once (a bridge): add them where they overlap, copy the rest.
                out[at : at + 2 * overlap] = _mix(out[at : at + 2 * overlap], pcm[: 2 * overlap])
                out[at + 2 * overlap : at + len(pcm)] = pcm[2 * overlap :]
            else:
                out[at : at + len(pcm)] = pcm
            covered = max(covered, end)
        self._pieces = kept
        self._sealed_until = until
        self._write_record(_KIND_AUDIO, bytes(out))

    def _write_record(self, kind: int, body: bytes) -> None:
        sealed = seal(self._key, bytes([kind]) + body, _record_aad(self._aad, self._index))
        self._index += 1
        self._write(_LENGTH.pack(len(sealed)) + sealed)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        # A second of audio is ~16 KB: written straight into the page cache, no thread needed.
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._bytes_written += len(data)

    async def close(self) -> RecordingInfo:
        """Stop recording, write what is left and the end record, and sync the file."""
        for leg in self._legs:
            leg.stream.remove_tap(leg.receive)
        self._legs.clear()
        fd = self._fd
        if fd is not None:
            if self._end > self._sealed_until:
                self._seal_until(self._end)
            self._write_record(_KIND_END, b"")
            self._fd = None
            await asyncio.to_thread(os.fsync, fd)
            os.close(fd)
        return RecordingInfo(
            path=self.path,
            duration_ms=(self._sealed_until * 1000 + SAMPLE_RATE // 2) // SAMPLE_RATE,
            bytes_written=self._bytes_written,
        )


def read_recording(path: Path, key: bytes, aad: bytes) -> PcmAudio:
    """The audio of a recording. Raises RecordingError for a wrong key or aad, a file that is
    not a recording, or records that were altered, reordered or removed."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise RecordingError(f"{path.name} is not a recording")
    offset = len(MAGIC)
    chunks: list[bytes] = []
    index = 0
    ended = False
    while offset < len(data):
        if ended:
            raise RecordingError(f"{path.name} has data after its end record")
        if offset + _LENGTH.size > len(data):
            raise RecordingError(f"{path.name} is cut short in a record header")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            # A crash while writing the last record: what came before is still good.
            break
        try:
            plain = unseal(key, data[offset : offset + length], _record_aad(aad, index))
        except (InvalidTag, ValueError):
            raise RecordingError(
                f"{path.name} cannot be decrypted: wrong key, or the file was altered"
            ) from None
        offset += length
        index += 1
        if plain[:1] == bytes([_KIND_END]):
            ended = True
        else:
            chunks.append(plain[1:])
    samples = b"".join(chunks)
    duration = (len(samples) // 2 * 1000 + SAMPLE_RATE // 2) // SAMPLE_RATE
    return PcmAudio(samples=samples, duration_ms=duration)

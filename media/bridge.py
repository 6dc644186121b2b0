"""Connecting call legs: a two-leg bridge that forwards packets as they arrive, and a mixer for
conferences and supervision (listen, whisper, barge)."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from media.g711 import alaw_decode, ulaw_decode
from media.player import Ticker
from media.rtp import RtpPacket
from media.stream import ENCODERS, FRAME_SAMPLES, RtpStream

__all__ = ["Bridge", "MixMode", "Mixer"]

MixMode = Literal["full", "listen", "whisper"]
_FRAME_BYTES = 2 * FRAME_SAMPLES
MAX_BUFFERED_FRAMES = 5
"""Audio a mixer leg may have queued (100 ms); older audio is dropped so delay cannot grow."""
_DECODERS: dict[str, Callable[[bytes], bytes]] = {"PCMU": ulaw_decode, "PCMA": alaw_decode}


class Bridge:
    """Two legs talking: packets received on one are forwarded to the other with no decode when the
    codecs match, or translated PCMU<->PCMA by a 256-byte table. Forwarding happens in the
    receive callback (no timer), so it adds no buffering delay."""

    def __init__(self, a: RtpStream, b: RtpStream) -> None:
        if a is b:
            raise ValueError("a bridge joins two different legs")
        self.a = a
        self.b = b
        self._a_to_b: Callable[[bytes], None] = partial(b.relay, a)
        self._b_to_a: Callable[[bytes], None] = partial(a.relay, b)
        self.running = False

    def start(self) -> None:
        """Forward each leg's received audio to the other. Stop prompts playing into the legs
        first (`Player.stop`): two sources sending on one leg at once would garble it."""
        self.a.on_datagram = self._a_to_b
        self.b.on_datagram = self._b_to_a
        self.running = True

    def mute(self, leg: RtpStream, muted: bool) -> None:
        """Stop (or restart) forwarding what `leg` receives; the other direction goes on."""
        if leg is self.a:
            self.a.on_datagram = None if muted or not self.running else self._a_to_b
        elif leg is self.b:
            self.b.on_datagram = None if muted or not self.running else self._b_to_a
        else:
            raise ValueError("that leg is not in this bridge")

    def stop(self) -> None:
        if self.a.on_datagram is self._a_to_b:
            self.a.on_datagram = None
        if self.b.on_datagram is self._b_to_a:
            self.b.on_datagram = None
        self.running = False


@dataclass(eq=False, slots=True)
class _MixLeg:
    stream: RtpStream
    mode: MixMode
    whisper_to: RtpStream | None
    pending: bytearray
    frame: bytes | None = None
    """This tick's audio from the leg, s16le."""

    def receive(self, packet: RtpPacket) -> None:
        decode = _DECODERS.get(self.stream.codec)
        if decode is None:
            return
        self.pending += decode(packet.payload)
        excess = len(self.pending) - MAX_BUFFERED_FRAMES * _FRAME_BYTES
        if excess > 0:
            del self.pending[:excess]


def _samples(pcm: bytes | bytearray) -> array[int]:
    samples = array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _pcm(samples: list[int]) -> bytes:
    clipped = array("h", (32767 if s > 32767 else -32768 if s < -32768 else s for s in samples))
    if sys.byteorder == "big":
        clipped.byteswap()
    return clipped.tobytes()


class Mixer:
    """3+ legs: each leg hears the sum of the others (decode, add with clipping, encode) on the
    Ticker; a leg may be 'listen' (hears all, heard by none), 'whisper' to one leg, or 'full'.

    A whispering leg hears everyone and is heard only by the leg it whispers to (a supervisor
    coaching an agent); 'full' is a barge or a conference member.
    """

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self._legs: dict[RtpStream, _MixLeg] = {}
        self._silence: dict[str, bytes] = {
            codec: encode(bytes(_FRAME_BYTES)) for codec, encode in ENCODERS.items()
        }

    def __contains__(self, stream: RtpStream) -> bool:
        return stream in self._legs

    def __len__(self) -> int:
        return len(self._legs)

    def add(
        self, stream: RtpStream, mode: MixMode = "full", whisper_to: RtpStream | None = None
    ) -> None:
        """Join `stream` (or change how it takes part, if it is already in)."""
        self._check(stream, mode, whisper_to)
        leg = self._legs.get(stream)
        if leg is None:
            leg = _MixLeg(stream, mode, whisper_to, bytearray())
            self._legs[stream] = leg
            stream.on_media = leg.receive
        else:
            leg.mode = mode
            leg.whisper_to = whisper_to
        if len(self._legs) == 1:
            self.ticker.add(self._tick)
            self.ticker.start()

    def _check(self, stream: RtpStream, mode: str, whisper_to: RtpStream | None) -> None:
        if mode not in ("full", "listen", "whisper"):
            raise ValueError(f"mode {mode!r} is not full, listen or whisper")
        if mode == "whisper":
            if whisper_to is None or whisper_to is stream:
                raise ValueError("whispering needs another leg to whisper to")
            if whisper_to not in self._legs:
                raise ValueError("the leg whispered to is not in this mixer")
        elif whisper_to is not None:
            raise ValueError("only a whispering leg names a leg to whisper to")

    def remove(self, stream: RtpStream) -> None:
        leg = self._legs.pop(stream, None)
        if leg is None:
            return
        if stream.on_media == leg.receive:
            stream.on_media = None
        if not self._legs:
            self.ticker.remove(self._tick)

    def _tick(self) -> None:
        legs = list(self._legs.values())
        for leg in legs:
            if len(leg.pending) >= _FRAME_BYTES:
                leg.frame = bytes(leg.pending[:_FRAME_BYTES])
                del leg.pending[:_FRAME_BYTES]
            else:
                leg.frame = None
        for listener in legs:
            heard = [
                speaker.frame
                for speaker in legs
                if speaker is not listener
                and speaker.frame is not None
                and (
                    speaker.mode == "full"
                    or (speaker.mode == "whisper" and speaker.whisper_to is listener.stream)
                )
            ]
            stream = listener.stream
            if not heard:
                # Keep packets flowing: NATs and some phones drop a silent call.
                payload = self._silence[stream.codec]
            elif len(heard) == 1:
                payload = ENCODERS[stream.codec](heard[0])
            else:
                mixed = [sum(s) for s in zip(*map(_samples, heard), strict=True)]
                payload = ENCODERS[stream.codec](_pcm(mixed))
            stream.send_payload(payload, source=self)

"""A softphone in Python: the agent WebSocket plus an aiortc peer connection that sends a tone
and keeps what it hears. Tests use it where a browser is not the point; the load tests use it
as the agent swarm."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from array import array
from collections.abc import Callable
from typing import Any

import av
import msgspec
import websockets
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

RATE = 8000
FRAME = 160


class ToneTrack(MediaStreamTrack):
    """A sine tone at `freq_hz`, paced in real time (20 ms frames, 8 kHz)."""

    kind = "audio"

    def __init__(self, freq_hz: float, amplitude: float = 0.4) -> None:
        super().__init__()
        self.freq_hz = freq_hz
        self.amplitude = amplitude
        self._sample = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._sample / RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        step = 2 * math.pi * self.freq_hz / RATE
        level = int(32767 * self.amplitude)
        samples = array(
            "h", (int(level * math.sin(step * (self._sample + i))) for i in range(FRAME))
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self._sample
        frame.time_base = fractions.Fraction(1, RATE)
        self._sample += FRAME
        return frame


class PySoftphone:
    """One agent's softphone, driven by a test."""

    def __init__(self, ws_url: str, token: str, tone_hz: float) -> None:
        self.ws_url = ws_url
        self.token = token
        self.tone_hz = tone_hz
        self.messages: list[dict[str, Any]] = []
        self.heard = bytearray()
        """What the agent hears, s16le at the rate in `heard_rate`."""
        self.heard_rate = RATE
        self.heard_at: list[float] = []
        """Monotonic arrival time of each received frame."""
        self._changed = asyncio.Condition()
        self._ws: Any = None
        self.closed: websockets.ConnectionClosed | None = None
        self.pc: RTCPeerConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- signaling -----------------------------------------------------------------------------

    async def open(self) -> dict[str, Any]:
        await self.open_socket()
        return await self.expect("hello")

    async def open_socket(self) -> None:
        """Connect and send `auth`, without waiting for the answer."""
        self._ws = await websockets.connect(self.ws_url)
        self._spawn(self._read())
        await self.send({"type": "auth", "token": self.token})

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(msgspec.json.encode(message).decode())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = msgspec.json.decode(raw)
                async with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()
        except websockets.ConnectionClosed as exc:
            self.closed = exc
        else:
            self.closed = self._ws.close_exc
        async with self._changed:
            self._changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def expect(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda _m: True,
        *,
        timeout: float = 15.0,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first message of `kind` (from index `after` on) that `where` accepts."""

        def found() -> dict[str, Any] | None:
            for message in self.messages[after:]:
                if message.get("type") == kind and where(message):
                    return message
            return None

        async with asyncio.timeout(timeout), self._changed:
            while (message := found()) is None:
                if self.closed is not None:
                    raise self.closed
                await self._changed.wait()
        return message

    async def ask(self, message: dict[str, Any], reply: str, **match: Any) -> dict[str, Any]:
        """Send `message` and wait for `reply` (or the error it caused)."""
        ref = f"r{len(self.messages)}-{time.monotonic_ns()}"
        start = len(self.messages)
        await self.send({**message, "ref": ref})
        answer = await self.expect(
            reply,
            lambda m: m.get("ref") == ref or all(m.get(k) == v for k, v in match.items()),
            after=start,
        )
        errors = [
            m for m in self.messages[start:] if m.get("type") == "error" and m.get("ref") == ref
        ]
        if errors:
            raise AssertionError(f"{message['type']} refused: {errors[0]}")
        return answer

    # --- media ---------------------------------------------------------------------------------

    async def connect_media(self) -> dict[str, Any]:
        """Negotiate the persistent leg (again, after a drop); returns the sdp_answer."""
        if self.pc is not None:
            await self.pc.close()
        pc = RTCPeerConnection()
        self.pc = pc
        pc.addTrack(ToneTrack(self.tone_hz))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._listen(track))

        await pc.setLocalDescription(await pc.createOffer())
        start = len(self.messages)
        await self.send({"type": "sdp_offer", "sdp": pc.localDescription.sdp})
        answer = await self.expect("sdp_answer", after=start)
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        async with asyncio.timeout(10):
            while pc.connectionState != "connected":
                await asyncio.sleep(0.02)
        return answer

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            self.heard_rate = frame.sample_rate
            channels = len(frame.layout.channels)
            # Packed s16: the plane may be padded past the samples.
            pcm = bytes(frame.planes[0])[: frame.samples * channels * 2]
            if channels == 2:  # keep the left channel
                samples = array("h", pcm)
                pcm = array("h", samples[::2]).tobytes()
            self.heard += pcm
            self.heard_at.append(time.monotonic())

    def last_heard(self, seconds: float) -> bytes:
        size = int(seconds * self.heard_rate) * 2
        return bytes(self.heard[-size:])

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self.pc is not None:
            await self.pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

"""Prompts and music played into call legs, paced by one shared 20 ms clock."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from media.audio import PcmAudio
from media.stream import ENCODERS, FRAME_SAMPLES, RtpStream

__all__ = ["Player", "Ticker"]

log = logging.getLogger(__name__)

MAX_CATCH_UP = 5
"""Ticks run late at once when the loop was blocked; past this the clock skips ahead instead,
since a long burst would only overflow the far end's jitter buffer."""
_TIMER_RESOLUTION = 0.001
ENCODED_CACHE_SIZE = 64
"""Prompts kept encoded per codec; most calls hear the same few greetings."""


class Ticker:
    """One drift-free 20 ms clock shared by all playouts on the node (loop.call_at on an absolute
    schedule), so thousands of prompts cost one timer, not thousands."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, period: float = 0.020
    ) -> None:
        if period <= 0:
            raise ValueError("a tick period must be positive")
        self.period = period
        self._loop = loop
        self._listeners: dict[Callable[[], None], None] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self.ticks = 0
        self.skipped = 0
        """Ticks dropped because the loop fell more than MAX_CATCH_UP ticks behind."""

    @property
    def running(self) -> bool:
        return self._handle is not None

    def add(self, listener: Callable[[], None]) -> None:
        """Call `listener` on every tick from the next one on."""
        self._listeners[listener] = None

    def remove(self, listener: Callable[[], None]) -> None:
        self._listeners.pop(listener, None)

    def start(self) -> None:
        """Start ticking (does nothing if running): needs a loop, given or running."""
        if self._handle is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._next = self._loop.time() + self.period
        self._handle = self._loop.call_at(self._next, self._tick)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due = 0
        # uvloop's timers and clock have millisecond resolution, so a timer may fire a little
        # before its time by the loop's clock: that tick is due all the same (without the
        # allowance it would be rescheduled for "now" over and over until the clock moved).
        while self._next <= now + _TIMER_RESOLUTION and due < MAX_CATCH_UP:
            due += 1
            self._next += self.period
        if self._next <= now:
            missed = int((now - self._next) / self.period) + 1
            self.skipped += missed
            self._next += missed * self.period
        for _ in range(due):
            self.ticks += 1
            listeners = self._listeners
            for listener in tuple(listeners):
                # One that was removed by an earlier listener of this tick is not called.
                if listener in listeners:
                    try:
                        listener()
                    except Exception:
                        log.exception("a tick listener failed; it is removed")
                        listeners.pop(listener, None)
        self._handle = loop.call_at(self._next, self._tick)


class _Playout:
    __slots__ = ("audio", "codec", "done", "frames", "index", "player", "repeat", "stream")

    def __init__(
        self,
        player: Player,
        stream: RtpStream,
        audio: PcmAudio,
        repeat: bool,
        done: asyncio.Future[None],
    ) -> None:
        self.player = player
        self.stream = stream
        self.audio = audio
        self.repeat = repeat
        self.done = done
        self.codec = stream.codec
        self.frames = player.frames(audio, self.codec)
        self.index = 0

    def tick(self) -> None:
        stream = self.stream
        if stream.closed:
            self.finish()
            return
        if stream.codec != self.codec:  # a re-INVITE changed the codec mid-prompt
            self.codec = stream.codec
            self.frames = self.player.frames(self.audio, self.codec)
        if self.index >= len(self.frames):
            if not self.repeat:
                self.finish()
                return
            self.index = 0
        # The playout itself is the source: a new prompt shows as a new run with the marker.
        stream.send_payload(self.frames[self.index], source=self)
        self.index += 1

    def finish(self) -> None:
        # Off the ticker at once: the awaiting play() only runs on a later loop iteration.
        self.player.ticker.remove(self.tick)
        if not self.done.done():
            self.done.set_result(None)


class Player:
    """Plays audio into streams on the shared ticker, one prompt per stream at a time."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self._playing: dict[RtpStream, _Playout] = {}
        self._encoded: OrderedDict[tuple[int, str], tuple[PcmAudio, tuple[bytes, ...]]] = (
            OrderedDict()
        )

    def frames(self, audio: PcmAudio, codec: str) -> tuple[bytes, ...]:
        """The audio as 20 ms payloads of `codec`, the last padded with silence; encoded once
        per (audio, codec) while it stays among the recently played."""
        key = (id(audio), codec)
        cached = self._encoded.get(key)
        # The audio is kept in the entry, so its id cannot be reused by another object meanwhile.
        if cached is not None and cached[0] is audio:
            self._encoded.move_to_end(key)
            return cached[1]
        frame_bytes = 2 * FRAME_SAMPLES
        pcm = audio.samples + bytes(-len(audio.samples) % frame_bytes)
        encoded = ENCODERS[codec](pcm)
        frames = tuple(
            encoded[i : i + FRAME_SAMPLES] for i in range(0, len(encoded), FRAME_SAMPLES)
        )
        self._encoded[key] = (audio, frames)
        if len(self._encoded) > ENCODED_CACHE_SIZE:
            self._encoded.popitem(last=False)
        return frames

    def playing(self, stream: RtpStream) -> bool:
        return stream in self._playing

    async def play(self, stream: RtpStream, audio: PcmAudio, *, loop: bool = False) -> None:
        """Play `audio` into `stream`; returns when it has all been sent, or when another play
        on the stream or `stop` replaced it. With `loop` it repeats until then or cancelled."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        playout = _Playout(self, stream, audio, loop, done)
        previous = self._playing.get(stream)
        if previous is not None:
            previous.finish()
        self._playing[stream] = playout
        self.ticker.add(playout.tick)
        self.ticker.start()
        try:
            await done
        finally:
            self.ticker.remove(playout.tick)
            if self._playing.get(stream) is playout:
                del self._playing[stream]

    def stop(self, stream: RtpStream) -> None:
        """Stop what is playing into `stream`; its `play` returns."""
        playout = self._playing.get(stream)
        if playout is not None:
            playout.finish()

"""Publishing events that are not database state (call progress from a media node) without
making the caller wait for JetStream: a bounded in-process queue, sent in batches, retried
until acknowledged (the stream deduplicates retries by event id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bus.connection import Bus, RawMessage, publish_raw_many
from bus.errors import PublishFailed
from bus.events import Event, EventCodec

log = logging.getLogger(__name__)

MAX_BATCH = 256


class EventPublisher:
    def __init__(self, bus: Bus, codec: EventCodec, *, max_pending: int = 100_000) -> None:
        self._bus = bus
        self._codec = codec
        self._pending: asyncio.Queue[RawMessage] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.retries = 0
        self._in_flight = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-publisher")

    def emit(self, event: Event) -> None:
        """Queue `event`. Raises asyncio.QueueFull only if NATS has been unreachable so long
        that max_pending events wait: the caller then refuses new work instead of losing it."""
        self._pending.put_nowait(
            RawMessage(event.subject(), self._codec.encode(event), str(event.event_id))
        )

    @property
    def backlog(self) -> int:
        return self._pending.qsize()

    async def flush(self, within: float = 10.0) -> bool:
        """Wait until everything queued so far is acknowledged (or `within` seconds)."""
        deadline = time.monotonic() + within
        while self._pending.qsize() or self._in_flight:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _run(self) -> None:
        delay = 0.1
        while True:
            batch = [await self._pending.get()]
            while len(batch) < MAX_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            self._in_flight = len(batch)
            while True:
                try:
                    await publish_raw_many(self._bus, batch)
                except PublishFailed as exc:
                    self.retries += 1
                    log.warning("call events not yet acknowledged, retrying: %s", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                self.published += len(batch)
                self._in_flight = 0
                break

    async def close(self, within: float = 10.0) -> None:
        """Send what is queued (for up to `within` seconds), then stop."""
        if self._task is None:
            return
        if not await self.flush(within):
            log.error("%d call events unsent at shutdown", self._pending.qsize() + self._in_flight)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

"""Durable pull consumers on stream EVENTS.

Every message ends in exactly one of: ack (handled), nak with a delay (the handler raised; it
will be offered again), term (undecodable, or the handler kept failing until max_deliver).
Every failure is logged: nothing is swallowed the way exceptions in nats-py message callbacks
are, which is why this loop fetches and never registers a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.connection import EVENTS_STREAM, Bus
from bus.errors import UnknownEvent
from bus.events import Event, EventCodec

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]
DEFAULT_BACKOFF: tuple[float, ...] = (1, 5, 30, 120)


class Consumer:
    """Feeds the events of one durable consumer to `handler`, one at a time, in stream order.

    Delivery is at least once: a message is redelivered when its ack is lost, when the handler
    runs past `ack_wait`, or when the publisher re-sent it after the duplicate window. Handlers
    must therefore be idempotent, with every side effect keyed by `event.event_id` (insert ...
    on conflict do nothing, a ledger key, an Idempotency-Key).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        durable: str,
        filter_subject: str,
        codec: EventCodec,
        handler: Handler,
        batch: int = 32,
        max_deliver: int = 10,
        backoff: Sequence[float] = DEFAULT_BACKOFF,
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        self._bus = bus
        self.durable = durable
        self._filter_subject = filter_subject
        self._codec = codec
        self._handler = handler
        self._batch = batch
        self._max_deliver = max_deliver
        self._backoff = tuple(backoff)
        self._ack_wait = ack_wait
        self._fetch_timeout = fetch_timeout
        self._sub: JetStreamContext.PullSubscription | None = None

    async def bind(self) -> None:
        """Create the durable consumer, or update it to this configuration, and subscribe."""
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self._filter_subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
        )
        await self._bus.js.add_consumer(EVENTS_STREAM, config)
        self._sub = await self._bus.js.pull_subscribe_bind(
            durable=self.durable, stream=EVENTS_STREAM
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and handle until `stop` is set; a batch in hand is finished first."""
        while self._sub is None and not stop.is_set():
            try:
                await self.bind()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._check_open()
                log.warning("consumer %s: cannot bind yet: %r", self.durable, exc)
                await _wait(stop, 1.0)
        try:
            while not stop.is_set():
                for msg in await self._fetch(stop):
                    await self.handle(msg)
        finally:
            if self._sub is not None:
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    await self._sub.unsubscribe()
                self._sub = None

    async def _fetch(self, stop: asyncio.Event) -> list[Msg]:
        assert self._sub is not None
        try:
            return await self._sub.fetch(self._batch, timeout=self._fetch_timeout)
        except TimeoutError:
            return []  # nothing to do for now: not an error (nats timeouts are TimeoutErrors)
        except (nats.errors.Error, OSError) as exc:
            self._check_open()
            log.warning("consumer %s: fetch failed: %r", self.durable, exc)
            await _wait(stop, 1.0)
            return []

    def _check_open(self) -> None:
        if self._bus.nc.is_closed:
            raise nats.errors.ConnectionClosedError

    async def handle(self, msg: Msg) -> None:
        """Settle one message: ack, nak with backoff, or term."""
        meta = msg.metadata
        attempt = meta.num_delivered
        try:
            event = self._codec.decode(msg.data)
        except UnknownEvent as exc:
            log.error(
                "consumer %s: terminated undecodable message %s seq %d: %s; payload %r",
                self.durable,
                msg.subject,
                meta.sequence.stream,
                exc,
                msg.data[:200],
                extra={"subject": msg.subject, "stream_seq": meta.sequence.stream},
            )
            await self._settle(msg, "term")
            return
        context = {"event_id": str(event.event_id), "subject": msg.subject, "attempt": attempt}
        try:
            await self._handler(event)
        except Exception:
            if attempt >= self._max_deliver:
                log.exception(
                    "consumer %s: event %s on %s failed on attempt %d of %d; giving up",
                    self.durable,
                    event.event_id,
                    msg.subject,
                    attempt,
                    self._max_deliver,
                    extra=context,
                )
                await self._settle(msg, "term")
            else:
                delay = self._backoff[min(attempt - 1, len(self._backoff) - 1)]
                log.exception(
                    "consumer %s: event %s on %s failed on attempt %d of %d; retry in %ss",
                    self.durable,
                    event.event_id,
                    msg.subject,
                    attempt,
                    self._max_deliver,
                    delay,
                    extra=context,
                )
                await self._settle(msg, "nak", delay)
            return
        await self._settle(msg, "ack")

    async def _settle(self, msg: Msg, how: str, delay: float | None = None) -> None:
        try:
            if how == "ack":
                await msg.ack()
            elif how == "nak":
                await msg.nak(delay=delay)
            else:
                await msg.term()
        except (nats.errors.Error, OSError) as exc:
            # The server will redeliver after ack_wait; the handler is idempotent.
            log.warning("consumer %s: could not %s %s: %r", self.durable, how, msg.subject, exc)


async def run_consumer(
    bus: Bus,
    *,
    durable: str,
    filter_subject: str,
    codec: EventCodec,
    handler: Handler,
    stop: asyncio.Event,
    batch: int = 32,
    max_deliver: int = 10,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    ack_wait: float = 30.0,
    fetch_timeout: float = 1.0,
) -> None:
    """Run a durable consumer on EVENTS until `stop` is set. See `Consumer`."""
    consumer = Consumer(
        bus,
        durable=durable,
        filter_subject=filter_subject,
        codec=codec,
        handler=handler,
        batch=batch,
        max_deliver=max_deliver,
        backoff=backoff,
        ack_wait=ack_wait,
        fetch_timeout=fetch_timeout,
    )
    await consumer.run(stop)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

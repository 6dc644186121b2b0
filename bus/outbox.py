"""Transactional outbox: events are written with the state change, and published after commit.

`enqueue` adds a row in the caller's transaction, so the event exists exactly when the change
does. `OutboxRelay` publishes pending rows to EVENTS with `Nats-Msg-Id = event_id` and marks
them published. A relay that dies between publishing and marking re-publishes those rows; within
the stream's duplicate window JetStream drops the repeats, and past it consumers' idempotency
(keyed by event_id) does. Several relays may run: rows are claimed FOR UPDATE SKIP LOCKED, so
order is kept within a batch but not across relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bus.connection import PUBLISH_TIMEOUT, Bus, RawMessage, publish_raw_many
from bus.errors import PublishFailed
from bus.events import Event, EventCodec

log = logging.getLogger(__name__)

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Pool: TypeAlias = "asyncpg.Pool[Any]"
_OnNotify: TypeAlias = Callable[[object, int, str, object], None]

CHANNEL = "outbox"

# One round trip. The notification is delivered at commit, and only if the transaction commits.
_ENQUEUE = """
with added as (
    insert into outbox (tenant_id, event_id, subject, payload) values ($1, $2, $3, $4)
)
select pg_notify('outbox', '')
"""
_CLAIM = "select id, tenant_id, event_id, subject, payload from sb_outbox_claim($1)"
_MARK = "select sb_outbox_mark_published($1::bigint[])"
_PURGE = "select sb_outbox_purge($1::interval)"

# tenant.<tenant_id>.<one or more tokens>: no wildcards, spaces or empty tokens. A row the
# stream would refuse would hold up every row behind it, so it is refused at write time.
_PART = r"[^.*>\s]+"
_SUBJECT = re.compile(rf"tenant\.{_PART}(\.{_PART})+")


async def enqueue(conn: Conn, event: Event, codec: EventCodec) -> None:
    """Write `event` to the outbox in the caller's (tenant) transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("enqueue belongs inside the transaction that makes the change")
    subject = event.subject()
    if not _SUBJECT.fullmatch(subject) or not subject.startswith(f"tenant.{event.tenant_id}."):
        raise ValueError(f"{type(event).__name__}.subject() gave {subject!r}")
    await conn.execute(_ENQUEUE, event.tenant_id, event.event_id, subject, codec.encode(event))


class OutboxRelay:
    """Publishes committed outbox rows. Wakes on NOTIFY outbox, and polls in case one is missed."""

    def __init__(
        self,
        pool: Pool,
        bus: Bus,
        *,
        batch: int = 200,
        poll_interval: float = 1.0,
        purge_after: timedelta = timedelta(days=1),
        purge_every: timedelta = timedelta(minutes=10),
        retry_delay: float = 1.0,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._batch = batch
        self._poll_interval = poll_interval
        self._purge_after = purge_after
        self._purge_every = purge_every.total_seconds()
        self._retry_delay = retry_delay
        self._publish_timeout = publish_timeout

    async def relay_once(self) -> int:
        """Claim, publish and mark one batch in one transaction; the number published. If
        publishing fails the transaction rolls back and the rows stay pending."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, self._batch)
            if not rows:
                return 0
            messages = [RawMessage(r["subject"], r["payload"], str(r["event_id"])) for r in rows]
            await publish_raw_many(self._bus, messages, ack_timeout=self._publish_timeout)
            await self._mark_published(conn, [r["id"] for r in rows])
        return len(rows)

    async def _mark_published(self, conn: Conn, ids: list[int]) -> None:
        await conn.execute(_MARK, ids)

    async def purge(self) -> int:
        """Delete rows published longer than `purge_after` ago; how many went."""
        async with self._pool.acquire() as conn:
            gone: int = await conn.fetchval(_PURGE, self._purge_after)
        if gone:
            log.info("outbox: purged %d published rows", gone)
        return gone

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set. Failures are logged and retried; nothing is dropped."""
        wake = asyncio.Event()

        def on_notify(_conn: object, _pid: int, _channel: str, _payload: object) -> None:
            wake.set()

        listener: PoolConnectionProxy[Any] | None = None
        next_purge = time.monotonic()
        try:
            while not stop.is_set():
                if listener is None or listener.is_closed():
                    listener = await self._listen(listener, on_notify)
                # Cleared before the round, so a commit during the round wakes the next one.
                wake.clear()
                try:
                    published = await self.relay_once()
                except PublishFailed as exc:
                    # NATS is down or refusing: expected in an outage, so no traceback.
                    log.warning(
                        "outbox: publish failed; rows stay pending, retry in %ss: %s",
                        self._retry_delay,
                        exc,
                    )
                    await _wait_any(self._retry_delay, stop)
                    continue
                except Exception:
                    log.exception(
                        "outbox: relay round failed; rows stay pending, retry in %ss",
                        self._retry_delay,
                    )
                    await _wait_any(self._retry_delay, stop)
                    continue
                if published == self._batch:
                    continue  # likely more pending
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + self._purge_every
                    try:
                        await self.purge()
                    except Exception:
                        log.exception("outbox: purge failed")
                await _wait_any(self._poll_interval, stop, wake)
        finally:
            if listener is not None:
                await self._unlisten(listener, on_notify)

    async def _listen(
        self, old: PoolConnectionProxy[Any] | None, on_notify: _OnNotify
    ) -> PoolConnectionProxy[Any] | None:
        if old is not None:
            await self._unlisten(old, on_notify)
        try:
            conn = await self._pool.acquire()
        except Exception:
            log.exception("outbox: cannot get a connection to LISTEN on; polling")
            return None
        try:
            await conn.add_listener(CHANNEL, on_notify)
        except Exception:
            log.exception("outbox: LISTEN %s failed; polling", CHANNEL)
            await self._release(conn)
            return None
        return conn

    async def _unlisten(self, conn: PoolConnectionProxy[Any], on_notify: _OnNotify) -> None:
        with contextlib.suppress(Exception):
            if not conn.is_closed():
                await conn.remove_listener(CHANNEL, on_notify)
        await self._release(conn)

    async def _release(self, conn: PoolConnectionProxy[Any]) -> None:
        with contextlib.suppress(Exception):
            await self._pool.release(conn)


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

"""The transactional outbox and its relay, against real PostgreSQL (as the app role, under RLS)
and a real nats-server."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg
import pytest

from bus.connection import EVENTS_STREAM, Bus, connect, ensure_events_stream
from bus.consumer import run_consumer
from bus.errors import PublishFailed
from bus.events import Event, EventCodec
from bus.outbox import OutboxRelay, enqueue
from runtime.db import tenant_tx

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


class NatsServer(Protocol):
    url: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class NumberProvisioned(Event, frozen=True, kw_only=True, tag="number.provisioned"):
    number_id: UUID
    e164: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.number.{self.number_id}.provisioned"


codec = EventCodec([NumberProvisioned])


def provisioned(tenant: UUID) -> NumberProvisioned:
    return NumberProvisioned(tenant_id=tenant, number_id=uuid4(), e164="+14155550100")


async def stored(bus: Bus) -> int:
    return int((await bus.js.stream_info(EVENTS_STREAM)).state.messages)


async def pending(pool: asyncpg.Pool, tenant: UUID) -> int:
    async with tenant_tx(pool, tenant) as conn:
        n: int = await conn.fetchval("select count(*) from outbox where published_at is null")
        return n


class Effects:
    """An idempotent consumer: one effect per event_id, however often it is delivered."""

    def __init__(self) -> None:
        self.deliveries: Counter[UUID] = Counter()
        self.applied: set[UUID] = set()

    async def handle(self, event: Event) -> None:
        self.deliveries[event.event_id] += 1
        self.applied.add(event.event_id)


@asynccontextmanager
async def running(coro_fn: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(coro_fn(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def consumer(bus: Bus, effects: Effects) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def run(stop: asyncio.Event) -> None:
        await run_consumer(
            bus,
            durable="effects",
            filter_subject="tenant.>",
            codec=codec,
            handler=effects.handle,
            stop=stop,
            fetch_timeout=0.2,
        )

    return run


async def test_event_enqueued_in_a_rolled_back_transaction_is_never_published(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    tenant = uuid4()

    async def provision_then_fail() -> None:
        async with tenant_tx(pool, tenant) as conn:
            await enqueue(conn, provisioned(tenant), codec)
            raise RuntimeError("number already taken")

    with pytest.raises(RuntimeError, match="number already taken"):
        await provision_then_fail()

    assert await OutboxRelay(pool, bus).relay_once() == 0
    assert await stored(bus) == 0
    assert await pending(pool, tenant) == 0


async def test_committed_event_is_published_exactly_once(pool: asyncpg.Pool, bus: Bus) -> None:
    tenant = uuid4()
    event = provisioned(tenant)
    async with tenant_tx(pool, tenant) as conn:
        await enqueue(conn, event, codec)

    relay = OutboxRelay(pool, bus)
    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0
    assert await stored(bus) == 1
    msg = await bus.js.get_last_msg(EVENTS_STREAM, event.subject())
    assert msg.data is not None
    assert codec.decode(msg.data) == event
    assert await pending(pool, tenant) == 0


class CrashBeforeMarking(OutboxRelay):
    """Publishes, then hangs before marking, so the test can kill it at the worst moment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published = asyncio.Event()

    async def _mark_published(self, conn: Any, ids: list[int]) -> None:
        self.published.set()
        await asyncio.Event().wait()


async def test_relay_killed_before_marking_loses_nothing_and_duplicates_nothing(
    pool: asyncpg.Pool, bus: Bus, eventually: Eventually
) -> None:
    tenant = uuid4()
    events = [provisioned(tenant) for _ in range(3)]
    async with tenant_tx(pool, tenant) as conn:
        for e in events:
            await enqueue(conn, e, codec)

    doomed = CrashBeforeMarking(pool, bus)
    task = asyncio.ensure_future(doomed.relay_once())
    await asyncio.wait_for(doomed.published.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stored(bus) == 3  # it did publish...
    assert await pending(pool, tenant) == 3  # ...but never recorded it

    assert await OutboxRelay(pool, bus).relay_once() == 3  # a fresh relay sends them again
    assert await pending(pool, tenant) == 0
    assert await stored(bus) == 3  # JetStream dropped the repeats (same Nats-Msg-Id)

    effects = Effects()
    async with running(consumer(bus, effects)):

        async def all_applied() -> bool:
            return len(effects.applied) == 3

        await eventually(all_applied)
        await asyncio.sleep(0.5)  # time for any duplicate to show up
    assert effects.applied == {e.event_id for e in events}
    assert set(effects.deliveries.values()) == {1}


async def test_relay_failure_before_marking_keeps_the_rows_for_the_next_round(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    class FailingMark(OutboxRelay):
        async def _mark_published(self, conn: Any, ids: list[int]) -> None:
            raise ConnectionResetError("relay lost its database connection")

    tenant = uuid4()
    async with tenant_tx(pool, tenant) as conn:
        await enqueue(conn, provisioned(tenant), codec)
    with pytest.raises(ConnectionResetError):
        await FailingMark(pool, bus).relay_once()
    assert await pending(pool, tenant) == 1
    assert await OutboxRelay(pool, bus).relay_once() == 1
    assert await stored(bus) == 1


async def test_rows_stay_pending_while_jetstream_refuses_them(pool: asyncpg.Pool, bus: Bus) -> None:
    tenant = uuid4()
    event = provisioned(tenant)
    async with tenant_tx(pool, tenant) as conn:
        await enqueue(conn, event, codec)
    await bus.js.delete_stream(EVENTS_STREAM)  # nothing will acknowledge the publish

    relay = OutboxRelay(pool, bus, publish_timeout=1.0)
    with pytest.raises(PublishFailed):
        await relay.relay_once()
    assert await pending(pool, tenant) == 1

    await ensure_events_stream(bus)
    assert await relay.relay_once() == 1
    assert await stored(bus) == 1
    assert await pending(pool, tenant) == 0


async def test_events_committed_while_nats_is_down_reach_consumers_when_it_returns(
    pool: asyncpg.Pool,
    own_nats: NatsServer,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await connect(own_nats.url, name="outage")
    try:
        await ensure_events_stream(bus)
        relay = OutboxRelay(pool, bus, poll_interval=0.1, retry_delay=0.1, publish_timeout=0.5)
        effects = Effects()
        tenant = uuid4()
        before, during = provisioned(tenant), provisioned(tenant)
        with caplog.at_level(logging.WARNING, logger="bus.outbox"):
            async with running(relay.run), running(consumer(bus, effects)):
                async with tenant_tx(pool, tenant) as conn:
                    await enqueue(conn, before, codec)

                async def first_applied() -> bool:
                    return effects.applied == {before.event_id}

                await eventually(first_applied)
                own_nats.stop()
                async with tenant_tx(pool, tenant) as conn:
                    await enqueue(conn, during, codec)

                async def relay_gave_up_for_now() -> bool:
                    return any("publish failed" in r.getMessage() for r in caplog.records)

                await eventually(relay_gave_up_for_now)
                assert await pending(pool, tenant) == 1
                own_nats.start()

                async def drained() -> bool:
                    return await pending(pool, tenant) == 0 and len(effects.applied) == 2

                await eventually(drained)
                await asyncio.sleep(0.5)
        assert await stored(bus) == 2
        assert effects.applied == {before.event_id, during.event_id}
        assert set(effects.deliveries.values()) == {1}
    finally:
        await bus.close()


async def test_fifty_events_from_concurrent_transactions_arrive_once_with_two_relays(
    pool: asyncpg.Pool, bus: Bus, nats_url: str, eventually: Eventually
) -> None:
    tenants = [uuid4() for _ in range(5)]
    events = [provisioned(tenants[i % 5]) for i in range(50)]

    async def commit(event: NumberProvisioned) -> None:
        async with tenant_tx(pool, event.tenant_id) as conn:
            await enqueue(conn, event, codec)

    other_bus = await connect(nats_url, name="second-relay")
    effects = Effects()
    try:
        relays = [
            OutboxRelay(pool, bus, batch=7, poll_interval=0.1),
            OutboxRelay(pool, other_bus, batch=7, poll_interval=0.1),
        ]
        async with (
            running(relays[0].run),
            running(relays[1].run),
            running(consumer(bus, effects)),
        ):
            await asyncio.gather(*(commit(e) for e in events))

            async def all_applied() -> bool:
                return len(effects.applied) == 50

            await eventually(all_applied)
            await asyncio.sleep(0.5)
    finally:
        await other_bus.close()

    assert effects.applied == {e.event_id for e in events}
    assert set(effects.deliveries.values()) == {1}
    assert await stored(bus) == 50
    for tenant in tenants:
        assert await pending(pool, tenant) == 0


class Rounds(OutboxRelay):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds = 0

    async def relay_once(self) -> int:
        n = await super().relay_once()
        self.rounds += 1
        return n


async def test_relay_wakes_on_commit_without_waiting_for_its_poll(
    pool: asyncpg.Pool, bus: Bus, eventually: Eventually
) -> None:
    relay = Rounds(pool, bus, poll_interval=600)
    async with running(relay.run):

        async def first_round_done() -> bool:
            return relay.rounds >= 1

        await eventually(first_round_done)  # it is now listening, and idle for 10 minutes
        tenant = uuid4()
        async with tenant_tx(pool, tenant) as conn:
            await enqueue(conn, provisioned(tenant), codec)

        async def published() -> bool:
            return await stored(bus) == 1

        await eventually(published)


async def test_published_rows_are_purged_and_pending_ones_kept(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    tenant = uuid4()
    async with tenant_tx(pool, tenant) as conn:
        await enqueue(conn, provisioned(tenant), codec)
    relay = OutboxRelay(pool, bus, purge_after=timedelta(0))
    await relay.relay_once()
    async with tenant_tx(pool, tenant) as conn:
        await enqueue(conn, provisioned(tenant), codec)

    assert await relay.purge() == 1
    async with tenant_tx(pool, tenant) as conn:
        left = await conn.fetch("select published_at from outbox")
    assert [r["published_at"] for r in left] == [None]


async def test_enqueue_outside_a_transaction_is_refused(pool: asyncpg.Pool) -> None:
    tenant = uuid4()
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await enqueue(conn, provisioned(tenant), codec)


async def test_enqueue_refuses_an_event_whose_subject_is_not_its_tenants(
    pool: asyncpg.Pool,
) -> None:
    class Misrouted(NumberProvisioned, frozen=True, kw_only=True, tag="number.misrouted"):
        def subject(self) -> str:
            return f"tenant.{uuid4()}.number.{self.number_id}.provisioned"

    tenant = uuid4()
    event = Misrouted(tenant_id=tenant, number_id=uuid4(), e164="+14155550100")
    with pytest.raises(ValueError, match="subject"):
        async with tenant_tx(pool, tenant) as conn:
            await enqueue(conn, event, EventCodec([Misrouted]))


async def test_another_tenants_transaction_cannot_write_its_events(pool: asyncpg.Pool) -> None:
    tenant, other = uuid4(), uuid4()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_tx(pool, other) as conn:
            await enqueue(conn, provisioned(tenant), codec)

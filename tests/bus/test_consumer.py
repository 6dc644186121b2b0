"""Durable pull consumers: ack on success, nak with backoff on failure, term for poison."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import pytest

from bus.connection import EVENTS_STREAM, Bus, publish, publish_raw
from bus.consumer import run_consumer
from bus.events import Event, EventCodec

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


class QueueCreated(Event, frozen=True, kw_only=True, tag="queue.created"):
    queue_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.created"


codec = EventCodec([QueueCreated])


@asynccontextmanager
async def consuming(
    bus: Bus,
    handler: Callable[[Event], Awaitable[None]],
    *,
    durable: str = "test",
    max_deliver: int = 10,
    backoff: Sequence[float] = (0.1,),
    ack_wait: float = 30.0,
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_consumer(
            bus,
            durable=durable,
            filter_subject="tenant.>",
            codec=codec,
            handler=handler,
            stop=stop,
            max_deliver=max_deliver,
            backoff=backoff,
            ack_wait=ack_wait,
            fetch_timeout=0.2,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def queue_created(tenant: UUID | None = None) -> QueueCreated:
    return QueueCreated(tenant_id=tenant or uuid4(), queue_id=uuid4(), name="support")


async def ack_pending(bus: Bus, durable: str = "test") -> tuple[int, int]:
    info = await bus.js.consumer_info(EVENTS_STREAM, durable)
    return int(info.num_ack_pending or 0), int(info.num_pending or 0)


async def test_handled_events_are_acked_once_each(bus: Bus, eventually: Eventually) -> None:
    events = [queue_created() for _ in range(5)]
    for e in events:
        await publish(bus, e, codec)
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    async with consuming(bus, handler):

        async def settled() -> bool:
            return len(seen) == 5 and await ack_pending(bus) == (0, 0)

        await eventually(settled)
    assert seen == events


async def test_handler_that_fails_first_is_retried_and_the_failure_is_logged(
    bus: Bus, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    event = queue_created()
    await publish(bus, event, codec)
    attempts: Counter[UUID] = Counter()
    done: set[UUID] = set()

    async def handler(e: Event) -> None:
        attempts[e.event_id] += 1
        if attempts[e.event_id] == 1:
            raise RuntimeError("crm webhook timed out")
        done.add(e.event_id)

    with caplog.at_level(logging.ERROR, logger="bus.consumer"):
        async with consuming(bus, handler):

            async def handled() -> bool:
                return done == {event.event_id} and await ack_pending(bus) == (0, 0)

            await eventually(handled)

    assert attempts[event.event_id] == 2
    [failure] = [r for r in caplog.records if r.name == "bus.consumer"]
    assert str(event.event_id) in failure.getMessage()
    assert event.subject() in failure.getMessage()
    assert failure.exc_info is not None
    assert "crm webhook timed out" in str(failure.exc_info[1])


async def test_poison_message_is_terminated_not_redelivered(
    bus: Bus, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = uuid4()
    await publish_raw(bus, f"tenant.{tenant}.queue.x.created", b"{not json", str(uuid4()))
    good = queue_created(tenant)
    await publish(bus, good, codec)
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    with caplog.at_level(logging.ERROR, logger="bus.consumer"):
        async with consuming(bus, handler, ack_wait=0.5):

            async def settled() -> bool:
                return len(seen) == 1 and await ack_pending(bus) == (0, 0)

            await eventually(settled)
            await asyncio.sleep(1.0)  # past ack_wait: a message left unsettled would come back
            info = await bus.js.consumer_info(EVENTS_STREAM, "test")

    assert seen == [good]
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0
    assert info.delivered is not None
    assert info.delivered.consumer_seq == 2  # each message delivered once
    [poison] = [r for r in caplog.records if r.name == "bus.consumer"]
    assert "undecodable" in poison.getMessage()


async def test_handler_that_keeps_failing_is_given_up_after_max_deliver(
    bus: Bus, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    event = queue_created()
    await publish(bus, event, codec)
    attempts = 0

    async def handler(e: Event) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("still broken")

    with caplog.at_level(logging.ERROR, logger="bus.consumer"):
        async with consuming(bus, handler, max_deliver=3, backoff=(0.05,), ack_wait=0.5):

            async def gave_up() -> bool:
                return attempts == 3 and await ack_pending(bus) == (0, 0)

            await eventually(gave_up)
            await asyncio.sleep(1.0)

    assert attempts == 3
    failures = [r for r in caplog.records if r.name == "bus.consumer"]
    assert len(failures) == 3
    assert all(r.exc_info is not None for r in failures)
    assert "giving up" in failures[-1].getMessage()


async def test_durable_consumer_resumes_after_the_last_acked_event(
    bus: Bus, eventually: Eventually
) -> None:
    first, second = queue_created(), queue_created()
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    await publish(bus, first, codec)
    async with consuming(bus, handler, durable="resumable"):

        async def got_first() -> bool:
            return len(seen) == 1 and await ack_pending(bus, "resumable") == (0, 0)

        await eventually(got_first)

    await publish(bus, second, codec)
    async with consuming(bus, handler, durable="resumable"):

        async def got_second() -> bool:
            return len(seen) == 2

        await eventually(got_second)

    assert seen == [first, second]

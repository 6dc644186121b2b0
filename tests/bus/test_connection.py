"""The EVENTS stream and publishing to it, against a real nats-server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol
from uuid import UUID, uuid4

import pytest

from bus.connection import (
    DUPLICATE_WINDOW,
    EVENTS_STREAM,
    Bus,
    RawMessage,
    connect,
    ensure_events_stream,
    publish,
    publish_raw,
    publish_raw_many,
)
from bus.errors import PublishFailed
from bus.events import Event, EventCodec

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


class NatsServer(Protocol):
    url: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class SeatAdded(Event, frozen=True, kw_only=True, tag="seat.added"):
    seat_id: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.seat.{self.seat_id}.added"


codec = EventCodec([SeatAdded])


async def stored(bus: Bus) -> int:
    info = await bus.js.stream_info(EVENTS_STREAM)
    return int(info.state.messages)


async def test_publishing_the_same_event_twice_stores_one_message(bus: Bus) -> None:
    event = SeatAdded(tenant_id=uuid4(), seat_id=uuid4())
    await publish(bus, event, codec)
    await publish(bus, event, codec)
    assert await stored(bus) == 1
    msg = await bus.js.get_last_msg(EVENTS_STREAM, event.subject())
    assert msg.data is not None
    assert codec.decode(msg.data) == event
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == str(event.event_id)


async def test_distinct_events_are_all_stored(bus: Bus) -> None:
    tenant = uuid4()
    for _ in range(3):
        await publish(bus, SeatAdded(tenant_id=tenant, seat_id=uuid4()), codec)
    assert await stored(bus) == 3


async def test_batch_publish_stores_in_order_and_deduplicates_a_repeat(bus: Bus) -> None:
    tenant = uuid4()
    events = [SeatAdded(tenant_id=tenant, seat_id=uuid4()) for _ in range(20)]
    batch = [RawMessage(e.subject(), codec.encode(e), str(e.event_id)) for e in events]
    await publish_raw_many(bus, batch)
    await publish_raw_many(bus, batch)
    assert await stored(bus) == 20
    for seq, event in enumerate(events, start=1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        assert msg.data is not None
        assert codec.decode(msg.data) == event


async def test_publishing_outside_the_stream_fails_loudly(bus: Bus) -> None:
    with pytest.raises(PublishFailed):
        await publish_raw(bus, "elsewhere.thing", b"{}", str(uuid4()), ack_timeout=2)
    with pytest.raises(PublishFailed):
        await publish_raw_many(
            bus, [RawMessage("elsewhere.thing", b"{}", str(uuid4()))], ack_timeout=2
        )


async def test_ensuring_the_stream_again_keeps_its_messages_and_settings(bus: Bus) -> None:
    await publish(bus, SeatAdded(tenant_id=uuid4(), seat_id=uuid4()), codec)
    await ensure_events_stream(bus)
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 1
    assert info.config.subjects == ["tenant.>"]
    assert info.config.storage == "file"
    assert info.config.duplicate_window == DUPLICATE_WINDOW.total_seconds()


async def test_bus_reports_its_connection_and_closes(nats_url: str) -> None:
    bus = await connect(nats_url, name="closing")
    assert bus.is_connected
    await bus.close()
    assert not bus.is_connected
    await bus.close()  # twice is harmless


async def test_bus_reconnects_after_the_server_restarts_and_logs_it(
    own_nats: NatsServer, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = uuid4()
    with caplog.at_level(logging.INFO, logger="bus.connection"):
        bus = await connect(own_nats.url, name="restarting")
        try:
            await ensure_events_stream(bus)
            await publish(bus, SeatAdded(tenant_id=tenant, seat_id=uuid4()), codec)
            own_nats.stop()

            async def disconnected() -> bool:
                return not bus.is_connected

            await eventually(disconnected)
            own_nats.start()

            async def connected() -> bool:
                return bus.is_connected

            await eventually(connected)
            await publish(bus, SeatAdded(tenant_id=tenant, seat_id=uuid4()), codec)
            assert await stored(bus) == 2  # the file-stored stream survived the restart
        finally:
            await bus.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "bus.connection"]
    assert any("disconnected (restarting)" in m for m in logged)
    assert any("reconnected (restarting)" in m for m in logged)

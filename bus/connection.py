"""The NATS connection, the EVENTS stream, and publishing to it with JetStream acknowledgement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from bus.errors import PublishFailed
from bus.events import Event, EventCodec

log = logging.getLogger(__name__)

EVENTS_STREAM = "EVENTS"
EVENTS_SUBJECTS = ("tenant.>",)
# A relay that restarts and re-publishes rows it had already sent within this window is
# deduplicated by JetStream; beyond it, consumers' idempotency (keyed by event_id) takes over.
DUPLICATE_WINDOW = timedelta(minutes=10)
PUBLISH_TIMEOUT = 5.0


class Bus:
    """A NATS connection and its JetStream context. Reconnects forever; build one per process
    with `connect()` and pass it in."""

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        # publish_async sets up its reply subscription lazily; two first calls at once would
        # each set it up and lose the other's futures.
        self.publish_lock = asyncio.Lock()

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Drain (finish in-flight deliveries and publishes), then close."""
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("nats drain failed, closing: %r", exc)
            await self.nc.close()


async def connect(url: str, *, name: str, reconnect_time_wait: float = 0.5) -> Bus:
    """Connect (waiting as long as it takes for the server), logging every state change."""

    async def on_error(exc: Exception) -> None:
        log.error("nats error (%s): %r", name, exc)

    async def on_disconnected() -> None:
        log.warning("nats disconnected (%s)", name)

    async def on_reconnected() -> None:
        log.warning("nats reconnected (%s) to %s", name, _server(nc))

    async def on_closed() -> None:
        log.info("nats connection closed (%s)", name)

    options: dict[str, Any] = {
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": reconnect_time_wait,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    nc = await nats.connect(url, **options)
    log.info("nats connected (%s) to %s", name, _server(nc))
    return Bus(nc, nc.jetstream())


def _server(nc: Client) -> str:
    url = nc.connected_url
    return url.netloc if url is not None else "?"


async def ensure_events_stream(bus: Bus, *, replicas: int = 1) -> None:
    """Create stream EVENTS, or bring an existing one to this configuration."""
    config = StreamConfig(
        name=EVENTS_STREAM,
        subjects=list(EVENTS_SUBJECTS),
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        num_replicas=replicas,
    )
    try:
        await bus.js.stream_info(EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        try:
            await bus.js.add_stream(config)
            log.info("stream %s created", EVENTS_STREAM)
            return
        except nats.js.errors.BadRequestError:
            pass  # another process created it a moment ago; fall through to update
    await bus.js.update_stream(config)


class RawMessage(NamedTuple):
    subject: str
    payload: bytes
    msg_id: str


async def publish(bus: Bus, event: Event, codec: EventCodec) -> None:
    """Publish `event` to its subject in EVENTS, deduplicated by its event_id."""
    await publish_raw(bus, event.subject(), codec.encode(event), str(event.event_id))


async def publish_raw(
    bus: Bus, subject: str, payload: bytes, msg_id: str, *, ack_timeout: float = PUBLISH_TIMEOUT
) -> None:
    """Publish already-encoded bytes and wait for JetStream's acknowledgement."""
    try:
        await bus.js.publish(
            subject,
            payload,
            timeout=ack_timeout,
            stream=EVENTS_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise PublishFailed(f"{subject} ({msg_id}): {exc!r}") from exc


async def publish_raw_many(
    bus: Bus, messages: Sequence[RawMessage], *, ack_timeout: float = PUBLISH_TIMEOUT
) -> None:
    """Publish in order without waiting for each acknowledgement in turn, then wait for all of
    them. Raises PublishFailed unless every message was acknowledged (some may be stored: a
    retry of the whole batch is deduplicated by msg_id)."""
    if not messages:
        return
    futures: list[asyncio.Future[Any]] = []
    try:
        async with bus.publish_lock:
            for m in messages:
                futures.append(
                    await bus.js.publish_async(
                        m.subject,
                        m.payload,
                        wait_stall=ack_timeout,
                        stream=EVENTS_STREAM,
                        headers={"Nats-Msg-Id": m.msg_id},
                    )
                )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        _discard(futures)
        raise PublishFailed(f"publishing a batch of {len(messages)}: {exc!r}") from exc
    try:
        done, pending = await asyncio.wait(futures, timeout=ack_timeout)
    except BaseException:  # cancelled: leave no future behind unobserved
        _discard(futures)
        raise
    _discard(pending)
    failures = [e for f in done if not f.cancelled() and (e := f.exception()) is not None]
    if pending or failures:
        first = failures[0] if failures else None
        raise PublishFailed(
            f"{len(pending)} of {len(messages)} unacknowledged after {ack_timeout}s, "
            f"{len(failures)} refused (first: {first!r})"
        ) from first


def _discard(futures: Any) -> None:
    for f in futures:
        if f.done():
            if not f.cancelled():
                f.exception()  # retrieved, so asyncio does not log it as never retrieved
        else:
            f.cancel()

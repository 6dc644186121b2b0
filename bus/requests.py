"""Commands by NATS request/reply (`media.<node_id>.<verb>`, `router.<partition>.<verb>`) and
plain core-NATS notices such as heartbeats. Nothing here is stored: a command that gets no
answer has failed and the caller decides what to do."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.connection import Bus
from bus.errors import BusError

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[bytes]]
"""(subject, request payload) -> reply payload. Must not raise: encode errors into the reply."""


class NoResponder(BusError):
    """Nobody answered the command in time."""


class CommandService:
    """Serves request/reply commands on a subject (wildcards allowed) until closed."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def close(self) -> None:
        try:
            await self._subscription.unsubscribe()
        except (nats.errors.Error, OSError) as exc:
            log.warning("unsubscribing commands failed: %r", exc)


async def serve_commands(
    bus: Bus, subject: str, handler: Handler, *, queue: str = ""
) -> CommandService:
    async def on_message(msg: Msg) -> None:
        try:
            reply = await handler(msg.subject, msg.data)
        except Exception:
            log.exception("command handler failed on %s", msg.subject)
            reply = b'{"ok":false,"error":"internal error"}'
        if msg.reply:
            try:
                await msg.respond(reply)
            except (nats.errors.Error, OSError) as exc:
                log.warning("replying on %s failed: %r", msg.subject, exc)

    subscription = await bus.nc.subscribe(subject, queue=queue, cb=on_message)
    return CommandService(subscription)


async def send_command(bus: Bus, subject: str, payload: bytes, *, wait: float = 5.0) -> bytes:
    try:
        msg = await bus.nc.request(subject, payload, timeout=wait)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
        raise NoResponder(f"{subject}: {exc!r}") from exc
    return bytes(msg.data)


async def notify(bus: Bus, subject: str, payload: bytes) -> None:
    """Core-NATS publish (at most once): for heartbeats and other notices newer ones replace."""
    try:
        await bus.nc.publish(subject, payload)
    except (nats.errors.Error, OSError) as exc:
        log.warning("notice on %s not sent: %r", subject, exc)


async def subscribe_notices(
    bus: Bus, subject: str, handler: Callable[[str, bytes], Awaitable[Any]]
) -> CommandService:
    async def on_message(msg: Msg) -> None:
        try:
            await handler(msg.subject, msg.data)
        except Exception:
            log.exception("notice handler failed on %s", msg.subject)

    return CommandService(await bus.nc.subscribe(subject, cb=on_message))

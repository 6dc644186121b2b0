"""The router role: partitions under leases, a durable consumer per partition, the tick loop,
and the commands the API sends (`router.<partition>.<verb>`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus.connection import EVENTS_STREAM, Bus
from bus.errors import BusError, UnknownEvent
from bus.events import EventCodec
from bus.kv import Bucket, KvError, Lease, open_bucket
from bus.publisher import EventPublisher
from bus.requests import CommandService, NoResponder, send_command, serve_commands
from media import events as call_events
from routing.acd import AgentView, PresenceRefused, QueueView
from routing.client import router_subject
from routing.events import live_codec
from routing.router import (
    CALL_VERBS,
    CATALOG_RESOURCES,
    CommandFailed,
    Desk,
    Router,
    partition_of,
)
from runtime.settings import Settings
from tenancy.acd import load_catalog
from tenancy.queues import events as queue_events
from tenancy.seats import events as seat_events

log = logging.getLogger("switchboard.router")

LEASES_BUCKET = "ROUTER_LEASES"
INSTANCES_BUCKET = "ROUTER_INSTANCES"
STATE_BUCKET = "ACD_STATE"
BATCH = 64
_OWN_EVENTS = frozenset({("agent", "state"), ("queue", "live")})
"""What routers publish themselves: acknowledged unread."""


def _inputs_codec() -> EventCodec:
    classes: list[Any] = []
    for codec in (call_events.codec, queue_events.codec, seat_events.codec):
        classes += list(codec.tags.values())
    return EventCodec(classes)


class KvStateStore:
    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def load(self, tenant_id: UUID) -> bytes | None:
        entry = await self._bucket.get(f"t.{tenant_id}")
        return entry.value if entry is not None else None

    async def save(self, tenant_id: UUID, data: bytes) -> None:
        await self._bucket.put(f"t.{tenant_id}", data)


class BusNodeCommands:
    def __init__(self, bus: Bus, wait: float = 5.0) -> None:
        self._bus = bus
        self._wait = wait

    async def __call__(self, node_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            raw = await send_command(
                self._bus, f"media.{node_id}.{verb}", msgspec.json.encode(body), wait=self._wait
            )
        except NoResponder as exc:
            raise CommandFailed("node_unreachable", str(exc)) from exc
        reply: dict[str, Any] = msgspec.json.decode(raw)
        if not reply.get("ok"):
            raise CommandFailed(str(reply.get("error")), str(reply.get("message", "")))
        return reply


# --- commands from the API ----------------------------------------------------------------


class PresenceCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: UUID
    agent_id: UUID
    state: str
    reason: str | None = None
    device: str | None = None


class AgentCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: UUID
    agent_id: UUID


class TenantCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: UUID


class QueueCommand(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: UUID
    queue_id: UUID


def _agent_json(view: AgentView) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(view)
    for name in ("since", "idle_since", "wrap_up_until"):
        if raw.get(name) is not None:
            raw[name] = datetime.fromtimestamp(raw[name], UTC).isoformat()
    return raw


def _queue_json(view: QueueView) -> dict[str, Any]:
    return msgspec.to_builtins(view)  # type: ignore[no-any-return]


@dataclass(eq=False)
class _Partition:
    number: int
    lease: Lease
    task: asyncio.Task[None] | None = None
    commands: CommandService | None = None
    tenants: set[UUID] = field(default_factory=set)
    stopping: bool = False


class RouterNode:
    """One router instance: holds leases for its share of the partitions and serves them."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        bus: Bus,
        *,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self._pool = pool
        self.instance_id = instance_id or f"{settings.node_id}-{secrets.token_hex(4)}"
        self.partitions = settings.router_partitions
        self.namespace = f"_{settings.router_namespace}" if settings.router_namespace else ""
        self._lease_ttl = settings.router_lease_seconds
        self._codec = _inputs_codec()
        self._publisher = EventPublisher(bus, live_codec)
        self.router: Router | None = None
        self._parts: dict[int, _Partition] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._leases: Bucket | None = None
        self._instances: Bucket | None = None

    @property
    def owned(self) -> list[int]:
        return sorted(n for n, p in self._parts.items() if p.lease.held and p.task is not None)

    async def start(self) -> None:
        replicas = self.settings.events_stream_replicas
        ns = self.namespace
        self._leases = await open_bucket(
            self.bus, f"{LEASES_BUCKET}{ns}", ttl=self._lease_ttl, replicas=replicas
        )
        self._instances = await open_bucket(
            self.bus, f"{INSTANCES_BUCKET}{ns}", ttl=self._lease_ttl, replicas=replicas
        )
        state = await open_bucket(self.bus, f"{STATE_BUCKET}{ns}", replicas=replicas)

        async def catalog(tenant_id: UUID) -> Any:
            return await load_catalog(self._pool, tenant_id)

        self.router = Router(
            catalog=catalog,
            store=KvStateStore(state),
            nodes=BusNodeCommands(self.bus),
            events=self._publisher,
            offer_timeout=self.settings.router_offer_timeout_seconds,
        )
        for number in range(self.partitions):
            await self._ensure_consumer(number)
            self._parts[number] = _Partition(
                number, Lease(self._leases, f"p{number}", self.instance_id)
            )
        self._publisher.start()
        await self._balance()
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="router-leases"),
            asyncio.create_task(self._tick_loop(), name="router-ticks"),
            asyncio.create_task(self._live_loop(), name="router-live"),
        ]

    async def stop(self, *, release: bool = True) -> None:
        """Stop serving. With `release`, give the leases back so another router takes over at
        once; without, they age out (as when a router dies)."""
        self._stop.set()
        for task in self._tasks:
            await _cancel(task)
        for part in self._parts.values():
            await self._stop_partition(part)
            if release:
                await part.lease.release()
        if release and self._instances is not None:
            with contextlib.suppress(KvError):
                await self._instances.delete(self.instance_id)
        await self._publisher.close()

    # --- leases --------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._lease_ttl / 3)
            if self._stop.is_set():
                return
            try:
                await self._balance()
            except (KvError, BusError) as exc:
                log.warning("router %s: lease round failed: %r", self.instance_id, exc)

    async def _balance(self) -> None:
        """Renew what we hold, give back what is over our fair share, take free partitions up
        to it. The share is ceil(partitions / live routers), so routers spread the tenants."""
        assert self._instances is not None
        await self._instances.put(self.instance_id, b"1")
        live = max(1, len(await self._instances.keys()))
        share = math.ceil(self.partitions / live)
        held = [p for p in self._parts.values() if p.lease.held]
        for part in held:
            if not await part.lease.renew():
                log.warning("router %s lost partition %d", self.instance_id, part.number)
                await self._stop_partition(part)
        held = [p for p in self._parts.values() if p.lease.held]
        for part in sorted(held, key=lambda p: -p.number)[: max(0, len(held) - share)]:
            log.info("router %s hands partition %d over", self.instance_id, part.number)
            await self._stop_partition(part)
            await part.lease.release()
        count = sum(1 for p in self._parts.values() if p.lease.held)
        for part in self._parts.values():
            if count >= share:
                break
            if part.lease.held:
                continue
            if await part.lease.acquire():
                count += 1
                await self._start_partition(part)

    # --- partitions ----------------------------------------------------------------------------

    def _durable(self, number: int) -> str:
        return f"router{self.namespace}-p{number}"

    async def _ensure_consumer(self, number: int) -> None:
        config = ConsumerConfig(
            name=self._durable(number),
            durable_name=self._durable(number),
            filter_subject="tenant.>",
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_ack_pending=10_000,
        )
        with contextlib.suppress(nats.errors.Error):
            info = await self.bus.js.consumer_info(EVENTS_STREAM, self._durable(number))
            if info is not None:
                return
        await self.bus.js.add_consumer(EVENTS_STREAM, config)

    async def _start_partition(self, part: _Partition) -> None:
        log.info("router %s serves partition %d", self.instance_id, part.number)
        part.commands = await serve_commands(
            self.bus,
            f"{router_subject(self.settings.router_namespace, part.number)}.*",
            self._on_command,
        )
        part.task = asyncio.create_task(self._consume(part), name=f"router-p{part.number}")

    async def _stop_partition(self, part: _Partition) -> None:
        if part.commands is not None:
            await part.commands.close()
            part.commands = None
        if part.task is not None:
            part.stopping = True
            await _cancel(part.task)
            part.task = None
            part.stopping = False
        if self.router is not None:
            self.router.drop(part.tenants)
        part.tenants.clear()

    async def _consume(self, part: _Partition) -> None:
        sub = await self.bus.js.pull_subscribe_bind(
            durable=self._durable(part.number), stream=EVENTS_STREAM
        )
        try:
            while not part.stopping:
                try:
                    msgs = await sub.fetch(BATCH, timeout=0.5)
                except TimeoutError:
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.warning("partition %d: fetch failed: %r", part.number, exc)
                    await asyncio.sleep(0.5)
                    continue
                await self._handle_batch(part, msgs)
        finally:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await sub.unsubscribe()

    def _relevant(self, part: _Partition, subject: str) -> UUID | None:
        """The tenant of an event this partition must absorb, else None (acknowledged unread)."""
        parts = subject.split(".")
        if len(parts) < 4:
            return None
        resource, verb = parts[2], parts[-1]
        if resource == "call":
            if verb not in CALL_VERBS:
                return None
        elif resource not in CATALOG_RESOURCES or (resource, verb) in _OWN_EVENTS:
            return None
        try:
            tenant_id = UUID(parts[1])
        except ValueError:
            return None
        if partition_of(tenant_id, self.partitions) != part.number:
            return None
        return tenant_id

    async def _handle_batch(self, part: _Partition, msgs: list[Msg]) -> None:
        router = self.router
        assert router is not None
        plan: list[tuple[Desk, list[Any]]] = []
        settle: list[tuple[Msg, str]] = []
        for msg in msgs:
            tenant_id = self._relevant(part, msg.subject)
            if tenant_id is None:
                settle.append((msg, "ack"))
                continue
            try:
                event = self._codec.decode(msg.data)
            except UnknownEvent:
                settle.append((msg, "ack"))
                continue
            try:
                desk = await router.desk(tenant_id)
                part.tenants.add(tenant_id)
                plan.append((desk, await router.absorb(event, desk)))
            except PresenceRefused as exc:
                log.info("event %s refused by the core: %s", event.event_id, exc)
                settle.append((msg, "ack"))
                continue
            except Exception:
                log.exception("partition %d: event %s not absorbed", part.number, msg.subject)
                settle.append((msg, "nak"))
                continue
            settle.append((msg, "ack"))
        try:
            await router.save()
        except (KvError, BusError) as exc:
            # Nothing acknowledged: the events come again and are absorbed onto saved state.
            log.warning(
                "partition %d: state not saved, events will be redelivered: %r", part.number, exc
            )
            for desk, _ in plan:
                router.drop([desk.tenant_id])
            for msg, _ in settle:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.nak(delay=1.0)
            return
        for desk, decisions in plan:
            if decisions:
                await router.carry_out(desk, decisions)
        await router.save()
        for msg, how in settle:
            with contextlib.suppress(nats.errors.Error, OSError):
                if how == "ack":
                    await msg.ack()
                else:
                    await msg.nak(delay=1.0)

    # --- timers and live numbers ---------------------------------------------------------------

    async def _tick_loop(self) -> None:
        router = self.router
        assert router is not None
        while not self._stop.is_set():
            deadline = router.next_deadline()
            wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.time()))
            router.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(router.wake.wait(), wait)
            try:
                for desk in list(router.desks.values()):
                    decisions = router.tick(desk)
                    if decisions:
                        await router.save()
                        await router.carry_out(desk, decisions)
                await router.save()
            except Exception:
                log.exception("router tick failed")
                await asyncio.sleep(0.5)

    async def _live_loop(self) -> None:
        router = self.router
        assert router is not None
        while not self._stop.is_set():
            await asyncio.sleep(1.0)
            router.publish_live()

    # --- commands --------------------------------------------------------------------------------

    async def _on_command(self, subject: str, payload: bytes) -> bytes:
        verb = subject.rsplit(".", 1)[-1]
        try:
            result = await self._command(verb, payload)
        except PresenceRefused as exc:
            return msgspec.json.encode({"ok": False, "error": exc.code, "message": exc.message})
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return msgspec.json.encode(
                {"ok": False, "error": "invalid_command", "message": str(exc)}
            )
        return msgspec.json.encode({"ok": True, **result})

    async def _command(self, verb: str, payload: bytes) -> dict[str, Any]:
        router = self.router
        assert router is not None
        if verb == "presence":
            cmd = msgspec.json.decode(payload, type=PresenceCommand)
            self._own(cmd.tenant_id)
            decisions = await router.set_presence(
                cmd.tenant_id, cmd.agent_id, cmd.state, cmd.reason, cmd.device
            )
            desk = await router.desk(cmd.tenant_id)
            await router.save()
            await router.carry_out(desk, decisions)
            return {"agent": _agent_json(desk.acd.agent(cmd.agent_id))}
        if verb == "end_wrap_up":
            agent = msgspec.json.decode(payload, type=AgentCommand)
            self._own(agent.tenant_id)
            decisions = await router.end_wrap_up(agent.tenant_id, agent.agent_id)
            desk = await router.desk(agent.tenant_id)
            await router.save()
            await router.carry_out(desk, decisions)
            return {"agent": _agent_json(desk.acd.agent(agent.agent_id))}
        if verb == "agents":
            tenant = msgspec.json.decode(payload, type=TenantCommand)
            self._own(tenant.tenant_id)
            desk = await router.desk(tenant.tenant_id)
            return {"agents": [_agent_json(view) for view in desk.acd.agents()]}
        if verb == "queue":
            queue = msgspec.json.decode(payload, type=QueueCommand)
            self._own(queue.tenant_id)
            desk = await router.desk(queue.tenant_id)
            try:
                view = desk.acd.queue_stats(queue.queue_id, time.time())
            except KeyError as exc:
                raise PresenceRefused("unknown_queue", "no such queue") from exc
            return {"queue": _queue_json(view)}
        raise PresenceRefused("unknown_command", f"no command named {verb!r}")

    def _own(self, tenant_id: UUID) -> None:
        number = partition_of(tenant_id, self.partitions)
        part = self._parts.get(number)
        if part is None or not part.lease.held:
            raise PresenceRefused("not_owner", "this router does not serve that tenant now")
        part.tenants.add(tenant_id)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel and wait. On Python 3.11 a cancellation that lands while nats-py's fetch is inside
    asyncio.wait_for can be swallowed, so cancel again until the task has really ended."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s had failed", task.get_name(), exc_info=task.exception())


@contextlib.asynccontextmanager
async def router_node(
    settings: Settings, pool: asyncpg.Pool, bus: Bus, **kwargs: Any
) -> AsyncIterator[RouterNode]:
    node = RouterNode(settings, pool, bus, **kwargs)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()

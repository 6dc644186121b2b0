"""The ACD router process around the pure core: events in, decisions out, state kept in KV.

Tenants are spread over a fixed number of partitions (a hash of the tenant id). A router
instance serves the partitions whose lease it holds (a key in a JetStream KV bucket with a
ttl); each partition has its own durable consumer on the EVENTS stream, so whoever holds the
lease next resumes exactly where the last holder stopped.

For each batch of events the router applies them to the tenants' cores, saves the changed
tenants' state (the core's snapshot and the ids of the events it has absorbed) to KV, then
carries out the decisions (commands to media nodes, state events), then acknowledges the batch.
A router that dies anywhere in there is replaced by one that restores the saved state, skips
events already absorbed, and re-sends the offers that were in flight (a node treats a repeated
offer as the same offer), so no call is lost and none is offered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from uuid import UUID

import msgspec

from bus.events import Event
from routing.acd import (
    Acd,
    AgentChanged,
    AgentSpec,
    Announce,
    CallSpec,
    Decision,
    DialBack,
    Offer,
    Overflow,
    OverflowSpec,
    PresenceRefused,
    QueueSpec,
    Strategy,
    UnknownQueue,
)
from routing.events import AgentStateChanged, QueueLive
from tenancy.acd import AcdCatalog, AcdQueue

log = logging.getLogger(__name__)

PROCESSED_MEMORY = 5000
"""How many absorbed event ids each tenant remembers, to skip redeliveries."""
DEFAULT_OFFER_TIMEOUT = 20.0
NO_SUCH_QUEUE = "We are sorry, this line cannot take your call right now. Please call again later."

CALL_VERBS = frozenset(
    {
        "queued",
        "offer_ringing",
        "offer_answered",
        "offer_failed",
        "ended",
        "callback_requested",
        "callback_failed",
        "transferred",
        "dialed",
        "consult",
    }
)
CATALOG_RESOURCES = frozenset({"queue", "skill", "seat", "agent", "user"})


_OFFER_REFUSALS: dict[str, str | None] = {
    # The node has this offer already (a re-sent offer after a restart) or the call was
    # answered meanwhile: its events tell the rest.
    "already_offered": None,
    "already_answered": None,
    # The caller is gone (or leaving the queue), or their node is: not the agent's fault.
    "call_not_found": "caller_gone",
    "not_queued": "caller_gone",
    "overflowing": "caller_gone",
    "node_unreachable": "caller_gone",
}
"""How the router reads a node's refusal of an offer; anything else is the device's problem."""


def partition_of(tenant_id: UUID, partitions: int) -> int:
    """The partition that serves `tenant_id` (stable across processes and versions)."""
    digest = hashlib.blake2b(tenant_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


# --- what the router needs from around it ---------------------------------------------------


class CommandFailed(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NodeCommands(Protocol):
    async def __call__(self, node_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a command to a media node; raise CommandFailed when it is refused or unanswered."""
        ...


Catalog = Callable[[UUID], Awaitable[AcdCatalog]]
"""The tenant's queues and seated agents (tenancy.acd.load_catalog over a pool)."""


class StateStore(Protocol):
    async def load(self, tenant_id: UUID) -> bytes | None: ...

    async def save(self, tenant_id: UUID, data: bytes) -> None: ...


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


# --- per tenant -----------------------------------------------------------------------------


class _Saved(msgspec.Struct, kw_only=True):
    core: bytes
    processed: list[UUID]
    devices: dict[UUID, str]
    records: dict[UUID, bool] = {}
    """Queues that record their calls."""


@dataclass(eq=False)
class Desk:
    """One tenant's ACD: the core, what it has absorbed, and the agents' devices."""

    tenant_id: UUID
    acd: Acd
    devices: dict[UUID, str] = field(default_factory=dict)
    records: dict[UUID, bool] = field(default_factory=dict)
    processed: deque[UUID] = field(default_factory=lambda: deque(maxlen=PROCESSED_MEMORY))
    seen: set[UUID] = field(default_factory=set)
    dirty: bool = False
    live_due: set[UUID] = field(default_factory=set)

    def absorbed(self, event_id: UUID) -> bool:
        return event_id in self.seen

    def remember(self, event_id: UUID) -> None:
        if len(self.processed) == self.processed.maxlen:
            self.seen.discard(self.processed[0])
        self.processed.append(event_id)
        self.seen.add(event_id)
        self.dirty = True

    def dump(self) -> bytes:
        """The desk as one KV value: msgpack, deflated (UUIDs and ids repeat a lot)."""
        return zlib.compress(self._encode(), 1)

    def _encode(self) -> bytes:
        return msgspec.msgpack.encode(
            _Saved(
                core=self.acd.snapshot(),
                processed=list(self.processed),
                devices=self.devices,
                records=self.records,
            )
        )

    @classmethod
    def load(cls, tenant_id: UUID, data: bytes) -> Desk:
        saved = msgspec.msgpack.decode(zlib.decompress(data), type=_Saved)
        desk = cls(
            tenant_id=tenant_id,
            acd=Acd.restore(saved.core),
            devices=dict(saved.devices),
            records=dict(saved.records),
        )
        for event_id in saved.processed:
            desk.remember(event_id)
        desk.dirty = False
        return desk


def queue_spec(queue: AcdQueue, *, offer_timeout: float = DEFAULT_OFFER_TIMEOUT) -> QueueSpec:
    """A catalog queue as the core takes it."""
    overflow = queue.overflow
    return QueueSpec(
        queue_id=queue.queue_id,
        strategy=cast(Strategy, queue.strategy),
        priority=queue.priority,
        required_skills=dict(queue.required_skills),
        max_wait_seconds=float(queue.max_wait_seconds),
        overflow=OverflowSpec(
            action=overflow["action"],
            queue_id=UUID(overflow["queue_id"]) if overflow.get("queue_id") else None,
            mailbox=overflow.get("mailbox"),
            message=overflow.get("message", ""),
        ),
        wrap_up_seconds=float(queue.wrap_up_seconds),
        offer_timeout_seconds=offer_timeout,
        announce_position=queue.announce_position,
        announce_ewt=queue.announce_ewt,
        service_level_seconds=float(queue.service_level_seconds),
    )


# --- the router -------------------------------------------------------------------------------


class Router:
    """Serves the tenants of the partitions it is given. I/O goes through the protocols above;
    the bus plumbing (consumers, leases, command subjects) is in the composition root."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        store: StateStore,
        nodes: NodeCommands,
        events: EventSink,
        clock: Callable[[], float] = time.time,
        offer_timeout: float = DEFAULT_OFFER_TIMEOUT,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._nodes = nodes
        self._events = events
        self._clock = clock
        self._offer_timeout = offer_timeout
        self.desks: dict[UUID, Desk] = {}
        self._loading: dict[UUID, asyncio.Future[Desk]] = {}
        self.wake = asyncio.Event()
        """Set whenever a deadline may have moved earlier (the tick loop waits on it)."""

    # --- tenants --------------------------------------------------------------------------

    async def desk(self, tenant_id: UUID) -> Desk:
        """The tenant's desk: in memory, else restored from KV (re-sending in-flight offers),
        else new from the catalog."""
        desk = self.desks.get(tenant_id)
        if desk is not None:
            return desk
        pending = self._loading.get(tenant_id)
        if pending is not None:
            return await pending
        future: asyncio.Future[Desk] = asyncio.get_running_loop().create_future()
        self._loading[tenant_id] = future
        try:
            desk = await self._open(tenant_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters get it too
            raise
        finally:
            self._loading.pop(tenant_id, None)
        self.desks[tenant_id] = desk
        future.set_result(desk)
        await self._resume_offers(desk)
        return desk

    async def _open(self, tenant_id: UUID) -> Desk:
        data = await self._store.load(tenant_id)
        if data is not None:
            desk = Desk.load(tenant_id, data)
            log.info("tenant %s: ACD state restored", tenant_id)
        else:
            desk = Desk(tenant_id=tenant_id, acd=Acd())
        await self._refresh_catalog(desk)
        return desk

    async def _refresh_catalog(self, desk: Desk) -> list[Decision]:
        catalog = await self._catalog(desk.tenant_id)
        now = self._clock()
        decisions: list[Decision] = []
        known_queues = {queue.queue_id for queue in catalog.queues}
        for queue in catalog.queues:
            decisions += desk.acd.configure_queue(
                queue_spec(queue, offer_timeout=self._offer_timeout), now
            )
        for queue_id in desk.acd.queue_ids():
            if queue_id not in known_queues:
                decisions += desk.acd.remove_queue(queue_id, now)
        desk.records = {queue.queue_id: queue.record for queue in catalog.queues}
        known_agents = set()
        for agent in catalog.agents:
            known_agents.add(agent.agent_id)
            device = desk.devices.get(agent.agent_id)
            decisions += desk.acd.set_agent(
                AgentSpec(
                    agent_id=agent.agent_id,
                    skills=agent.skills,
                    queues=agent.queues,
                    device=device,
                ),
                now,
            )
        for agent_id in [a.agent_id for a in desk.acd.agents()]:
            if agent_id not in known_agents:
                decisions += desk.acd.remove_agent(agent_id, now)
        desk.dirty = True
        return decisions

    async def _resume_offers(self, desk: Desk) -> None:
        """After a restore, offers the core believes are out are sent again: a node that has
        them already answers as for the first time; one that lost them (or the call) says so."""
        decisions: list[Decision] = list(desk.acd.offers_in_flight())
        if decisions:
            log.info("tenant %s: re-sending %d offers in flight", desk.tenant_id, len(decisions))
            await self.carry_out(desk, decisions)

    def drop(self, tenant_ids: Iterable[UUID]) -> None:
        """Forget tenants (their partition moved to another router)."""
        for tenant_id in list(tenant_ids):
            self.desks.pop(tenant_id, None)

    # --- inputs ----------------------------------------------------------------------------

    async def absorb(self, event: Any, desk: Desk) -> list[Decision]:
        """Apply one event to its tenant's core; returns what to do (not done yet)."""
        if desk.absorbed(event.event_id):
            return []
        now = self._clock()
        acd = desk.acd
        kind = event.__struct_config__.tag
        decisions: list[Decision]
        match kind:
            case "call.queued":
                call = CallSpec(
                    call_id=event.call_id,
                    queue_id=event.queue_id,
                    priority=event.priority,
                    skills={name.lower(): level for name, level in event.skills.items()},
                    node_id=event.node_id,
                    from_number=event.from_number,
                    to_number=event.to_number,
                )
                try:
                    decisions = acd.enqueue(call, now)
                except UnknownQueue:
                    # Created since we last read the catalog, or deleted: read it again.
                    decisions = await self._refresh_catalog(desk)
                    try:
                        decisions += acd.enqueue(call, now)
                    except UnknownQueue:
                        log.warning(
                            "call %s queued to unknown queue %s", call.call_id, call.queue_id
                        )
                        decisions.append(
                            Overflow(
                                call_id=call.call_id,
                                queue_id=call.queue_id,
                                node_id=call.node_id,
                                spec=OverflowSpec(action="hangup", message=NO_SUCH_QUEUE),
                            )
                        )
            case "call.offer_ringing":
                decisions = acd.offer_ringing(event.call_id, event.agent_id, now)
            case "call.offer_answered":
                decisions = acd.offer_answered(event.call_id, event.agent_id, now)
            case "call.offer_failed":
                decisions = acd.offer_failed(event.call_id, event.agent_id, event.reason, now)
            case "call.ended":
                decisions = acd.call_ended(event.call_id, now, event.agent_id)
            case "call.consult":
                decisions = []
                if event.to_kind == "agent":
                    target = UUID(event.to)
                    if event.state == "ringing":
                        decisions = acd.consult_started(event.call_id, target, now)
                    elif event.state == "ended":
                        decisions = acd.consult_ended(event.call_id, target, now)
                    elif event.state == "completed":
                        decisions = acd.consult_completed(
                            event.call_id, event.agent_id, target, now
                        )
                elif event.state == "completed":
                    decisions = acd.transferred(event.call_id, event.agent_id, now)
            case "call.transferred":
                decisions = []
                if event.agent_id is not None and not event.attended:
                    to_agent = UUID(event.to) if event.to_kind == "agent" else None
                    decisions = acd.transferred(event.call_id, event.agent_id, now, to_agent)
            case "call.dialed":
                decisions = acd.dialing(event.call_id, event.agent_id, now)
            case "call.callback_requested":
                decisions = acd.callback_requested(event.call_id, event.number, now)
            case "call.callback_failed":
                decisions = acd.callback_failed(event.call_id, event.agent_id, now)
            case _:
                decisions = await self._refresh_catalog(desk)
        desk.remember(event.event_id)
        return decisions

    def tick(self, desk: Desk) -> list[Decision]:
        decisions = desk.acd.tick(self._clock())
        if decisions:
            desk.dirty = True
        return decisions

    def next_deadline(self) -> float | None:
        deadlines = [d for desk in self.desks.values() if (d := desk.acd.next_deadline())]
        return min(deadlines) if deadlines else None

    async def set_presence(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        state: str,
        reason: str | None,
        device: str | None,
    ) -> list[Decision]:
        desk = await self.desk(tenant_id)
        now = self._clock()
        decisions: list[Decision] = []
        if device is not None and desk.devices.get(agent_id) != device:
            current = desk.acd.agent_spec(agent_id)
            if current is None:
                raise PresenceRefused("unknown_agent", "no such agent with a seat")
            desk.devices[agent_id] = device
            decisions += desk.acd.set_agent(
                AgentSpec(
                    agent_id=agent_id,
                    skills=current.skills,
                    queues=current.queues,
                    device=device,
                ),
                now,
            )
        decisions += desk.acd.set_presence(agent_id, state, reason, now)  # type: ignore[arg-type]
        desk.dirty = True
        return decisions

    async def end_wrap_up(self, tenant_id: UUID, agent_id: UUID) -> list[Decision]:
        desk = await self.desk(tenant_id)
        decisions = desk.acd.end_wrap_up(agent_id, self._clock())
        desk.dirty = True
        return decisions

    # --- persistence -----------------------------------------------------------------------

    async def save(self) -> None:
        """Write every changed tenant's state; raises if the store is unreachable (the caller
        must then not acknowledge the events behind it)."""
        for desk in list(self.desks.values()):
            if desk.dirty:
                await self._store.save(desk.tenant_id, desk.dump())
                desk.dirty = False

    # --- outputs ---------------------------------------------------------------------------

    async def carry_out(self, desk: Desk, decisions: Sequence[Decision]) -> None:
        """Do what the core decided. A command a node refuses becomes an input to the core
        (the offer failed, the call is gone), whose decisions are carried out in turn."""
        todo = list(decisions)
        while todo:
            decision = todo.pop(0)
            try:
                todo += await self._one(desk, decision)
            except Exception:
                log.exception("tenant %s: carrying out %r failed", desk.tenant_id, decision)
        self.wake.set()

    async def _one(self, desk: Desk, decision: Decision) -> list[Decision]:
        tenant = str(desk.tenant_id)
        now = self._clock()
        if isinstance(decision, AgentChanged):
            self._events.emit(
                AgentStateChanged(
                    tenant_id=desk.tenant_id,
                    agent_id=decision.agent_id,
                    state=decision.state,
                    reason=decision.reason,
                    since=datetime.fromtimestamp(decision.since, UTC),
                    call_id=decision.call_id,
                )
            )
            self._mark_live(desk, decision.agent_id)
            return []
        if isinstance(decision, Offer):
            follow: list[Decision] = []
            record = desk.records.get(decision.queue_id, False)
            for agent_id, device in zip(decision.agent_ids, decision.devices, strict=True):
                try:
                    await self._nodes(
                        decision.node_id,
                        "offer",
                        {
                            "tenant_id": tenant,
                            "call_id": str(decision.call_id),
                            "agent_id": str(agent_id),
                            "device": device,
                            "timeout_seconds": decision.timeout_seconds,
                            "record": record,
                        },
                    )
                except CommandFailed as exc:
                    reason = _OFFER_REFUSALS.get(exc.code, "refused")
                    log.info("offer of call %s to agent %s: %s", decision.call_id, agent_id, exc)
                    if reason is not None:
                        follow += desk.acd.offer_failed(decision.call_id, agent_id, reason, now)
                        desk.dirty = True
            self._mark_live_queue(desk, decision.queue_id)
            return follow
        if isinstance(decision, DialBack):
            try:
                await self._nodes(
                    decision.node_id,
                    "dial_back",
                    {
                        "tenant_id": tenant,
                        "call_id": str(decision.call_id),
                        "agent_id": str(decision.agent_id),
                        "device": decision.device,
                        "number": decision.number,
                        "caller_id": decision.caller_id,
                        "timeout_seconds": self._offer_timeout,
                        "record": desk.records.get(decision.queue_id, False),
                    },
                )
            except CommandFailed as exc:
                log.warning("dial back of call %s not sent: %s", decision.call_id, exc)
                desk.dirty = True
                return desk.acd.callback_failed(decision.call_id, decision.agent_id, now)
            return []
        if isinstance(decision, Announce):
            with contextlib.suppress(CommandFailed):
                await self._nodes(
                    decision.node_id,
                    "announce",
                    {
                        "tenant_id": tenant,
                        "call_id": str(decision.call_id),
                        "position": decision.position,
                        "ewt_seconds": decision.ewt_seconds,
                    },
                )
            return []
        if isinstance(decision, Overflow):
            self._mark_live_queue(desk, decision.queue_id)
            spec = decision.spec
            if spec.action == "queue":
                return []
            body: dict[str, Any] = {
                "tenant_id": tenant,
                "call_id": str(decision.call_id),
                "queue_id": str(decision.queue_id),
                "action": spec.action,
            }
            if spec.mailbox is not None:
                body["mailbox"] = spec.mailbox
            if spec.message:
                body["message"] = spec.message
            try:
                await self._nodes(decision.node_id, "overflow", body)
            except CommandFailed as exc:
                log.warning("overflow of call %s not sent: %s", decision.call_id, exc)
            return []
        log.debug("decision %r needs nothing outside the core", decision)
        return []

    # --- live state for supervisors ----------------------------------------------------------

    def _mark_live(self, desk: Desk, agent_id: UUID) -> None:
        spec = desk.acd.agent_spec(agent_id)
        if spec is not None:
            desk.live_due.update(spec.queues)

    def _mark_live_queue(self, desk: Desk, queue_id: UUID) -> None:
        desk.live_due.add(queue_id)

    def publish_live(self) -> None:
        """Queue numbers for every queue touched since the last call (the caller paces it)."""
        now = self._clock()
        for desk in self.desks.values():
            due, desk.live_due = desk.live_due, set()
            for queue_id in due:
                try:
                    view = desk.acd.queue_stats(queue_id, now)
                except KeyError:
                    continue
                ewt = view.ewt_seconds
                self._events.emit(
                    QueueLive(
                        tenant_id=desk.tenant_id,
                        queue_id=queue_id,
                        waiting=view.waiting,
                        longest_wait_seconds=round(view.longest_wait_seconds, 3),
                        agents=dict(view.agents),
                        ewt_seconds=None if ewt is None or math.isinf(ewt) else round(ewt, 1),
                    )
                )

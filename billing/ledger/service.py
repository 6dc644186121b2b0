"""The usage ledger from events and sweeps, and its sending to Stripe.

Every row is keyed by what it measures (see `billing.ledger.rules`), so recording an event
twice, sweeping twice, or two workers doing either at once adds nothing. Sending uses the key
as the meter event's identifier: a row Stripe accepted but we did not get to mark (the worker
died in between) is sent again on the next round, and Stripe keeps one event per identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from billing.ledger import repository as repo
from billing.ledger import rules
from billing.ledger.repository import SpanKind
from billing.models import Gateway, LedgerEntry, MeterEventOut
from bus.events import Event, EventCodec
from media import events as call_events
from media.events import CallEnded
from runtime.db import platform_tx, tenant_tx
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import TenantId
from tenancy.numbers import events as number_events
from tenancy.numbers.events import NumberPurchased, NumberReleased
from tenancy.seats import events as seat_events
from tenancy.seats.events import SeatCreated, SeatReleased

log = logging.getLogger(__name__)

LEDGER_CONSUMERS: tuple[tuple[str, str, EventCodec], ...] = (
    ("billing-calls", "tenant.*.call.*.ended", call_events.codec),
    ("billing-seats", "tenant.*.seat.>", seat_events.codec),
    ("billing-numbers", "tenant.*.number.>", number_events.codec),
)
"""(durable name, filter subject, codec) of each consumer that feeds `record_event`."""

UNSENT_TENANTS_PER_ROUND = 10_000


async def _zone(conn: asyncpg.Connection, tenant_id: TenantId) -> ZoneInfo:
    """The tenant's zone; an unknown name counts in UTC (and says so) rather than stopping
    the tenant's metering."""
    name = await repo.time_zone(conn, tenant_id)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.error("billing: tenant %s has unknown time zone %r; counting in UTC", tenant_id, name)
        return ZoneInfo("UTC")


def _span_rows(
    kind: SpanKind,
    span: repo.Span,
    tz: ZoneInfo,
    through: datetime,
    since: datetime | None = None,
) -> list[LedgerEntry]:
    rule = rules.seat_days if kind == "seat" else rules.number_months
    return rule(span.item_id, span.started_at, span.ended_at, tz, through, since=since)


async def _record_span(
    pool: asyncpg.Pool,
    tenant_id: TenantId,
    kind: SpanKind,
    item_id: UUID,
    *,
    started: datetime | None = None,
    ended: datetime | None = None,
    now: datetime,
) -> int:
    async with tenant_tx(pool, tenant_id) as conn:
        if started is not None:
            span = await repo.span_started(conn, tenant_id, kind, item_id, started)
        else:
            assert ended is not None
            span = await repo.span_ended(conn, tenant_id, kind, item_id, ended)
        tz = await _zone(conn, tenant_id)
        return await repo.insert_entries(conn, tenant_id, _span_rows(kind, span, tz, now))


async def record_event(pool: asyncpg.Pool, event: Event, *, now: datetime | None = None) -> int:
    """Bring the ledger up to date with one event; how many rows were new. Seat and number
    events update the item's span and make its rows up to `now`; call.ended makes the call's
    minutes row. Events that are not metered are ignored."""
    now = now or datetime.now(UTC)
    tenant_id = TenantId(event.tenant_id)
    if isinstance(event, SeatCreated):
        return await _record_span(
            pool, tenant_id, "seat", event.seat_id, started=event.created_at, now=now
        )
    if isinstance(event, SeatReleased):
        return await _record_span(
            pool, tenant_id, "seat", event.seat_id, ended=event.released_at, now=now
        )
    if isinstance(event, NumberPurchased):
        return await _record_span(
            pool, tenant_id, "number", event.number_id, started=event.purchased_at, now=now
        )
    if isinstance(event, NumberReleased):
        return await _record_span(
            pool, tenant_id, "number", event.number_id, ended=event.released_at, now=now
        )
    if isinstance(event, CallEnded):
        if event.answered_at is None or event.talk_ms <= 0:
            return 0
        async with tenant_tx(pool, tenant_id) as conn:
            tz = await _zone(conn, tenant_id)
            entry = rules.call_minutes(
                event.call_id,
                event.direction,
                event.answered_at,
                event.ended_at,
                event.talk_ms,
                tz,
            )
            return 0 if entry is None else await repo.insert_entries(conn, tenant_id, [entry])
    return 0


async def sweep_tenant(
    pool: asyncpg.Pool, tenant_id: TenantId, now: datetime, *, since: datetime | None = None
) -> int:
    """Make the tenant's seat-day and number-month rows up to `now` (within Stripe's window);
    how many were new. With `since` (an earlier sweep's `now`), only from that local day on."""
    oldest = now - rules.STRIPE_WINDOW
    # A span that ended on since's local day still has a row on that day: reach a day back.
    alive_since = oldest if since is None else max(oldest, since - timedelta(days=1))
    async with tenant_tx(pool, tenant_id) as conn:
        tz = await _zone(conn, tenant_id)
        entries: list[LedgerEntry] = []
        for span in await repo.spans(conn, tenant_id, alive_since=alive_since):
            entries += _span_rows(span.kind, span, tz, now, since)
        return await repo.insert_entries(conn, tenant_id, entries)


async def sweep(pool: asyncpg.Pool, now: datetime) -> int:
    """A full `sweep_tenant` for every tenant that is not closed; one tenant's failure is
    logged and the others still get their rows."""
    return await Sweeper(pool).sweep(now)


class Sweeper:
    """Sweeps that remember when each tenant was last swept successfully, so a round only
    makes rows from that local day on: a full 35-day sweep per tenant at first, after a
    failure, and every `full_every` as a safety net; a cheap one in between."""

    def __init__(self, pool: asyncpg.Pool, *, full_every: timedelta = timedelta(hours=1)) -> None:
        self._pool = pool
        self._full_every = full_every
        self._swept: dict[TenantId, tuple[datetime, datetime]] = {}
        """tenant -> (last successful sweep's `now`, last full one's)."""

    async def sweep(self, now: datetime) -> int:
        async with platform_tx(self._pool) as conn:
            tenants = await repo.billing_tenants(conn)
        made = 0
        for tenant in tenants:
            if tenant.status == "closed":
                self._swept.pop(tenant.tenant_id, None)
                continue
            last, last_full = self._swept.pop(tenant.tenant_id, (None, None))
            full = last is None or last_full is None or now - last_full >= self._full_every
            try:
                made += await sweep_tenant(
                    self._pool, tenant.tenant_id, now, since=None if full else last
                )
            except Exception:
                log.exception(
                    "billing: sweeping tenant %s failed; retrying next round", tenant.tenant_id
                )
                continue
            self._swept[tenant.tenant_id] = (now, now if full or last_full is None else last_full)
        return made


async def correct(
    conn: asyncpg.Connection, tenant_id: TenantId, key: str, new_quantity: int, *, reason: str
) -> LedgerEntry:
    """Record a correction so that the ledger counts `new_quantity` for the row `key`."""
    original = await repo.entry(conn, tenant_id, key)
    if original is None:
        raise NotFound("No ledger row has that key.", field="key")
    if original.corrects is not None:
        raise InvalidInput("Correct the original row, not a correction.", field="key")
    earlier = await repo.corrections_of(conn, tenant_id, key)
    counted = original.quantity + sum(c.quantity for c in earlier)
    try:
        entry = rules.correction(
            original, new_quantity, len(earlier) + 1, counted=counted, reason=reason
        )
    except ValueError as exc:
        raise InvalidInput(str(exc), field="quantity") from exc
    if await repo.insert_entries(conn, tenant_id, [entry]) == 0:
        raise Conflict("This row was corrected at the same moment; look at it again.")
    return entry


def _meter_event(row: repo.UnsentRow) -> MeterEventOut:
    return MeterEventOut(
        identifier=row.key,
        meter=row.meter,
        customer_id=row.customer_id,
        value=row.quantity,
        timestamp=int(row.occurred_at.timestamp()),
    )


class MeterSender:
    """Sends unsent ledger rows to Stripe as meter events, a batch at a time per tenant, and
    marks the ones Stripe accepted. A row that fails stays unsent and goes out on a later
    round; a row older than Stripe's window is never sent (see `repository.stale_unsent`)."""

    def __init__(
        self, pool: asyncpg.Pool, gateway: Gateway, *, batch: int, batches_per_tenant: int = 20
    ) -> None:
        if batch < 1 or batches_per_tenant < 1:
            raise ValueError("batch and batches_per_tenant must be at least 1")
        self._pool = pool
        self._gateway = gateway
        self._batch = batch
        self._batches_per_tenant = batches_per_tenant

    async def send_pending(self, now: datetime | None = None) -> int:
        """One round over every tenant with unsent rows; how many rows Stripe accepted."""
        now = now or datetime.now(UTC)
        async with platform_tx(self._pool) as conn:
            tenants = await repo.unsent_tenants(conn, UNSENT_TENANTS_PER_ROUND)
        accepted = 0
        for tenant_id in tenants:
            try:
                accepted += await self.send_tenant(tenant_id, now)
            except Exception:
                log.exception("billing: sending usage of tenant %s failed; retrying", tenant_id)
        return accepted

    async def send_tenant(self, tenant_id: TenantId, now: datetime) -> int:
        """Send the tenant's unsent rows until none are left, Stripe refuses some, or the
        tenant has had its share of this round (a big backlog does not hold up the others)."""
        accepted = 0
        for _ in range(self._batches_per_tenant):
            async with tenant_tx(self._pool, tenant_id) as conn:
                rows = await repo.unsent(
                    conn, tenant_id, not_before=now - rules.STRIPE_WINDOW, limit=self._batch
                )
            if not rows:
                return accepted
            outcome = await self._gateway.send_meter_events([_meter_event(r) for r in rows])
            asked = {r.key for r in rows}
            held = [key for key in outcome.accepted if key in asked]
            if held:
                async with tenant_tx(self._pool, tenant_id) as conn:
                    await repo.mark_sent(conn, tenant_id, held)
            accepted += len(held)
            if outcome.failed:
                _log_failures(tenant_id, outcome.failed)
                return accepted
            if len(rows) < self._batch or len(held) < len(rows):
                return accepted
        return accepted


def _log_failures(tenant_id: TenantId, failed: dict[str, str]) -> None:
    sample: Sequence[tuple[str, str]] = list(failed.items())[:3]
    log.warning(
        "billing: Stripe did not take %d meter events of tenant %s (they stay unsent), e.g. %s",
        len(failed),
        tenant_id,
        "; ".join(f"{key}: {why}" for key, why in sample),
    )

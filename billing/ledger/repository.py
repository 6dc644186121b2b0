"""All SQL of the usage ledger: spans of metered things, ledger rows, what Stripe has accepted,
and the finance queries over them. Tenant functions run in the caller's `tenant_tx`; the
cross-tenant lists go through the sb_billing_* resolver functions in a `platform_tx`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from billing.ledger.rules import STRIPE_WINDOW
from billing.models import LedgerEntry, Meter
from tenancy.models import TenantId

SpanKind = Literal["seat", "number"]


class Span(msgspec.Struct, frozen=True, kw_only=True):
    kind: SpanKind
    item_id: UUID
    started_at: datetime
    ended_at: datetime | None


class UnsentRow(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    meter: Meter
    quantity: int
    occurred_at: datetime
    customer_id: str


class UsageDayRow(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    meter: Meter
    quantity: int
    sent: int
    """How much of `quantity` Stripe has accepted."""


class LedgerRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    key: str
    meter: Meter
    quantity: int
    usage_day: date
    occurred_at: datetime
    source: str
    source_id: str
    detail: dict[str, Any]
    corrects: str | None
    recorded_at: datetime
    sent_at: datetime | None


class MeterTotals(msgspec.Struct, frozen=True, kw_only=True):
    recorded: int
    sent: int
    stale_unsent: int
    """Unsent and older than Stripe's window: it will never be sent."""


class BillingTenant(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: TenantId
    time_zone: str
    status: str


# --- spans ------------------------------------------------------------------------------------

# A span the events still show open may have ended already: the release event can lag (a
# consumer backlog; a midnight between the release and its event being handled). The seat's or
# number's own row, written in the same transaction as that event, knows at once, so counting
# stops there either way.
_SPAN_SELECT = """
select m.kind, m.item_id, m.started_at,
       coalesce(m.ended_at, s.released_at, n.released_at) as ended_at
from {source} m
left join seats s on m.kind = 'seat' and s.tenant_id = m.tenant_id and s.id = m.item_id
left join numbers n on m.kind = 'number' and n.tenant_id = m.tenant_id and n.id = m.item_id
"""
_UPSERTED = "returning tenant_id, kind, item_id, started_at, ended_at"


def _span(row: asyncpg.Record) -> Span:
    return Span(
        kind=row["kind"],
        item_id=row["item_id"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
    )


async def span_started(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: SpanKind, item_id: UUID, at: datetime
) -> Span:
    """Record that the item existed from `at`; the earliest start seen wins, so a creation
    redelivered after the release still leaves the span right."""
    row = await conn.fetchrow(
        f"""with m as (
                insert into metered_spans (tenant_id, kind, item_id, started_at)
                values ($1, $2, $3, $4)
                on conflict (tenant_id, kind, item_id) do update
                set started_at = least(metered_spans.started_at, excluded.started_at)
                {_UPSERTED}
            ) {_SPAN_SELECT.format(source="m")}""",  # noqa: S608
        tenant_id,
        kind,
        item_id,
        at,
    )
    assert row is not None
    return _span(row)


async def span_ended(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: SpanKind, item_id: UUID, at: datetime
) -> Span:
    """Record that the item ended at `at`. A release that arrives before the creation starts
    the span at the release (the item certainly existed then); the creation moves it back."""
    row = await conn.fetchrow(
        f"""with m as (
                insert into metered_spans (tenant_id, kind, item_id, started_at, ended_at)
                values ($1, $2, $3, $4, $4)
                on conflict (tenant_id, kind, item_id) do update
                set ended_at = excluded.ended_at,
                    started_at = least(metered_spans.started_at, excluded.ended_at)
                {_UPSERTED}
            ) {_SPAN_SELECT.format(source="m")}""",  # noqa: S608
        tenant_id,
        kind,
        item_id,
        at,
    )
    assert row is not None
    return _span(row)


async def spans(
    conn: asyncpg.Connection, tenant_id: TenantId, *, alive_since: datetime
) -> list[Span]:
    """Spans that had not ended before `alive_since`."""
    rows = await conn.fetch(
        f"""select * from ({_SPAN_SELECT.format(source="metered_spans")}
                where m.tenant_id = $1) spans
            where ended_at is null or ended_at >= $2
            order by kind, item_id""",  # noqa: S608
        tenant_id,
        alive_since,
    )
    return [_span(r) for r in rows]


async def time_zone(conn: asyncpg.Connection, tenant_id: TenantId) -> str:
    zone = await conn.fetchval("select time_zone from tenants where tenant_id = $1", tenant_id)
    if zone is None:
        raise LookupError(f"tenant {tenant_id} is not visible here")
    return str(zone)


# --- ledger rows ------------------------------------------------------------------------------

_INSERT = """
with added as (
    insert into usage_ledger (tenant_id, key, meter, quantity, usage_day, occurred_at, source,
                              source_id, detail, corrects)
    select $1, r.* from unnest($2::text[], $3::text[], $4::bigint[], $5::date[],
                               $6::timestamptz[], $7::text[], $8::text[], $9::jsonb[],
                               $10::text[]) as r
    on conflict (tenant_id, key) do nothing
    returning 1
)
select count(*) from added
"""


async def insert_entries(
    conn: asyncpg.Connection, tenant_id: TenantId, entries: Sequence[LedgerEntry]
) -> int:
    """Add the rows not in the ledger yet (by key); how many were new."""
    if not entries:
        return 0
    count = await conn.fetchval(
        _INSERT,
        tenant_id,
        [e.key for e in entries],
        [e.meter for e in entries],
        [e.quantity for e in entries],
        [e.usage_day for e in entries],
        [e.occurred_at for e in entries],
        [e.source for e in entries],
        [e.source_id for e in entries],
        [e.detail for e in entries],
        [e.corrects for e in entries],
    )
    return int(count)


_ENTRY_COLUMNS = "key, meter, quantity, usage_day, occurred_at, source, source_id, detail, corrects"


def _entry(row: asyncpg.Record) -> LedgerEntry:
    return LedgerEntry(
        key=row["key"],
        meter=row["meter"],
        quantity=row["quantity"],
        usage_day=row["usage_day"],
        occurred_at=row["occurred_at"],
        source=row["source"],
        source_id=row["source_id"],
        detail=row["detail"],
        corrects=row["corrects"],
    )


async def entry(conn: asyncpg.Connection, tenant_id: TenantId, key: str) -> LedgerEntry | None:
    row = await conn.fetchrow(
        f"select {_ENTRY_COLUMNS} from usage_ledger where tenant_id = $1 and key = $2",  # noqa: S608
        tenant_id,
        key,
    )
    return None if row is None else _entry(row)


async def corrections_of(
    conn: asyncpg.Connection, tenant_id: TenantId, key: str
) -> list[LedgerEntry]:
    rows = await conn.fetch(
        f"""select {_ENTRY_COLUMNS} from usage_ledger
            where tenant_id = $1 and corrects = $2 order by id""",  # noqa: S608
        tenant_id,
        key,
    )
    return [_entry(r) for r in rows]


# --- sending ----------------------------------------------------------------------------------

# usage_day is the local date of occurred_at, never more than a day off its UTC date: the
# day bound lets the (tenant_id, usage_day) index skip everything older than the window.
_UNSENT = """
select l.key, l.meter, l.quantity, l.occurred_at, a.stripe_customer_id
from usage_ledger l
join billing_accounts a on a.tenant_id = l.tenant_id and a.stripe_customer_id is not null
left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
where l.tenant_id = $1 and s.key is null and l.usage_day >= $2 and l.occurred_at >= $3
order by l.id
limit $4
"""


async def unsent(
    conn: asyncpg.Connection, tenant_id: TenantId, *, not_before: datetime, limit: int
) -> list[UnsentRow]:
    """The oldest rows Stripe has not accepted yet that happened at or after `not_before`,
    with the tenant's Stripe customer (none while the tenant has no customer)."""
    rows = await conn.fetch(
        _UNSENT, tenant_id, not_before.date() - timedelta(days=2), not_before, limit
    )
    return [
        UnsentRow(
            key=r["key"],
            meter=r["meter"],
            quantity=r["quantity"],
            occurred_at=r["occurred_at"],
            customer_id=r["stripe_customer_id"],
        )
        for r in rows
    ]


async def mark_sent(conn: asyncpg.Connection, tenant_id: TenantId, keys: Sequence[str]) -> int:
    """Remember that Stripe holds these rows; how many were not marked before."""
    if not keys:
        return 0
    count = await conn.fetchval(
        """with added as (
               insert into usage_sent (tenant_id, key) select $1, k from unnest($2::text[]) k
               on conflict (tenant_id, key) do nothing
               returning 1
           )
           select count(*) from added""",
        tenant_id,
        list(keys),
    )
    return int(count)


def _window_start() -> datetime:
    return datetime.now(UTC) - STRIPE_WINDOW


# --- finance ----------------------------------------------------------------------------------

_ROW_COLUMNS = """l.id, l.key, l.meter, l.quantity, l.usage_day, l.occurred_at, l.source,
    l.source_id, l.detail, l.corrects, l.recorded_at, s.sent_at"""


def _ledger_row(row: asyncpg.Record) -> LedgerRow:
    return LedgerRow(
        id=row["id"],
        key=row["key"],
        meter=row["meter"],
        quantity=row["quantity"],
        usage_day=row["usage_day"],
        occurred_at=row["occurred_at"],
        source=row["source"],
        source_id=row["source_id"],
        detail=row["detail"],
        corrects=row["corrects"],
        recorded_at=row["recorded_at"],
        sent_at=row["sent_at"],
    )


async def usage_by_day(
    conn: asyncpg.Connection, tenant_id: TenantId, start: date, end: date
) -> list[UsageDayRow]:
    """Per local day in [start, end) and meter: the quantity recorded and how much of it
    Stripe has accepted. Corrections count on the day of the row they correct."""
    rows = await conn.fetch(
        """select l.usage_day, l.meter, sum(l.quantity)::bigint as quantity,
                  coalesce(sum(l.quantity) filter (where s.key is not null), 0)::bigint as sent
           from usage_ledger l
           left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
           where l.tenant_id = $1 and l.usage_day >= $2 and l.usage_day < $3
           group by l.usage_day, l.meter
           order by l.usage_day, l.meter""",
        tenant_id,
        start,
        end,
    )
    return [
        UsageDayRow(day=r["usage_day"], meter=r["meter"], quantity=r["quantity"], sent=r["sent"])
        for r in rows
    ]


async def ledger_rows(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    start: date,
    end: date,
    *,
    limit: int | None = None,
    starting_after: int | None = None,
) -> list[LedgerRow]:
    """The rows of local days [start, end) in the order they were recorded, each with when
    Stripe accepted it; pages by row id."""
    rows = await conn.fetch(
        f"""select {_ROW_COLUMNS}
            from usage_ledger l
            left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
            where l.tenant_id = $1 and l.usage_day >= $2 and l.usage_day < $3
              and ($4::bigint is null or l.id > $4)
            order by l.id
            limit $5""",  # noqa: S608
        tenant_id,
        start,
        end,
        starting_after,
        limit,
    )
    return [_ledger_row(r) for r in rows]


async def totals(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    start: date | datetime,
    end: date | datetime,
    *,
    stale_before: datetime | None = None,
) -> dict[Meter, MeterTotals]:
    """Per meter, for usage in [start, end): recorded, accepted by Stripe, and never to be
    sent (unsent, older than `stale_before`, by default Stripe's window before now). With
    datetimes the period is by when usage happened (as Stripe's meter summaries count it);
    with dates, by local usage day."""
    if isinstance(start, datetime) != isinstance(end, datetime):
        raise TypeError("start and end must both be dates or both datetimes")
    column = "l.occurred_at" if isinstance(start, datetime) else "l.usage_day"
    rows = await conn.fetch(
        f"""select l.meter,
                   sum(l.quantity)::bigint as recorded,
                   coalesce(sum(l.quantity) filter (where s.key is not null), 0)::bigint as sent,
                   coalesce(sum(l.quantity) filter (
                       where s.key is null
                         and l.occurred_at < $4
                   ), 0)::bigint as stale
            from usage_ledger l
            left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
            where l.tenant_id = $1 and {column} >= $2 and {column} < $3
            group by l.meter""",  # noqa: S608
        tenant_id,
        start,
        end,
        stale_before or _window_start(),
    )
    return {
        r["meter"]: MeterTotals(recorded=r["recorded"], sent=r["sent"], stale_unsent=r["stale"])
        for r in rows
    }


async def stale_unsent(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    stale_before: datetime | None = None,
    limit: int = 1000,
) -> list[LedgerRow]:
    """Rows Stripe never accepted and no longer will (older than its window, by default 35
    days before now): usage to bill by hand."""
    rows = await conn.fetch(
        f"""select {_ROW_COLUMNS}
            from usage_ledger l
            left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
            where l.tenant_id = $1 and s.key is null
              and l.occurred_at < $2
            order by l.id
            limit $3""",  # noqa: S608
        tenant_id,
        stale_before or _window_start(),
        limit,
    )
    return [_ledger_row(r) for r in rows]


# --- across tenants (platform_tx) -------------------------------------------------------------


async def billing_tenants(conn: asyncpg.Connection) -> list[BillingTenant]:
    rows = await conn.fetch("select tenant_id, time_zone, status from sb_billing_tenants()")
    return [
        BillingTenant(
            tenant_id=TenantId(r["tenant_id"]), time_zone=r["time_zone"], status=r["status"]
        )
        for r in rows
    ]


async def unsent_tenants(conn: asyncpg.Connection, limit: int) -> list[TenantId]:
    rows = await conn.fetch("select tenant_id from sb_billing_unsent_tenants($1)", limit)
    return [TenantId(r["tenant_id"]) for r in rows]

"""The usage ledger against real PostgreSQL, as the app role under RLS: seat-days, minutes and
number-months from events and sweeps, redelivery, corrections, append-only rows, isolation,
the finance queries, and sending to the Stripe emulator through the real SDK."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from billing.emulator import StripeEmulator
from billing.gateway import StripeGateway
from billing.ledger import repository as repo
from billing.ledger import service as ledger
from billing.models import LedgerEntry, PlanPrice
from bus.events import Event
from media.events import CallEnded
from runtime.db import tenant_tx
from runtime.ids import new_id
from runtime.settings import load_settings
from tenancy.errors import InvalidInput
from tenancy.models import Origin, Role, Subject, TenantId
from tenancy.numbers.events import NumberPurchased, NumberReleased
from tenancy.seats import events as seat_events
from tenancy.seats import service as seats
from tenancy.seats.events import SeatCreated, SeatReleased
from tenancy.seats.models import SeatCreate


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


async def _tenant(
    admin: asyncpg.Connection,
    zone: str = "UTC",
    *,
    customer: str | None = None,
    status: str = "active",
) -> TenantId:
    tid = TenantId(uuid4())
    await admin.execute(
        "insert into tenants (tenant_id, name, status, time_zone) values ($1, 'T', $2, $3)",
        tid,
        status,
        zone,
    )
    if customer is not None:
        await admin.execute(
            "insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, $2)",
            tid,
            customer,
        )
    return tid


async def _rows(admin: asyncpg.Connection, tid: UUID) -> list[tuple[str, str, int, date]]:
    rows = await admin.fetch(
        """select key, meter, quantity, usage_day from usage_ledger where tenant_id = $1
           order by usage_day, key""",
        tid,
    )
    return [(r["key"], r["meter"], r["quantity"], r["usage_day"]) for r in rows]


def _happened(event: Event) -> datetime:
    for name in ("created_at", "released_at", "purchased_at", "ended_at"):
        if hasattr(event, name):
            value: datetime = getattr(event, name)
            return value
    return event.occurred_at


async def _record(pool: asyncpg.Pool, events: list[Event], now: datetime | None = None) -> int:
    """Record the events as a consumer does: by default each as it happens (a consumer that
    keeps up), or all at `now` (one catching up)."""
    return sum([await ledger.record_event(pool, e, now=now or _happened(e)) for e in events])


def _seat_events(tid: UUID, created: datetime, released: datetime | None = None) -> list[Event]:
    seat_id = new_id()
    out: list[Event] = [SeatCreated(tenant_id=tid, seat_id=seat_id, created_at=created)]
    if released is not None:
        out.append(SeatReleased(tenant_id=tid, seat_id=seat_id, released_at=released))
    return out


def _call(
    tid: UUID,
    talk_ms: int,
    *,
    ended: datetime,
    answered: bool = True,
    direction: Any = "inbound",
) -> CallEnded:
    return CallEnded(
        tenant_id=tid,
        call_id=new_id(),
        node_id="node-1",
        direction=direction,
        cause="caller_hung_up",
        started_at=ended - timedelta(milliseconds=talk_ms + 5000),
        answered_at=ended - timedelta(milliseconds=talk_ms) if answered else None,
        ended_at=ended,
        duration_ms=talk_ms + 5000,
        talk_ms=talk_ms if answered else 0,
    )


# --- seat-days ------------------------------------------------------------------------------


async def test_three_seats_for_two_days_make_exactly_six_seat_days(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    owner = Subject(
        tenant_id=tid,
        actor_type="system",
        actor_id=uuid4(),
        role=Role.OWNER,
        permissions=frozenset({"seats:read", "seats:write"}),
    )
    async with tenant_tx(pool, tid) as conn:
        for label in ("a", "b", "c"):
            await seats.create_seat(conn, owner, Origin(), SeatCreate(label=label))
    # The ledger reads the very events the seat service published.
    payloads = await admin_conn.fetch(
        "select payload from outbox where tenant_id = $1 order by id", tid
    )
    events = [seat_events.codec.decode(p["payload"]) for p in payloads]
    created = [e for e in events if isinstance(e, SeatCreated)]
    assert len(created) == 3
    first = min(e.created_at for e in created)
    await _record(pool, events)
    assert len(await _rows(admin_conn, tid)) == 3

    next_day = first + timedelta(days=1)
    assert await ledger.sweep(pool, next_day) == 3
    rows = await _rows(admin_conn, tid)
    assert len(rows) == 6
    assert {r[1] for r in rows} == {"seat_days"}
    assert sorted({r[3] for r in rows}) == [first.date(), next_day.date()]

    # Sweeping again, or the events arriving again, adds nothing.
    assert await ledger.sweep(pool, next_day) == 0
    assert await _record(pool, events, now=next_day) == 0
    assert len(await _rows(admin_conn, tid)) == 6


async def test_a_released_seat_stops_counting_even_while_its_release_event_lags(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    owner = Subject(
        tenant_id=tid,
        actor_type="system",
        actor_id=uuid4(),
        role=Role.OWNER,
        permissions=frozenset({"seats:read", "seats:write"}),
    )
    async with tenant_tx(pool, tid) as conn:
        seat = await seats.create_seat(conn, owner, Origin(), SeatCreate(label="a"))
    async with tenant_tx(pool, tid) as conn:
        await seats.release(conn, owner, Origin(), seat.id)
    created = SeatCreated(tenant_id=tid, seat_id=seat.id, created_at=seat.created_at)
    # The worker catches up three days later and has seen only the creation so far.
    later = seat.created_at + timedelta(days=3)
    await _record(pool, [created], now=later)
    await ledger.sweep(pool, later)
    released_at = await admin_conn.fetchval("select released_at from seats where id = $1", seat.id)
    assert [r[3] for r in await _rows(admin_conn, tid)] == sorted(
        {seat.created_at.date(), released_at.astimezone(UTC).date()}
    )


async def test_a_seat_released_mid_day_still_counts_that_day_and_no_later_one(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    events = _seat_events(tid, utc(2026, 5, 4, 9), released=utc(2026, 5, 6, 10, 15))
    await _record(pool, events)
    await ledger.sweep(pool, utc(2026, 5, 9))
    assert [r[3] for r in await _rows(admin_conn, tid)] == [
        date(2026, 5, 4),
        date(2026, 5, 5),
        date(2026, 5, 6),
    ]


async def test_a_release_that_arrives_before_the_creation_still_counts_every_day(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    created, released = _seat_events(tid, utc(2026, 5, 4, 9), released=utc(2026, 5, 6, 10))
    now = utc(2026, 5, 8)
    await _record(pool, [released, created], now=now)
    await ledger.sweep(pool, now)
    assert [r[3] for r in await _rows(admin_conn, tid)] == [
        date(2026, 5, 4),
        date(2026, 5, 5),
        date(2026, 5, 6),
    ]
    span = await admin_conn.fetchrow("select * from metered_spans where tenant_id = $1", tid)
    assert (span["started_at"], span["ended_at"]) == (utc(2026, 5, 4, 9), utc(2026, 5, 6, 10))


async def test_days_are_counted_in_the_tenants_time_zone(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    # 23:30 to 00:30 UTC is 18:30 to 19:30 in New York: one evening there, two dates in UTC.
    new_york = await _tenant(admin_conn, "America/New_York")
    in_utc = await _tenant(admin_conn, "UTC")
    now = utc(2026, 1, 20)
    for tid in (new_york, in_utc):
        events = _seat_events(tid, utc(2026, 1, 15, 23, 30), released=utc(2026, 1, 16, 0, 30))
        await _record(pool, events)
    await ledger.sweep(pool, now)
    assert [r[3] for r in await _rows(admin_conn, new_york)] == [date(2026, 1, 15)]
    assert [r[3] for r in await _rows(admin_conn, in_utc)] == [
        date(2026, 1, 15),
        date(2026, 1, 16),
    ]
    detail = await admin_conn.fetchval(
        "select detail from usage_ledger where tenant_id = $1", new_york
    )
    assert json.loads(detail) == {"time_zone": "America/New_York"}


async def test_the_sweep_reaches_back_35_days_and_no_further(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    now = utc(2026, 6, 30, 12)
    # Known to the ledger only now (the worker was down): 50 days of an open seat.
    async with tenant_tx(pool, tid) as conn:
        await repo.span_started(conn, tid, "seat", new_id(), now - timedelta(days=50))
    await ledger.sweep(pool, now)
    days = [r[3] for r in await _rows(admin_conn, tid)]
    assert days[0] == date(2026, 5, 27)  # 26 May began more than 35 days before `now`
    assert days[-1] == date(2026, 6, 30)
    assert len(days) == 35


async def test_one_tenants_failing_sweep_does_not_stop_the_others(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    broken, fine = await _tenant(admin_conn), await _tenant(admin_conn)
    closed = await _tenant(admin_conn, status="closed")
    for tid in (broken, fine, closed):
        async with tenant_tx(pool, tid) as conn:
            await repo.span_started(conn, tid, "seat", new_id(), utc(2026, 7, 1, 8))
    await admin_conn.execute(
        f"""create function refuse_ledger() returns trigger language plpgsql as $$
            begin raise exception 'disk full'; end $$;
            create trigger refuse_ledger before insert on usage_ledger for each row
            when (new.tenant_id = '{broken}') execute function refuse_ledger()"""
    )
    # A closed tenant still has usage to send, but no new days.
    last_call = _call(closed, 61_000, ended=utc(2026, 7, 1, 9))
    await ledger.record_event(pool, last_call)
    assert await ledger.sweep(pool, utc(2026, 7, 2, 8)) == 2
    assert len(await _rows(admin_conn, fine)) == 2
    assert await _rows(admin_conn, broken) == []
    assert [r[0] for r in await _rows(admin_conn, closed)] == [f"minutes:{last_call.call_id}"]


async def test_a_sweeper_makes_only_new_days_between_full_sweeps_and_the_full_ones_fill_gaps(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    t0 = utc(2026, 7, 10, 12)
    async with tenant_tx(pool, tid) as conn:
        await repo.span_started(conn, tid, "seat", new_id(), t0 - timedelta(days=10))
    sweeper = ledger.Sweeper(pool, full_every=timedelta(hours=6))
    assert await sweeper.sweep(t0) == 11
    assert await sweeper.sweep(t0 + timedelta(days=1)) == 1
    # A span no event handler made rows for (as after a crash between the two): the cheap
    # sweep makes only its new days; the next full sweep makes the rest.
    async with tenant_tx(pool, tid) as conn:
        await repo.span_started(conn, tid, "seat", new_id(), t0 - timedelta(days=3))
    assert await sweeper.sweep(t0 + timedelta(days=1, hours=1)) == 1
    assert await sweeper.sweep(t0 + timedelta(days=1, hours=7)) == 4
    assert len(await _rows(admin_conn, tid)) == 12 + 5
    assert await ledger.sweep(pool, t0 + timedelta(days=1, hours=7)) == 0


async def test_number_months_count_each_local_month_a_number_was_held(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn, "Europe/Berlin")
    number = new_id()
    purchased = NumberPurchased(
        tenant_id=tid,
        number_id=number,
        e164="+4930123456",
        provider="carrier-a",
        purchased_at=utc(2026, 8, 31, 22, 30),  # already 1 September in Berlin
    )
    released = NumberReleased(
        tenant_id=tid, number_id=number, e164="+4930123456", released_at=utc(2026, 10, 1, 0, 5)
    )
    await _record(pool, [purchased], now=utc(2026, 9, 2))
    await ledger.sweep(pool, utc(2026, 9, 30, 23))  # 1 October in Berlin
    await _record(pool, [released, purchased, released], now=utc(2026, 10, 5))
    rows = await _rows(admin_conn, tid)
    assert [r[0] for r in rows] == [
        f"number_month:{number}:2026-09",
        f"number_month:{number}:2026-10",
    ]
    assert {r[1] for r in rows} == {"number_months"}


# --- minutes ----------------------------------------------------------------------------------


async def test_calls_are_metered_in_minutes_rounded_up_and_only_when_answered(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    ended = utc(2026, 3, 3, 12)
    long = _call(tid, 61_000, ended=ended)
    exact = _call(tid, 60_000, ended=ended, direction="outbound")
    unanswered = _call(tid, 0, ended=ended, answered=False)
    assert await _record(pool, [long, exact, unanswered], now=ended) == 2
    rows = {r[0]: r for r in await _rows(admin_conn, tid)}
    assert rows[f"minutes:{long.call_id}"][1:3] == ("voice_minutes", 2)
    assert rows[f"minutes:{exact.call_id}"][1:3] == ("voice_minutes", 1)
    assert f"minutes:{unanswered.call_id}" not in rows
    detail = await admin_conn.fetchval(
        "select detail from usage_ledger where key = $1", f"minutes:{exact.call_id}"
    )
    assert json.loads(detail) == {"direction": "outbound", "talk_ms": 60_000}


async def test_redelivering_every_event_in_any_order_changes_nothing(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn, "America/New_York")
    now = utc(2026, 4, 10)
    events: list[Event] = [
        *_seat_events(tid, utc(2026, 4, 1, 3), released=utc(2026, 4, 3, 22)),
        *_seat_events(tid, utc(2026, 4, 2, 12)),
        _call(tid, 125_000, ended=utc(2026, 4, 5, 3, 59)),
        _call(tid, 1, ended=utc(2026, 4, 5, 4, 1)),
    ]
    await _record(pool, events)
    await ledger.sweep(pool, now)
    before = await _rows(admin_conn, tid)
    again = events * 3
    random.Random(7).shuffle(again)
    assert await _record(pool, again, now=now) == 0
    assert await ledger.sweep(pool, now) == 0
    assert await _rows(admin_conn, tid) == before
    assert sum(r[2] for r in before if r[1] == "voice_minutes") == 4
    # 31 March to 3 April, and 2 to 9 April, in New York.
    assert sum(r[2] for r in before if r[1] == "seat_days") == 4 + 8


async def test_events_the_ledger_does_not_meter_are_ignored(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    assigned = seat_events.SeatAssigned(
        tenant_id=tid, seat_id=new_id(), user_id=uuid4(), assigned_at=utc(2026, 1, 1)
    )
    assert await ledger.record_event(pool, assigned) == 0
    assert await _rows(admin_conn, tid) == []
    durables = {durable for durable, _subject, _codec in ledger.LEDGER_CONSUMERS}
    assert durables == {"billing-calls", "billing-seats", "billing-numbers"}
    for _durable, subject, codec in ledger.LEDGER_CONSUMERS:
        assert subject.startswith("tenant.*.")
        assert codec.tags  # each consumer decodes its own subjects' events


# --- corrections, append-only, isolation ----------------------------------------------------


async def test_corrections_are_new_rows_and_the_original_stays(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn)
    call = _call(tid, 185_000, ended=utc(2026, 3, 3, 12))
    await ledger.record_event(pool, call)
    key = f"minutes:{call.call_id}"
    async with tenant_tx(pool, tid) as conn:
        first = await ledger.correct(conn, tid, key, 2, reason="the carrier's CDR says 2")
        second = await ledger.correct(conn, tid, key, 5, reason="no, 5")
        with pytest.raises(InvalidInput):
            await ledger.correct(conn, tid, key, 5, reason="again")
        days = await repo.usage_by_day(conn, tid, date(2026, 3, 1), date(2026, 4, 1))
    assert (first.key, first.quantity) == (f"correction:{key}:1", -2)
    assert (second.key, second.quantity) == (f"correction:{key}:2", 3)
    rows = {r[0]: r[2] for r in await _rows(admin_conn, tid)}
    assert rows == {key: 4, first.key: -2, second.key: 3}
    assert [(d.day, d.meter, d.quantity) for d in days] == [(date(2026, 3, 3), "voice_minutes", 5)]
    corrects = await admin_conn.fetch(
        "select corrects, source from usage_ledger where key like 'correction:%'"
    )
    assert {(r["corrects"], r["source"]) for r in corrects} == {(key, "correction")}


async def test_the_app_cannot_change_or_delete_ledger_rows(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn, customer="cus_x")
    call = _call(tid, 61_000, ended=utc(2026, 3, 3, 12))
    await ledger.record_event(pool, call)
    async with tenant_tx(pool, tid) as conn:
        await repo.mark_sent(conn, tid, [f"minutes:{call.call_id}"])
    for sql in (
        "update usage_ledger set quantity = 0",
        "delete from usage_ledger",
        "delete from usage_sent",
        "update usage_sent set sent_at = now()",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with tenant_tx(pool, tid) as conn:
                await conn.execute(sql)
    assert len(await _rows(admin_conn, tid)) == 1


async def test_one_tenant_cannot_see_or_write_another_tenants_ledger(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    a, b = await _tenant(admin_conn), await _tenant(admin_conn)
    await ledger.record_event(pool, _call(a, 61_000, ended=utc(2026, 3, 3, 12)))
    async with tenant_tx(pool, b) as conn:
        assert await conn.fetchval("select count(*) from usage_ledger") == 0
        # Even asked for A by id, B's transaction sees nothing of A.
        assert await repo.usage_by_day(conn, TenantId(a), date(2026, 3, 1), date(2026, 4, 1)) == []
        assert await repo.ledger_rows(conn, TenantId(a), date(2026, 3, 1), date(2026, 4, 1)) == []
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_tx(pool, b) as conn:
            await repo.insert_entries(conn, TenantId(a), [_minutes_entry(f"minutes:{uuid4()}")])
    assert len(await _rows(admin_conn, a)) == 1


def _minutes_entry(key: str) -> LedgerEntry:
    return LedgerEntry(
        key=key,
        meter="voice_minutes",
        quantity=1,
        usage_day=date(2026, 3, 3),
        occurred_at=utc(2026, 3, 3),
        source="call",
        source_id=key,
    )


# --- finance queries ------------------------------------------------------------------------


async def test_finance_sees_usage_by_day_the_rows_behind_it_and_totals_with_what_was_sent(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn, customer="cus_fin")
    now = utc(2026, 9, 3, 12)
    await _record(pool, _seat_events(tid, utc(2026, 9, 1, 8)), now=now)
    calls = [_call(tid, 90_000, ended=utc(2026, 9, 2, 10)), _call(tid, 30_000, ended=now)]
    await _record(pool, list(calls), now=now)
    async with tenant_tx(pool, tid) as conn:
        await repo.mark_sent(conn, tid, [f"minutes:{calls[0].call_id}"])
        days = await repo.usage_by_day(conn, tid, date(2026, 9, 1), date(2026, 9, 4))
        page1 = await repo.ledger_rows(conn, tid, date(2026, 9, 1), date(2026, 10, 1), limit=3)
        page2 = await repo.ledger_rows(
            conn, tid, date(2026, 9, 1), date(2026, 10, 1), limit=3, starting_after=page1[-1].id
        )
        by_time = await repo.totals(conn, tid, utc(2026, 9, 1), utc(2026, 9, 3))
        by_day = await repo.totals(
            conn, tid, date(2026, 9, 1), date(2026, 10, 1), stale_before=now - timedelta(days=35)
        )
    assert [(d.day, d.meter, d.quantity, d.sent) for d in days] == [
        (date(2026, 9, 1), "seat_days", 1, 0),
        (date(2026, 9, 2), "seat_days", 1, 0),
        (date(2026, 9, 2), "voice_minutes", 2, 2),
        (date(2026, 9, 3), "seat_days", 1, 0),
        (date(2026, 9, 3), "voice_minutes", 1, 0),
    ]
    keys = [r.key for r in page1 + page2]
    assert len(keys) == len(set(keys)) == 5
    assert [r.sent_at is not None for r in page1 + page2].count(True) == 1
    assert (by_time["seat_days"].recorded, by_time["voice_minutes"].recorded) == (2, 2)
    assert by_time["voice_minutes"].sent == 2
    assert (by_day["seat_days"].recorded, by_day["voice_minutes"].recorded) == (3, 3)
    assert by_day["voice_minutes"].stale_unsent == 0


async def test_rows_older_than_stripes_window_are_never_sent_and_are_reported(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    tid = await _tenant(admin_conn, customer="cus_old")
    now = datetime.now(UTC)
    old = _call(tid, 61_000, ended=now - timedelta(days=36))
    fresh = _call(tid, 61_000, ended=now - timedelta(days=34))
    await _record(pool, [old, fresh], now=now)
    async with tenant_tx(pool, tid) as conn:
        unsent = await repo.unsent(conn, tid, not_before=now - timedelta(days=35), limit=10)
        stale = await repo.stale_unsent(conn, tid)
        totals = await repo.totals(conn, tid, now - timedelta(days=40), now)
    assert [r.key for r in unsent] == [f"minutes:{fresh.call_id}"]
    assert unsent[0].customer_id == "cus_old"
    assert [r.key for r in stale] == [f"minutes:{old.call_id}"]
    assert totals["voice_minutes"].stale_unsent == 2


# --- sending to Stripe (the emulator, through the real SDK) -----------------------------------


@dataclass
class Stripe:
    url: str
    gateway: Any
    http: httpx.AsyncClient

    async def meter_events(self, customer: str) -> list[dict[str, Any]]:
        r = await self.http.get("/_emulator/meter_events", params={"customer": customer})
        assert r.status_code == 200, r.text
        body = r.json()
        return list(body["data"] if isinstance(body, dict) else body)

    async def fault(self, **spec: Any) -> None:
        r = await self.http.post("/_emulator/faults", json=spec)
        assert r.status_code in (200, 201, 204), r.text


@pytest.fixture
async def stripe() -> AsyncIterator[Stripe]:
    emulator = StripeEmulator()
    url = await emulator.start("127.0.0.1", 0)
    settings = load_settings(
        env={},
        stripe_api_key="sk_test_ledger",
        stripe_api_base=url,
        stripe_webhook_secret=emulator.webhook_secret,
    )
    gateway = StripeGateway.from_settings(settings)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            yield Stripe(url, gateway, http)
    finally:
        await emulator.stop()


async def _customer(admin: asyncpg.Connection, stripe: Stripe) -> TenantId:
    prices = [
        PlanPrice(
            name=r["name"],
            currency=r["currency"],
            monthly_cents=r["monthly_cents"],
            seat_day_cents=r["seat_day_cents"],
            minute_cents=r["minute_cents"],
            number_month_cents=r["number_month_cents"],
        )
        for r in await admin.fetch("select * from plans order by name")
    ]
    await stripe.gateway.ensure_catalog(prices)
    tid = await _tenant(admin)
    customer = await stripe.gateway.create_customer(tid, "Acme", "billing@acme.test")
    await admin.execute(
        "insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, $2)",
        tid,
        customer,
    )
    return tid


async def _unsent_keys(admin: asyncpg.Connection, tid: UUID) -> set[str]:
    rows = await admin.fetch(
        """select l.key from usage_ledger l
           left join usage_sent s on s.tenant_id = l.tenant_id and s.key = l.key
           where l.tenant_id = $1 and s.key is null""",
        tid,
    )
    return {r["key"] for r in rows}


async def test_usage_is_sent_to_stripe_once_with_the_ledger_key_as_identifier(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection, stripe: Stripe
) -> None:
    tid = await _customer(admin_conn, stripe)
    customer = await admin_conn.fetchval(
        "select stripe_customer_id from billing_accounts where tenant_id = $1", tid
    )
    now = datetime.now(UTC)
    for _ in range(3):
        await _record(pool, _seat_events(tid, now - timedelta(days=1)), now=now)
    await _record(pool, [_call(tid, 61_000, ended=now), _call(tid, 60_000, ended=now)], now=now)
    sender = ledger.MeterSender(pool, stripe.gateway, batch=4)
    assert await sender.send_pending() == 8
    assert await _unsent_keys(admin_conn, tid) == set()
    assert await sender.send_pending() == 0
    events = await stripe.meter_events(customer)
    assert sorted(e["identifier"] for e in events) == sorted(
        r[0] for r in await _rows(admin_conn, tid)
    )
    totals: dict[str, int] = {}
    for e in events:
        totals[e["event_name"]] = totals.get(e["event_name"], 0) + int(e["payload"]["value"])
    assert totals == {"seat_days": 6, "voice_minutes": 3}


async def test_rows_refused_by_a_failing_stripe_stay_unsent_and_go_next_round(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection, stripe: Stripe
) -> None:
    tid = await _customer(admin_conn, stripe)
    now = datetime.now(UTC)
    await _record(pool, [_call(tid, 61_000, ended=now) for _ in range(3)], now=now)
    sender = ledger.MeterSender(pool, stripe.gateway, batch=10)
    await stripe.fault(status=500, count=1000)
    assert await sender.send_pending() == 0
    assert len(await _unsent_keys(admin_conn, tid)) == 3
    await stripe.fault(clear=True)
    assert await sender.send_pending() == 3
    assert await _unsent_keys(admin_conn, tid) == set()


async def test_sending_the_same_rows_twice_leaves_one_meter_event_per_identifier(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection, stripe: Stripe
) -> None:
    tid = await _customer(admin_conn, stripe)
    customer = await admin_conn.fetchval(
        "select stripe_customer_id from billing_accounts where tenant_id = $1", tid
    )
    now = datetime.now(UTC)
    await _record(pool, [_call(tid, 61_000, ended=now) for _ in range(3)], now=now)
    sender = ledger.MeterSender(pool, stripe.gateway, batch=10)
    assert await sender.send_pending() == 3
    # A worker that died after Stripe accepted but before marking: the rows go again.
    await admin_conn.execute("delete from usage_sent where tenant_id = $1", tid)
    assert await sender.send_pending() == 3
    events = await stripe.meter_events(customer)
    identifiers = [e["identifier"] for e in events]
    assert len(identifiers) == len(set(identifiers)) == 3

"""What finance users see: the plan, usage by meter and day from the ledger, invoices and the
customer portal from Stripe, a CSV of the ledger, and reconciliation of the ledger against what
Stripe holds. Services take the tenant transaction and the acting subject; no SQL here."""

from __future__ import annotations

import csv
import io
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

import asyncpg
import msgspec

from billing.accounts import repository as accounts_repo
from billing.accounts import service as accounts
from billing.errors import BillingUnavailable
from billing.ledger import repository as ledger_repo
from billing.models import METERS, Gateway, Meter, PlanPrice, StripeInvoice
from tenancy.errors import InvalidInput
from tenancy.models import Origin, Subject
from tenancy.service import require

MAX_PERIOD_DAYS = 400
STRIPE_WINDOW_DAYS = 35
CSV_COLUMNS = (
    "key",
    "meter",
    "quantity",
    "usage_day",
    "occurred_at",
    "source",
    "source_id",
    "corrects",
    "recorded_at",
    "sent_at",
)


class SubscriptionOut(msgspec.Struct, kw_only=True):
    id: str
    status: str | None
    plan: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None


class BillingOverview(msgspec.Struct, kw_only=True):
    tenant_status: str
    time_zone: str
    plan: PlanPrice
    plans: list[PlanPrice]
    customer_id: str | None
    subscription: SubscriptionOut | None
    past_due_since: datetime | None
    plan_change_pending: bool


class PlanChangeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plan: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class UsageDay(msgspec.Struct, kw_only=True):
    day: date
    meter: Meter
    quantity: int
    sent: int


class Usage(msgspec.Struct, kw_only=True):
    start: date
    end: date
    time_zone: str
    totals: dict[str, int]
    days: list[UsageDay]


class Invoices(msgspec.Struct, kw_only=True):
    data: list[StripeInvoice]


class PortalIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    return_url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class PortalSession(msgspec.Struct, kw_only=True):
    url: str


class MeterCheck(msgspec.Struct, kw_only=True):
    meter: Meter
    recorded: int
    """Ledger total for usage that happened in the period."""
    sent: int
    """Of it, what Stripe has accepted (by our marks)."""
    unsent: int
    at_stripe: int | None
    """Stripe's own total for the period; None when it could not be asked."""
    difference: int
    """sent - at_stripe (0 when both agree)."""
    explanation: list[str]


class Reconciliation(msgspec.Struct, kw_only=True):
    start: date
    end: date
    balanced: bool
    meters: list[MeterCheck]


async def overview(conn: asyncpg.Connection, subject: Subject) -> BillingOverview:
    require(subject, "billing:read")
    account = await accounts.get_account(conn, subject.tenant_id)
    plans = await accounts_repo.plan_prices(conn)
    plan = next(p for p in plans if p.name == account.plan)
    subscription = (
        SubscriptionOut(
            id=account.subscription_id,
            status=account.subscription_status,
            plan=account.stripe_plan,
            current_period_start=account.current_period_start,
            current_period_end=account.current_period_end,
        )
        if account.subscription_id
        else None
    )
    return BillingOverview(
        tenant_status=account.tenant_status,
        time_zone=account.time_zone,
        plan=plan,
        plans=plans,
        customer_id=account.customer_id,
        subscription=subscription,
        past_due_since=account.past_due_since,
        plan_change_pending=account.subscription_id is not None
        and account.stripe_plan != account.plan,
    )


async def change_plan(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: PlanChangeIn
) -> BillingOverview:
    require(subject, "billing:write")
    await accounts.request_plan_change(conn, subject.tenant_id, data.plan, subject, origin)
    return await overview(conn, subject)


async def period(
    conn: asyncpg.Connection, subject: Subject, start: date | None, end: date | None
) -> tuple[date, date, zoneinfo.ZoneInfo]:
    """The period asked for, defaulting to the current billing period (else this calendar
    month) in the tenant's time zone; `end` is exclusive."""
    account = await accounts.get_account(conn, subject.tenant_id)
    zone = zoneinfo.ZoneInfo(account.time_zone)
    if start is None or end is None:
        if account.current_period_start and account.current_period_end:
            default_start = account.current_period_start.astimezone(zone).date()
            default_end = account.current_period_end.astimezone(zone).date()
        else:
            today = datetime.now(zone).date()
            default_start = today.replace(day=1)
            default_end = (default_start + timedelta(days=32)).replace(day=1)
        start = start or default_start
        end = end or default_end
    if end <= start:
        raise InvalidInput("The period's end must come after its start.", field="end")
    if (end - start).days > MAX_PERIOD_DAYS:
        raise InvalidInput(f"Ask for at most {MAX_PERIOD_DAYS} days at a time.", field="end")
    return start, end, zone


async def usage(
    conn: asyncpg.Connection, subject: Subject, start: date | None, end: date | None
) -> Usage:
    require(subject, "billing:read")
    start, end, zone = await period(conn, subject, start, end)
    rows = await ledger_repo.usage_by_day(conn, subject.tenant_id, start, end)
    days = [UsageDay(day=r.day, meter=r.meter, quantity=r.quantity, sent=r.sent) for r in rows]
    totals: dict[str, int] = {meter: 0 for meter in METERS}
    for d in days:
        totals[d.meter] += d.quantity
    return Usage(start=start, end=end, time_zone=zone.key, totals=totals, days=days)


async def usage_csv(
    conn: asyncpg.Connection, subject: Subject, start: date | None, end: date | None
) -> tuple[str, date, date]:
    """Every ledger row of the period, so any invoice line can be traced to what happened."""
    require(subject, "billing:read")
    start, end, _zone = await period(conn, subject, start, end)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in await ledger_repo.ledger_rows(conn, subject.tenant_id, start, end):
        writer.writerow(
            [
                _csv_safe(row.key),
                row.meter,
                row.quantity,
                row.usage_day.isoformat(),
                row.occurred_at.isoformat(),
                row.source,
                _csv_safe(row.source_id),
                _csv_safe(row.corrects or ""),
                row.recorded_at.isoformat(),
                row.sent_at.isoformat() if row.sent_at else "",
            ]
        )
    return out.getvalue(), start, end


def _csv_safe(value: str) -> str:
    """Keeps a spreadsheet from reading a cell as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


async def invoices(conn: asyncpg.Connection, gateway: Gateway | None, subject: Subject) -> Invoices:
    require(subject, "billing:read")
    account = await accounts.get_account(conn, subject.tenant_id)
    if account.customer_id is None:
        return Invoices(data=[])
    return Invoices(data=await _stripe(gateway).list_invoices(account.customer_id))


async def portal(
    conn: asyncpg.Connection,
    gateway: Gateway | None,
    subject: Subject,
    data: PortalIn,
    default_return: str,
) -> PortalSession:
    require(subject, "billing:write")
    account = await accounts.get_account(conn, subject.tenant_id)
    if account.customer_id is None:
        raise BillingUnavailable(
            "The Stripe customer for this account is still being set up; try again shortly."
        )
    url = await _stripe(gateway).portal_session(
        account.customer_id, data.return_url or default_return
    )
    return PortalSession(url=url)


async def reconciliation(
    conn: asyncpg.Connection,
    gateway: Gateway | None,
    subject: Subject,
    start: date | None,
    end: date | None,
) -> Reconciliation:
    """Per meter, for usage that happened in the period: what the ledger recorded, what of it
    we marked as accepted by Stripe, and Stripe's own total, with the reason for any gap."""
    require(subject, "billing:read")
    start, end, zone = await period(conn, subject, start, end)
    start_at = datetime.combine(start, time(), zone).astimezone(UTC)
    end_at = datetime.combine(end, time(), zone).astimezone(UTC)
    account = await accounts.get_account(conn, subject.tenant_id)
    totals = await ledger_repo.totals(conn, subject.tenant_id, start_at, end_at)
    stale_before = datetime.now(UTC) - timedelta(days=STRIPE_WINDOW_DAYS)
    checks = []
    for meter in METERS:
        t = totals.get(meter)
        recorded = t.recorded if t else 0
        sent = t.sent if t else 0
        stale = t.stale_unsent if t else 0
        at_stripe: int | None = None
        why: list[str] = []
        if account.customer_id is None:
            why.append("No Stripe customer yet: nothing can have been sent.")
        elif gateway is None:
            why.append("Billing is not connected to Stripe on this server.")
        else:
            try:
                at_stripe = await gateway.meter_total(account.customer_id, meter, start_at, end_at)
            except BillingUnavailable as exc:
                why.append(f"Stripe could not be asked: {exc.detail}")
        unsent = recorded - sent
        if stale:
            why.append(
                f"{stale} recorded more than {STRIPE_WINDOW_DAYS} days ago were never sent: "
                "Stripe no longer accepts them, so they need a manual invoice item."
            )
        if unsent - stale > 0:
            why.append(
                f"{unsent - stale} not sent yet: the worker sends them within seconds while "
                "Stripe is reachable."
            )
        difference = 0 if at_stripe is None else sent - at_stripe
        if difference > 0:
            why.append(
                f"Stripe shows {difference} fewer than accepted: its meter summaries trail "
                "accepted events by a few minutes."
            )
        elif difference < 0:
            why.append(
                f"Stripe holds {-difference} more than marked as sent: events accepted just "
                "before a worker stopped are marked on its next round (the identifier keeps a "
                "resend from counting twice)."
            )
        if stale_before > end_at and not why:
            why.append("The whole period is older than Stripe's 35-day window for usage.")
        checks.append(
            MeterCheck(
                meter=meter,
                recorded=recorded,
                sent=sent,
                unsent=unsent,
                at_stripe=at_stripe,
                difference=difference,
                explanation=why,
            )
        )
    balanced = all(c.unsent == 0 and c.difference == 0 and c.at_stripe is not None for c in checks)
    return Reconciliation(start=start, end=end, balanced=balanced, meters=checks)


def _stripe(gateway: Gateway | None) -> Gateway:
    if gateway is None:
        raise BillingUnavailable("Billing is not connected to Stripe on this server.")
    return gateway

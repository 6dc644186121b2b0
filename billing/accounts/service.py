"""Each tenant's Stripe account and its standing.

Signing up makes a Stripe customer and a subscription to the tenant's plan (the worker does it
from `tenant.created`, and a sweep catches any it missed). A plan change is recorded here and
pushed to Stripe by the worker. Stripe's webhooks are stored once by event id and handled by
the worker: a failed payment makes the tenant past due, the grace period running out suspends
it, a paid invoice makes it active again. Every change of standing is an event
(`tenant.status_changed`) written with the change."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from billing import events as billing_events
from billing.accounts import repository as repo
from billing.accounts.repository import Account
from billing.errors import BillingUnavailable, PlanTooSmall
from billing.models import Gateway
from bus.events import Event
from bus.outbox import enqueue
from runtime.db import platform_tx, tenant_tx
from runtime.settings import Settings
from tenancy import events as tenancy_events
from tenancy.errors import InvalidInput, NotFound
from tenancy.models import Origin, Subject, TenantId
from tenancy.service import audit_by

log = logging.getLogger(__name__)

WEBHOOK_RETRY = (timedelta(seconds=5), timedelta(seconds=30), timedelta(minutes=5))
WEBHOOKS_PER_ROUND = 100


async def _publish(conn: asyncpg.Connection, event: Event) -> None:
    codec = (
        tenancy_events.codec
        if isinstance(event, tenancy_events.TenantStatusChanged)
        else billing_events.codec
    )
    await enqueue(conn, event, codec)


async def get_account(conn: asyncpg.Connection, tenant_id: TenantId) -> Account:
    account = await repo.get_account(conn, tenant_id)
    if account is None:
        raise NotFound("Tenant not found.")
    return account


# --- the Stripe customer and subscription -----------------------------------------------------


async def ensure_account(pool: asyncpg.Pool, gateway: Gateway, tenant_id: UUID) -> None:
    """Make the tenant's Stripe customer and subscription if missing. Safe to repeat and to
    run from several workers: the row is locked while Stripe is asked, and Stripe's
    idempotency keys (from the tenant id) make a retry after a crash return the same objects."""
    tenant = TenantId(tenant_id)
    async with tenant_tx(pool, tenant) as conn:
        await repo.lock_account(conn, tenant)
        account = await get_account(conn, tenant)
        if account.tenant_status == "closed" or account.cancelled_at is not None:
            return
        customer = account.customer_id
        if customer is None:
            email = await repo.owner_email(conn, tenant)
            customer = await gateway.create_customer(tenant, account.tenant_name, email)
            await repo.set_customer(conn, tenant, customer)
        if account.subscription_id is None:
            sub = await gateway.create_subscription(tenant, customer, account.plan)
            await repo.set_subscription(
                conn,
                tenant,
                subscription_id=sub.id,
                status=sub.status,
                plan=sub.plan or account.plan,
                period_start=sub.current_period_start,
                period_end=sub.current_period_end,
            )


async def request_plan_change(
    conn: asyncpg.Connection, tenant_id: TenantId, plan: str, subject: Subject, origin: Origin
) -> None:
    """Move the tenant to `plan` now (its limits apply at once); the worker tells Stripe."""
    account = await get_account(conn, tenant_id)
    limits = await repo.plan_limits(conn, plan)
    if limits is None:
        raise InvalidInput(f"There is no plan named {plan!r}.", field="plan")
    if plan == account.plan:
        return
    used = await repo.in_use(conn, tenant_id)
    over = [
        f"{used[kind]} {kind} (the {plan} plan allows {limits[f'max_{kind}']})"
        for kind in ("numbers", "seats", "queues")
        if used[kind] > limits[f"max_{kind}"]
    ]
    if over:
        raise PlanTooSmall(
            "The tenant uses more than that plan allows: " + ", ".join(over) + ".", plan=plan
        )
    await repo.lock_account(conn, tenant_id)
    await repo.request_plan(conn, tenant_id, plan, uuid4())
    await _publish(
        conn,
        billing_events.PlanChanged(tenant_id=tenant_id, plan=plan, previous=account.plan),
    )
    await audit_by(
        conn,
        subject,
        origin,
        "billing.plan_changed",
        "tenant",
        tenant_id,
        plan=plan,
        previous=account.plan,
    )


async def apply_plan(pool: asyncpg.Pool, gateway: Gateway, tenant_id: TenantId) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        await repo.lock_account(conn, tenant_id)
        account = await get_account(conn, tenant_id)
        if (
            account.subscription_id is None
            or account.stripe_plan == account.plan
            or account.cancelled_at is not None
        ):
            return
        key = str(account.plan_change_key or f"{tenant_id}-{account.plan}")
        await gateway.change_plan(account.subscription_id, account.plan, key)
        await repo.set_stripe_plan(conn, tenant_id, account.plan)


async def cancel(pool: asyncpg.Pool, gateway: Gateway, tenant_id: TenantId) -> None:
    """End the tenant's subscription (when it closes)."""
    async with tenant_tx(pool, tenant_id) as conn:
        await repo.lock_account(conn, tenant_id)
        account = await get_account(conn, tenant_id)
        if account.subscription_id is None or account.cancelled_at is not None:
            return
        sub = await gateway.cancel_subscription(account.subscription_id, str(tenant_id))
        await repo.set_subscription(
            conn,
            tenant_id,
            subscription_id=sub.id,
            status=sub.status,
            plan=None,
            period_start=None,
            period_end=None,
        )


# --- standing ---------------------------------------------------------------------------------


async def _set_standing(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    status: str,
    reason: str,
    *,
    past_due_since: datetime | None,
) -> bool:
    previous = await repo.set_standing(conn, tenant_id, status, past_due_since)
    if previous is None or previous == status:
        return False
    await _publish(
        conn,
        tenancy_events.TenantStatusChanged(
            tenant_id=tenant_id, status=status, previous=previous, reason=reason
        ),
    )
    log.info("billing: tenant %s is now %s (was %s): %s", tenant_id, status, previous, reason)
    return True


async def suspend_overdue(
    pool: asyncpg.Pool, grace: timedelta, tenants: list[TenantId] | None = None
) -> int:
    """Past-due tenants whose grace period has run out become suspended."""
    if tenants is None:
        async with platform_tx(pool) as conn:
            tenants = [t for t, why in await repo.accounts_due(conn, grace) if why == "suspend"]
    suspended = 0
    for tenant_id in tenants:
        async with tenant_tx(pool, tenant_id) as conn:
            account = await get_account(conn, tenant_id)
            if (
                account.tenant_status != "past_due"
                or account.past_due_since is None
                or account.past_due_since > datetime.now(UTC) - grace
            ):
                continue
            hours = grace.total_seconds() / 3600
            suspended += await _set_standing(
                conn,
                tenant_id,
                "suspended",
                f"payment still failing {hours:g} hours after the first failure",
                past_due_since=account.past_due_since,
            )
    return suspended


async def run_due(pool: asyncpg.Pool, gateway: Gateway, settings: Settings) -> int:
    """Set up accounts that lack a customer or subscription, push plan changes to Stripe,
    suspend tenants past their grace period. One tenant's failure does not stop the others."""
    grace = timedelta(hours=settings.billing_grace_hours)
    async with platform_tx(pool) as conn:
        due = await repo.accounts_due(conn, grace)
    done = 0
    for tenant_id, reason in due:
        try:
            if reason == "setup":
                await ensure_account(pool, gateway, tenant_id)
            elif reason == "plan":
                await apply_plan(pool, gateway, tenant_id)
            elif reason == "suspend":
                await suspend_overdue(pool, grace, [tenant_id])
            done += 1
        except BillingUnavailable as exc:
            log.warning("billing: %s for tenant %s postponed: %s", reason, tenant_id, exc.detail)
        except Exception:
            log.exception("billing: %s for tenant %s failed", reason, tenant_id)
    return done


# --- Stripe's webhooks ------------------------------------------------------------------------


def _customer_of(event: dict[str, Any]) -> str | None:
    obj = event.get("data", {}).get("object", {})
    customer = obj.get("customer") if isinstance(obj, dict) else None
    if isinstance(customer, dict):
        customer = customer.get("id")
    if customer is None and isinstance(obj, dict) and obj.get("object") == "customer":
        customer = obj.get("id")
    return customer if isinstance(customer, str) else None


async def store_webhook(pool: asyncpg.Pool, event: dict[str, Any]) -> bool:
    """Keep a verified Stripe event once by its id; whether it was new."""
    created = datetime.fromtimestamp(int(event.get("created") or 0), UTC)
    async with platform_tx(pool) as conn:
        customer = _customer_of(event)
        tenant = None if customer is None else await repo.tenant_of_customer(conn, customer)
        return await repo.store_event(
            conn,
            event_id=str(event["id"]),
            type_=str(event["type"]),
            created=created,
            payload=event,
            for_tenant=tenant,
        )


async def handle_pending_webhooks(
    pool: asyncpg.Pool, settings: Settings, limit: int = WEBHOOKS_PER_ROUND
) -> int:
    """Handle stored events not handled yet, each exactly once: the row is claimed, handled and
    marked in one transaction. A failure is kept with a later retry, never dropped."""
    handled = 0
    async with platform_tx(pool) as conn:
        claimed = await repo.claim_events(conn, limit)
        for stored in claimed:
            try:
                outcome = await _handle(pool, stored)
            except Exception as exc:
                retry = WEBHOOK_RETRY[min(stored.attempts, len(WEBHOOK_RETRY) - 1)]
                log.exception("billing: Stripe event %s (%s) failed", stored.id, stored.type)
                await repo.event_failed(conn, stored.id, repr(exc), retry)
                continue
            await repo.event_handled(conn, stored.id, outcome)
            handled += 1
    return handled


async def _handle(pool: asyncpg.Pool, stored: repo.StoredEvent) -> str:
    obj: dict[str, Any] = stored.payload.get("data", {}).get("object", {})
    tenant_id = stored.for_tenant
    if tenant_id is None:
        customer = _customer_of(stored.payload)
        if customer is not None:
            async with platform_tx(pool) as conn:
                tenant_id = await repo.tenant_of_customer(conn, customer)
    kind = stored.type
    if kind not in _HANDLED:
        return "ignored"
    if tenant_id is None:
        return "ignored: no tenant has this customer"
    tenant = TenantId(tenant_id)
    async with tenant_tx(pool, tenant) as conn:
        account = await get_account(conn, tenant)
        if kind == "invoice.payment_failed":
            await _publish(
                conn,
                billing_events.PaymentFailed(
                    tenant_id=tenant,
                    invoice_id=str(obj.get("id")),
                    amount_due=int(obj.get("amount_due") or 0),
                    currency=str(obj.get("currency") or ""),
                ),
            )
            if account.tenant_status in ("active",):
                await _set_standing(
                    conn,
                    tenant,
                    "past_due",
                    f"payment of invoice {obj.get('id')} failed",
                    past_due_since=datetime.now(UTC),
                )
                return "past_due"
            return "noted"
        if kind == "invoice.paid":
            await _publish(
                conn,
                billing_events.InvoicePaid(
                    tenant_id=tenant,
                    invoice_id=str(obj.get("id")),
                    amount_paid=int(obj.get("amount_paid") or 0),
                    currency=str(obj.get("currency") or ""),
                ),
            )
            if account.tenant_status in ("past_due", "suspended"):
                await _set_standing(
                    conn, tenant, "active", f"invoice {obj.get('id')} paid", past_due_since=None
                )
                return "active"
            return "noted"
        # customer.subscription.updated / .deleted
        if account.subscription_id not in (None, obj.get("id")):
            return "ignored: another subscription"
        items = (obj.get("items") or {}).get("data") or [{}]
        start = obj.get("current_period_start") or items[0].get("current_period_start")
        end = obj.get("current_period_end") or items[0].get("current_period_end")
        status = "canceled" if kind == "customer.subscription.deleted" else str(obj.get("status"))
        await repo.set_subscription(
            conn,
            tenant,
            subscription_id=str(obj.get("id")),
            status=status,
            plan=None,
            period_start=None if start is None else datetime.fromtimestamp(int(start), UTC),
            period_end=None if end is None else datetime.fromtimestamp(int(end), UTC),
        )
        await _publish(
            conn,
            billing_events.SubscriptionUpdated(
                tenant_id=tenant, subscription_id=str(obj.get("id")), status=status
            ),
        )
        return f"subscription {status}"


_HANDLED = frozenset(
    {
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)

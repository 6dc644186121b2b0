"""All of billing accounts' SQL: plans and prices, each tenant's Stripe account, its status,
and Stripe's webhook events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from billing.models import PlanPrice
from tenancy.models import TenantId
from tenancy.numbers import repository as numbers_repo
from tenancy.queues import repository as queues_repo
from tenancy.seats import repository as seats_repo


class Account(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: TenantId
    tenant_name: str
    tenant_status: str
    time_zone: str
    plan: str
    customer_id: str | None
    subscription_id: str | None
    subscription_status: str | None
    stripe_plan: str | None
    plan_change_key: UUID | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    past_due_since: datetime | None
    cancelled_at: datetime | None


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    payload: dict[str, Any]
    for_tenant: UUID | None
    attempts: int


async def plan_prices(conn: asyncpg.Connection) -> list[PlanPrice]:
    rows = await conn.fetch(
        """select name, currency, monthly_cents, seat_day_cents, minute_cents,
                  number_month_cents
           from plans order by monthly_cents, name"""
    )
    return [PlanPrice(**dict(r)) for r in rows]


async def plan_limits(conn: asyncpg.Connection, plan: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "select max_numbers, max_seats, max_queues from plans where name = $1", plan
    )


async def in_use(conn: asyncpg.Connection, tenant_id: TenantId) -> dict[str, int]:
    return {
        "numbers": int(await conn.fetchval(numbers_repo.COUNT_ACTIVE, tenant_id)),
        "seats": int(await conn.fetchval(seats_repo.COUNT_ACTIVE, tenant_id)),
        "queues": int(await conn.fetchval(queues_repo.COUNT_QUEUES, tenant_id)),
    }


async def get_account(conn: asyncpg.Connection, tenant_id: TenantId) -> Account | None:
    row = await conn.fetchrow(
        """select t.tenant_id, t.name as tenant_name, t.status as tenant_status, t.time_zone,
                  t.plan, a.stripe_customer_id as customer_id,
                  a.stripe_subscription_id as subscription_id, a.subscription_status,
                  a.stripe_plan, a.plan_change_key, a.current_period_start,
                  a.current_period_end, a.past_due_since, a.cancelled_at
           from tenants t left join billing_accounts a on a.tenant_id = t.tenant_id
           where t.tenant_id = $1""",
        tenant_id,
    )
    return None if row is None else Account(**dict(row))


async def lock_account(conn: asyncpg.Connection, tenant_id: TenantId) -> None:
    """Make the tenant's account row if missing and lock it for this transaction."""
    await conn.execute(
        "insert into billing_accounts (tenant_id) values ($1) on conflict do nothing", tenant_id
    )
    await conn.execute("select 1 from billing_accounts where tenant_id = $1 for update", tenant_id)


async def owner_email(conn: asyncpg.Connection, tenant_id: TenantId) -> str | None:
    value = await conn.fetchval(
        """select email from users where tenant_id = $1 and role = 'owner'
           order by created_at limit 1""",
        tenant_id,
    )
    return None if value is None else str(value)


async def set_customer(conn: asyncpg.Connection, tenant_id: TenantId, customer_id: str) -> None:
    await conn.execute(
        """update billing_accounts set stripe_customer_id = $2, updated_at = now()
           where tenant_id = $1""",
        tenant_id,
        customer_id,
    )


async def set_subscription(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    subscription_id: str,
    status: str,
    plan: str | None,
    period_start: datetime | None,
    period_end: datetime | None,
) -> None:
    await conn.execute(
        """update billing_accounts set stripe_subscription_id = $2, subscription_status = $3,
               stripe_plan = coalesce($4, stripe_plan),
               current_period_start = coalesce($5, current_period_start),
               current_period_end = coalesce($6, current_period_end),
               cancelled_at = case when $3 = 'canceled' then coalesce(cancelled_at, now())
                                   else cancelled_at end,
               updated_at = now()
           where tenant_id = $1""",
        tenant_id,
        subscription_id,
        status,
        plan,
        period_start,
        period_end,
    )


async def request_plan(conn: asyncpg.Connection, tenant_id: TenantId, plan: str, key: UUID) -> None:
    await conn.execute(
        "update tenants set plan = $2, updated_at = now() where tenant_id = $1", tenant_id, plan
    )
    await conn.execute(
        """update billing_accounts set plan_change_key = $2, updated_at = now()
           where tenant_id = $1""",
        tenant_id,
        key,
    )


async def set_stripe_plan(conn: asyncpg.Connection, tenant_id: TenantId, plan: str) -> None:
    await conn.execute(
        "update billing_accounts set stripe_plan = $2, updated_at = now() where tenant_id = $1",
        tenant_id,
        plan,
    )


async def set_standing(
    conn: asyncpg.Connection, tenant_id: TenantId, status: str, past_due_since: datetime | None
) -> str | None:
    """Set the tenant's status (and when it fell past due); its previous status."""
    previous = await conn.fetchval(
        "select status from tenants where tenant_id = $1 for update", tenant_id
    )
    await conn.execute(
        "update tenants set status = $2, updated_at = now() where tenant_id = $1",
        tenant_id,
        status,
    )
    await conn.execute(
        """update billing_accounts set past_due_since = $2, updated_at = now()
           where tenant_id = $1""",
        tenant_id,
        past_due_since,
    )
    return None if previous is None else str(previous)


# --- across tenants (platform_tx) -------------------------------------------------------------


async def accounts_due(conn: asyncpg.Connection, grace: timedelta) -> list[tuple[TenantId, str]]:
    rows = await conn.fetch("select tenant_id, reason from sb_billing_accounts_due($1)", grace)
    return [(TenantId(r["tenant_id"]), str(r["reason"])) for r in rows]


async def tenant_of_customer(conn: asyncpg.Connection, customer_id: str) -> TenantId | None:
    value = await conn.fetchval("select sb_billing_tenant_of_customer($1)", customer_id)
    return None if value is None else TenantId(value)


async def store_event(
    conn: asyncpg.Connection,
    *,
    event_id: str,
    type_: str,
    created: datetime,
    payload: dict[str, Any],
    for_tenant: UUID | None,
) -> bool:
    """Keep a Stripe event once by its id; whether it was new."""
    stored = await conn.fetchval(
        """insert into stripe_events (id, type, created, payload, for_tenant)
           values ($1, $2, $3, $4, $5) on conflict (id) do nothing returning true""",
        event_id,
        type_,
        created,
        payload,
        for_tenant,
    )
    return bool(stored)


async def claim_events(conn: asyncpg.Connection, limit: int) -> list[StoredEvent]:
    rows = await conn.fetch(
        """select id, type, payload, for_tenant, attempts from stripe_events
           where handled_at is null and next_attempt_at <= now()
           order by created, received_at limit $1
           for update skip locked""",
        limit,
    )
    return [StoredEvent(**dict(r)) for r in rows]


async def event_handled(conn: asyncpg.Connection, event_id: str, outcome: str) -> None:
    await conn.execute(
        """update stripe_events set handled_at = now(), outcome = $2, attempts = attempts + 1,
               last_error = null
           where id = $1""",
        event_id,
        outcome,
    )


async def event_failed(
    conn: asyncpg.Connection, event_id: str, error: str, retry_in: timedelta
) -> None:
    await conn.execute(
        """update stripe_events set attempts = attempts + 1, last_error = $2,
               next_attempt_at = now() + $3
           where id = $1""",
        event_id,
        error[:500],
        retry_in,
    )

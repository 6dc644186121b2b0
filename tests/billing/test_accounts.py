"""Tenants' standing from Stripe's webhooks, and plan changes, against the real database."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from billing.accounts import service as accounts
from tenancy.events import codec as tenancy_codec
from tests.conftest import Api


def _event(event_id: str, kind: str, customer: str, **obj: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "data": {"object": {"customer": customer, **obj}},
    }


async def _billed_tenant(api: Api, admin: asyncpg.Connection, email: str) -> tuple[str, str]:
    owner = await api.signup_verified(email)
    tenant = owner["tenant_id"]
    customer = "cus_" + tenant.replace("-", "")[:14]
    await admin.execute(
        """insert into billing_accounts (tenant_id, stripe_customer_id) values ($1, $2)
           on conflict (tenant_id)
           do update set stripe_customer_id = excluded.stripe_customer_id""",
        UUID(tenant),
        customer,
    )
    return tenant, customer


async def _status(admin: asyncpg.Connection, tenant: str) -> str:
    return str(
        await admin.fetchval("select status from tenants where tenant_id = $1", UUID(tenant))
    )


async def _status_events(admin: asyncpg.Connection, tenant: str) -> list[tuple[str, str]]:
    rows = await admin.fetch(
        "select payload from outbox where subject = $1 order by id",
        f"tenant.{tenant}.tenant.status_changed",
    )
    out = []
    for r in rows:
        event = tenancy_codec.decode(bytes(r["payload"]))
        out.append(
            (msgspec.structs.asdict(event)["previous"], msgspec.structs.asdict(event)["status"])
        )
    return out


async def test_payment_failure_past_due_suspension_and_payment_each_change_the_standing_once(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    tenant, customer = await _billed_tenant(api, admin_conn, "owner@acme.test")
    failed = _event("evt_fail_1", "invoice.payment_failed", customer, id="in_1", amount_due=4900)
    # Stored once however often Stripe delivers it; handled once.
    assert await accounts.store_webhook(api.pool, failed) is True
    assert await accounts.store_webhook(api.pool, failed) is False
    assert await accounts.store_webhook(api.pool, failed) is False
    assert await accounts.handle_pending_webhooks(api.pool, api.settings) == 1
    assert await accounts.handle_pending_webhooks(api.pool, api.settings) == 0
    assert await _status(admin_conn, tenant) == "past_due"

    # Within the grace period nothing more happens; after it, suspended.
    assert await accounts.suspend_overdue(api.pool, timedelta(hours=1)) == 0
    assert await _status(admin_conn, tenant) == "past_due"
    assert await accounts.suspend_overdue(api.pool, timedelta(0)) == 1
    assert await _status(admin_conn, tenant) == "suspended"

    paid = _event("evt_paid_1", "invoice.paid", customer, id="in_1", amount_paid=4900)
    await accounts.store_webhook(api.pool, paid)
    await accounts.handle_pending_webhooks(api.pool, api.settings)
    assert await _status(admin_conn, tenant) == "active"
    assert (
        await admin_conn.fetchval(
            "select past_due_since from billing_accounts where tenant_id = $1", UUID(tenant)
        )
        is None
    )
    assert await _status_events(admin_conn, tenant) == [
        ("active", "past_due"),
        ("past_due", "suspended"),
        ("suspended", "active"),
    ]
    outcomes = dict(await admin_conn.fetch("select id, outcome from stripe_events"))
    assert outcomes == {"evt_fail_1": "past_due", "evt_paid_1": "active"}


async def test_unknown_events_and_other_customers_are_acknowledged_and_change_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    tenant, customer = await _billed_tenant(api, admin_conn, "owner@acme.test")
    await accounts.store_webhook(api.pool, _event("evt_x", "charge.refunded", customer))
    await accounts.store_webhook(
        api.pool, _event("evt_y", "invoice.payment_failed", "cus_nobody", id="in_9")
    )
    assert await accounts.handle_pending_webhooks(api.pool, api.settings) == 2
    outcomes = dict(await admin_conn.fetch("select id, outcome from stripe_events"))
    assert outcomes["evt_x"] == "ignored"
    assert outcomes["evt_y"].startswith("ignored")
    assert await _status(admin_conn, tenant) == "active"


async def test_a_plan_too_small_for_what_the_tenant_uses_is_refused_and_changes_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.put("/v1/billing/plan", json={"plan": "growth"}, headers=owner["auth"])
    assert r.status_code == 200, r.text
    assert r.json()["plan"]["name"] == "growth"
    for _ in range(6):  # the trial plan allows 5 seats
        assert (
            await api.client.post("/v1/seats", json={}, headers=owner["auth"])
        ).status_code == 201
    r = await api.client.put("/v1/billing/plan", json={"plan": "trial"}, headers=owner["auth"])
    assert r.status_code == 409
    assert r.json()["code"] == "plan-too-small"
    assert "6 seats" in r.json()["detail"]
    r = await api.client.put("/v1/billing/plan", json={"plan": "platinum"}, headers=owner["auth"])
    assert r.status_code == 422
    r = await api.client.get("/v1/billing", headers=owner["auth"])
    assert r.json()["plan"]["name"] == "growth"
    changes = await admin_conn.fetchval(
        "select count(*) from outbox where subject like '%.billing.plan_changed'"
    )
    assert changes == 1

"""Billing end to end: the API and worker served over HTTP, the Stripe emulator driven by the
official SDK and sending signed webhooks back, usage metered from real events on NATS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from billing.emulator import StripeEmulator
from billing.emulator.webhooks import sign_payload
from billing.worker import BillingWorker
from bus.connection import publish
from media import events as media_events
from runtime.embedded import free_port
from tests.conftest import Api, MailCatcher, Services, api_settings

pytestmark = pytest.mark.timeout(240)
SECRET = "whsec_e2e_" + "a" * 24


async def _until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def billed_api(
    services: Services, database: str, mail: MailCatcher, smtp_port: int, **overrides: Any
) -> AsyncIterator[tuple[Api, StripeEmulator]]:
    from switchboard import roles

    emulator = StripeEmulator(webhook_secret=SECRET)
    await emulator.start("127.0.0.1", 0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    emulator.webhook_url = f"{base}/v1/stripe/webhooks"
    settings = api_settings(
        smtp_port,
        database_url=services.app_dsn(database),
        nats_url=services.nats.url,
        db_pool_min=1,
        http_port=port,
        public_url=base,
        stripe_api_key="sk_test_e2e",
        stripe_api_base=emulator.url,
        stripe_webhook_secret=SECRET,
        billing_sync_interval_seconds=0.2,
        **overrides,
    )
    stop = asyncio.Event()
    try:
        async with roles.open_resources(settings, role="test") as res:
            roles.start_worker(res, stop, mail_poll=0.05)
            server = asyncio.create_task(roles.serve_api(res, stop))
            try:
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    await _until(lambda: _ready(client))
                    yield Api(client, settings, res.pool, mail, res, stop), emulator
            finally:
                stop.set()
                await server
                await asyncio.gather(*res.tasks, return_exceptions=True)
    finally:
        await emulator.stop()


async def _ready(client: httpx.AsyncClient) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await client.get("/healthz")).status_code == 200
    return False


@pytest.fixture
async def billed(
    services: Services, database: str, smtp: tuple[MailCatcher, int]
) -> AsyncIterator[tuple[Api, StripeEmulator]]:
    mail, port = smtp
    async with billed_api(services, database, mail, port) as running:
        yield running


async def _emulator(emulator: StripeEmulator, method: str, path: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=30) as client:
        r = await client.request(method, path, **kw)
        assert r.status_code < 300, r.text
        return r.json()


async def _account(admin: asyncpg.Connection, tenant_id: str) -> asyncpg.Record | None:
    return await admin.fetchrow(
        "select * from billing_accounts where tenant_id = $1", UUID(tenant_id)
    )


async def _meter_events(emulator: StripeEmulator, customer: str) -> list[dict[str, Any]]:
    body = await _emulator(
        emulator, "GET", "/_emulator/meter_events", params={"customer": customer}
    )
    events: list[dict[str, Any]] = body["data"] if isinstance(body, dict) else body
    return events


def _call_ended(tenant_id: str, *, talk_s: float, direction: str = "inbound") -> Any:
    ended = datetime.now(UTC)
    answered = ended - timedelta(seconds=talk_s) if talk_s else None
    return media_events.CallEnded(
        tenant_id=UUID(tenant_id),
        call_id=uuid4(),
        node_id="node-test",
        direction=direction,  # type: ignore[arg-type]
        cause="caller_hangup",
        started_at=ended - timedelta(seconds=talk_s + 5),
        answered_at=answered,
        ended_at=ended,
        duration_ms=round((talk_s + 5) * 1000),
        talk_ms=round(talk_s * 1000),
    )


async def test_signup_creates_the_customer_and_seats_and_calls_are_billed_exactly(
    billed: tuple[Api, StripeEmulator], admin_conn: asyncpg.Connection
) -> None:
    api, emulator = billed
    owner = await api.signup_verified("owner@acme.test")
    tenant = owner["tenant_id"]
    account = await _until(lambda: _account_ready(admin_conn, tenant), timeout=30)
    customer = account["stripe_customer_id"]
    state = await _emulator(emulator, "GET", "/_emulator/state")
    assert state["customers"] == 1
    assert state["subscriptions"] == 1

    # Three seats, held since yesterday noon in the tenant's zone: two seat-days each.
    await api.client.patch("/v1/tenant", json={"time_zone": "Europe/Paris"}, headers=owner["auth"])
    seats = []
    for n in range(3):
        r = await api.client.post("/v1/seats", json={"label": f"desk {n}"}, headers=owner["auth"])
        assert r.status_code == 201, r.text
        seats.append(UUID(r.json()["id"]))
    await _until(
        lambda: admin_conn.fetchval(
            "select count(*) = 3 from metered_spans where tenant_id = $1 and kind = 'seat'",
            UUID(tenant),
        )
    )
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await admin_conn.execute(
        "update metered_spans set started_at = $2 where tenant_id = $1 and kind = 'seat'",
        UUID(tenant),
        yesterday,
    )
    # Calls: 61 s and 60 s inbound, 150 s outbound, one never answered.
    for talk, direction in ((61, "inbound"), (60, "inbound"), (150, "outbound"), (0, "inbound")):
        await publish(
            api.resources.bus,
            _call_ended(tenant, talk_s=talk, direction=direction),
            media_events.codec,
        )

    async def ledger_totals() -> dict[str, int] | None:
        rows = await admin_conn.fetch(
            "select meter, sum(quantity)::int as q from usage_ledger where tenant_id = $1"
            " group by meter",
            UUID(tenant),
        )
        totals = {r["meter"]: r["q"] for r in rows}
        return totals if totals.get("seat_days") == 6 and totals.get("voice_minutes") == 6 else None

    totals = await _until(ledger_totals, timeout=30)
    assert totals["seat_days"] == 6
    assert totals["voice_minutes"] == 2 + 1 + 3

    async def all_sent() -> list[dict[str, Any]] | None:
        events = await _meter_events(emulator, customer)
        by_meter: dict[str, int] = {}
        for e in events:
            by_meter[e["event_name"]] = by_meter.get(e["event_name"], 0) + int(
                e["payload"]["value"]
            )
        return (
            events
            if by_meter.get("seat_days") == 6 and by_meter.get("voice_minutes") == 6
            else None
        )

    events = await _until(all_sent, timeout=30)
    identifiers = [e["identifier"] for e in events]
    assert len(identifiers) == len(set(identifiers))
    ledger_keys = {
        r["key"]
        for r in await admin_conn.fetch(
            "select key from usage_ledger where tenant_id = $1", UUID(tenant)
        )
    }
    assert set(identifiers) == ledger_keys

    # The finance user sees the same usage; an agent is refused.
    finance = await api.member(owner, "fin@acme.test", "finance")
    agent = await api.member(owner, "ann@acme.test", "agent")
    # This billing period began at sign-up, today: yesterday's seat-days lie before it.
    r = await api.client.get("/v1/billing/usage", headers=finance)
    assert r.status_code == 200, r.text
    assert r.json()["totals"] == {"seat_days": 3, "voice_minutes": 6, "number_months": 0}
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    days = {"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=1))}
    r = await api.client.get("/v1/billing/usage", params=days, headers=finance)
    assert r.json()["totals"] == {"seat_days": 6, "voice_minutes": 6, "number_months": 0}
    per_day = {(d["day"], d["meter"]): (d["quantity"], d["sent"]) for d in r.json()["days"]}
    assert per_day[(days["start"], "seat_days")] == (3, 3)
    r = await api.client.get("/v1/billing/usage.csv", params=days, headers=finance)
    assert r.status_code == 200
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("key,meter,quantity")
    assert len(lines) == 1 + len(ledger_keys)
    r = await api.client.get("/v1/billing/reconciliation", headers=finance)
    assert r.status_code == 200, r.text
    assert r.json()["balanced"] is True, r.json()
    for path in ("/v1/billing", "/v1/billing/usage", "/v1/billing/invoices"):
        r = await api.client.get(path, headers=agent)
        assert r.status_code == 403, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def _account_ready(admin: asyncpg.Connection, tenant: str) -> asyncpg.Record | None:
    row = await _account(admin, tenant)
    if row is None or not row["stripe_customer_id"] or not row["stripe_subscription_id"]:
        return None
    return row


@pytest.fixture
async def impatient(
    services: Services, database: str, smtp: tuple[MailCatcher, int]
) -> AsyncIterator[tuple[Api, StripeEmulator]]:
    """A worker that gives up on a Stripe request after a second."""
    mail, port = smtp
    async with billed_api(services, database, mail, port, stripe_timeout_seconds=1.0) as running:
        yield running


async def test_a_worker_killed_mid_batch_and_stripe_failing_lose_nothing_and_count_nothing_twice(
    impatient: tuple[Api, StripeEmulator], admin_conn: asyncpg.Connection
) -> None:
    api, emulator = impatient
    owner = await api.signup_verified("owner@acme.test")
    tenant = owner["tenant_id"]
    account = await _until(lambda: _account_ready(admin_conn, tenant), timeout=30)
    customer = account["stripe_customer_id"]
    billing_tasks = [t for t in api.resources.tasks if t.get_name().startswith("billing-")]
    assert billing_tasks
    # Stripe answers too late for the worker (after doing the work) and then fails outright for
    # a while.
    await _emulator(emulator, "POST", "/_emulator/faults", json={"delay": 3, "count": 4})
    for _ in range(20):
        await publish(api.resources.bus, _call_ended(tenant, talk_s=30), media_events.codec)
    await _until(
        lambda: admin_conn.fetchval(
            "select count(*) = 20 from usage_ledger where tenant_id = $1", UUID(tenant)
        )
    )
    await asyncio.sleep(1.0)  # a batch is in flight, held up by the slow answers
    for task in billing_tasks:
        task.cancel()
    await asyncio.gather(*billing_tasks, return_exceptions=True)
    await _emulator(emulator, "POST", "/_emulator/faults", json={"status": 500, "count": 30})
    stop = asyncio.Event()
    restarted = BillingWorker(
        api.pool, api.resources.bus, api.settings, api.resources.billing
    ).start(stop)
    try:

        async def stripe_has_all() -> bool:
            events = await _meter_events(emulator, customer)
            return len(events) >= 20

        await _until(stripe_has_all, timeout=60)
        await asyncio.sleep(1.0)
        events = await _meter_events(emulator, customer)
        assert len(events) == 20
        assert len({e["identifier"] for e in events}) == 20
        assert sum(int(e["payload"]["value"]) for e in events) == 20
        await _until(
            lambda: admin_conn.fetchval(
                "select count(*) = 20 from usage_sent where tenant_id = $1", UUID(tenant)
            ),
            timeout=30,
        )
    finally:
        stop.set()
        await asyncio.gather(*restarted, return_exceptions=True)


async def test_webhooks_are_verified_handled_once_and_drive_the_tenant_through_suspension(
    billed: tuple[Api, StripeEmulator], admin_conn: asyncpg.Connection
) -> None:
    api, emulator = billed
    owner = await api.signup_verified("owner@acme.test")
    tenant = owner["tenant_id"]
    account = await _until(lambda: _account_ready(admin_conn, tenant), timeout=30)
    customer = account["stripe_customer_id"]

    finance = await api.member(owner, "fin@acme.test", "finance")

    # Forged and stale signatures are refused and stored nowhere.
    body = json.dumps(
        {
            "id": "evt_forged",
            "object": "event",
            "type": "invoice.paid",
            "created": int(time.time()),
            "data": {"object": {"object": "invoice", "customer": customer}},
        }
    ).encode()
    forged = sign_payload(body, "whsec_not_ours", int(time.time()))
    stale = sign_payload(body, SECRET, int(time.time()) - 3600)
    for header in (forged, stale, "", "t=1,v1=00"):
        r = await api.client.post(
            "/v1/stripe/webhooks",
            content=body,
            headers={"Stripe-Signature": header, "content-type": "application/json"},
        )
        assert r.status_code == 400, (header, r.text)
    assert (
        await admin_conn.fetchval("select count(*) from stripe_events where id = 'evt_forged'") == 0
    )

    # On a paid plan (the trial costs nothing, so nothing could fail), a payment fails: past
    # due, seen in the API and as an event.
    r = await api.client.put("/v1/billing/plan", json={"plan": "starter"}, headers=owner["auth"])
    assert r.status_code == 200, r.text
    await _until(
        lambda: admin_conn.fetchval(
            "select stripe_plan = 'starter' from billing_accounts where tenant_id = $1",
            UUID(tenant),
        ),
        timeout=30,
    )
    await _emulator(
        emulator, "POST", f"/_emulator/customers/{customer}/payments", json={"fail": True}
    )
    invoice = await _emulator(emulator, "POST", f"/_emulator/customers/{customer}/close_period")

    async def status() -> str:
        r = await api.client.get("/v1/tenant", headers=owner["auth"])
        return str(r.json()["status"])

    await _until(lambda: _is(status, "past_due"), timeout=30)
    r = await api.client.get("/v1/billing", headers=owner["auth"])
    assert r.json()["past_due_since"] is not None
    # Still working while past due.
    assert (await api.client.post("/v1/seats", json={}, headers=owner["auth"])).status_code == 201

    # The same event delivered three times is handled once.
    failed = await admin_conn.fetchrow(
        "select id from stripe_events where type = 'invoice.payment_failed'"
    )
    for _ in range(2):
        await _emulator(emulator, "POST", f"/_emulator/events/{failed['id']}/resend")
    await asyncio.sleep(1.0)
    assert (
        await admin_conn.fetchval(
            "select count(*) from stripe_events where type = 'invoice.payment_failed'"
        )
        == 1
    )

    # The grace period runs out: suspended. Reads work; writes are refused with a clear problem.
    await admin_conn.execute(
        "update billing_accounts set past_due_since = now() - interval '100 hours'"
        " where tenant_id = $1",
        UUID(tenant),
    )
    await _until(lambda: _is(status, "suspended"), timeout=30)
    await asyncio.sleep(5.5)  # the API's tenant-status cache
    r = await api.client.post("/v1/seats", json={}, headers=owner["auth"])
    assert r.status_code == 403
    assert r.json()["code"] == "tenant-suspended"
    assert "billing" in r.json()["detail"]
    assert (await api.client.get("/v1/seats", headers=owner["auth"])).status_code == 200
    r = await api.client.post("/v1/billing/portal-session", json={}, headers=owner["auth"])
    assert r.status_code == 201, r.text
    assert r.json()["url"].startswith("http")

    # Paid: active again.
    await _emulator(emulator, "POST", f"/_emulator/invoices/{invoice['id']}/pay")
    await _until(lambda: _is(status, "active"), timeout=30)
    r = await api.client.get("/v1/billing", headers=owner["auth"])
    assert r.json()["past_due_since"] is None
    changes = [
        json.loads(bytes(p))["status"]
        for p in await admin_conn.fetch(
            "select payload from outbox where subject = $1 order by id",
            f"tenant.{tenant}.tenant.status_changed",
        )
        for p in [p["payload"]]
    ]
    assert changes == ["past_due", "suspended", "active"]
    r = await api.client.get("/v1/billing/invoices", headers=finance)
    assert r.status_code == 200, r.text
    paid = [i for i in r.json()["data"] if i["id"] == invoice["id"]]
    assert [(i["status"], i["total"], i["amount_paid"]) for i in paid] == [
        ("paid", invoice["total"], invoice["total"])
    ]
    assert paid[0]["total"] >= 4900  # the starter plan's monthly price at least
    assert paid[0]["invoice_pdf"].startswith("http")


async def _is(read: Callable[[], Awaitable[str]], wanted: str) -> bool:
    return await read() == wanted


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="Playwright drives the page in Chromium"
    )
    executable = next(
        (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))),
        None,
    )
    if executable is None:
        pytest.skip("no Chromium on this machine")
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable)
        try:
            yield b
        finally:
            await b.close()


async def _sign_in(browser: Any, base: str, email: str) -> tuple[Any, list[str]]:
    page = await (await browser.new_context(accept_downloads=True)).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    await page.goto(f"{base}/billing/")
    await page.fill("#login-email", email)
    await page.fill("#login-password", "Calls-Passw0rd-1")
    await page.click("#login-submit")
    return page, problems


async def test_a_finance_user_reads_the_bill_in_the_browser_and_an_agent_is_turned_away(
    billed: tuple[Api, StripeEmulator], admin_conn: asyncpg.Connection, browser: Any
) -> None:
    api, emulator = billed
    owner = await api.signup_verified("owner@acme.test")
    await _until(lambda: _account_ready(admin_conn, owner["tenant_id"]), timeout=30)
    await api.member(owner, "fin@acme.test", "finance")
    await api.member(owner, "ann@acme.test", "agent")
    await api.client.post("/v1/seats", json={}, headers=owner["auth"])
    await publish(
        api.resources.bus, _call_ended(owner["tenant_id"], talk_s=125), media_events.codec
    )
    await _until(
        lambda: admin_conn.fetchval(
            "select count(*) = 2 from usage_sent where tenant_id = $1", UUID(owner["tenant_id"])
        ),
        timeout=30,
    )
    base = str(api.client.base_url).rstrip("/")

    page, problems = await _sign_in(browser, base, "fin@acme.test")
    await page.wait_for_selector("#billing:not([hidden])")
    assert "trial" in await page.text_content("#plan-summary")
    totals = await page.inner_text("#usage-totals tbody")
    assert "Seat-days\t1" in totals
    assert "Voice minutes\t3" in totals
    assert "Balanced" in await page.text_content("#recon-headline")
    async with page.expect_download() as download_info:
        await page.click("#csv")
    download = await download_info.value
    csv_text = Path(await download.path()).read_text()
    assert csv_text.splitlines()[0].startswith("key,meter,quantity")
    assert len(csv_text.strip().splitlines()) == 3
    await page.click("#portal")
    await page.wait_for_url(f"{emulator.url}/_emulator/portal/*")
    assert problems == []

    page, problems = await _sign_in(browser, base, "ann@acme.test")

    async def turned_away() -> bool:
        return "owners and finance" in (await page.text_content("#message") or "")

    await _until(turned_away, timeout=15)
    assert await page.is_hidden("#billing")
    assert problems == []

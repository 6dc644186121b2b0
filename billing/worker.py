"""The billing worker: builds the ledger from events, keeps each tenant's Stripe account in step,
sends usage to Stripe and handles Stripe's webhooks. Every part is safe to run in several
workers at once and to kill at any moment: ledger rows are keyed, sends carry the ledger key as
the meter event identifier, Stripe calls carry idempotency keys derived from our own rows, and
webhook rows are claimed with SKIP LOCKED."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from billing.accounts import service as accounts
from billing.accounts.repository import plan_prices
from billing.ledger import service as ledger
from billing.models import Gateway
from bus.connection import Bus
from bus.consumer import run_consumer
from bus.events import Event
from runtime.db import platform_tx
from runtime.settings import Settings
from tenancy.events import TenantCreated
from tenancy.events import codec as tenancy_codec

log = logging.getLogger(__name__)

CATALOG_RETRY_SECONDS = 5.0


class BillingWorker:
    def __init__(self, pool: asyncpg.Pool, bus: Bus, settings: Settings, gateway: Gateway) -> None:
        self._pool = pool
        self._bus = bus
        self._settings = settings
        self._gateway = gateway
        self._sender = ledger.MeterSender(pool, gateway, batch=settings.billing_meter_batch)
        self._catalog_ready = False

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[Any]]:
        """The worker's tasks, started on the running loop."""
        tasks = [
            asyncio.create_task(
                run_consumer(
                    self._bus,
                    durable=durable,
                    filter_subject=subject,
                    codec=codec,
                    handler=self._record,
                    stop=stop,
                ),
                name=durable,
            )
            for durable, subject, codec in ledger.LEDGER_CONSUMERS
        ]
        tasks.append(
            asyncio.create_task(
                run_consumer(
                    self._bus,
                    durable="billing-signups",
                    filter_subject="tenant.*.tenant.created",
                    codec=tenancy_codec,
                    handler=self._signed_up,
                    stop=stop,
                ),
                name="billing-signups",
            )
        )
        tasks.append(asyncio.create_task(self._sync_loop(stop), name="billing-sync"))
        return tasks

    async def _record(self, event: Event) -> None:
        await ledger.record_event(self._pool, event)

    async def _signed_up(self, event: Event) -> None:
        if isinstance(event, TenantCreated):
            await self._ensure_catalog()
            await accounts.ensure_account(self._pool, self._gateway, event.tenant_id)

    async def _ensure_catalog(self) -> None:
        if self._catalog_ready:
            return
        async with platform_tx(self._pool) as conn:
            plans = await plan_prices(conn)
        await self._gateway.ensure_catalog(plans)
        self._catalog_ready = True

    async def sync_once(self, now: datetime | None = None) -> None:
        """One round of everything that is not driven by an event; each part runs even when
        another fails (the failure is logged and retried next round)."""
        now = now or datetime.now(UTC)
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("catalog", self._ensure_catalog),
            ("webhooks", lambda: accounts.handle_pending_webhooks(self._pool, self._settings)),
            ("accounts", lambda: accounts.run_due(self._pool, self._gateway, self._settings)),
            ("sweep", lambda: ledger.sweep(self._pool, now)),
            ("send", self._sender.send_pending),
        ]
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception("billing: %s step failed; retrying next round", name)

    async def _sync_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.billing_sync_interval_seconds
        while not stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

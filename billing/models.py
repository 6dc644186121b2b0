"""Billing's values, and the gateway interface the rest of billing talks to Stripe through."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

import msgspec

Meter = Literal["seat_days", "voice_minutes", "number_months"]
METERS: tuple[Meter, ...] = ("seat_days", "voice_minutes", "number_months")


class LedgerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the usage ledger. `key` names exactly what was measured and is the meter
    event's identifier at Stripe."""

    key: str
    meter: Meter
    quantity: int
    usage_day: date
    occurred_at: datetime
    source: Literal["seat", "call", "number", "correction"]
    source_id: str
    detail: dict[str, Any] = {}
    corrects: str | None = None


class PlanPrice(msgspec.Struct, frozen=True, kw_only=True):
    """A plan's prices in the smallest currency unit; the Stripe catalog is built from these."""

    name: str
    currency: str
    monthly_cents: int
    seat_day_cents: int
    minute_cents: int
    number_month_cents: int


class MeterEventOut(msgspec.Struct, frozen=True, kw_only=True):
    identifier: str
    meter: Meter
    customer_id: str
    value: int
    timestamp: int
    """Seconds since the epoch: when the usage happened."""


class SendOutcome(msgspec.Struct, kw_only=True):
    accepted: list[str] = []
    """Identifiers Stripe holds now (including ones it already had)."""
    failed: dict[str, str] = {}
    """Identifier -> why it was not accepted this time (it stays unsent and is retried)."""


class SubscriptionState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    plan: str | None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None


class StripeInvoice(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    number: str | None
    status: str
    currency: str
    total: int
    amount_due: int
    amount_paid: int
    period_start: datetime
    period_end: datetime
    created: datetime
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None


class Gateway(Protocol):
    """What billing asks of Stripe. `billing.gateway.StripeGateway` implements it with the
    official SDK; every call that creates or changes something carries an idempotency key
    derived from our own state, so a retry after a restart cannot do it twice."""

    async def ensure_catalog(self, plans: Sequence[PlanPrice]) -> None: ...

    async def create_customer(self, tenant_id: UUID, name: str, email: str | None) -> str: ...

    async def create_subscription(
        self, tenant_id: UUID, customer_id: str, plan: str
    ) -> SubscriptionState: ...

    async def change_plan(self, subscription_id: str, plan: str, key: str) -> SubscriptionState: ...

    async def cancel_subscription(self, subscription_id: str, key: str) -> SubscriptionState: ...

    async def send_meter_events(self, events: Sequence[MeterEventOut]) -> SendOutcome: ...

    async def list_invoices(self, customer_id: str, limit: int = 24) -> list[StripeInvoice]: ...

    async def portal_session(self, customer_id: str, return_url: str) -> str: ...

    async def meter_total(
        self, customer_id: str, meter: Meter, start: datetime, end: datetime
    ) -> int: ...

    def verify_webhook(self, payload: bytes, signature_header: str) -> dict[str, Any]: ...

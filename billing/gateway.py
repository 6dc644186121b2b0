"""Stripe, through the official SDK: the only module that imports `stripe`.

Every call that creates or changes something carries an idempotency key derived from our own
rows (the tenant id, the ledger key, the plan-change key), so a retry after a crash or a
timeout cannot do it twice. The SDK retries connection errors and 5xx itself (with the same
key); `_call` adds a few slower rounds on top for longer outages."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID

import stripe

from billing.errors import BillingUnavailable, InvalidWebhook
from billing.models import (
    METERS,
    Meter,
    MeterEventOut,
    PlanPrice,
    SendOutcome,
    StripeInvoice,
    SubscriptionState,
)
from runtime.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

METER_NAMES: dict[Meter, str] = {
    "seat_days": "Seat-days",
    "voice_minutes": "Voice minutes",
    "number_months": "Number-months",
}
PRICE_OF_METER: dict[Meter, str] = {
    "seat_days": "seat_day_cents",
    "voice_minutes": "minute_cents",
    "number_months": "number_month_cents",
}
RETRY_DELAYS = (0.5, 2.0)
SEND_CONCURRENCY = 8


def lookup_key(plan: str, part: str) -> str:
    return f"sb_{plan}_{part}"


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    return isinstance(exc, stripe.APIError) and (exc.http_status or 500) >= 500


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), UTC)


class StripeGateway:
    def __init__(self, client: stripe.StripeClient, *, webhook_secret: str | None, tolerance: int):
        self._client = client
        self._webhook_secret = webhook_secret
        self._tolerance = tolerance
        self._meters: dict[Meter, str] = {}
        self._prices: dict[str, dict[str, str]] = {}
        """plan -> part (base or meter) -> price id"""
        self._catalog_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        if not settings.stripe_api_key:
            raise ValueError("stripe_api_key: billing needs a Stripe secret key")
        client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
            http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds),
            max_network_retries=2,
        )
        return cls(
            client,
            webhook_secret=settings.stripe_webhook_secret,
            tolerance=settings.stripe_webhook_tolerance_seconds,
        )

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return await request()
            except stripe.StripeError as exc:
                if delay is None or not _retryable(exc):
                    raise BillingUnavailable(
                        f"Stripe refused {what}: {exc.user_message or exc}"
                    ) from exc
                log.warning("stripe: %s failed (try %d), retrying: %s", what, attempt + 1, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # --- catalog ------------------------------------------------------------------------------

    async def ensure_catalog(self, plans: Sequence[PlanPrice]) -> None:
        """Meters, a product per plan and its four prices: found by name and lookup key, made
        when missing. Safe to run from several workers (the idempotency keys agree)."""
        async with self._catalog_lock:
            if self._meters and all(p.name in self._prices for p in plans):
                return
            v1 = self._client.v1
            listed = await self._call("listing meters", lambda: v1.billing.meters.list_async())
            meters = {m.event_name: m.id for m in listed.data if m.status == "active"}
            for meter in METERS:
                if meter not in meters:
                    created = await self._call(
                        "creating a meter",
                        lambda meter=meter: v1.billing.meters.create_async(  # type: ignore[misc]
                            params=cast(
                                Any,
                                {
                                    "display_name": METER_NAMES[meter],
                                    "event_name": meter,
                                    "default_aggregation": {"formula": "sum"},
                                    "customer_mapping": {
                                        "event_payload_key": "stripe_customer_id",
                                        "type": "by_id",
                                    },
                                    "value_settings": {"event_payload_key": "value"},
                                },
                            ),
                            options={"idempotency_key": f"sb-meter-def-{meter}"},
                        ),
                    )
                    meters[meter] = created.id
                self._meters[meter] = meters[meter]
            for plan in plans:
                self._prices[plan.name] = await self._plan_prices(plan)

    async def _plan_prices(self, plan: PlanPrice) -> dict[str, str]:
        v1 = self._client.v1
        parts = ["base", *METERS]
        keys = [lookup_key(plan.name, part) for part in parts]
        found = await self._call(
            "looking up prices",
            lambda: v1.prices.list_async(params=cast(Any, {"lookup_keys": keys, "limit": 10})),
        )
        prices = {p.lookup_key: p.id for p in found.data if p.lookup_key}
        if all(k in prices for k in keys):
            return {part: prices[lookup_key(plan.name, part)] for part in parts}
        product = await self._call(
            "creating a product",
            lambda: v1.products.create_async(
                params=cast(
                    Any, {"name": f"Switchboard {plan.name}", "metadata": {"plan": plan.name}}
                ),
                options={"idempotency_key": f"sb-product-{plan.name}"},
            ),
        )
        out: dict[str, str] = {}
        for part in parts:
            key = lookup_key(plan.name, part)
            if key in prices:
                out[part] = prices[key]
                continue
            params: dict[str, Any] = {
                "product": product.id,
                "currency": plan.currency,
                "lookup_key": key,
                "metadata": {"plan": plan.name, "part": part},
            }
            if part == "base":
                params["unit_amount"] = plan.monthly_cents
                params["recurring"] = {"interval": "month", "usage_type": "licensed"}
            else:
                meter = cast(Meter, part)
                params["unit_amount"] = getattr(plan, PRICE_OF_METER[meter])
                params["recurring"] = {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": self._meters[meter],
                }
            price = await self._call(
                "creating a price",
                lambda params=params, key=key: v1.prices.create_async(  # type: ignore[misc]
                    params=cast(Any, params), options={"idempotency_key": f"sb-price-{key}"}
                ),
            )
            out[part] = price.id
        return out

    def _items(self, plan: str) -> list[dict[str, Any]]:
        if plan not in self._prices:
            raise BillingUnavailable(f"The Stripe catalog has no prices for plan {plan!r} yet.")
        prices = self._prices[plan]
        return [{"price": prices["base"], "quantity": 1}] + [
            {"price": prices[meter]} for meter in METERS
        ]

    def plan_of_price(self, price_id: str) -> str | None:
        for plan, prices in self._prices.items():
            if prices.get("base") == price_id:
                return plan
        return None

    # --- customers and subscriptions ----------------------------------------------------------

    async def create_customer(self, tenant_id: UUID, name: str, email: str | None) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"tenant_id": str(tenant_id)}}
        if email:
            params["email"] = email
        customer = await self._call(
            "creating the customer",
            lambda: self._client.v1.customers.create_async(
                params=cast(Any, params), options={"idempotency_key": f"sb-customer-{tenant_id}"}
            ),
        )
        return str(customer.id)

    async def create_subscription(
        self, tenant_id: UUID, customer_id: str, plan: str
    ) -> SubscriptionState:
        items = self._items(plan)
        sub = await self._call(
            "creating the subscription",
            lambda: self._client.v1.subscriptions.create_async(
                params=cast(
                    Any,
                    {
                        "customer": customer_id,
                        "items": items,
                        "metadata": {"tenant_id": str(tenant_id), "plan": plan},
                        "collection_method": "charge_automatically",
                        "payment_behavior": "allow_incomplete",
                    },
                ),
                options={"idempotency_key": f"sb-subscription-{tenant_id}"},
            ),
        )
        return self._subscription(sub)

    async def change_plan(self, subscription_id: str, plan: str, key: str) -> SubscriptionState:
        v1 = self._client.v1
        current = await self._call(
            "reading the subscription", lambda: v1.subscriptions.retrieve_async(subscription_id)
        )
        items: list[dict[str, Any]] = [
            {"id": item["id"], "deleted": True}
            for item in (current.to_dict().get("items") or {}).get("data") or []
        ]
        items += self._items(plan)
        sub = await self._call(
            "changing the plan",
            lambda: v1.subscriptions.update_async(
                subscription_id,
                params=cast(
                    Any,
                    {"items": items, "metadata": {"plan": plan}, "proration_behavior": "none"},
                ),
                options={"idempotency_key": f"sb-plan-{key}"},
            ),
        )
        return self._subscription(sub)

    async def cancel_subscription(self, subscription_id: str, key: str) -> SubscriptionState:
        sub = await self._call(
            "cancelling the subscription",
            lambda: self._client.v1.subscriptions.cancel_async(
                subscription_id, options={"idempotency_key": f"sb-cancel-{key}"}
            ),
        )
        return self._subscription(sub)

    def _subscription(self, stripe_sub: Any) -> SubscriptionState:
        sub: dict[str, Any] = stripe_sub.to_dict()
        items = (sub.get("items") or {}).get("data") or []
        first = items[0] if items else None
        start = sub.get("current_period_start") or (first and first.get("current_period_start"))
        end = sub.get("current_period_end") or (first and first.get("current_period_end"))
        metadata = sub.get("metadata") or {}
        return SubscriptionState(
            id=str(sub["id"]),
            status=str(sub["status"]),
            plan=metadata.get("plan"),
            current_period_start=_ts(start),
            current_period_end=_ts(end),
        )

    # --- usage --------------------------------------------------------------------------------

    async def send_meter_events(self, events: Sequence[MeterEventOut]) -> SendOutcome:
        """Send a batch, several at a time. Each event's identifier is its ledger key, so a
        repeat is harmless; what failed is reported, never raised."""
        outcome = SendOutcome(accepted=[], failed={})
        limit = asyncio.Semaphore(SEND_CONCURRENCY)

        async def send(event: MeterEventOut) -> None:
            async with limit:
                try:
                    await self._client.v1.billing.meter_events.create_async(
                        params=cast(
                            Any,
                            {
                                "event_name": event.meter,
                                "identifier": event.identifier,
                                "timestamp": event.timestamp,
                                "payload": {
                                    "stripe_customer_id": event.customer_id,
                                    "value": str(event.value),
                                },
                            },
                        ),
                        options={"idempotency_key": f"sb-meter-{event.identifier}"},
                    )
                except stripe.StripeError as exc:
                    outcome.failed[event.identifier] = str(exc.user_message or exc)[:200]
                except Exception as exc:  # a timeout surfacing past the SDK, say
                    outcome.failed[event.identifier] = repr(exc)[:200]
                else:
                    outcome.accepted.append(event.identifier)

        await asyncio.gather(*(send(e) for e in events))
        return outcome

    async def meter_total(
        self, customer_id: str, meter: Meter, start: datetime, end: datetime
    ) -> int:
        if meter not in self._meters:
            raise BillingUnavailable("The Stripe catalog is not loaded yet.")
        summaries = await self._call(
            "reading meter totals",
            lambda: self._client.v1.billing.meters.event_summaries.list_async(
                self._meters[meter],
                params=cast(
                    Any,
                    {
                        "customer": customer_id,
                        "start_time": int(start.timestamp()),
                        "end_time": int(end.timestamp()),
                    },
                ),
            ),
        )
        return round(sum(float(s.aggregated_value) for s in summaries.data))

    # --- invoices, portal, webhooks -----------------------------------------------------------

    async def list_invoices(self, customer_id: str, limit: int = 24) -> list[StripeInvoice]:
        found = await self._call(
            "listing invoices",
            lambda: self._client.v1.invoices.list_async(
                params=cast(Any, {"customer": customer_id, "limit": limit})
            ),
        )
        return [
            StripeInvoice(
                id=str(i["id"]),
                number=i.get("number"),
                status=str(i.get("status") or "draft"),
                currency=str(i.get("currency") or "usd"),
                total=int(i.get("total") or 0),
                amount_due=int(i.get("amount_due") or 0),
                amount_paid=int(i.get("amount_paid") or 0),
                period_start=_ts(i.get("period_start")) or datetime.fromtimestamp(0, UTC),
                period_end=_ts(i.get("period_end")) or datetime.fromtimestamp(0, UTC),
                created=_ts(i.get("created")) or datetime.fromtimestamp(0, UTC),
                hosted_invoice_url=i.get("hosted_invoice_url"),
                invoice_pdf=i.get("invoice_pdf"),
            )
            for i in (invoice.to_dict() for invoice in found.data)
        ]

    async def portal_session(self, customer_id: str, return_url: str) -> str:
        session = await self._call(
            "opening the customer portal",
            lambda: self._client.v1.billing_portal.sessions.create_async(
                params=cast(Any, {"customer": customer_id, "return_url": return_url})
            ),
        )
        return str(session.url)

    def verify_webhook(self, payload: bytes, signature_header: str) -> dict[str, Any]:
        if not self._webhook_secret:
            raise BillingUnavailable("No Stripe webhook secret is configured.")
        if not signature_header:
            raise InvalidWebhook("The Stripe-Signature header is missing.")
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature_header, self._webhook_secret, tolerance=self._tolerance
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(f"The Stripe-Signature header does not verify: {exc}") from None
        try:
            event = json.loads(payload)
        except ValueError:
            raise InvalidWebhook("The body is not JSON.") from None
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)
            or not isinstance(event.get("data"), dict)
        ):
            raise InvalidWebhook("The body is not a Stripe event (id, type, data).")
        return event

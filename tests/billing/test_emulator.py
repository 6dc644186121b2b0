"""The Stripe emulator, driven by the real `stripe` SDK so the SDK's own request encoding is what
the emulator reads; signed webhooks caught by a small local receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import stripe

from billing.emulator import StripeEmulator
from billing.emulator.forms import parse_form
from billing.emulator.webhooks import sign_payload

SECRET = "whsec_test_emulator"


@dataclass
class Receiver:
    """A tiny HTTP server that records every webhook it is sent and answers 200."""

    url: str = ""
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")[1:]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self.received.put((headers, body))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    async def events(self, n: int) -> list[dict[str, Any]]:
        """The next n webhooks, each verified with the SDK exactly as the real receiver does."""
        out = []
        for _ in range(n):
            headers, body = await asyncio.wait_for(self.received.get(), timeout=20)
            assert headers["content-type"] == "application/json"
            stripe.WebhookSignature.verify_header(
                body.decode(), headers["stripe-signature"], SECRET, tolerance=300
            )
            out.append(json.loads(body))
        return out


@dataclass
class Stripe:
    emulator: StripeEmulator
    client: stripe.StripeClient
    http: httpx.AsyncClient
    webhooks: Receiver

    async def control(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.http.request(method, path, **kw)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
async def env() -> AsyncIterator[Stripe]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    emulator = StripeEmulator(webhook_url=receiver.url, webhook_secret=SECRET)
    url = await emulator.start()
    client = stripe.StripeClient(
        "sk_test_emulator",
        base_addresses={"api": url},
        http_client=stripe.HTTPXClient(),
        max_network_retries=0,
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Stripe(emulator, client, http, receiver)
    finally:
        await emulator.stop()
        server.close()
        await server.wait_closed()


async def _catalog(client: stripe.StripeClient) -> dict[str, Any]:
    """Two meters, a product and its base and metered prices, as the gateway makes them."""
    v1 = client.v1
    meters = {}
    for name in ("seat_days", "voice_minutes"):
        meters[name] = await v1.billing.meters.create_async(
            params={
                "display_name": name.replace("_", " "),
                "event_name": name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
    product = await v1.products.create_async(
        params={"name": "Switchboard team", "metadata": {"plan": "team"}}
    )
    prices = {
        "base": await v1.prices.create_async(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 4900,
                "lookup_key": "sb_team_base",
                "recurring": {"interval": "month", "usage_type": "licensed"},
            }
        )
    }
    for name, cents in (("seat_days", 150), ("voice_minutes", 2)):
        prices[name] = await v1.prices.create_async(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": cents,
                "lookup_key": f"sb_team_{name}",
                "metadata": {"plan": "team", "part": name},
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": meters[name].id,
                },
            }
        )
    return {"meters": meters, "prices": prices}


async def _subscribed(client: stripe.StripeClient, catalog: dict[str, Any]) -> tuple[Any, Any]:
    customer = await client.v1.customers.create_async(
        params={"name": "Acme", "email": "billing@acme.test", "metadata": {"tenant_id": "t1"}}
    )
    prices = catalog["prices"]
    subscription = await client.v1.subscriptions.create_async(
        params={
            "customer": customer.id,
            "items": [
                {"price": prices["base"].id, "quantity": 1},
                {"price": prices["seat_days"].id},
                {"price": prices["voice_minutes"].id},
            ],
            "metadata": {"tenant_id": "t1", "plan": "team"},
            "collection_method": "charge_automatically",
            "payment_behavior": "allow_incomplete",
        }
    )
    return customer, subscription


async def _usage(
    client: stripe.StripeClient, customer: str, meter: str, value: int, key: str
) -> Any:
    return await client.v1.billing.meter_events.create_async(
        params={
            "event_name": meter,
            "identifier": key,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        },
        options={"idempotency_key": f"sb-meter-{key}"},
    )


def test_bracketed_form_keys_become_nested_objects_and_lists() -> None:
    form = parse_form(
        "items[0][price]=p1&items[0][quantity]=2&items[1][price]=p2&metadata[plan]=team"
        "&lookup_keys[]=a&lookup_keys[]=b&ids[0]=x&ids[1]=y&name=A%20B"
    )
    assert form == {
        "items": [{"price": "p1", "quantity": "2"}, {"price": "p2"}],
        "metadata": {"plan": "team"},
        "lookup_keys": ["a", "b"],
        "ids": ["x", "y"],
        "name": "A B",
    }
    signed = sign_payload(b'{"id":"evt_1"}', SECRET, int(time.time()))
    stripe.WebhookSignature.verify_header('{"id":"evt_1"}', signed, SECRET, tolerance=300)


async def test_the_catalog_is_found_again_by_meter_list_and_price_lookup_key(env: Stripe) -> None:
    catalog = await _catalog(env.client)
    meters = await env.client.v1.billing.meters.list_async()
    assert {m.event_name: m.id for m in meters.data} == {
        name: meter.id for name, meter in catalog["meters"].items()
    }
    found = await env.client.v1.prices.list_async(
        params={"lookup_keys": ["sb_team_base", "sb_team_voice_minutes"], "limit": 10}
    )
    by_key = {p.lookup_key: p for p in found.data}
    assert set(by_key) == {"sb_team_base", "sb_team_voice_minutes"}
    assert by_key["sb_team_base"].unit_amount == 4900
    recurring = by_key["sb_team_voice_minutes"].recurring
    assert recurring is not None
    assert recurring.meter == catalog["meters"]["voice_minutes"].id
    with pytest.raises(stripe.InvalidRequestError) as taken:
        await env.client.v1.prices.create_async(
            params={
                "product": str(by_key["sb_team_base"].product),
                "currency": "usd",
                "unit_amount": 1,
                "lookup_key": "sb_team_base",
            }
        )
    assert taken.value.param == "lookup_key"


async def test_a_repeated_idempotency_key_replays_and_a_different_body_is_refused(
    env: Stripe,
) -> None:
    options: Any = {"idempotency_key": "sb-customer-t1"}
    first = await env.client.v1.customers.create_async(params={"name": "Acme"}, options=options)
    again = await env.client.v1.customers.create_async(params={"name": "Acme"}, options=options)
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError):
        await env.client.v1.customers.create_async(params={"name": "Other"}, options=options)
    state = await env.control("GET", "/_emulator/state")
    assert (state["customers"], state["replays"]) == (1, 1)
    # Only the one customer was ever announced.
    events = await env.control("GET", "/_emulator/events", params={"type": "customer.created"})
    assert [e["data"]["object"]["id"] for e in events["data"]] == [first.id]


async def test_a_repeated_meter_event_identifier_is_counted_once(env: Stripe) -> None:
    catalog = await _catalog(env.client)
    customer, _ = await _subscribed(env.client, catalog)
    await _usage(env.client, customer.id, "voice_minutes", 5, "minutes:call-1")
    await _usage(env.client, customer.id, "voice_minutes", -2, "correction:minutes:call-1:1")
    repeat = await env.client.v1.billing.meter_events.create_async(
        params={
            "event_name": "voice_minutes",
            "identifier": "minutes:call-1",
            "payload": {"stripe_customer_id": customer.id, "value": "5"},
        },
        options={"idempotency_key": "a-different-key"},
    )
    assert repeat.identifier == "minutes:call-1"
    accepted = await env.control("GET", "/_emulator/meter_events", params={"customer": customer.id})
    assert [e["payload"]["value"] for e in accepted["data"]] == ["5", "-2"]
    now = int(time.time())
    summaries = await env.client.v1.billing.meters.event_summaries.list_async(
        catalog["meters"]["voice_minutes"].id,
        params={"customer": customer.id, "start_time": now - 3600, "end_time": now + 60},
    )
    assert sum(s.aggregated_value for s in summaries.data) == 3.0
    with pytest.raises(stripe.InvalidRequestError) as stale:
        await env.client.v1.billing.meter_events.create_async(
            params={
                "event_name": "voice_minutes",
                "timestamp": now - 36 * 86400,
                "payload": {"stripe_customer_id": customer.id, "value": "1"},
            }
        )
    assert stale.value.param == "timestamp"


async def test_an_injected_fault_does_nothing_and_a_delay_still_acts(env: Stripe) -> None:
    await env.control("POST", "/_emulator/faults", json={"status": 500, "count": 1})
    with pytest.raises(stripe.APIError):
        await env.client.v1.customers.create_async(params={"name": "Acme"})
    assert (await env.control("GET", "/_emulator/state"))["customers"] == 0

    await env.control("POST", "/_emulator/faults", json={"delay": 0.2, "count": 1})
    delayed = await env.client.v1.customers.create_async(params={"name": "Acme"})
    fetched = await env.client.v1.customers.retrieve_async(delayed.id)
    assert fetched.name == "Acme"
    assert (await env.control("GET", "/_emulator/state"))["customers"] == 1


async def test_closing_a_period_bills_exact_amounts_with_signed_webhooks(env: Stripe) -> None:
    catalog = await _catalog(env.client)
    customer, subscription = await _subscribed(env.client, catalog)
    for day in range(6):
        await _usage(env.client, customer.id, "seat_days", 1, f"seat_day:s1:2026-01-0{day + 1}")
    await _usage(env.client, customer.id, "voice_minutes", 37, "minutes:call-1")

    invoice = await env.control("POST", f"/_emulator/customers/{customer.id}/close_period")
    assert invoice["status"] == "paid"
    assert [line["amount"] for line in invoice["lines"]["data"]] == [4900, 6 * 150, 37 * 2]
    assert invoice["total"] == invoice["amount_paid"] == 4900 + 900 + 74
    assert (invoice["period_start"], invoice["period_end"]) == (
        subscription.current_period_start,
        subscription.current_period_end,
    )

    events = await env.webhooks.events(6)
    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "customer.subscription.updated",
    ]
    assert events[4]["data"]["object"]["id"] == invoice["id"]
    assert events[5]["data"]["object"]["current_period_start"] == invoice["period_end"]

    listed = await env.client.v1.invoices.list_async(params={"customer": customer.id, "limit": 5})
    assert [i.id for i in listed.data] == [invoice["id"]]
    pdf = await env.http.get(invoice["invoice_pdf"])
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")


async def test_a_failed_payment_leaves_the_invoice_open_until_it_is_paid(env: Stripe) -> None:
    catalog = await _catalog(env.client)
    customer, subscription = await _subscribed(env.client, catalog)
    await env.webhooks.events(2)
    await env.control("POST", f"/_emulator/customers/{customer.id}/payments", json={"fail": True})

    invoice = await env.control("POST", f"/_emulator/customers/{customer.id}/close_period")
    assert (invoice["status"], invoice["amount_paid"], invoice["amount_due"]) == ("open", 0, 4900)
    events = await env.webhooks.events(4)
    assert [e["type"] for e in events][2:] == [
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    past_due = await env.client.v1.subscriptions.retrieve_async(subscription.id)
    assert past_due.status == "past_due"

    # The same event again, exactly as it was.
    await env.control("POST", f"/_emulator/events/{events[2]['id']}/resend")
    (resent,) = await env.webhooks.events(1)
    assert resent == events[2]

    paid = await env.control("POST", f"/_emulator/invoices/{invoice['id']}/pay")
    assert (paid["status"], paid["amount_paid"]) == ("paid", 4900)
    assert [e["type"] for e in await env.webhooks.events(2)] == [
        "invoice.paid",
        "customer.subscription.updated",
    ]
    assert (await env.client.v1.subscriptions.retrieve_async(subscription.id)).status == "active"


async def test_a_plan_change_replaces_items_and_cancelling_ends_the_subscription(
    env: Stripe,
) -> None:
    catalog = await _catalog(env.client)
    customer, subscription = await _subscribed(env.client, catalog)
    current = await env.client.v1.subscriptions.retrieve_async(subscription.id)
    changed = await env.client.v1.subscriptions.update_async(
        subscription.id,
        params={
            "items": [{"id": item.id, "deleted": True} for item in current["items"].data]
            + [{"price": catalog["prices"]["base"].id, "quantity": 3}],
            "metadata": {"plan": "pro"},
            "proration_behavior": "none",
        },
    )
    assert [(i.price.lookup_key, i.quantity) for i in changed["items"].data] == [
        ("sb_team_base", 3)
    ]
    assert changed.metadata.to_dict() == {"tenant_id": "t1", "plan": "pro"}
    cancelled = await env.client.v1.subscriptions.cancel_async(
        subscription.id, options={"idempotency_key": "sb-cancel-1"}
    )
    assert cancelled.status == "canceled"
    types = [e["type"] for e in await env.webhooks.events(4)]
    assert types[2:] == ["customer.subscription.updated", "customer.subscription.deleted"]
    session = await env.client.v1.billing_portal.sessions.create_async(
        params={"customer": customer.id, "return_url": "https://app.test/billing"}
    )
    assert (await env.http.get(session.url)).status_code == 200


async def test_requests_without_a_secret_key_are_refused(env: Stripe) -> None:
    r = await env.http.post("/v1/customers", data={"name": "Acme"})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    publishable = stripe.StripeClient(
        "pk_test_emulator",
        base_addresses={"api": env.emulator.url},
        http_client=stripe.HTTPXClient(),
        max_network_retries=0,
    )
    with pytest.raises(stripe.AuthenticationError):
        await publishable.v1.customers.create_async(params={"name": "Acme"})
    assert (await env.control("GET", "/_emulator/state"))["customers"] == 0


async def test_bad_input_is_refused_naming_the_parameter(env: Stripe) -> None:
    catalog = await _catalog(env.client)
    customer, _ = await _subscribed(env.client, catalog)
    with pytest.raises(stripe.InvalidRequestError) as unknown_price:
        await env.client.v1.subscriptions.create_async(
            params={"customer": customer.id, "items": [{"price": "price_missing"}]}
        )
    assert (unknown_price.value.http_status, unknown_price.value.param) == (400, "items[0][price]")
    with pytest.raises(stripe.InvalidRequestError) as not_integer:
        await env.client.v1.billing.meter_events.create_async(
            params={
                "event_name": "seat_days",
                "payload": {"stripe_customer_id": customer.id, "value": "1.5"},
            }
        )
    assert not_integer.value.param == "payload[value]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await env.client.v1.customers.retrieve_async("cus_missing")
    assert missing.value.http_status == 404
    assert (await env.control("GET", "/_emulator/state"))["subscriptions"] == 1

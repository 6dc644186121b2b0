"""The emulated Stripe account: objects, validation and rules, with no I/O.

Requests arrive already decoded (`handle(method, path, params)`); answers are JSON-ready
dicts or a raised `StripeError`. Webhook events are handed to `on_event` as they happen."""

import re
import secrets
import time
from collections.abc import Callable

from billing.emulator.objects import (
    API_VERSION,
    METER_EVENT_FUTURE_LIMIT,
    METER_EVENT_PAST_LIMIT,
    Json,
    StripeError,
    add_month,
    allow_only,
    copy_json,
    dicts,
    invalid,
    is_true,
    list_of,
    missing,
    new_id,
    no_such,
    read_int,
    read_metadata,
    read_str,
)

Route = tuple[str, re.Pattern[str], Callable[..., Json]]


class StripeAccount:
    def __init__(
        self,
        base_url: Callable[[], str],
        on_event: Callable[[Json], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url
        self.on_event = on_event
        self.clock = clock
        self.meters: dict[str, Json] = {}
        self.products: dict[str, Json] = {}
        self.prices: dict[str, Json] = {}
        self.customers: dict[str, Json] = {}
        self.subscriptions: dict[str, Json] = {}
        self.invoices: dict[str, Json] = {}
        self.sessions: dict[str, Json] = {}
        self.events: dict[str, Json] = {}
        self.meter_events: list[Json] = []
        self.by_identifier: dict[str, Json] = {}
        self.failing_payments: set[str] = set()
        self.invoice_numbers = 0
        self.routes: list[Route] = [
            ("GET", re.compile(r"/v1/billing/meters"), self.list_meters),
            ("POST", re.compile(r"/v1/billing/meters"), self.create_meter),
            (
                "GET",
                re.compile(r"/v1/billing/meters/([^/]+)/event_summaries"),
                self.event_summaries,
            ),
            ("POST", re.compile(r"/v1/billing/meter_events"), self.create_meter_event),
            ("POST", re.compile(r"/v1/products"), self.create_product),
            ("POST", re.compile(r"/v1/prices"), self.create_price),
            ("GET", re.compile(r"/v1/prices"), self.list_prices),
            ("POST", re.compile(r"/v1/customers"), self.create_customer),
            ("GET", re.compile(r"/v1/customers/([^/]+)"), self.get_customer),
            ("POST", re.compile(r"/v1/subscriptions"), self.create_subscription),
            ("GET", re.compile(r"/v1/subscriptions/([^/]+)"), self.get_subscription),
            ("POST", re.compile(r"/v1/subscriptions/([^/]+)"), self.update_subscription),
            ("DELETE", re.compile(r"/v1/subscriptions/([^/]+)"), self.cancel_subscription),
            ("GET", re.compile(r"/v1/invoices"), self.list_invoices),
            ("POST", re.compile(r"/v1/billing_portal/sessions"), self.create_portal_session),
        ]

    # --- dispatch -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: Json) -> Json:
        known_path = False
        for route_method, pattern, action in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            known_path = True
            if route_method == method:
                return action(params, *match.groups())
        if known_path:
            raise StripeError(405, f"Unrecognized request method {method} for {path}")
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def now(self) -> int:
        return int(self.clock())

    def new_object(self, prefix: str) -> Json:
        return {"id": new_id(prefix), "created": self.now(), "livemode": False}

    def emit(self, kind: str, obj: Json) -> Json:
        event: Json = {
            "id": new_id("evt"),
            "object": "event",
            "type": kind,
            "created": self.now(),
            "api_version": API_VERSION,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": copy_json(obj)},
        }
        self.events[event["id"]] = event
        self.on_event(event)
        return event

    # --- meters -------------------------------------------------------------------------------

    def list_meters(self, params: Json) -> Json:
        return list_of("/v1/billing/meters", list(self.meters.values()))

    def create_meter(self, params: Json) -> Json:
        allow_only(
            params,
            "event_name",
            "display_name",
            "default_aggregation",
            "customer_mapping",
            "value_settings",
            "event_time_window",
        )
        event_name = read_str(params, "event_name", required=True)
        display_name = read_str(params, "display_name", required=True)
        aggregation = params.get("default_aggregation")
        if not isinstance(aggregation, dict) or not aggregation.get("formula"):
            raise missing("default_aggregation[formula]")
        if aggregation["formula"] not in ("sum", "count", "last"):
            raise invalid("default_aggregation[formula]", "Invalid aggregation formula.")
        if any(m["event_name"] == event_name for m in self.meters.values()):
            raise invalid("event_name", f"A meter with event_name {event_name} already exists.")
        mapping = params.get("customer_mapping") or {}
        values = params.get("value_settings") or {}
        if not isinstance(mapping, dict) or not isinstance(values, dict):
            raise invalid("customer_mapping", "Invalid object.")
        meter = {
            **self.new_object("mtr"),
            "object": "billing.meter",
            "display_name": display_name,
            "event_name": event_name,
            "status": "active",
            "default_aggregation": {"formula": aggregation["formula"]},
            "customer_mapping": {
                "event_payload_key": mapping.get("event_payload_key", "stripe_customer_id"),
                "type": mapping.get("type", "by_id"),
            },
            "value_settings": {"event_payload_key": values.get("event_payload_key", "value")},
            "event_time_window": params.get("event_time_window"),
            "status_transitions": {"deactivated_at": None},
        }
        meter["updated"] = meter["created"]
        self.meters[meter["id"]] = meter
        return meter

    def event_summaries(self, params: Json, meter_id: str) -> Json:
        meter = self.meters.get(meter_id)
        if meter is None:
            raise no_such("billing.meter", meter_id)
        customer = read_str(params, "customer", required=True)
        start = read_int(params, "start_time", required=True)
        end = read_int(params, "end_time", required=True)
        if end <= start:
            raise invalid("end_time", "end_time must be after start_time.")
        total = sum(
            e["value"]
            for e in self.meter_events
            if e["meter"] == meter_id and e["customer"] == customer and start <= e["ts"] < end
        )
        summary = {
            "id": new_id("mtrusg"),
            "object": "billing.meter_event_summary",
            "aggregated_value": float(total),
            "start_time": start,
            "end_time": end,
            "meter": meter_id,
            "customer": customer,
            "livemode": False,
        }
        return list_of(f"/v1/billing/meters/{meter_id}/event_summaries", [summary])

    def create_meter_event(self, params: Json) -> Json:
        allow_only(params, "event_name", "payload", "identifier", "timestamp")
        event_name = read_str(params, "event_name", required=True)
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise missing("payload")
        identifier = read_str(params, "identifier")
        if identifier is not None and identifier in self.by_identifier:
            return copy_json(self.by_identifier[identifier]["event"])
        meter = next(
            (
                m
                for m in self.meters.values()
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )
        if meter is None:
            raise invalid("event_name", f"No active meter was found for event_name {event_name}.")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer = payload.get(customer_key)
        if not customer:
            raise missing(f"payload[{customer_key}]")
        if customer not in self.customers:
            raise invalid(f"payload[{customer_key}]", f"No such customer: '{customer}'")
        value_key = meter["value_settings"]["event_payload_key"]
        raw = payload.get(value_key)
        if raw is None and meter["default_aggregation"]["formula"] == "count":
            raw = "1"
        if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw):
            raise invalid(f"payload[{value_key}]", f"Invalid value: {raw!r} is not an integer.")
        now = self.now()
        ts = read_int(params, "timestamp", default=now)
        if ts < now - METER_EVENT_PAST_LIMIT:
            raise invalid("timestamp", "Timestamp must be within the past 35 calendar days.")
        if ts > now + METER_EVENT_FUTURE_LIMIT:
            raise invalid("timestamp", "Timestamp must not be more than 5 minutes in the future.")
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier or new_id("mevt"),
            "livemode": False,
            "payload": {str(k): str(v) for k, v in payload.items()},
            "timestamp": ts,
        }
        stored = {
            "event": event,
            "meter": meter["id"],
            "customer": customer,
            "value": int(raw),
            "ts": ts,
        }
        self.meter_events.append(stored)
        self.by_identifier[event["identifier"]] = stored
        return copy_json(event)

    def accepted_meter_events(self, customer: str | None) -> list[Json]:
        return [
            copy_json(e["event"])
            for e in self.meter_events
            if customer is None or e["customer"] == customer
        ]

    # --- catalog ------------------------------------------------------------------------------

    def create_product(self, params: Json) -> Json:
        allow_only(params, "id", "name", "description", "metadata", "active")
        name = read_str(params, "name", required=True)
        product = {
            **self.new_object("prod"),
            "object": "product",
            "active": params.get("active", "true") != "false",
            "name": name,
            "description": read_str(params, "description"),
            "metadata": read_metadata(params),
        }
        if product_id := read_str(params, "id"):
            if product_id in self.products:
                raise invalid("id", f"Product already exists: {product_id}")
            product["id"] = product_id
        product["updated"] = product["created"]
        self.products[product["id"]] = product
        return product

    def create_price(self, params: Json) -> Json:
        allow_only(
            params,
            "product",
            "currency",
            "unit_amount",
            "lookup_key",
            "recurring",
            "metadata",
            "nickname",
            "active",
        )
        product = read_str(params, "product", required=True)
        if product not in self.products:
            raise invalid("product", f"No such product: '{product}'")
        currency = (read_str(params, "currency", required=True) or "").lower()
        amount = read_int(params, "unit_amount", required=True)
        if amount < 0:
            raise invalid("unit_amount", "unit_amount must be zero or more.")
        lookup_key = read_str(params, "lookup_key")
        if lookup_key and any(p["lookup_key"] == lookup_key for p in self.prices.values()):
            raise invalid("lookup_key", f"A price with lookup_key {lookup_key} already exists.")
        recurring = params.get("recurring")
        shaped: Json | None = None
        if recurring is not None:
            if not isinstance(recurring, dict):
                raise invalid("recurring", "Invalid object.")
            interval = recurring.get("interval")
            if interval not in ("day", "week", "month", "year"):
                raise invalid("recurring[interval]", f"Invalid interval: {interval!r}")
            usage = recurring.get("usage_type", "licensed")
            if usage not in ("licensed", "metered"):
                raise invalid("recurring[usage_type]", f"Invalid usage_type: {usage!r}")
            meter = recurring.get("meter")
            if usage == "metered":
                if not meter:
                    raise missing("recurring[meter]")
                if meter not in self.meters:
                    raise invalid("recurring[meter]", f"No such meter: '{meter}'")
            shaped = {
                "interval": interval,
                "interval_count": int(recurring.get("interval_count", 1)),
                "usage_type": usage,
                "meter": meter,
                "aggregate_usage": None,
                "trial_period_days": None,
            }
        price = {
            **self.new_object("price"),
            "object": "price",
            "active": params.get("active", "true") != "false",
            "billing_scheme": "per_unit",
            "currency": currency,
            "lookup_key": lookup_key,
            "metadata": read_metadata(params),
            "nickname": read_str(params, "nickname"),
            "product": product,
            "recurring": shaped,
            "tax_behavior": "unspecified",
            "type": "recurring" if shaped else "one_time",
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
        }
        self.prices[price["id"]] = price
        return price

    def list_prices(self, params: Json) -> Json:
        keys = params.get("lookup_keys")
        if isinstance(keys, str):
            keys = [keys]
        prices = list(self.prices.values())
        if keys is not None:
            prices = [p for p in prices if p["lookup_key"] in keys]
        if product := read_str(params, "product"):
            prices = [p for p in prices if p["product"] == product]
        if "active" in params:
            prices = [p for p in prices if p["active"] == is_true(params["active"])]
        limit = read_int(params, "limit", default=10)
        prices.reverse()
        return list_of("/v1/prices", prices[:limit], len(prices) > limit)

    # --- customers ----------------------------------------------------------------------------

    def create_customer(self, params: Json) -> Json:
        allow_only(params, "name", "email", "description", "metadata", "phone")
        customer = {
            **self.new_object("cus"),
            "object": "customer",
            "name": read_str(params, "name"),
            "email": read_str(params, "email"),
            "description": read_str(params, "description"),
            "phone": read_str(params, "phone"),
            "metadata": read_metadata(params),
            "balance": 0,
            "currency": None,
            "delinquent": False,
            "invoice_prefix": secrets.token_hex(4).upper(),
        }
        self.customers[customer["id"]] = customer
        self.emit("customer.created", customer)
        return customer

    def get_customer(self, params: Json, customer_id: str) -> Json:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise no_such("customer", customer_id)
        return customer

    # --- subscriptions ------------------------------------------------------------------------

    def _item(self, subscription: Json, spec: Json, param: str) -> Json:
        price_id = spec.get("price")
        if not price_id:
            raise missing(f"{param}[price]")
        price = self.prices.get(price_id)
        if price is None:
            raise invalid(f"{param}[price]", f"No such price: '{price_id}'")
        if price["recurring"] is None:
            raise invalid(f"{param}[price]", "The price must be a recurring price.")
        metered = price["recurring"]["usage_type"] == "metered"
        quantity = read_int(spec, "quantity", default=None if metered else 1)
        if metered and quantity is not None:
            raise invalid(f"{param}[quantity]", "Quantity cannot be set on a metered price.")
        return {
            **self.new_object("si"),
            "object": "subscription_item",
            "price": copy_json(price),
            "quantity": quantity,
            "subscription": subscription["id"],
            "metadata": {},
            "current_period_start": subscription["current_period_start"],
            "current_period_end": subscription["current_period_end"],
        }

    def create_subscription(self, params: Json) -> Json:
        allow_only(
            params,
            "customer",
            "items",
            "metadata",
            "collection_method",
            "payment_behavior",
            "proration_behavior",
            "backdate_start_date",
        )
        customer = read_str(params, "customer", required=True)
        if customer not in self.customers:
            raise invalid("customer", f"No such customer: '{customer}'")
        items = params.get("items")
        if not isinstance(items, list) or not items:
            raise missing("items")
        collection = read_str(params, "collection_method") or "charge_automatically"
        if collection not in ("charge_automatically", "send_invoice"):
            raise invalid("collection_method", f"Invalid collection_method: {collection}")
        start = read_int(params, "backdate_start_date", default=self.now())
        sub: Json = {
            **self.new_object("sub"),
            "object": "subscription",
            "customer": customer,
            "status": "active",
            "metadata": read_metadata(params),
            "collection_method": collection,
            "billing_cycle_anchor": start,
            "start_date": start,
            "current_period_start": start,
            "current_period_end": add_month(start),
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "latest_invoice": None,
            "currency": None,
        }
        data = [self._item(sub, spec, f"items[{n}]") for n, spec in enumerate(dicts(items))]
        currencies = {item["price"]["currency"] for item in data}
        if len(currencies) > 1:
            raise invalid("items", "All prices on a subscription must have the same currency.")
        sub["currency"] = currencies.pop()
        sub["items"] = self._items_list(sub, data)
        self.subscriptions[sub["id"]] = sub
        self.emit("customer.subscription.created", sub)
        return sub

    def _items_list(self, sub: Json, data: list[Json]) -> Json:
        return {
            **list_of(f"/v1/subscription_items?subscription={sub['id']}", data),
            "total_count": len(data),
        }

    def _subscription(self, subscription_id: str) -> Json:
        sub = self.subscriptions.get(subscription_id)
        if sub is None:
            raise no_such("subscription", subscription_id)
        return sub

    def get_subscription(self, params: Json, subscription_id: str) -> Json:
        return self._subscription(subscription_id)

    def update_subscription(self, params: Json, subscription_id: str) -> Json:
        allow_only(params, "items", "metadata", "proration_behavior", "payment_behavior")
        sub = self._subscription(subscription_id)
        if sub["status"] == "canceled":
            raise invalid("subscription", "A canceled subscription can only update metadata.")
        items = params.get("items", [])
        if not isinstance(items, list):
            raise invalid("items", "Invalid array.")
        data = list(sub["items"]["data"])
        for n, spec in enumerate(dicts(items)):
            item_id = spec.get("id")
            if item_id is None:
                data.append(self._item(sub, spec, f"items[{n}]"))
                continue
            index = next((i for i, item in enumerate(data) if item["id"] == item_id), None)
            if index is None:
                raise invalid(f"items[{n}][id]", f"No such subscription item: '{item_id}'")
            if is_true(spec.get("deleted")):
                del data[index]
            elif "quantity" in spec:
                data[index] = {**data[index], "quantity": read_int(spec, "quantity")}
        if not data:
            raise invalid("items", "A subscription must keep at least one item.")
        metadata = dict(sub["metadata"])
        for key, value in read_metadata(params).items():
            if value == "":
                metadata.pop(key, None)
            else:
                metadata[key] = value
        sub["metadata"] = metadata
        sub["items"] = self._items_list(sub, data)
        self.emit("customer.subscription.updated", sub)
        return sub

    def cancel_subscription(self, params: Json, subscription_id: str) -> Json:
        sub = self._subscription(subscription_id)
        if sub["status"] == "canceled":
            raise invalid("subscription", f"The subscription {subscription_id} is canceled.")
        now = self.now()
        sub.update(status="canceled", canceled_at=now, ended_at=now)
        self.emit("customer.subscription.deleted", sub)
        return sub

    # --- invoices and the portal --------------------------------------------------------------

    def list_invoices(self, params: Json) -> Json:
        invoices = list(self.invoices.values())
        if customer := read_str(params, "customer"):
            invoices = [i for i in invoices if i["customer"] == customer]
        if subscription := read_str(params, "subscription"):
            invoices = [i for i in invoices if i["subscription"] == subscription]
        if status := read_str(params, "status"):
            invoices = [i for i in invoices if i["status"] == status]
        limit = read_int(params, "limit", default=10)
        if not 1 <= limit <= 100:
            raise invalid("limit", "limit must be between 1 and 100.")
        invoices.reverse()
        return list_of("/v1/invoices", invoices[:limit], len(invoices) > limit)

    def create_portal_session(self, params: Json) -> Json:
        allow_only(params, "customer", "return_url", "configuration", "locale", "flow_data")
        customer = read_str(params, "customer", required=True)
        if customer not in self.customers:
            raise invalid("customer", f"No such customer: '{customer}'")
        session = {
            **self.new_object("bps"),
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": read_str(params, "return_url"),
            "configuration": "bpc_emulator",
            "locale": None,
            "on_behalf_of": None,
            "flow": None,
        }
        session["url"] = f"{self.base_url()}/_emulator/portal/{session['id']}"
        self.sessions[session["id"]] = session
        return session

    def counts(self) -> Json:
        return {
            "customers": len(self.customers),
            "subscriptions": len(self.subscriptions),
            "meter_events": len(self.meter_events),
            "invoices": len(self.invoices),
            "events": len(self.events),
        }

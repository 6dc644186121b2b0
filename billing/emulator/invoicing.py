"""Billing periods on the emulated account: closing one into an invoice, charging it,
and paying an open invoice later."""

from billing.emulator.objects import Json, add_month, copy_json, invalid, list_of, new_id, no_such
from billing.emulator.state import StripeAccount


def set_payments(account: StripeAccount, customer_id: str, fail: bool) -> None:
    if customer_id not in account.customers:
        raise no_such("customer", customer_id)
    if fail:
        account.failing_payments.add(customer_id)
    else:
        account.failing_payments.discard(customer_id)


def close_period(account: StripeAccount, customer_id: str) -> Json:
    """Invoice the current period of the customer's subscription, charge it, move on."""
    if customer_id not in account.customers:
        raise no_such("customer", customer_id)
    sub = next(
        (
            s
            for s in reversed(account.subscriptions.values())
            if s["customer"] == customer_id and s["status"] != "canceled"
        ),
        None,
    )
    if sub is None:
        raise invalid("customer", f"The customer {customer_id} has no live subscription.")
    start, end = sub["current_period_start"], sub["current_period_end"]
    lines = [_line(account, sub, item, start, end) for item in sub["items"]["data"]]
    total = sum(line["amount"] for line in lines)
    account.invoice_numbers += 1
    invoice = {
        **account.new_object("in"),
        "object": "invoice",
        "customer": customer_id,
        "subscription": sub["id"],
        "number": f"{account.customers[customer_id]['invoice_prefix']}-"
        f"{account.invoice_numbers:04d}",
        "status": "draft",
        "currency": sub["currency"],
        "collection_method": sub["collection_method"],
        "billing_reason": "subscription_cycle",
        "period_start": start,
        "period_end": end,
        "subtotal": total,
        "total": total,
        "amount_due": total,
        "amount_paid": 0,
        "amount_remaining": total,
        "attempt_count": 0,
        "attempted": False,
        "paid": False,
        "lines": list_of("/v1/invoices/lines", lines),
        "status_transitions": {"finalized_at": None, "paid_at": None},
    }
    base = f"{account.base_url()}/_emulator/invoices/{invoice['id']}"
    invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
    invoice.update(hosted_invoice_url=base, invoice_pdf=f"{base}.pdf")
    account.invoices[invoice["id"]] = invoice
    sub["latest_invoice"] = invoice["id"]
    account.emit("invoice.created", invoice)
    invoice["status"] = "open"
    invoice["status_transitions"]["finalized_at"] = account.now()
    account.emit("invoice.finalized", invoice)
    invoice.update(attempt_count=1, attempted=True)
    if total > 0 and customer_id in account.failing_payments:
        account.emit("invoice.payment_failed", invoice)
        sub["status"] = "past_due"
    else:
        _mark_paid(account, invoice)
        sub["status"] = "active"
    sub["current_period_start"] = end
    sub["current_period_end"] = add_month(end)
    for item in sub["items"]["data"]:
        item["current_period_start"] = sub["current_period_start"]
        item["current_period_end"] = sub["current_period_end"]
    account.emit("customer.subscription.updated", sub)
    return invoice


def _line(account: StripeAccount, sub: Json, item: Json, start: int, end: int) -> Json:
    price = item["price"]
    if price["recurring"]["usage_type"] == "metered":
        quantity = sum(
            e["value"]
            for e in account.meter_events
            if e["meter"] == price["recurring"]["meter"]
            and e["customer"] == sub["customer"]
            and start <= e["ts"] < end
        )
    else:
        quantity = item["quantity"] or 0
    return {
        "id": new_id("il"),
        "object": "line_item",
        "amount": price["unit_amount"] * quantity,
        "currency": price["currency"],
        "description": f"{quantity} x {price['lookup_key'] or price['id']}",
        "quantity": quantity,
        "price": copy_json(price),
        "subscription": sub["id"],
        "subscription_item": item["id"],
        "period": {"start": start, "end": end},
        "livemode": False,
    }


def _mark_paid(account: StripeAccount, invoice: Json) -> None:
    invoice.update(status="paid", paid=True, amount_paid=invoice["total"], amount_remaining=0)
    invoice["status_transitions"]["paid_at"] = account.now()
    account.emit("invoice.paid", invoice)


def pay_invoice(account: StripeAccount, invoice_id: str) -> Json:
    invoice = account.invoices.get(invoice_id)
    if invoice is None:
        raise no_such("invoice", invoice_id)
    if invoice["status"] != "open":
        raise invalid("invoice", f"Invoice is {invoice['status']}, not open.")
    invoice["attempt_count"] += 1
    _mark_paid(account, invoice)
    sub = account.subscriptions.get(invoice["subscription"])
    if sub is not None and sub["status"] == "past_due":
        still_open = any(
            i["status"] == "open"
            for i in account.invoices.values()
            if i["subscription"] == sub["id"]
        )
        if not still_open:
            sub["status"] = "active"
            account.emit("customer.subscription.updated", sub)
    return invoice

"""Events billing publishes (through the outbox). Subjects: tenant.<tenant_id>.billing.<verb>."""

from __future__ import annotations

from bus.events import Event, EventCodec


class PlanChanged(Event, frozen=True, kw_only=True, tag="billing.plan_changed"):
    plan: str
    previous: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.billing.plan_changed"


class InvoicePaid(Event, frozen=True, kw_only=True, tag="billing.invoice_paid"):
    invoice_id: str
    amount_paid: int
    currency: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.billing.invoice_paid"


class PaymentFailed(Event, frozen=True, kw_only=True, tag="billing.payment_failed"):
    invoice_id: str
    amount_due: int
    currency: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.billing.payment_failed"


class SubscriptionUpdated(Event, frozen=True, kw_only=True, tag="billing.subscription_updated"):
    subscription_id: str
    status: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.billing.subscription_updated"


BILLING_EVENTS: tuple[type[Event], ...] = (
    PlanChanged,
    InvoicePaid,
    PaymentFailed,
    SubscriptionUpdated,
)
codec = EventCodec(BILLING_EVENTS)

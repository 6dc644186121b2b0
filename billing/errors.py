"""Billing's errors. They are tenancy errors, so the API answers them as problem+json."""

from __future__ import annotations

from tenancy.errors import Conflict, TenancyError


class InvalidWebhook(TenancyError):
    status, code, title = 400, "invalid-webhook", "Webhook signature not valid"


class BillingUnavailable(TenancyError):
    status, code, title = 503, "billing-unavailable", "Billing is unavailable"


class PlanTooSmall(Conflict):
    code, title = "plan-too-small", "The plan is too small for what the tenant uses"

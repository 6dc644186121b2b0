"""A stateful in-memory Stripe for tests and `switchboard dev`: the endpoints the gateway calls,
Stripe-shaped objects and errors, idempotency keys, signed webhooks, and control endpoints
under `/_emulator/` (faults, failing payments, closing a billing period)."""

from billing.emulator.server import StripeEmulator

__all__ = ["StripeEmulator"]

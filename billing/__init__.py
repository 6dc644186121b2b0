"""Billing: the usage ledger, the Stripe gateway (official SDK), Stripe webhooks, finance."""

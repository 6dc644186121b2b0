"""The usage ledger: seat-days, minutes and number-months, keyed by what they measure, built
from events and sweeps and sent to Stripe as meter events."""

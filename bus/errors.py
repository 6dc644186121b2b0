"""Errors the bus raises, so callers never need to import `nats` to catch them."""

from __future__ import annotations


class BusError(Exception):
    pass


class UnknownEvent(BusError):
    """A payload that is not the JSON of any event the codec was built with."""


class PublishFailed(BusError):
    """JetStream did not acknowledge a message: it may or may not be stored, so publish again
    (the `Nats-Msg-Id` makes a repeat within the duplicate window harmless)."""

"""Events about numbers. Subjects: tenant.<tenant_id>.number.<number_id>.<verb>."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from bus.events import Event, EventCodec


class NumberPurchased(Event, frozen=True, kw_only=True, tag="number.purchased"):
    """Starts number-month metering at `purchased_at`."""

    number_id: UUID
    e164: str
    provider: str
    purchased_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.number.{self.number_id}.purchased"


class NumberRouted(Event, frozen=True, kw_only=True, tag="number.routed"):
    number_id: UUID
    e164: str
    flow_id: UUID | None

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.number.{self.number_id}.routed"


class NumberReleased(Event, frozen=True, kw_only=True, tag="number.released"):
    """Ends number-month metering at `released_at`."""

    number_id: UUID
    e164: str
    released_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.number.{self.number_id}.released"


codec = EventCodec((NumberPurchased, NumberRouted, NumberReleased))

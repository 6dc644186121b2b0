"""Seat events carry exact timestamps: seat-days are metered from them."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from bus.events import Event, EventCodec


class SeatCreated(Event, frozen=True, kw_only=True, tag="seat.created"):
    seat_id: UUID
    created_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.seat.{self.seat_id}.created"


class SeatAssigned(Event, frozen=True, kw_only=True, tag="seat.assigned"):
    seat_id: UUID
    user_id: UUID
    assigned_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.seat.{self.seat_id}.assigned"


class SeatUnassigned(Event, frozen=True, kw_only=True, tag="seat.unassigned"):
    seat_id: UUID
    user_id: UUID
    unassigned_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.seat.{self.seat_id}.unassigned"


class SeatReleased(Event, frozen=True, kw_only=True, tag="seat.released"):
    seat_id: UUID
    released_at: datetime

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.seat.{self.seat_id}.released"


codec = EventCodec((SeatCreated, SeatAssigned, SeatUnassigned, SeatReleased))

"""Trunk events. Subjects: tenant.<tenant_id>.trunk.<trunk_id>.<verb>. They say what changed,
never a credential: `changed` lists field names only."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class TrunkCreated(Event, frozen=True, kw_only=True, tag="trunk.created"):
    trunk_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.trunk.{self.trunk_id}.created"


class TrunkUpdated(Event, frozen=True, kw_only=True, tag="trunk.updated"):
    """Media nodes drop their cached copy of the trunk (and re-register if it registers)."""

    trunk_id: UUID
    name: str
    changed: list[str]

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.trunk.{self.trunk_id}.updated"


class TrunkDeleted(Event, frozen=True, kw_only=True, tag="trunk.deleted"):
    trunk_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.trunk.{self.trunk_id}.deleted"


codec = EventCodec((TrunkCreated, TrunkUpdated, TrunkDeleted))

"""Flow events. Subjects: tenant.<tenant_id>.flow.<flow_id>.<verb>."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class FlowCreated(Event, frozen=True, kw_only=True, tag="flow.created"):
    flow_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.flow.{self.flow_id}.created"


class FlowDraftUpdated(Event, frozen=True, kw_only=True, tag="flow.draft_updated"):
    flow_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.flow.{self.flow_id}.draft_updated"


class FlowPublished(Event, frozen=True, kw_only=True, tag="flow.published"):
    """Media nodes drop their cached copy of the flow when they see this."""

    flow_id: UUID
    version: int

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.flow.{self.flow_id}.published"


class FlowDeleted(Event, frozen=True, kw_only=True, tag="flow.deleted"):
    flow_id: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.flow.{self.flow_id}.deleted"


codec = EventCodec((FlowCreated, FlowDraftUpdated, FlowPublished, FlowDeleted))

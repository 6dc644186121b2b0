"""Routing events. Flows: tenant.<tenant_id>.flow.<flow_id>.<verb>. The ACD router's live
state: tenant.<tenant_id>.agent.<agent_id>.state and tenant.<tenant_id>.queue.<queue_id>.live."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

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


class AgentStateChanged(Event, frozen=True, kw_only=True, tag="agent.state"):
    """An agent's presence changed: offline, available, reserved, ringing, on_call, wrap_up or
    away (with a reason such as "break" or "no_answer")."""

    agent_id: UUID
    state: str
    reason: str | None = None
    since: datetime
    call_id: UUID | None = None

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.agent.{self.agent_id}.state"


class QueueLive(Event, frozen=True, kw_only=True, tag="queue.live"):
    """A queue's live numbers for supervisors, published when they change (at most about once a
    second per queue)."""

    queue_id: UUID
    waiting: int
    longest_wait_seconds: float
    agents: dict[str, int] = msgspec.field(default_factory=dict)
    """Member agents by state."""
    ewt_seconds: float | None = None

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.live"


live_codec = EventCodec((AgentStateChanged, QueueLive))

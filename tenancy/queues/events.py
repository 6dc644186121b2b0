"""Skill, queue and agent-skill events. Subjects: tenant.<tenant_id>.skill.<skill_id>.<verb>,
tenant.<tenant_id>.queue.<queue_id>.<verb> and tenant.<tenant_id>.agent.<user_id>.skills_changed.
Membership and skill-set events carry the whole new set, so the router can replace what it
holds without reading it back."""

from __future__ import annotations

from uuid import UUID

import msgspec

from bus.events import Event, EventCodec


class SkillLevel(msgspec.Struct, frozen=True, kw_only=True):
    skill_id: UUID
    level: int


class MemberPriority(msgspec.Struct, frozen=True, kw_only=True):
    user_id: UUID
    priority: int


class SkillCreated(Event, frozen=True, kw_only=True, tag="skill.created"):
    skill_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.skill.{self.skill_id}.created"


class SkillUpdated(Event, frozen=True, kw_only=True, tag="skill.updated"):
    skill_id: UUID
    name: str
    previous_name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.skill.{self.skill_id}.updated"


class SkillDeleted(Event, frozen=True, kw_only=True, tag="skill.deleted"):
    """Agents who held the skill lose it; each gets its own agent.skills_changed too."""

    skill_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.skill.{self.skill_id}.deleted"


class AgentSkillsChanged(Event, frozen=True, kw_only=True, tag="agent.skills_changed"):
    user_id: UUID
    skills: list[SkillLevel]
    """The agent's whole set of skills now."""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.agent.{self.user_id}.skills_changed"


class QueueCreated(Event, frozen=True, kw_only=True, tag="queue.created"):
    queue_id: UUID
    name: str
    strategy: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.created"


class QueueUpdated(Event, frozen=True, kw_only=True, tag="queue.updated"):
    queue_id: UUID
    name: str
    strategy: str
    fields: list[str]
    """The fields whose value changed."""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.updated"


class QueueDeleted(Event, frozen=True, kw_only=True, tag="queue.deleted"):
    queue_id: UUID
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.deleted"


class QueueMembersChanged(Event, frozen=True, kw_only=True, tag="queue.members_changed"):
    queue_id: UUID
    members: list[MemberPriority]
    """The queue's whole membership now."""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.queue.{self.queue_id}.members_changed"


QUEUE_EVENTS: tuple[type[Event], ...] = (
    SkillCreated,
    SkillUpdated,
    SkillDeleted,
    AgentSkillsChanged,
    QueueCreated,
    QueueUpdated,
    QueueDeleted,
    QueueMembersChanged,
)

codec = EventCodec(QUEUE_EVENTS)

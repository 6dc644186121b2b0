from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from tenancy.models import _In

_UNSET = msgspec.UNSET

MAX_AGENT_SKILLS = 100
MAX_REQUIRED_SKILLS = 32
MAX_MEMBERS = 1000

Strategy = Literal["longest_idle", "round_robin", "fewest_calls", "skills_based", "ring_all"]

SkillName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="1-64 characters: a letter or digit, then letters, digits, '_', '.' or '-' "
        "(the form an IVR flow's `set` node names skills in). Unique in the tenant, ignoring case.",
    ),
]
SkillLevel = Annotated[int, msgspec.Meta(ge=1, le=10, description="1 (novice) to 10 (expert)")]
QueueName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=100, description="Unique in the tenant, ignoring case"),
]
QueuePriority = Annotated[
    int, msgspec.Meta(ge=0, le=10, description="0-10; calls of a higher priority go first")
]
MemberPriority = Annotated[
    int,
    msgspec.Meta(ge=1, le=10, description="1-10; members of a higher priority are offered first"),
]
ServiceLevelSeconds = Annotated[
    int, msgspec.Meta(ge=1, le=3600, description="Answer-within target for the service level")
]
MaxWaitSeconds = Annotated[
    int, msgspec.Meta(ge=10, le=86400, description="Longest wait before the overflow applies")
]
WrapUpSeconds = Annotated[int, msgspec.Meta(ge=0, le=600, description="After-call work time")]
Mailbox = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
HangupMessage = Annotated[
    str, msgspec.Meta(max_length=500, description="Spoken before hanging up; empty for none")
]


# --- skills -----------------------------------------------------------------------------------


class Skill(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    created_at: datetime
    updated_at: datetime


class SkillCreate(_In):
    name: SkillName


class SkillUpdate(_In):
    name: SkillName | msgspec.UnsetType = _UNSET


class AgentSkillIn(_In):
    skill_id: UUID
    level: SkillLevel


class AgentSkillsReplace(_In):
    """The agent's whole set of skills: skills left out are taken away."""

    skills: Annotated[list[AgentSkillIn], msgspec.Meta(max_length=MAX_AGENT_SKILLS)]


class AgentSkill(msgspec.Struct, kw_only=True):
    skill_id: UUID
    name: str
    level: int


class AgentSkills(msgspec.Struct, kw_only=True):
    user_id: UUID
    skills: list[AgentSkill]
    """Ordered by skill name."""


# --- queues -----------------------------------------------------------------------------------


class RequiredSkill(_In):
    skill_id: UUID
    min_level: SkillLevel


RequiredSkills = Annotated[list[RequiredSkill], msgspec.Meta(max_length=MAX_REQUIRED_SKILLS)]


class _Overflow(_In, tag_field="action"):
    pass


class OverflowToQueue(_Overflow, tag="queue"):
    """Move the call to another of the tenant's queues."""

    queue_id: UUID


class OverflowToVoicemail(_Overflow, tag="voicemail"):
    mailbox: Mailbox


class OverflowToCallback(_Overflow, tag="callback"):
    """Offer the caller a call back, keeping their place."""


class OverflowHangup(_Overflow, tag="hangup"):
    message: HangupMessage = ""


Overflow = OverflowToQueue | OverflowToVoicemail | OverflowToCallback | OverflowHangup
"""What happens to a call that waited `max_wait_seconds`, chosen by `action`."""


class Queue(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    strategy: Strategy
    required_skills: list[RequiredSkill]
    priority: int
    service_level_seconds: int
    max_wait_seconds: int
    overflow: Overflow
    wrap_up_seconds: int
    announce_position: bool
    announce_ewt: bool
    record: bool
    hold_music_prompt_id: UUID | None
    created_at: datetime
    updated_at: datetime


class QueueCreate(_In):
    name: QueueName
    strategy: Strategy
    required_skills: RequiredSkills = []
    """Skills an agent needs (at a minimum level) to be offered this queue's calls. The
    `skills_based` strategy needs at least one."""
    priority: QueuePriority = 5
    service_level_seconds: ServiceLevelSeconds = 20
    max_wait_seconds: MaxWaitSeconds = 600
    overflow: Overflow = msgspec.field(default_factory=OverflowHangup)
    wrap_up_seconds: WrapUpSeconds = 30
    announce_position: bool = False
    """Tell waiting callers their place in the queue."""
    announce_ewt: bool = False
    """Tell waiting callers their estimated wait time."""
    record: bool = False
    hold_music_prompt_id: UUID | None = None
    """A prompt of the tenant's, looped while callers wait; none plays the platform's."""


class QueueUpdate(_In):
    """Only the fields sent change. `required_skills` replaces the whole list."""

    name: QueueName | msgspec.UnsetType = _UNSET
    strategy: Strategy | msgspec.UnsetType = _UNSET
    required_skills: RequiredSkills | msgspec.UnsetType = _UNSET
    priority: QueuePriority | msgspec.UnsetType = _UNSET
    service_level_seconds: ServiceLevelSeconds | msgspec.UnsetType = _UNSET
    max_wait_seconds: MaxWaitSeconds | msgspec.UnsetType = _UNSET
    overflow: Overflow | msgspec.UnsetType = _UNSET
    wrap_up_seconds: WrapUpSeconds | msgspec.UnsetType = _UNSET
    announce_position: bool | msgspec.UnsetType = _UNSET
    announce_ewt: bool | msgspec.UnsetType = _UNSET
    record: bool | msgspec.UnsetType = _UNSET
    hold_music_prompt_id: UUID | msgspec.UnsetType | None = _UNSET


class QueueMemberIn(_In):
    user_id: UUID
    priority: MemberPriority


class QueueMembersReplace(_In):
    """The queue's whole membership: users left out stop taking its calls."""

    members: Annotated[list[QueueMemberIn], msgspec.Meta(max_length=MAX_MEMBERS)]


class QueueMember(msgspec.Struct, kw_only=True):
    user_id: UUID
    priority: int


class QueueMembers(msgspec.Struct, kw_only=True):
    queue_id: UUID
    members: list[QueueMember]
    """Highest priority first."""

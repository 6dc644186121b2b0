"""Skill and queue rules: names unique in a tenant (ignoring case); required skills, overflow
targets, members and agents' skills refer only to the tenant's own rows; nothing in use is
deleted; overflow never loops; queues within the plan."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from bus.events import Event
from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Subject, TenantId
from tenancy.plans import enforce_limit
from tenancy.prompts import repository as prompts
from tenancy.queues import events as ev
from tenancy.queues import repository as repo
from tenancy.queues.models import (
    AgentSkill,
    AgentSkills,
    AgentSkillsReplace,
    Overflow,
    OverflowToQueue,
    Queue,
    QueueCreate,
    QueueMember,
    QueueMembers,
    QueueMembersReplace,
    QueueUpdate,
    RequiredSkill,
    Skill,
    SkillCreate,
    SkillUpdate,
    Strategy,
)
from tenancy.service import audit_by, require

_UNSET = msgspec.UNSET
_SETTINGS = (
    "name",
    "strategy",
    "required_skills",
    "priority",
    "service_level_seconds",
    "max_wait_seconds",
    "overflow",
    "wrap_up_seconds",
    "announce_position",
    "announce_ewt",
    "record",
    "hold_music_prompt_id",
)


class NameTaken(Conflict):
    code, title = "name-taken", "Name already in use"


class InUse(Conflict):
    code, title = "in-use", "Still in use"


async def _publish(conn: asyncpg.Connection, event: Event) -> None:
    await enqueue(conn, event, ev.codec)


def to_skill(row: asyncpg.Record) -> Skill:
    return Skill(
        id=row["id"], name=row["name"], created_at=row["created_at"], updated_at=row["updated_at"]
    )


def to_queue(row: asyncpg.Record) -> Queue:
    return Queue(
        id=row["id"],
        name=row["name"],
        strategy=row["strategy"],
        required_skills=msgspec.convert(row["required_skills"], list[RequiredSkill]),
        priority=row["priority"],
        service_level_seconds=row["service_level_seconds"],
        max_wait_seconds=row["max_wait_seconds"],
        overflow=msgspec.convert(row["overflow"], Overflow),
        wrap_up_seconds=row["wrap_up_seconds"],
        announce_position=row["announce_position"],
        announce_ewt=row["announce_ewt"],
        record=row["record"],
        hold_music_prompt_id=row["hold_music_prompt_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _reference_errors(
    refs: list[UUID], known: set[UUID], field: str, what: str
) -> list[tuple[str, str]]:
    """(field, message) for each reference that is unknown or repeats an earlier one; `field`
    has a `{}` for the index."""
    errors: list[tuple[str, str]] = []
    first: dict[UUID, int] = {}
    for i, ref in enumerate(refs):
        if ref in first:
            errors.append((field.format(i), f"Repeats index {first[ref]}: list each {what} once."))
        elif ref not in known:
            errors.append((field.format(i), f"No such {what} in this tenant."))
        first.setdefault(ref, i)
    return errors


async def _check_hold_music(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID | None
) -> None:
    if prompt_id is not None and await prompts.get_prompt(conn, tenant_id, prompt_id) is None:
        raise InvalidInput("No such prompt in this tenant.", field="hold_music_prompt_id")


def _rejected(errors: list[tuple[str, str]]) -> InvalidInput:
    return InvalidInput(f"Invalid references: {', '.join(f for f, _ in errors)}.", errors=errors)


# --- skills -----------------------------------------------------------------------------------


def _skill_taken(name: str) -> NameTaken:
    return NameTaken(
        f"The tenant already has a skill named {name!r} (names ignore case).", field="name"
    )


async def create_skill(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: SkillCreate
) -> Skill:
    require(subject, "skills:write")
    skill_id = new_id()
    row = await repo.insert_skill(conn, subject.tenant_id, skill_id, data.name)
    if row is None:
        raise _skill_taken(data.name)
    await _publish(
        conn, ev.SkillCreated(tenant_id=subject.tenant_id, skill_id=skill_id, name=data.name)
    )
    await audit_by(conn, subject, origin, "skill.created", "skill", skill_id, name=data.name)
    return to_skill(row)


async def list_skills(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Skill]:
    require(subject, "skills:read")
    rows = await repo.list_skills(conn, subject.tenant_id, limit=limit, after=after)
    return [to_skill(r) for r in rows]


async def get_skill(conn: asyncpg.Connection, subject: Subject, skill_id: UUID) -> Skill:
    require(subject, "skills:read")
    row = await repo.get_skill(conn, subject.tenant_id, skill_id)
    if row is None:
        raise NotFound("Skill not found.")
    return to_skill(row)


async def update_skill(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, skill_id: UUID, data: SkillUpdate
) -> Skill:
    require(subject, "skills:write")
    current = await repo.get_skill(conn, subject.tenant_id, skill_id)
    if current is None:
        raise NotFound("Skill not found.")
    if data.name is _UNSET or data.name == current["name"]:
        return to_skill(current)
    try:
        row = await repo.rename_skill(conn, subject.tenant_id, skill_id, data.name)
    except asyncpg.UniqueViolationError:
        # The transaction is spoiled either way; the request answers 409 and rolls it back.
        raise _skill_taken(data.name) from None
    assert row is not None
    await _publish(
        conn,
        ev.SkillUpdated(
            tenant_id=subject.tenant_id,
            skill_id=skill_id,
            name=row["name"],
            previous_name=current["name"],
        ),
    )
    await audit_by(
        conn,
        subject,
        origin,
        "skill.updated",
        "skill",
        skill_id,
        name=row["name"],
        previous_name=current["name"],
    )
    return to_skill(row)


async def delete_skill(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, skill_id: UUID
) -> None:
    """Refused while a queue requires the skill; agents who hold it lose it."""
    require(subject, "skills:write")
    # Locked first: a queue created meanwhile either sees no skill or is seen below.
    skill = await repo.get_skill(conn, subject.tenant_id, skill_id, for_update=True)
    if skill is None:
        raise NotFound("Skill not found.")
    requiring = await repo.queues_requiring(conn, subject.tenant_id, skill_id)
    if requiring:
        names = ", ".join(repr(q["name"]) for q in requiring)
        raise InUse(
            f"The skill {skill['name']!r} is required by the queue"
            f"{'s' if len(requiring) > 1 else ''} {names}. "
            "Remove it from their required_skills first."
        )
    agents = await repo.remove_skill_from_agents(conn, subject.tenant_id, skill_id)
    await repo.delete_skill(conn, subject.tenant_id, skill_id)
    await _publish(
        conn, ev.SkillDeleted(tenant_id=subject.tenant_id, skill_id=skill_id, name=skill["name"])
    )
    for user_id in agents:
        await _publish_agent_skills(conn, subject.tenant_id, user_id)
    await audit_by(
        conn,
        subject,
        origin,
        "skill.deleted",
        "skill",
        skill_id,
        name=skill["name"],
        agents=len(agents),
    )


# --- agents' skills ---------------------------------------------------------------------------


async def _agent_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID
) -> AgentSkills:
    rows = await repo.agent_skills(conn, tenant_id, user_id)
    return AgentSkills(
        user_id=user_id,
        skills=[AgentSkill(skill_id=r["skill_id"], name=r["name"], level=r["level"]) for r in rows],
    )


async def _publish_agent_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID
) -> AgentSkills:
    now = await _agent_skills(conn, tenant_id, user_id)
    await _publish(
        conn,
        ev.AgentSkillsChanged(
            tenant_id=tenant_id,
            user_id=user_id,
            skills=[ev.SkillLevel(skill_id=s.skill_id, level=s.level) for s in now.skills],
        ),
    )
    return now


async def get_agent_skills(
    conn: asyncpg.Connection, subject: Subject, user_id: UUID
) -> AgentSkills:
    if not (subject.actor_type == "user" and subject.actor_id == user_id):
        require(subject, "skills:read")
    if not await repo.user_exists(conn, subject.tenant_id, user_id):
        raise NotFound("User not found.")
    return await _agent_skills(conn, subject.tenant_id, user_id)


async def replace_agent_skills(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    user_id: UUID,
    data: AgentSkillsReplace,
) -> AgentSkills:
    """Give the user exactly these skills at these levels."""
    require(subject, "skills:write")
    if not await repo.lock_user(conn, subject.tenant_id, user_id):
        raise NotFound("User not found.")
    refs = [s.skill_id for s in data.skills]
    known = await repo.share_skills(conn, subject.tenant_id, list(set(refs))) if refs else set()
    errors = _reference_errors(refs, known, "skills[{}].skill_id", "skill")
    if errors:
        raise _rejected(errors)
    before = await repo.agent_skills(conn, subject.tenant_id, user_id)
    wanted = {s.skill_id: s.level for s in data.skills}
    if {r["skill_id"]: r["level"] for r in before} == wanted:
        return await _agent_skills(conn, subject.tenant_id, user_id)
    await repo.replace_agent_skills(conn, subject.tenant_id, user_id, sorted(wanted.items()))
    result = await _publish_agent_skills(conn, subject.tenant_id, user_id)
    await audit_by(
        conn,
        subject,
        origin,
        "agent.skills_changed",
        "user",
        user_id,
        skills={str(k): v for k, v in sorted(wanted.items())},
    )
    return result


# --- queues -----------------------------------------------------------------------------------


def _queue_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("A queue needs a name that is not blank.", field="name")
    return name


def _queue_taken(name: str) -> NameTaken:
    return NameTaken(
        f"The tenant already has a queue named {name!r} (names ignore case).", field="name"
    )


def _check_strategy(strategy: Strategy, required_skills: list[RequiredSkill]) -> None:
    if strategy == "skills_based" and not required_skills:
        raise InvalidInput(
            "The skills_based strategy needs at least one required skill.",
            field="required_skills",
        )


async def _check_required_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, required: list[RequiredSkill]
) -> None:
    refs = [s.skill_id for s in required]
    if not refs:
        return
    known = await repo.share_skills(conn, tenant_id, list(set(refs)))
    errors = _reference_errors(refs, known, "required_skills[{}].skill_id", "skill")
    if errors:
        raise _rejected(errors)


async def _check_overflow(
    conn: asyncpg.Connection, tenant_id: TenantId, overflow: Overflow, queue_id: UUID | None
) -> None:
    """An overflow queue must be another of the tenant's queues, and must not lead back here.
    `queue_id` is None for a queue not created yet (nothing can lead back to it)."""
    if not isinstance(overflow, OverflowToQueue):
        return
    target = overflow.queue_id
    if target == queue_id:
        raise InvalidInput("A queue cannot overflow to itself.", field="overflow.queue_id")
    # Key-share: the target cannot be deleted before this change commits.
    if await repo.get_queue(conn, tenant_id, target, lock="key share") is None:
        raise InvalidInput("No such queue in this tenant.", field="overflow.queue_id")
    if queue_id is None:
        return
    await repo.lock_overflow_graph(conn, tenant_id)
    if queue_id in await repo.overflow_chain(conn, tenant_id, target):
        raise InvalidInput(
            f"Queue {target} overflows, in turn, back to this queue: calls would loop.",
            field="overflow.queue_id",
        )


async def create_queue(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: QueueCreate
) -> Queue:
    require(subject, "queues:write")
    name = _queue_name(data.name)
    _check_strategy(data.strategy, data.required_skills)
    await _check_required_skills(conn, subject.tenant_id, data.required_skills)
    await _check_overflow(conn, subject.tenant_id, data.overflow, None)
    await enforce_limit(conn, subject.tenant_id, "queues", repo.COUNT_QUEUES)
    await _check_hold_music(conn, subject.tenant_id, data.hold_music_prompt_id)
    settings: dict[str, Any] = {
        field: msgspec.to_builtins(getattr(data, field)) for field in _SETTINGS
    }
    settings["name"] = name
    settings["hold_music_prompt_id"] = data.hold_music_prompt_id
    queue_id = new_id()
    row = await repo.insert_queue(conn, subject.tenant_id, queue_id, **settings)
    if row is None:
        raise _queue_taken(name)
    await _publish(
        conn,
        ev.QueueCreated(
            tenant_id=subject.tenant_id, queue_id=queue_id, name=name, strategy=data.strategy
        ),
    )
    await audit_by(conn, subject, origin, "queue.created", "queue", queue_id, name=name)
    return to_queue(row)


async def list_queues(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Queue]:
    require(subject, "queues:read")
    rows = await repo.list_queues(conn, subject.tenant_id, limit=limit, after=after)
    return [to_queue(r) for r in rows]


async def get_queue(conn: asyncpg.Connection, subject: Subject, queue_id: UUID) -> Queue:
    require(subject, "queues:read")
    row = await repo.get_queue(conn, subject.tenant_id, queue_id)
    if row is None:
        raise NotFound("Queue not found.")
    return to_queue(row)


async def update_queue(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, queue_id: UUID, data: QueueUpdate
) -> Queue:
    require(subject, "queues:write")
    current = await repo.get_queue(conn, subject.tenant_id, queue_id, lock="no key update")
    if current is None:
        raise NotFound("Queue not found.")
    wanted: dict[str, Any] = {
        field: msgspec.to_builtins(value)
        for field in _SETTINGS
        if (value := getattr(data, field)) is not _UNSET
    }
    if "name" in wanted:
        wanted["name"] = _queue_name(wanted["name"])
    if not isinstance(data.hold_music_prompt_id, msgspec.UnsetType):
        wanted["hold_music_prompt_id"] = data.hold_music_prompt_id
    changes = {k: v for k, v in wanted.items() if current[k] != v}
    if not changes:
        return to_queue(current)
    before = to_queue(current)
    required = (
        data.required_skills
        if not isinstance(data.required_skills, msgspec.UnsetType)
        else before.required_skills
    )
    strategy = (
        data.strategy if not isinstance(data.strategy, msgspec.UnsetType) else before.strategy
    )
    _check_strategy(strategy, required)
    if "required_skills" in changes:
        await _check_required_skills(conn, subject.tenant_id, required)
    if "hold_music_prompt_id" in changes:
        await _check_hold_music(conn, subject.tenant_id, changes["hold_music_prompt_id"])
    if "overflow" in changes and not isinstance(data.overflow, msgspec.UnsetType):
        await _check_overflow(conn, subject.tenant_id, data.overflow, queue_id)
    try:
        row = await repo.update_queue(conn, subject.tenant_id, queue_id, **changes)
    except asyncpg.UniqueViolationError:
        # The transaction is spoiled either way; the request answers 409 and rolls it back.
        raise _queue_taken(changes["name"]) from None
    assert row is not None
    fields = sorted(changes)
    await _publish(
        conn,
        ev.QueueUpdated(
            tenant_id=subject.tenant_id,
            queue_id=queue_id,
            name=row["name"],
            strategy=row["strategy"],
            fields=fields,
        ),
    )
    await audit_by(conn, subject, origin, "queue.updated", "queue", queue_id, fields=fields)
    return to_queue(row)


async def delete_queue(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, queue_id: UUID
) -> None:
    """Refused while another queue overflows to it; its members go with it."""
    require(subject, "queues:write")
    # Locked first: a queue pointed here meanwhile either sees no queue or is seen below.
    queue = await repo.get_queue(conn, subject.tenant_id, queue_id, lock="update")
    if queue is None:
        raise NotFound("Queue not found.")
    referrers = await repo.queues_overflowing_to(conn, subject.tenant_id, queue_id)
    if referrers:
        names = ", ".join(repr(q["name"]) for q in referrers)
        raise InUse(
            f"The queue{'s' if len(referrers) > 1 else ''} {names} overflow"
            f"{'' if len(referrers) > 1 else 's'} to {queue['name']!r}. "
            "Change their overflow first."
        )
    try:
        await repo.delete_queue(conn, subject.tenant_id, queue_id)
    except asyncpg.ForeignKeyViolationError:
        # flow_queue_refs holds it (RESTRICT): a flow's draft or published version uses it.
        raise InUse(
            f"A flow sends callers to {queue['name']!r}; change the flow (and publish it) first."
        ) from None
    await _publish(
        conn, ev.QueueDeleted(tenant_id=subject.tenant_id, queue_id=queue_id, name=queue["name"])
    )
    await audit_by(conn, subject, origin, "queue.deleted", "queue", queue_id, name=queue["name"])


# --- queue members ----------------------------------------------------------------------------


def _members(queue_id: UUID, rows: list[asyncpg.Record]) -> QueueMembers:
    return QueueMembers(
        queue_id=queue_id,
        members=[QueueMember(user_id=r["user_id"], priority=r["priority"]) for r in rows],
    )


async def get_members(conn: asyncpg.Connection, subject: Subject, queue_id: UUID) -> QueueMembers:
    require(subject, "queues:read")
    if await repo.get_queue(conn, subject.tenant_id, queue_id) is None:
        raise NotFound("Queue not found.")
    return _members(queue_id, await repo.queue_members(conn, subject.tenant_id, queue_id))


async def replace_members(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    queue_id: UUID,
    data: QueueMembersReplace,
) -> QueueMembers:
    """Make exactly these users the queue's members, at these priorities."""
    require(subject, "queues:write")
    if await repo.get_queue(conn, subject.tenant_id, queue_id, lock="no key update") is None:
        raise NotFound("Queue not found.")
    refs = [m.user_id for m in data.members]
    known = await repo.share_users(conn, subject.tenant_id, list(set(refs))) if refs else set()
    errors = _reference_errors(refs, known, "members[{}].user_id", "user")
    if errors:
        raise _rejected(errors)
    before = await repo.queue_members(conn, subject.tenant_id, queue_id)
    wanted = {m.user_id: m.priority for m in data.members}
    if {r["user_id"]: r["priority"] for r in before} == wanted:
        return _members(queue_id, before)
    await repo.replace_queue_members(conn, subject.tenant_id, queue_id, sorted(wanted.items()))
    result = _members(queue_id, await repo.queue_members(conn, subject.tenant_id, queue_id))
    await _publish(
        conn,
        ev.QueueMembersChanged(
            tenant_id=subject.tenant_id,
            queue_id=queue_id,
            members=[
                ev.MemberPriority(user_id=m.user_id, priority=m.priority) for m in result.members
            ],
        ),
    )
    await audit_by(
        conn,
        subject,
        origin,
        "queue.members_changed",
        "queue",
        queue_id,
        members=len(result.members),
    )
    return result

"""All SQL for skills, agents' skills, queues and queue members."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from runtime.db import set_clause
from tenancy.models import TenantId

Record = asyncpg.Record

COUNT_QUEUES = "select count(*) from queues where tenant_id = $1"

# --- skills -----------------------------------------------------------------------------------


async def insert_skill(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID, name: str
) -> Record | None:
    """The new row, or None if the tenant already has a skill of that name (in any case)."""
    return await conn.fetchrow(
        """insert into skills (tenant_id, id, name) values ($1, $2, $3)
           on conflict (tenant_id, lower(name)) do nothing returning *""",
        tenant_id,
        skill_id,
        name,
    )


async def get_skill(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select * from skills where tenant_id = $1 and id = $2{lock}",  # noqa: S608
        tenant_id,
        skill_id,
    )


async def list_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from skills where tenant_id = $1 and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


async def rename_skill(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID, name: str
) -> Record | None:
    """Raises asyncpg.UniqueViolationError if another skill has the name."""
    return await conn.fetchrow(
        """update skills set name = $3, updated_at = now()
           where tenant_id = $1 and id = $2 returning *""",
        tenant_id,
        skill_id,
        name,
    )


async def delete_skill(conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID) -> None:
    await conn.execute("delete from skills where tenant_id = $1 and id = $2", tenant_id, skill_id)


async def share_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_ids: list[UUID]
) -> set[UUID]:
    """Which of these are the tenant's skills, locked against deletion until commit."""
    rows = await conn.fetch(
        "select id from skills where tenant_id = $1 and id = any($2::uuid[]) for key share",
        tenant_id,
        skill_ids,
    )
    return {r["id"] for r in rows}


async def queues_requiring(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID
) -> list[Record]:
    return await conn.fetch(
        """select id, name from queues
           where tenant_id = $1 and required_skills @> jsonb_build_array(
               jsonb_build_object('skill_id', $2::uuid::text))
           order by lower(name)""",
        tenant_id,
        skill_id,
    )


async def remove_skill_from_agents(
    conn: asyncpg.Connection, tenant_id: TenantId, skill_id: UUID
) -> list[UUID]:
    """Take the skill from every agent holding it; returns those agents' user ids."""
    rows = await conn.fetch(
        """delete from agent_skills where tenant_id = $1 and skill_id = $2
           returning user_id""",
        tenant_id,
        skill_id,
    )
    return sorted(r["user_id"] for r in rows)


# --- agents' skills ---------------------------------------------------------------------------


async def lock_user(conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID) -> bool:
    """False if no such user. Serialises changes to one user's skill set."""
    found = await conn.fetchval(
        "select true from users where tenant_id = $1 and id = $2 for no key update",
        tenant_id,
        user_id,
    )
    return bool(found)


async def user_exists(conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID) -> bool:
    found = await conn.fetchval(
        "select true from users where tenant_id = $1 and id = $2", tenant_id, user_id
    )
    return bool(found)


async def share_users(
    conn: asyncpg.Connection, tenant_id: TenantId, user_ids: list[UUID]
) -> set[UUID]:
    """Which of these are the tenant's users."""
    rows = await conn.fetch(
        "select id from users where tenant_id = $1 and id = any($2::uuid[]) for key share",
        tenant_id,
        user_ids,
    )
    return {r["id"] for r in rows}


async def agent_skills(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID
) -> list[Record]:
    return await conn.fetch(
        """select a.skill_id, s.name, a.level from agent_skills a
           join skills s on s.tenant_id = a.tenant_id and s.id = a.skill_id
           where a.tenant_id = $1 and a.user_id = $2
           order by lower(s.name)""",
        tenant_id,
        user_id,
    )


async def replace_agent_skills(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    user_id: UUID,
    levels: list[tuple[UUID, int]],
) -> None:
    await conn.execute(
        "delete from agent_skills where tenant_id = $1 and user_id = $2", tenant_id, user_id
    )
    await conn.execute(
        """insert into agent_skills (tenant_id, user_id, skill_id, level)
           select $1, $2, s.skill_id, s.level
           from unnest($3::uuid[], $4::int[]) as s(skill_id, level)""",
        tenant_id,
        user_id,
        [skill_id for skill_id, _ in levels],
        [level for _, level in levels],
    )


# --- queues -----------------------------------------------------------------------------------

_QUEUE_FIELDS = (
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


async def insert_queue(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID, **fields: Any
) -> Record | None:
    """The new row, or None if the tenant already has a queue of that name (in any case).
    `fields` are exactly the queue's settings; jsonb ones as lists and dicts."""
    if set(fields) != set(_QUEUE_FIELDS):
        raise ValueError(f"queue fields differ: {sorted(set(fields) ^ set(_QUEUE_FIELDS))}")
    columns = ", ".join(_QUEUE_FIELDS)
    values = ", ".join(f"${i}" for i in range(3, 3 + len(_QUEUE_FIELDS)))
    return await conn.fetchrow(
        f"""insert into queues (tenant_id, id, {columns}) values ($1, $2, {values})
            on conflict (tenant_id, lower(name)) do nothing returning *""",  # noqa: S608
        tenant_id,
        queue_id,
        *(fields[name] for name in _QUEUE_FIELDS),
    )


async def get_queue(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID, *, lock: str | None = None
) -> Record | None:
    """`lock`: None, or the row lock to take: "update", "no key update" or "key share"."""
    if lock not in (None, "update", "no key update", "key share"):
        raise ValueError(lock)
    suffix = f" for {lock}" if lock else ""
    return await conn.fetchrow(
        f"select * from queues where tenant_id = $1 and id = $2{suffix}",  # noqa: S608
        tenant_id,
        queue_id,
    )


async def list_queues(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from queues where tenant_id = $1 and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


async def update_queue(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID, **fields: Any
) -> Record | None:
    """Raises asyncpg.UniqueViolationError if `name` is another queue's."""
    sets = set_clause(fields, allowed=_QUEUE_FIELDS)
    return await conn.fetchrow(
        f"""update queues set {sets}, updated_at = now()
            where tenant_id = $1 and id = $2 returning *""",  # noqa: S608
        tenant_id,
        queue_id,
        *fields.values(),
    )


async def delete_queue(conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID) -> None:
    """Its members go with it."""
    await conn.execute("delete from queues where tenant_id = $1 and id = $2", tenant_id, queue_id)


async def lock_overflow_graph(conn: asyncpg.Connection, tenant_id: TenantId) -> None:
    """Serialise changes to the tenant's overflow targets, so two concurrent changes cannot
    close a loop that neither would alone. Held until the transaction ends."""
    await conn.execute(
        "select pg_advisory_xact_lock(hashtextextended('queues.overflow:' || $1::uuid::text, 0))",
        tenant_id,
    )


async def overflow_chain(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID
) -> list[UUID]:
    """The queue and every queue its calls overflow to in turn (each once)."""
    rows = await conn.fetch(
        """with recursive chain (id, next) as (
               select id, overflow_queue_id from queues where tenant_id = $1 and id = $2
               union
               select q.id, q.overflow_queue_id from queues q
               join chain c on q.tenant_id = $1 and q.id = c.next
           )
           select id from chain""",
        tenant_id,
        queue_id,
    )
    return [r["id"] for r in rows]


async def queues_overflowing_to(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID
) -> list[Record]:
    return await conn.fetch(
        """select id, name from queues
           where tenant_id = $1 and overflow_queue_id = $2 and id <> $2
           order by lower(name)""",
        tenant_id,
        queue_id,
    )


# --- queue members ----------------------------------------------------------------------------


async def queue_members(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID
) -> list[Record]:
    return await conn.fetch(
        """select user_id, priority from queue_members
           where tenant_id = $1 and queue_id = $2 order by priority desc, user_id""",
        tenant_id,
        queue_id,
    )


async def replace_queue_members(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    queue_id: UUID,
    members: list[tuple[UUID, int]],
) -> None:
    await conn.execute(
        "delete from queue_members where tenant_id = $1 and queue_id = $2", tenant_id, queue_id
    )
    await conn.execute(
        """insert into queue_members (tenant_id, queue_id, user_id, priority)
           select $1, $2, m.user_id, m.priority
           from unnest($3::uuid[], $4::int[]) as m(user_id, priority)""",
        tenant_id,
        queue_id,
        [user_id for user_id, _ in members],
        [priority for _, priority in members],
    )

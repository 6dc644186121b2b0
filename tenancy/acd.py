"""The catalog as the ACD router sees it: a tenant's queues, and the agents who may take their
calls, with skills and memberships. Read-only.

The router learns a tenant id from the events of that tenant on the bus (published by the API's
outbox or by a media node that authenticated the call); that is the subject this module mints a
TenantId from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from runtime.db import tenant_tx
from tenancy.models import TenantId

AGENT_ROLES = ("agent", "supervisor")


@dataclass(frozen=True, slots=True)
class AcdQueue:
    queue_id: UUID
    name: str
    strategy: str
    priority: int
    required_skills: dict[str, int]
    """Skill name (lower case) → minimum level."""
    service_level_seconds: int
    max_wait_seconds: int
    overflow: dict[str, Any]
    """{"action": "queue"|"voicemail"|"callback"|"hangup", ...} as the queue stores it."""
    wrap_up_seconds: int
    announce_position: bool
    announce_ewt: bool
    record: bool


@dataclass(frozen=True, slots=True)
class AcdAgent:
    agent_id: UUID
    name: str
    skills: dict[str, int] = field(default_factory=dict)
    queues: dict[UUID, int] = field(default_factory=dict)
    """Queue → member priority."""


@dataclass(frozen=True, slots=True)
class AcdCatalog:
    queues: list[AcdQueue]
    agents: list[AcdAgent]


_QUEUES = """
select q.id, q.name, q.strategy, q.priority, q.service_level_seconds, q.max_wait_seconds,
       q.overflow, q.wrap_up_seconds, q.announce_position, q.announce_ewt, q.record,
       coalesce((select jsonb_object_agg(lower(s.name), (r ->> 'min_level')::int)
                   from jsonb_array_elements(q.required_skills) r
                   join skills s on s.tenant_id = q.tenant_id
                              and s.id = (r ->> 'skill_id')::uuid), '{}'::jsonb)
         as required_skills
  from queues q
 where q.tenant_id = $1
"""

# Agents are users with an agent or supervisor role, active, holding a seat.
_AGENTS = """
select u.id, u.name,
       coalesce((select jsonb_object_agg(lower(s.name), a.level)
                   from agent_skills a join skills s
                     on s.tenant_id = a.tenant_id and s.id = a.skill_id
                  where a.tenant_id = u.tenant_id and a.user_id = u.id), '{}'::jsonb) as skills,
       coalesce((select jsonb_object_agg(m.queue_id::text, m.priority)
                   from queue_members m
                  where m.tenant_id = u.tenant_id and m.user_id = u.id), '{}'::jsonb) as queues
  from users u
 where u.tenant_id = $1
   and u.role = any($2::text[])
   and u.status = 'active'
   and exists (select 1 from seats t where t.tenant_id = u.tenant_id and t.user_id = u.id
                 and t.released_at is null)
"""


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


async def load_catalog(pool: asyncpg.Pool, tenant_id: UUID) -> AcdCatalog:
    tid = TenantId(tenant_id)
    async with tenant_tx(pool, tid) as conn:
        queue_rows = await conn.fetch(_QUEUES, tid)
        agent_rows = await conn.fetch(_AGENTS, tid, list(AGENT_ROLES))
    queues = [
        AcdQueue(
            queue_id=row["id"],
            name=row["name"],
            strategy=row["strategy"],
            priority=row["priority"],
            required_skills={str(k): int(v) for k, v in _json(row["required_skills"]).items()},
            service_level_seconds=row["service_level_seconds"],
            max_wait_seconds=row["max_wait_seconds"],
            overflow=dict(_json(row["overflow"])),
            wrap_up_seconds=row["wrap_up_seconds"],
            announce_position=row["announce_position"],
            announce_ewt=row["announce_ewt"],
            record=row["record"],
        )
        for row in queue_rows
    ]
    agents = [
        AcdAgent(
            agent_id=row["id"],
            name=row["name"],
            skills={str(k): int(v) for k, v in _json(row["skills"]).items()},
            queues={UUID(k): int(v) for k, v in _json(row["queues"]).items()},
        )
        for row in agent_rows
    ]
    return AcdCatalog(queues=queues, agents=agents)

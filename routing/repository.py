"""All SQL for flows and flow versions, and the catalog lookups flow validation needs."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from tenancy.models import TenantId

Record = asyncpg.Record


async def insert_flow(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID, name: str, draft: Any
) -> Record | None:
    """None when the tenant already has a flow of that name."""
    return await conn.fetchrow(
        """insert into flows (tenant_id, id, name, draft) values ($1, $2, $3, $4)
           on conflict (tenant_id, lower(name)) do nothing returning *""",
        tenant_id,
        flow_id,
        name,
        draft,
    )


async def get_flow(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID, *, lock: bool = False
) -> Record | None:
    return await conn.fetchrow(
        "select * from flows where tenant_id = $1 and id = $2"  # noqa: S608
        + (" for update" if lock else ""),
        tenant_id,
        flow_id,
    )


async def name_taken(
    conn: asyncpg.Connection, tenant_id: TenantId, name: str, other_than: UUID
) -> bool:
    return bool(
        await conn.fetchval(
            "select 1 from flows where tenant_id = $1 and lower(name) = lower($2) and id <> $3",
            tenant_id,
            name,
            other_than,
        )
    )


async def list_flows(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from flows where tenant_id = $1 and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


async def update_flow(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    flow_id: UUID,
    *,
    name: str,
    draft: Any,
    draft_changed: bool,
) -> Record:
    row = await conn.fetchrow(
        """update flows set name = $3, draft = $4,
               draft_updated_at = case when $5 then now() else draft_updated_at end
           where tenant_id = $1 and id = $2 returning *""",
        tenant_id,
        flow_id,
        name,
        draft,
        draft_changed,
    )
    assert row is not None
    return row


async def add_version(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    flow_id: UUID,
    document: Any,
    published_by: UUID,
) -> Record:
    """The next version number for the flow (the flow row is locked by the caller)."""
    row = await conn.fetchrow(
        """with v as (
               insert into flow_versions (tenant_id, flow_id, version, document, published_by)
               select $1, $2, coalesce(max(version), 0) + 1, $3, $4
               from flow_versions where tenant_id = $1 and flow_id = $2
               returning *)
           update flows f set published_version = v.version from v
           where f.tenant_id = v.tenant_id and f.id = v.flow_id
           returning v.*""",
        tenant_id,
        flow_id,
        document,
        published_by,
    )
    assert row is not None
    return row


async def get_version(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID, version: int
) -> Record | None:
    return await conn.fetchrow(
        """select * from flow_versions where tenant_id = $1 and flow_id = $2 and version = $3""",
        tenant_id,
        flow_id,
        version,
    )


async def list_versions(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID
) -> list[Record]:
    return await conn.fetch(
        """select * from flow_versions where tenant_id = $1 and flow_id = $2
           order by version desc""",
        tenant_id,
        flow_id,
    )


async def numbers_routed_to(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID
) -> list[str]:
    rows = await conn.fetch(
        """select e164 from numbers where tenant_id = $1 and flow_id = $2 and released_at is null
           order by e164""",
        tenant_id,
        flow_id,
    )
    return [r["e164"] for r in rows]


async def delete_flow(conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID) -> None:
    await conn.execute("delete from flows where tenant_id = $1 and id = $2", tenant_id, flow_id)


async def route_number(
    conn: asyncpg.Connection, tenant_id: TenantId, number_id: UUID, flow_id: UUID | None
) -> Record | None:
    return await conn.fetchrow(
        """update numbers set flow_id = $3
           where tenant_id = $1 and id = $2 and released_at is null returning *""",
        tenant_id,
        number_id,
        flow_id,
    )


# --- what a flow may reference ----------------------------------------------------------------


async def queue_ids(conn: asyncpg.Connection, tenant_id: TenantId) -> set[UUID]:
    return {
        r["id"] for r in await conn.fetch("select id from queues where tenant_id = $1", tenant_id)
    }


async def prompt_ids(conn: asyncpg.Connection, tenant_id: TenantId) -> set[UUID]:
    return {
        r["id"] for r in await conn.fetch("select id from prompts where tenant_id = $1", tenant_id)
    }


async def set_references(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    flow_id: UUID,
    queues: set[UUID],
    prompts: set[UUID],
) -> None:
    """Record what the flow uses now (draft and published version together)."""
    await conn.execute(
        "delete from flow_queue_refs where tenant_id = $1 and flow_id = $2", tenant_id, flow_id
    )
    await conn.execute(
        "delete from flow_prompt_refs where tenant_id = $1 and flow_id = $2", tenant_id, flow_id
    )
    await conn.execute(
        """insert into flow_queue_refs (tenant_id, flow_id, queue_id)
           select $1, $2, unnest($3::uuid[])""",
        tenant_id,
        flow_id,
        sorted(queues),
    )
    await conn.execute(
        """insert into flow_prompt_refs (tenant_id, flow_id, prompt_id)
           select $1, $2, unnest($3::uuid[])""",
        tenant_id,
        flow_id,
        sorted(prompts),
    )

"""All SQL for seats."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from tenancy.models import TenantId

Record = asyncpg.Record

COUNT_ACTIVE = "select count(*) from seats where tenant_id = $1 and released_at is null"


async def insert_seat(
    conn: asyncpg.Connection, tenant_id: TenantId, seat_id: UUID, label: str
) -> Record:
    row = await conn.fetchrow(
        "insert into seats (tenant_id, id, label) values ($1, $2, $3) returning *",
        tenant_id,
        seat_id,
        label,
    )
    assert row is not None
    return row


async def get_seat(conn: asyncpg.Connection, tenant_id: TenantId, seat_id: UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from seats where tenant_id = $1 and id = $2 and released_at is null for update",
        tenant_id,
        seat_id,
    )


async def list_seats(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from seats where tenant_id = $1 and released_at is null
             and ($2::uuid is null or id > $2) order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


async def seat_of_user(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        """select * from seats where tenant_id = $1 and user_id = $2 and released_at is null""",
        tenant_id,
        user_id,
    )


async def set_user(
    conn: asyncpg.Connection, tenant_id: TenantId, seat_id: UUID, user_id: UUID | None
) -> Record:
    row = await conn.fetchrow(
        """update seats set user_id = $3,
               assigned_at = case when $3::uuid is null then null else now() end
           where tenant_id = $1 and id = $2 returning *""",
        tenant_id,
        seat_id,
        user_id,
    )
    assert row is not None
    return row


async def release_seat(conn: asyncpg.Connection, tenant_id: TenantId, seat_id: UUID) -> Record:
    row = await conn.fetchrow(
        """update seats set released_at = now(), user_id = null
           where tenant_id = $1 and id = $2 returning *""",
        tenant_id,
        seat_id,
    )
    assert row is not None
    return row

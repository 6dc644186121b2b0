"""All SQL for trunks: the operator's platform trunks and tenants' own (BYOC) trunks."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from runtime.db import set_clause
from tenancy.models import TenantId

Record = asyncpg.Record

# --- platform trunks (no tenant: operator-managed) --------------------------------------------

_PLATFORM_COLUMNS = """t.name, t.host, t.port, t.transport, t.allowed_sources, t.username,
    t.password_sealed, t.codecs, t.max_channels, t.register, t.register_expires, t.created_at,
    (select count(*) from number_inventory i where i.trunk = t.name) as inventory_numbers"""


async def insert_platform_trunk(
    conn: asyncpg.Connection,
    *,
    name: str,
    host: str,
    port: int,
    transport: str,
    allowed_sources: list[str],
    username: str | None,
    password_sealed: bytes | None,
    codecs: list[str],
    max_channels: int,
    register: bool,
    register_expires: int,
) -> Record | None:
    """The new row, or None if a platform trunk of that name exists."""
    return await conn.fetchrow(
        f"""with added as (
                insert into platform_trunks (name, host, port, transport, allowed_sources,
                    username, password_sealed, codecs, max_channels, register, register_expires)
                values ($1, $2, $3, $4, $5::cidr[], $6, $7, $8, $9, $10, $11)
                on conflict (name) do nothing
                returning *)
            select {_PLATFORM_COLUMNS} from added t""",  # noqa: S608
        name,
        host,
        port,
        transport,
        allowed_sources,
        username,
        password_sealed,
        codecs,
        max_channels,
        register,
        register_expires,
    )


async def list_platform_trunks(conn: asyncpg.Connection) -> list[Record]:
    return await conn.fetch(
        f"select {_PLATFORM_COLUMNS} from platform_trunks t order by t.name"  # noqa: S608
    )


async def get_platform_trunk(conn: asyncpg.Connection, name: str) -> Record | None:
    return await conn.fetchrow(
        f"select {_PLATFORM_COLUMNS} from platform_trunks t where t.name = $1",  # noqa: S608
        name,
    )


# --- tenants' trunks --------------------------------------------------------------------------

_WRITABLE = {
    "name",
    "host",
    "port",
    "transport",
    "allowed_sources",
    "inbound_username",
    "inbound_password",
    "outbound_username",
    "outbound_password",
    "from_domain",
    "codecs",
    "max_channels",
    "caller_id_policy",
    "register",
    "register_expires",
}
_CASTS = {"allowed_sources": "::cidr[]"}


async def insert_trunk(
    conn: asyncpg.Connection, tenant_id: TenantId, trunk_id: UUID, **fields: Any
) -> Record | None:
    """The new row, or None if the tenant already has a trunk with that name."""
    if set(fields) != _WRITABLE:
        raise ValueError(f"insert_trunk needs exactly {sorted(_WRITABLE)}")
    names = list(fields)
    columns = ", ".join(names)
    values = ", ".join(f"${i}{_CASTS.get(n, '')}" for i, n in enumerate(names, start=3))
    return await conn.fetchrow(
        f"""insert into trunks (tenant_id, id, {columns}) values ($1, $2, {values})
            on conflict do nothing returning *""",  # noqa: S608
        tenant_id,
        trunk_id,
        *fields.values(),
    )


async def get_trunk(
    conn: asyncpg.Connection, tenant_id: TenantId, trunk_id: UUID, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select * from trunks where tenant_id = $1 and id = $2{lock}",  # noqa: S608
        tenant_id,
        trunk_id,
    )


async def list_trunks(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from trunks where tenant_id = $1 and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


async def name_taken(
    conn: asyncpg.Connection, tenant_id: TenantId, name: str, *, other_than: UUID
) -> bool:
    return bool(
        await conn.fetchval(
            """select exists(select 1 from trunks
                   where tenant_id = $1 and lower(name) = lower($2) and id <> $3)""",
            tenant_id,
            name,
            other_than,
        )
    )


async def update_trunk(
    conn: asyncpg.Connection, tenant_id: TenantId, trunk_id: UUID, **fields: Any
) -> Record | None:
    sets = set_clause(fields, allowed=_WRITABLE, casts=_CASTS)
    return await conn.fetchrow(
        f"""update trunks set {sets}, updated_at = now()
            where tenant_id = $1 and id = $2 returning *""",  # noqa: S608
        tenant_id,
        trunk_id,
        *fields.values(),
    )


async def delete_trunk(
    conn: asyncpg.Connection, tenant_id: TenantId, trunk_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "delete from trunks where tenant_id = $1 and id = $2 returning id, name",
        tenant_id,
        trunk_id,
    )

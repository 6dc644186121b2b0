"""All SQL for contacts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from runtime.db import set_clause
from tenancy.models import TenantId

Record = asyncpg.Record


async def insert_contact(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    contact_id: UUID,
    phone: str,
    name: str,
    vip: bool,
    blocked: bool,
    attributes: dict[str, str],
) -> Record | None:
    """The new row, or None if the tenant already has a contact with this phone."""
    return await conn.fetchrow(
        """insert into contacts (tenant_id, id, phone, name, vip, blocked, attributes)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (tenant_id, phone) do nothing
           returning *""",
        tenant_id,
        contact_id,
        phone,
        name,
        vip,
        blocked,
        attributes,
    )


async def get_contact(
    conn: asyncpg.Connection, tenant_id: TenantId, contact_id: UUID, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select * from contacts where tenant_id = $1 and id = $2{lock}",  # noqa: S608
        tenant_id,
        contact_id,
    )


async def lookup_by_phone(
    conn: asyncpg.Connection, tenant_id: TenantId, e164: str
) -> Record | None:
    return await conn.fetchrow(
        "select * from contacts where tenant_id = $1 and phone = $2", tenant_id, e164
    )


async def list_contacts(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    phone: str | None,
    vip: bool | None,
    blocked: bool | None,
    limit: int,
    after: UUID | None,
) -> list[Record]:
    return await conn.fetch(
        """select * from contacts where tenant_id = $1
             and ($2::text is null or phone = $2)
             and ($3::boolean is null or vip = $3)
             and ($4::boolean is null or blocked = $4)
             and ($5::uuid is null or id > $5)
           order by id limit $6""",
        tenant_id,
        phone,
        vip,
        blocked,
        after,
        limit,
    )


async def update_contact(
    conn: asyncpg.Connection, tenant_id: TenantId, contact_id: UUID, **fields: Any
) -> Record | None:
    """Raises asyncpg.UniqueViolationError if `phone` is another contact's."""
    sets = set_clause(fields, allowed=("phone", "name", "vip", "blocked", "attributes"))
    return await conn.fetchrow(
        f"""update contacts set {sets}, updated_at = now()
            where tenant_id = $1 and id = $2 returning *""",  # noqa: S608
        tenant_id,
        contact_id,
        *fields.values(),
    )


async def delete_contact(
    conn: asyncpg.Connection, tenant_id: TenantId, contact_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "delete from contacts where tenant_id = $1 and id = $2 returning *",
        tenant_id,
        contact_id,
    )


async def contacts_by_phone(
    conn: asyncpg.Connection, tenant_id: TenantId, phones: list[str]
) -> list[Record]:
    """The tenant's contacts with these phones, locked until the transaction ends."""
    return await conn.fetch(
        """select * from contacts where tenant_id = $1 and phone = any($2::text[])
           order by id for update""",
        tenant_id,
        phones,
    )


async def upsert_contacts(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    rows: list[tuple[UUID, str, str, bool, bool, dict[str, str]]],
) -> list[Record]:
    """Insert (id, phone, name, vip, blocked, attributes) rows, or update the tenant's contact
    with that phone. Returns the id of each row inserted or changed; a row that already said
    exactly that is left alone (and not returned). An existing contact keeps its id."""
    return await conn.fetch(
        """insert into contacts as c (tenant_id, id, phone, name, vip, blocked, attributes)
           select $1, r.id, r.phone, r.name, r.vip, r.blocked, r.attributes::jsonb
           from unnest($2::uuid[], $3::text[], $4::text[], $5::boolean[], $6::boolean[],
                       $7::text[]) as r(id, phone, name, vip, blocked, attributes)
           on conflict (tenant_id, phone) do update
               set name = excluded.name, vip = excluded.vip, blocked = excluded.blocked,
                   attributes = excluded.attributes, updated_at = now()
               where (c.name, c.vip, c.blocked, c.attributes)
                     is distinct from (excluded.name, excluded.vip, excluded.blocked,
                                       excluded.attributes)
           returning c.id""",
        tenant_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [msgspec.json.encode(r[5]).decode() for r in rows],
    )

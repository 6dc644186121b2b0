"""All SQL for numbers: the platform inventory and tenants' numbers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from runtime.db import set_clause
from tenancy.models import TenantId
from tenancy.numbers.models import NumberQuery

Record = asyncpg.Record

# --- platform inventory -----------------------------------------------------------------------

_OFFERABLE = "(status = 'available' or (status = 'quarantined' and available_after <= now()))"


async def search_inventory(conn: asyncpg.Connection, q: NumberQuery) -> list[Record]:
    return await conn.fetch(
        f"""select e164, country, area_code, capabilities from number_inventory
            where {_OFFERABLE}
              and ($1::text is null or country = $1)
              and ($2::text is null or area_code = $2)
              and ($3::text is null or e164 like $3 || '%')
              and ($4::text is null or strpos(substr(e164, 2), $4) > 0)
              and ($5::text is null or $5 = any(capabilities))
            order by e164 limit $6""",  # noqa: S608
        q.country,
        q.area_code,
        q.prefix,
        q.contains,
        q.capability,
        q.limit,
    )


async def take_from_inventory(conn: asyncpg.Connection, e164: str) -> Record | None:
    """Mark the number assigned if it is offerable; None if someone else has it."""
    return await conn.fetchrow(
        f"""update number_inventory set status = 'assigned', available_after = null
            where e164 = $1 and {_OFFERABLE}
            returning e164, country, area_code, capabilities""",  # noqa: S608
        e164,
    )


async def quarantine_in_inventory(conn: asyncpg.Connection, e164: str, *, days: int) -> None:
    await conn.execute(
        """update number_inventory
           set status = 'quarantined', available_after = now() + make_interval(days => $2)
           where e164 = $1""",
        e164,
        days,
    )


async def insert_inventory(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert (e164, country, area_code, capabilities, trunk) rows; existing numbers are kept
    as they are. Returns how many were new."""
    result = await conn.fetch(
        """insert into number_inventory (e164, country, area_code, capabilities, trunk)
           select r.e164, r.country, r.area_code, string_to_array(r.caps, ','), r.trunk
           from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
               as r(e164, country, area_code, caps, trunk)
           on conflict (e164) do nothing
           returning e164""",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [",".join(r[3]) for r in rows],
        [r[4] for r in rows],
    )
    return len(result)


# --- tenants' numbers -------------------------------------------------------------------------


async def insert_number(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    number_id: UUID,
    e164: str,
    provider: str,
    country: str,
    capabilities: list[str],
    label: str,
) -> Record:
    row = await conn.fetchrow(
        """insert into numbers (tenant_id, id, e164, provider, country, capabilities, label)
           values ($1, $2, $3, $4, $5, $6, $7) returning *""",
        tenant_id,
        number_id,
        e164,
        provider,
        country,
        capabilities,
        label,
    )
    assert row is not None
    return row


async def get_number(
    conn: asyncpg.Connection, tenant_id: TenantId, number_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "select * from numbers where tenant_id = $1 and id = $2 and released_at is null",
        tenant_id,
        number_id,
    )


async def list_numbers(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from numbers where tenant_id = $1 and released_at is null
             and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


COUNT_ACTIVE = "select count(*) from numbers where tenant_id = $1 and released_at is null"


async def update_number(
    conn: asyncpg.Connection, tenant_id: TenantId, number_id: UUID, **fields: Any
) -> Record | None:
    sets = set_clause(fields, allowed=("label", "flow_id"))
    return await conn.fetchrow(
        f"""update numbers set {sets}
            where tenant_id = $1 and id = $2 and released_at is null returning *""",  # noqa: S608
        tenant_id,
        number_id,
        *fields.values(),
    )


async def mark_released(
    conn: asyncpg.Connection, tenant_id: TenantId, number_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        """update numbers set released_at = now(), flow_id = null
           where tenant_id = $1 and id = $2 and released_at is null returning *""",
        tenant_id,
        number_id,
    )

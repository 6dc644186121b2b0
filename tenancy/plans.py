"""Plan limits. A check locks the tenant row so concurrent creations cannot both squeeze in."""

from __future__ import annotations

from typing import Literal

import asyncpg

from tenancy.errors import TenancyError
from tenancy.models import TenantId

LimitKind = Literal["numbers", "seats", "queues", "concurrent_calls"]


class LimitReached(TenancyError):
    status, code, title = 403, "plan-limit-reached", "Plan limit reached"


async def enforce_limit(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: LimitKind, in_use_sql: str, adding: int = 1
) -> None:
    """Raise LimitReached unless `adding` more fit the tenant's plan. `in_use_sql` counts what
    the tenant holds now, with $1 = tenant_id. Call inside the transaction that creates."""
    row = await conn.fetchrow(
        f"""select t.plan, p.max_{kind} as allowed from tenants t join plans p on p.name = t.plan
            where t.tenant_id = $1 for update of t""",  # noqa: S608
        tenant_id,
    )
    assert row is not None
    in_use = int(await conn.fetchval(in_use_sql, tenant_id))
    if in_use + adding > row["allowed"]:
        raise LimitReached(
            f"The {row['plan']} plan allows {row['allowed']} {kind.replace('_', ' ')}; "
            f"{in_use} in use.",
            limit=kind,
            plan=row["plan"],
            allowed=row["allowed"],
        )

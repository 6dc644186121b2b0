"""SQL owned by the HTTP edge: stored responses for Idempotency-Key."""

from __future__ import annotations

import asyncpg

from tenancy.models import TenantId

IDEMPOTENCY_TTL = "24 hours"


async def claim_key(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    key: str,
    method: str,
    path: str,
    fingerprint: bytes,
) -> bool:
    """Take the key for this request. Blocks while another open transaction holds it; True if
    this request now owns it (new, or the old record is past its 24 h)."""
    owned = await conn.fetchval(
        f"""insert into idempotency_keys (tenant_id, key, method, path, fingerprint)
            values ($1, $2, $3, $4, $5)
            on conflict (tenant_id, key) do update
               set method = excluded.method, path = excluded.path,
                   fingerprint = excluded.fingerprint, status_code = null, response = null,
                   created_at = now()
             where idempotency_keys.created_at < now() - interval '{IDEMPOTENCY_TTL}'
            returning true""",  # noqa: S608
        tenant_id,
        key,
        method,
        path,
        fingerprint,
    )
    return bool(owned)


async def stored_response(
    conn: asyncpg.Connection, tenant_id: TenantId, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """select method, path, fingerprint, status_code, response from idempotency_keys
           where tenant_id = $1 and key = $2""",
        tenant_id,
        key,
    )


async def store_response(
    conn: asyncpg.Connection, tenant_id: TenantId, key: str, status: int, body: bytes
) -> None:
    await conn.execute(
        """update idempotency_keys set status_code = $3, response = $4
           where tenant_id = $1 and key = $2""",
        tenant_id,
        key,
        status,
        body,
    )

"""All SQL for single sign-on. Every function takes the TenantId first and runs in tenant_tx."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from tenancy.models import TenantId

Record = asyncpg.Record

# --- the provider configuration ---------------------------------------------------------------

_COLUMNS = (
    "issuer",
    "client_id",
    "client_secret",
    "allowed_email_domains",
    "default_role",
    "password_login",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "signing_algs",
    "token_auth_method",
)


async def get_config(
    conn: asyncpg.Connection, tenant_id: TenantId, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select * from sso_configs where tenant_id = $1{lock}",  # noqa: S608
        tenant_id,
    )


async def upsert_config(conn: asyncpg.Connection, tenant_id: TenantId, **fields: Any) -> Record:
    if set(fields) != set(_COLUMNS):
        raise ValueError(f"upsert_config needs exactly {sorted(_COLUMNS)}")
    values = [fields[c] for c in _COLUMNS]
    params = ", ".join(f"${i}" for i in range(2, len(_COLUMNS) + 2))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS)
    row = await conn.fetchrow(
        f"""insert into sso_configs (tenant_id, {", ".join(_COLUMNS)})
            values ($1, {params})
            on conflict (tenant_id) do update set {updates}, updated_at = now()
            returning *""",  # noqa: S608
        tenant_id,
        *values,
    )
    assert row is not None
    return row


async def delete_config(conn: asyncpg.Connection, tenant_id: TenantId) -> bool:
    """Pending sign-ins go with it (on delete cascade)."""
    result = await conn.execute("delete from sso_configs where tenant_id = $1", tenant_id)
    return result != "DELETE 0"


async def password_login_allowed(conn: asyncpg.Connection, tenant_id: TenantId) -> bool:
    value = await conn.fetchval(
        "select password_login from sso_configs where tenant_id = $1", tenant_id
    )
    return value is None or bool(value)


# --- sign-ins in flight -----------------------------------------------------------------------


async def insert_login(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    state_hash: bytes,
    nonce_hash: bytes,
    code_verifier: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """insert into sso_logins (tenant_id, state_hash, nonce_hash, code_verifier, expires_at)
           values ($1, $2, $3, $4, $5)""",
        tenant_id,
        state_hash,
        nonce_hash,
        code_verifier,
        expires_at,
    )


async def purge_logins(conn: asyncpg.Connection, tenant_id: TenantId) -> None:
    """Spent and expired sign-ins are kept an hour (for a look after a failure), then go."""
    await conn.execute(
        "delete from sso_logins where tenant_id = $1 and expires_at < now() - interval '1 hour'",
        tenant_id,
    )


async def claim_login(
    conn: asyncpg.Connection, tenant_id: TenantId, state_hash: bytes
) -> Record | None:
    """Mark an unexpired, unused sign-in used and return it: at most one caller ever does."""
    return await conn.fetchrow(
        """update sso_logins set used_at = now()
           where tenant_id = $1 and state_hash = $2 and used_at is null and expires_at > now()
           returning *""",
        tenant_id,
        state_hash,
    )


# --- users, as single sign-on finds them ------------------------------------------------------


async def find_user_by_email(
    conn: asyncpg.Connection, tenant_id: TenantId, email: str
) -> Record | None:
    return await conn.fetchrow(
        "select * from users where tenant_id = $1 and lower(email) = lower($2)",
        tenant_id,
        email,
    )

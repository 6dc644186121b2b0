"""All tenancy SQL. Tenant-owned functions take the TenantId first and run inside tenant_tx."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from runtime.db import set_clause
from runtime.ids import new_id
from tenancy.models import TenantId

Record = asyncpg.Record

# --- tenants ----------------------------------------------------------------------------------


async def insert_tenant(conn: asyncpg.Connection, tenant_id: TenantId, name: str) -> Record:
    row = await conn.fetchrow(
        """insert into tenants (tenant_id, name, status) values ($1, $2, 'pending_verification')
           returning *""",
        tenant_id,
        name,
    )
    assert row is not None
    return row


async def get_tenant(conn: asyncpg.Connection, tenant_id: TenantId) -> Record | None:
    return await conn.fetchrow("select * from tenants where tenant_id = $1", tenant_id)


async def set_tenant_status(
    conn: asyncpg.Connection, tenant_id: TenantId, status: str, *, verified: bool = False
) -> None:
    await conn.execute(
        """update tenants set status = $2, updated_at = now(),
               verified_at = case when $3 then coalesce(verified_at, now()) else verified_at end
           where tenant_id = $1""",
        tenant_id,
        status,
        verified,
    )


async def update_tenant(
    conn: asyncpg.Connection, tenant_id: TenantId, *, name: str | None, time_zone: str | None
) -> Record | None:
    return await conn.fetchrow(
        """update tenants set name = coalesce($2, name), time_zone = coalesce($3, time_zone),
               updated_at = now()
           where tenant_id = $1 returning *""",
        tenant_id,
        name,
        time_zone,
    )


# --- users ------------------------------------------------------------------------------------


async def find_login(conn: asyncpg.Connection, email: str) -> tuple[TenantId, UUID] | None:
    """Which tenant an email signs in to: the one cross-tenant lookup, via sb_find_login."""
    row = await conn.fetchrow("select tenant_id, user_id from sb_find_login($1)", email)
    return None if row is None else (TenantId(row["tenant_id"]), row["user_id"])


async def insert_user(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    user_id: UUID,
    email: str,
    name: str,
    role: str,
    status: str,
    password_hash: str | None,
) -> Record | None:
    """None when the email address already has an account (anywhere on the platform)."""
    return await conn.fetchrow(
        """insert into users (tenant_id, id, email, name, role, status, password_hash)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict ((lower(email))) do nothing returning *""",
        tenant_id,
        user_id,
        email,
        name,
        role,
        status,
        password_hash,
    )


async def get_user(conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID) -> Record | None:
    return await conn.fetchrow(
        "select * from users where tenant_id = $1 and id = $2", tenant_id, user_id
    )


async def list_users(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        """select * from users where tenant_id = $1 and ($2::uuid is null or id > $2)
           order by id limit $3""",
        tenant_id,
        after,
        limit,
    )


_USER_COLUMNS = frozenset(
    {"name", "role", "status", "password_hash", "email_verified_at", "last_login_at"}
)


async def update_user(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID, **fields: Any
) -> Record | None:
    sets = set_clause(fields, allowed=_USER_COLUMNS)
    return await conn.fetchrow(
        f"update users set {sets} where tenant_id = $1 and id = $2 returning *",  # noqa: S608
        tenant_id,
        user_id,
        *fields.values(),
    )


async def count_active_owners(conn: asyncpg.Connection, tenant_id: TenantId) -> int:
    value = await conn.fetchval(
        "select count(*) from users where tenant_id = $1 and role = 'owner' and status = 'active'",
        tenant_id,
    )
    return int(value)


# --- email tokens -----------------------------------------------------------------------------


async def insert_email_token(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    token_id: UUID,
    user_id: UUID,
    purpose: str,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """insert into email_tokens (tenant_id, id, user_id, purpose, token_hash, expires_at)
           values ($1, $2, $3, $4, $5, $6)""",
        tenant_id,
        token_id,
        user_id,
        purpose,
        token_hash,
        expires_at,
    )


async def lock_email_token(
    conn: asyncpg.Connection, tenant_id: TenantId, token_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "select * from email_tokens where tenant_id = $1 and id = $2 for update",
        tenant_id,
        token_id,
    )


async def use_email_token(conn: asyncpg.Connection, tenant_id: TenantId, token_id: UUID) -> None:
    await conn.execute(
        "update email_tokens set used_at = now() where tenant_id = $1 and id = $2",
        tenant_id,
        token_id,
    )


async def expire_email_tokens(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID, purpose: str
) -> None:
    """Older unused tokens of one purpose stop working when a new one is sent."""
    await conn.execute(
        """update email_tokens set expires_at = least(expires_at, now())
           where tenant_id = $1 and user_id = $2 and purpose = $3 and used_at is null""",
        tenant_id,
        user_id,
        purpose,
    )


# --- refresh tokens ---------------------------------------------------------------------------


async def insert_refresh_token(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    token_id: UUID,
    user_id: UUID,
    family_id: UUID,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """insert into refresh_tokens (tenant_id, id, user_id, family_id, token_hash, expires_at)
           values ($1, $2, $3, $4, $5, $6)""",
        tenant_id,
        token_id,
        user_id,
        family_id,
        token_hash,
        expires_at,
    )


async def lock_refresh_token(
    conn: asyncpg.Connection, tenant_id: TenantId, token_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "select * from refresh_tokens where tenant_id = $1 and id = $2 for update",
        tenant_id,
        token_id,
    )


async def mark_refresh_used(conn: asyncpg.Connection, tenant_id: TenantId, token_id: UUID) -> None:
    await conn.execute(
        "update refresh_tokens set used_at = now() where tenant_id = $1 and id = $2",
        tenant_id,
        token_id,
    )


async def revoke_refresh_family(
    conn: asyncpg.Connection, tenant_id: TenantId, family_id: UUID
) -> None:
    await conn.execute(
        """update refresh_tokens set revoked_at = now()
           where tenant_id = $1 and family_id = $2 and revoked_at is null""",
        tenant_id,
        family_id,
    )


async def revoke_user_refresh_tokens(
    conn: asyncpg.Connection, tenant_id: TenantId, user_id: UUID
) -> None:
    await conn.execute(
        """update refresh_tokens set revoked_at = now()
           where tenant_id = $1 and user_id = $2 and revoked_at is null""",
        tenant_id,
        user_id,
    )


# --- API keys and OAuth clients (same shape, two tables) --------------------------------------

_CREDENTIAL_TABLES = {"api_keys", "oauth_clients"}


def _table(kind: str) -> str:
    if kind not in _CREDENTIAL_TABLES:
        raise ValueError(kind)
    return kind


async def insert_credential(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    kind: str,
    *,
    credential_id: UUID,
    name: str,
    secret_hash: bytes,
    scopes: list[str],
    created_by: UUID,
) -> Record:
    row = await conn.fetchrow(
        f"""insert into {_table(kind)} (tenant_id, id, name, secret_hash, scopes, created_by)
            values ($1, $2, $3, $4, $5, $6) returning *""",  # noqa: S608
        tenant_id,
        credential_id,
        name,
        secret_hash,
        scopes,
        created_by,
    )
    assert row is not None
    return row


async def get_credential(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: str, credential_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        f"select * from {_table(kind)} where tenant_id = $1 and id = $2",  # noqa: S608
        tenant_id,
        credential_id,
    )


async def list_credentials(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: str, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        f"""select * from {_table(kind)} where tenant_id = $1 and ($2::uuid is null or id > $2)
            order by id limit $3""",  # noqa: S608
        tenant_id,
        after,
        limit,
    )


async def revoke_credential(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: str, credential_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        f"""update {_table(kind)} set revoked_at = coalesce(revoked_at, now())
            where tenant_id = $1 and id = $2 returning *""",  # noqa: S608
        tenant_id,
        credential_id,
    )


async def touch_credential(
    conn: asyncpg.Connection, tenant_id: TenantId, kind: str, credential_id: UUID
) -> None:
    """Record use, at most once a minute per credential, to keep hot paths write-free."""
    await conn.execute(
        f"""update {_table(kind)} set last_used_at = now()
            where tenant_id = $1 and id = $2
              and (last_used_at is null or last_used_at < now() - interval '60 seconds')""",  # noqa: S608
        tenant_id,
        credential_id,
    )


# --- audit ------------------------------------------------------------------------------------


async def insert_audit(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    actor_type: str,
    actor_id: UUID | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    source_ip: str | None,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        """insert into audit_log (tenant_id, id, actor_type, actor_id, action, target_type,
                                  target_id, source_ip, details)
           values ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9)""",
        tenant_id,
        new_id(),
        actor_type,
        actor_id,
        action,
        target_type,
        target_id,
        source_ip,
        details,
    )


async def list_audit(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    """Newest first; the cursor is the last id seen."""
    return await conn.fetch(
        """select id, at, actor_type, actor_id, action, target_type, target_id,
                  host(source_ip) as source_ip, details
           from audit_log where tenant_id = $1 and ($2::uuid is null or id < $2)
           order by id desc limit $3""",
        tenant_id,
        after,
        limit,
    )


# --- mail -------------------------------------------------------------------------------------


async def queue_mail(
    conn: asyncpg.Connection, tenant_id: TenantId, *, to: str, subject: str, body: str
) -> None:
    await conn.execute(
        """insert into mail_outbox (tenant_id, id, to_address, subject, body_text)
           values ($1, $2, $3, $4, $5)""",
        tenant_id,
        new_id(),
        to,
        subject,
        body,
    )


# --- signing keys (platform table) ------------------------------------------------------------


async def signing_keys(conn: asyncpg.Connection) -> list[Record]:
    return await conn.fetch(
        "select kid, private_jwk, sealed, created_at, retired_at from signing_keys"
    )


async def add_signing_key(
    conn: asyncpg.Connection, kid: str, data: bytes, sealed: bool, *, retire_others: bool
) -> None:
    if retire_others:
        await conn.execute("update signing_keys set retired_at = now() where retired_at is null")
    await conn.execute(
        "insert into signing_keys (kid, private_jwk, sealed) values ($1, $2, $3)", kid, data, sealed
    )

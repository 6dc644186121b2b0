from __future__ import annotations

import secrets
import uuid

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from runtime.db import tenant_tx
from tenancy.models import TenantId
from tenancy.vault import Vault, VaultUnavailable


async def _tenant(admin: asyncpg.Connection) -> TenantId:
    tid = TenantId(uuid.uuid4())
    await admin.execute(
        "insert into tenants (tenant_id, name, status) values ($1, 'T', 'active')", tid
    )
    return tid


async def test_secrets_round_trip_and_are_bound_to_tenant_and_purpose(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    vault = Vault(secrets.token_bytes(32))
    a, b = await _tenant(admin_conn), await _tenant(admin_conn)
    async with tenant_tx(pool, a) as conn:
        sealed = await vault.seal(conn, a, "trunk-p@ss", purpose="trunk.password")
        assert b"trunk-p@ss" not in sealed
        assert await vault.unseal(conn, a, sealed, purpose="trunk.password") == "trunk-p@ss"
        with pytest.raises(InvalidTag):
            await vault.unseal(conn, a, sealed, purpose="sso.client_secret")
    async with tenant_tx(pool, b) as conn:
        # B cannot see A's data key at all (RLS), so A's ciphertext is useless to B.
        with pytest.raises(VaultUnavailable):
            await vault.unseal(conn, b, sealed, purpose="trunk.password")
    stored = await admin_conn.fetchval("select wrapped from tenant_keys where tenant_id = $1", a)
    assert len(stored) > 32  # the data key is itself sealed


async def test_without_a_master_key_secrets_are_refused(
    pool: asyncpg.Pool, admin_conn: asyncpg.Connection
) -> None:
    a = await _tenant(admin_conn)
    async with tenant_tx(pool, a) as conn:
        with pytest.raises(VaultUnavailable):
            await Vault(None).seal(conn, a, "x", purpose="p")

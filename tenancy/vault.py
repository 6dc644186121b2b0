"""Secrets at rest (trunk passwords, webhook and SSO client secrets): AES-256-GCM under a
per-tenant data key, which is itself sealed under the operator's master key."""

from __future__ import annotations

import os
import struct

import asyncpg

from runtime.crypto import seal, unseal
from tenancy.errors import TenancyError
from tenancy.models import TenantId


class VaultUnavailable(TenancyError):
    status, code, title = 503, "vault-unavailable", "Secret storage unavailable"


class Vault:
    def __init__(self, master_key: bytes | None) -> None:
        self._master = master_key

    def _require_master(self) -> bytes:
        if self._master is None:
            raise VaultUnavailable("No master key is configured (SWITCHBOARD_MASTER_KEY).")
        return self._master

    async def _data_key(self, conn: asyncpg.Connection, tenant_id: TenantId) -> tuple[int, bytes]:
        master = self._require_master()
        row = await conn.fetchrow(
            "select version, wrapped from tenant_keys where tenant_id = $1"
            " order by version desc limit 1",
            tenant_id,
        )
        if row is None:
            fresh = os.urandom(32)
            await conn.execute(
                """insert into tenant_keys (tenant_id, version, wrapped) values ($1, 1, $2)
                   on conflict do nothing""",
                tenant_id,
                seal(master, fresh, aad=tenant_id.bytes),
            )
            row = await conn.fetchrow(
                "select version, wrapped from tenant_keys where tenant_id = $1 and version = 1",
                tenant_id,
            )
            assert row is not None
        return row["version"], unseal(master, row["wrapped"], aad=tenant_id.bytes)

    async def data_key(self, conn: asyncpg.Connection, tenant_id: TenantId) -> bytes:
        """The tenant's current data key, for deriving keys of bulk data (recordings)."""
        _version, key = await self._data_key(conn, tenant_id)
        return key

    async def seal(
        self, conn: asyncpg.Connection, tenant_id: TenantId, secret: str, *, purpose: str
    ) -> bytes:
        """Ciphertext bound to the tenant and to `purpose` (e.g. "trunk.password")."""
        version, key = await self._data_key(conn, tenant_id)
        body = seal(key, secret.encode(), aad=tenant_id.bytes + purpose.encode())
        return struct.pack(">I", version) + body

    async def unseal(
        self, conn: asyncpg.Connection, tenant_id: TenantId, sealed: bytes, *, purpose: str
    ) -> str:
        (version,) = struct.unpack(">I", sealed[:4])
        master = self._require_master()
        row = await conn.fetchrow(
            "select wrapped from tenant_keys where tenant_id = $1 and version = $2",
            tenant_id,
            version,
        )
        if row is None:
            raise VaultUnavailable("The data key for this secret is missing.")
        key = unseal(master, row["wrapped"], aad=tenant_id.bytes)
        return unseal(key, sealed[4:], aad=tenant_id.bytes + purpose.encode()).decode()

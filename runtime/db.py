"""asyncpg pool and transactions. Tenant transactions pin `app.tenant_id` for RLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Container, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast
from uuid import UUID

import asyncpg
import msgspec

Pool = asyncpg.Pool
Connection = asyncpg.Connection

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: _json_encode(v).decode(),
            decoder=_json_decode,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset that sends nothing: asyncpg has already rolled back any open transaction and
    dropped listeners; we never change session state (tenant context is transaction-local), so
    its RESET ALL round trip on every release buys nothing."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        server_settings={"application_name": "switchboard"},
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool, begin: str) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        await conn.execute(begin)
        try:
            yield conn
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("rollback")
            raise
        await conn.execute("commit")


def tenant_tx(
    pool: asyncpg.Pool, tenant_id: UUID
) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A transaction in which row-level security sees only `tenant_id`'s rows.

    BEGIN and the transaction-local `app.tenant_id` go in one round trip. SET LOCAL takes no
    bind parameters, so the id is inlined: it is rendered by uuid.UUID itself (hex and hyphens
    only), which makes it safe. SET LOCAL, unlike SELECT set_config(), returns no row for either
    side to process. Inside, use SAVEPOINT-free SQL (e.g. ON CONFLICT): the transaction is not
    an asyncpg Transaction object."""
    tenant = str(UUID(str(tenant_id)))
    return _transaction(pool, f"begin; set local app.tenant_id = '{tenant}'")


def platform_tx(pool: asyncpg.Pool) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A transaction with no tenant: tenant tables read as empty, only platform tables and the
    narrow resolver functions (sb_*) are usable."""
    return _transaction(pool, "begin")


def set_clause(
    fields: Iterable[str],
    *,
    allowed: Container[str],
    start: int = 3,
    casts: Mapping[str, str] | None = None,
) -> str:
    """`a = $3, b = $4` for an UPDATE whose first parameters are the row's key. Column names
    come from code, never from a request, and are checked against `allowed` — the guard that
    keeps the f-string SQL safe."""
    names = list(fields)
    unknown = sorted(n for n in names if n not in allowed)
    if not names or unknown:
        raise ValueError(f"cannot update {unknown or 'nothing'}")
    casts = casts or {}
    return ", ".join(f"{n} = ${i}{casts.get(n, '')}" for i, n in enumerate(names, start=start))


async def fetch_value(conn: asyncpg.Connection, query: str, *args: Any) -> Any:
    return await conn.fetchval(query, *args)

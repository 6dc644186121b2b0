"""Wrap-up notes: the disposition code and notes an agent leaves about a call they handled."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from runtime.db import tenant_tx

__all__ = ["record_wrap_up"]


async def record_wrap_up(
    pool: asyncpg.Pool, tenant_id: UUID, call_id: UUID, agent_id: UUID, code: str | None, notes: str
) -> None:
    """Keep the agent's wrap-up for the call; sending it again replaces it."""
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute(
            "insert into call_wrapups (tenant_id, call_id, agent_id, code, notes)"
            " values ($1, $2, $3, $4, $5)"
            " on conflict (tenant_id, call_id, agent_id)"
            " do update set code = excluded.code, notes = excluded.notes, updated_at = now()",
            tenant_id,
            call_id,
            agent_id,
            code,
            notes,
        )

"""All SQL for prompts. Only `get_audio` reads the audio column."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from tenancy.models import TenantId

Record = asyncpg.Record

_META = """id, name, source, tts_text, tts_voice, duration_ms, size_bytes, created_at,
    updated_at"""


async def insert_prompt(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    prompt_id: UUID,
    *,
    name: str,
    source: str,
    tts_text: str | None,
    tts_voice: str | None,
    duration_ms: int,
    audio: bytes,
) -> Record | None:
    """The new prompt's metadata, or None if the tenant has a prompt of that name already."""
    return await conn.fetchrow(
        f"""insert into prompts (tenant_id, id, name, source, tts_text, tts_voice, duration_ms,
                audio, size_bytes)
            values ($1, $2, $3, $4, $5, $6, $7, $8::bytea, length($8::bytea))
            on conflict do nothing
            returning {_META}""",  # noqa: S608
        tenant_id,
        prompt_id,
        name,
        source,
        tts_text,
        tts_voice,
        duration_ms,
        audio,
    )


async def get_prompt(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"select {_META} from prompts where tenant_id = $1 and id = $2{lock}",  # noqa: S608
        tenant_id,
        prompt_id,
    )


async def get_audio(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        f"select {_META}, audio from prompts where tenant_id = $1 and id = $2",  # noqa: S608
        tenant_id,
        prompt_id,
    )


async def list_prompts(
    conn: asyncpg.Connection, tenant_id: TenantId, *, limit: int, after: UUID | None
) -> list[Record]:
    return await conn.fetch(
        f"""select {_META} from prompts where tenant_id = $1 and ($2::uuid is null or id > $2)
            order by id limit $3""",  # noqa: S608
        tenant_id,
        after,
        limit,
    )


async def name_taken(
    conn: asyncpg.Connection, tenant_id: TenantId, name: str, *, other_than: UUID
) -> bool:
    return bool(
        await conn.fetchval(
            """select exists(select 1 from prompts
                   where tenant_id = $1 and lower(name) = lower($2) and id <> $3)""",
            tenant_id,
            name,
            other_than,
        )
    )


async def rename_prompt(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID, name: str
) -> Record | None:
    return await conn.fetchrow(
        f"""update prompts set name = $3, updated_at = now()
            where tenant_id = $1 and id = $2 returning {_META}""",  # noqa: S608
        tenant_id,
        prompt_id,
        name,
    )


async def delete_prompt(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        "delete from prompts where tenant_id = $1 and id = $2 returning id, name",
        tenant_id,
        prompt_id,
    )

"""All SQL for voicemails."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from tenancy.models import TenantId

Record = asyncpg.Record

_COLUMNS = """voicemail_id, call_id, mailbox, queue_id, from_number, path, duration_ms,
    recorded_at, listened_at"""


async def insert_voicemail(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    voicemail_id: UUID,
    call_id: UUID,
    mailbox: str | None,
    queue_id: UUID | None,
    from_number: str,
    path: str,
    duration_ms: int,
    recorded_at: datetime,
) -> bool:
    """Whether the row is new (a node that stores a message twice leaves one row)."""
    row = await conn.fetchrow(
        """insert into voicemails (tenant_id, voicemail_id, call_id, mailbox, queue_id,
                from_number, path, duration_ms, recorded_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           on conflict (tenant_id, voicemail_id) do nothing
           returning voicemail_id""",
        tenant_id,
        voicemail_id,
        call_id,
        mailbox,
        queue_id,
        from_number,
        path,
        duration_ms,
        recorded_at,
    )
    return row is not None


async def get_voicemail(
    conn: asyncpg.Connection, tenant_id: TenantId, voicemail_id: UUID, *, for_update: bool = False
) -> Record | None:
    lock = " for update" if for_update else ""
    return await conn.fetchrow(
        f"""select {_COLUMNS} from voicemails
            where tenant_id = $1 and voicemail_id = $2{lock}""",  # noqa: S608
        tenant_id,
        voicemail_id,
    )


async def list_voicemails(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    mailbox: str | None,
    queue_id: UUID | None,
    listened: bool | None,
    limit: int,
    after: UUID | None,
) -> list[Record]:
    return await conn.fetch(
        f"""select {_COLUMNS} from voicemails where tenant_id = $1
              and ($2::text is null or mailbox = $2)
              and ($3::uuid is null or queue_id = $3)
              and ($4::boolean is null or (listened_at is not null) = $4)
              and ($5::uuid is null or voicemail_id > $5)
            order by voicemail_id limit $6""",  # noqa: S608
        tenant_id,
        mailbox,
        queue_id,
        listened,
        after,
        limit,
    )


async def mark_listened(
    conn: asyncpg.Connection, tenant_id: TenantId, voicemail_id: UUID
) -> Record | None:
    """The row with `listened_at` set now, or None when it was set already (or is gone)."""
    return await conn.fetchrow(
        f"""update voicemails set listened_at = now()
            where tenant_id = $1 and voicemail_id = $2 and listened_at is null
            returning {_COLUMNS}""",  # noqa: S608
        tenant_id,
        voicemail_id,
    )


async def delete_voicemail(
    conn: asyncpg.Connection, tenant_id: TenantId, voicemail_id: UUID
) -> Record | None:
    return await conn.fetchrow(
        f"""delete from voicemails where tenant_id = $1 and voicemail_id = $2
            returning {_COLUMNS}""",  # noqa: S608
        tenant_id,
        voicemail_id,
    )

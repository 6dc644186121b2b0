"""Voicemail rules: a message belongs to a mailbox or a queue; the media node stores it once;
the tenant's owners, admins and supervisors list, play, mark and delete messages.

Tenancy does not touch audio: `recording` names the encrypted file and the edge decrypts it
(media.recorder) with the tenant's recording key."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg

from bus.outbox import enqueue
from tenancy.errors import InvalidInput, NotFound
from tenancy.models import Origin, Subject, TenantId
from tenancy.service import audit_by, require
from tenancy.voicemail import events as ev
from tenancy.voicemail import repository as repo
from tenancy.voicemail.models import MAX_MAILBOX, Voicemail, VoicemailQuery

VOICEMAIL_READ = "voicemails:read"
VOICEMAIL_WRITE = "voicemails:write"
"""Callers' messages are for the people who run the queues (owners, admins, supervisors), not
for everyone who may look at a queue's settings."""
ANONYMOUS = "anonymous"


def to_voicemail(row: asyncpg.Record) -> Voicemail:
    return Voicemail(
        id=row["voicemail_id"],
        call_id=row["call_id"],
        mailbox=row["mailbox"],
        queue_id=row["queue_id"],
        from_number=row["from_number"],
        duration_ms=row["duration_ms"],
        recorded_at=row["recorded_at"],
        listened_at=row["listened_at"],
    )


async def record(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    *,
    voicemail_id: UUID,
    call_id: UUID,
    mailbox: str | None,
    queue_id: UUID | None,
    from_number: str,
    path: Path,
    duration_ms: int,
    recorded_at: datetime,
) -> bool:
    """Store a message the media node recorded; whether it was new. Internal callers only:
    there is no subject to check (the node serves the tenant's own call)."""
    if mailbox is None and queue_id is None:
        raise ValueError("a voicemail is left in a mailbox or for a queue")
    if mailbox is not None and not 1 <= len(mailbox) <= MAX_MAILBOX:
        raise ValueError(f"a mailbox name is 1..{MAX_MAILBOX} characters")
    if duration_ms < 0:
        raise ValueError("a voicemail's duration cannot be negative")
    if recorded_at.tzinfo is None:
        raise ValueError("recorded_at must be an aware datetime")
    return await repo.insert_voicemail(
        conn,
        tenant_id,
        voicemail_id=voicemail_id,
        call_id=call_id,
        mailbox=mailbox,
        queue_id=queue_id,
        from_number=from_number.strip()[:64] or ANONYMOUS,
        path=str(path),
        duration_ms=duration_ms,
        recorded_at=recorded_at,
    )


async def list_voicemails(
    conn: asyncpg.Connection,
    subject: Subject,
    query: VoicemailQuery,
    *,
    limit: int,
    after: UUID | None,
) -> list[Voicemail]:
    require(subject, VOICEMAIL_READ)
    if query.mailbox is not None and not 1 <= len(query.mailbox) <= MAX_MAILBOX:
        raise InvalidInput(f"A mailbox name is 1..{MAX_MAILBOX} characters.", field="mailbox")
    rows = await repo.list_voicemails(
        conn,
        subject.tenant_id,
        mailbox=query.mailbox,
        queue_id=query.queue_id,
        listened=query.listened,
        limit=limit,
        after=after,
    )
    return [to_voicemail(r) for r in rows]


async def get_voicemail(
    conn: asyncpg.Connection, subject: Subject, voicemail_id: UUID
) -> Voicemail:
    require(subject, VOICEMAIL_READ)
    row = await repo.get_voicemail(conn, subject.tenant_id, voicemail_id)
    if row is None:
        raise NotFound("Voicemail not found.")
    return to_voicemail(row)


async def recording(
    conn: asyncpg.Connection, subject: Subject, voicemail_id: UUID
) -> tuple[Voicemail, Path]:
    """The message and where its encrypted recording is."""
    require(subject, VOICEMAIL_READ)
    row = await repo.get_voicemail(conn, subject.tenant_id, voicemail_id)
    if row is None:
        raise NotFound("Voicemail not found.")
    return to_voicemail(row), Path(row["path"])


async def mark_listened(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, voicemail_id: UUID
) -> Voicemail:
    """Mark a message listened. Marking it again keeps the first time."""
    require(subject, VOICEMAIL_WRITE)
    row = await repo.get_voicemail(conn, subject.tenant_id, voicemail_id, for_update=True)
    if row is None:
        raise NotFound("Voicemail not found.")
    if row["listened_at"] is not None:
        return to_voicemail(row)
    updated = await repo.mark_listened(conn, subject.tenant_id, voicemail_id)
    assert updated is not None  # locked above, not yet listened
    await enqueue(
        conn,
        ev.VoicemailListened(
            tenant_id=subject.tenant_id,
            voicemail_id=voicemail_id,
            mailbox=updated["mailbox"],
            queue_id=updated["queue_id"],
        ),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "voicemail.listened", "voicemail", voicemail_id)
    return to_voicemail(updated)


async def delete_voicemail(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, voicemail_id: UUID
) -> Path:
    """Delete the message's row; returns its recording's path, for the caller to remove once
    the transaction has committed."""
    require(subject, VOICEMAIL_WRITE)
    row = await repo.delete_voicemail(conn, subject.tenant_id, voicemail_id)
    if row is None:
        raise NotFound("Voicemail not found.")
    await enqueue(
        conn,
        ev.VoicemailDeleted(
            tenant_id=subject.tenant_id,
            voicemail_id=voicemail_id,
            mailbox=row["mailbox"],
            queue_id=row["queue_id"],
            was_listened=row["listened_at"] is not None,
        ),
        ev.codec,
    )
    await audit_by(
        conn,
        subject,
        origin,
        "voicemail.deleted",
        "voicemail",
        voicemail_id,
        mailbox=row["mailbox"],
        queue_id=str(row["queue_id"]) if row["queue_id"] is not None else None,
    )
    return Path(row["path"])

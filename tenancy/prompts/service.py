"""Prompt rules: unique names, at most ten minutes of audio, stored as the edge converted it.

Tenancy does not decode audio: the API converts uploads and text to 8 kHz mono 16-bit PCM (with
`media.audio`) and hands the samples here. Checks that need no audio (`may_create`,
`check_tts`) are separate so a request that will be refused costs no decoding."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import asyncpg
import msgspec

from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Subject
from tenancy.prompts import events as ev
from tenancy.prompts import repository as repo
from tenancy.prompts.models import MAX_NAME, Prompt, PromptCreate, PromptUpdate, Source
from tenancy.service import audit_by, require

MAX_DURATION_MS = 600_000
BYTES_PER_MS = 16
"""8000 samples a second, 2 bytes each."""


def to_prompt(row: asyncpg.Record) -> Prompt:
    return Prompt(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        tts_text=row["tts_text"],
        tts_voice=row["tts_voice"],
        duration_ms=row["duration_ms"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def check_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise InvalidInput("Give the prompt a name.", field="name")
    if len(cleaned) > MAX_NAME:
        raise InvalidInput(f"A prompt name is at most {MAX_NAME} characters.", field="name")
    if not cleaned.isprintable():
        raise InvalidInput("A prompt name cannot hold control characters.", field="name")
    return cleaned


def may_create(subject: Subject, name: str | None) -> str:
    """The checked name of an upload, before its audio is decoded."""
    require(subject, "prompts:write")
    if name is None:
        raise InvalidInput("Name the prompt in the query: ?name=...", field="name")
    return check_name(name)


def check_tts(subject: Subject, data: PromptCreate) -> PromptCreate:
    """The request with its name and text cleaned, before the text is spoken."""
    require(subject, "prompts:write")
    text = data.text.strip()
    if not text:
        raise InvalidInput("Give the text to speak.", field="text")
    return msgspec.structs.replace(data, name=check_name(data.name), text=text)


async def create(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    *,
    name: str,
    pcm_samples: bytes,
    duration_ms: int,
    source: Source,
    tts_text: str | None = None,
    tts_voice: str | None = None,
) -> Prompt:
    """Store a prompt. `pcm_samples` is 8 kHz mono signed 16-bit little-endian PCM."""
    require(subject, "prompts:write")
    name = check_name(name)
    if (source == "tts") != (tts_text is not None and tts_voice is not None):
        raise ValueError("a tts prompt has its text and voice; an upload has neither")
    if len(pcm_samples) % 2 or abs(len(pcm_samples) / BYTES_PER_MS - duration_ms) > 1:
        raise ValueError("pcm_samples is not 8 kHz mono 16-bit PCM of duration_ms")
    audio_field: Literal["audio", "text"] = "text" if source == "tts" else "audio"
    if duration_ms <= 0:
        raise InvalidInput("The audio is empty.", field=audio_field)
    if duration_ms > MAX_DURATION_MS:
        raise InvalidInput(
            f"A prompt is at most {MAX_DURATION_MS // 60_000} minutes long; this one is "
            f"{duration_ms / 60_000:.1f}.",
            field=audio_field,
        )
    prompt_id = new_id()
    row = await repo.insert_prompt(
        conn,
        subject.tenant_id,
        prompt_id,
        name=name,
        source=source,
        tts_text=tts_text,
        tts_voice=tts_voice,
        duration_ms=duration_ms,
        audio=pcm_samples,
    )
    if row is None:
        raise Conflict(f"A prompt named '{name}' already exists.", field="name")
    await enqueue(
        conn,
        ev.PromptCreated(
            tenant_id=subject.tenant_id,
            prompt_id=prompt_id,
            name=name,
            source=source,
            duration_ms=duration_ms,
        ),
        ev.codec,
    )
    await audit_by(
        conn,
        subject,
        origin,
        "prompt.created",
        "prompt",
        prompt_id,
        name=name,
        source=source,
        duration_ms=duration_ms,
    )
    return to_prompt(row)


async def list_prompts(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Prompt]:
    require(subject, "prompts:read")
    rows = await repo.list_prompts(conn, subject.tenant_id, limit=limit, after=after)
    return [to_prompt(r) for r in rows]


async def get_prompt(conn: asyncpg.Connection, subject: Subject, prompt_id: UUID) -> Prompt:
    require(subject, "prompts:read")
    row = await repo.get_prompt(conn, subject.tenant_id, prompt_id)
    if row is None:
        raise NotFound("Prompt not found.")
    return to_prompt(row)


async def get_audio(
    conn: asyncpg.Connection, subject: Subject, prompt_id: UUID
) -> tuple[Prompt, bytes]:
    """The prompt and its audio: 8 kHz mono 16-bit PCM."""
    require(subject, "prompts:read")
    row = await repo.get_audio(conn, subject.tenant_id, prompt_id)
    if row is None:
        raise NotFound("Prompt not found.")
    return to_prompt(row), bytes(row["audio"])


async def update_prompt(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, prompt_id: UUID, data: PromptUpdate
) -> Prompt:
    """Rename. The audio of a prompt never changes: upload a new prompt instead."""
    require(subject, "prompts:write")
    row = await repo.get_prompt(conn, subject.tenant_id, prompt_id, for_update=True)
    if row is None:
        raise NotFound("Prompt not found.")
    if data.name is msgspec.UNSET:
        return to_prompt(row)
    name = check_name(data.name)
    if name == row["name"]:
        return to_prompt(row)
    if await repo.name_taken(conn, subject.tenant_id, name, other_than=prompt_id):
        raise Conflict(f"A prompt named '{name}' already exists.", field="name")
    try:
        updated = await repo.rename_prompt(conn, subject.tenant_id, prompt_id, name)
    except asyncpg.UniqueViolationError:  # a concurrent rename took the name first
        raise Conflict(f"A prompt named '{name}' already exists.", field="name") from None
    assert updated is not None  # locked above
    await enqueue(
        conn,
        ev.PromptUpdated(
            tenant_id=subject.tenant_id, prompt_id=prompt_id, name=name, changed=["name"]
        ),
        ev.codec,
    )
    await audit_by(
        conn, subject, origin, "prompt.updated", "prompt", prompt_id, name=name, was=row["name"]
    )
    return to_prompt(updated)


async def delete_prompt(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, prompt_id: UUID
) -> None:
    require(subject, "prompts:write")
    try:
        row = await repo.delete_prompt(conn, subject.tenant_id, prompt_id)
    except asyncpg.ForeignKeyViolationError:
        # flow_prompt_refs and queues.hold_music_prompt_id hold it (RESTRICT).
        raise Conflict(
            "The prompt is in use by a flow or as a queue's hold music; change those first."
        ) from None
    if row is None:
        raise NotFound("Prompt not found.")
    await enqueue(
        conn,
        ev.PromptDeleted(tenant_id=subject.tenant_id, prompt_id=prompt_id, name=row["name"]),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "prompt.deleted", "prompt", prompt_id, name=row["name"])

"""The catalog as a media node sees it: which trunks may send calls, which tenant a dialed
number belongs to, and the secrets, audio and contacts a call needs. Read-only, except that a
tenant's owners may read the secret that signs its flows' HTTP lookups.

A call reaches a tenant only through a trunk the node has authenticated (by source network or
digest) and a number that trunk serves; that is the authenticated subject this module mints a
TenantId from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from runtime.db import platform_tx, tenant_tx
from tenancy.contacts.models import Contact
from tenancy.contacts.service import lookup as lookup_contact
from tenancy.models import Origin, Subject, TenantId
from tenancy.service import audit_by, require
from tenancy.trunks.platform import load_platform_for_media
from tenancy.trunks.service import load_for_media
from tenancy.vault import Vault


@dataclass(frozen=True, slots=True)
class NumberOwner:
    tenant_id: TenantId
    number_id: UUID
    e164: str
    flow_id: UUID | None
    tenant_status: str
    max_concurrent_calls: int
    platform_trunk: str | None


@dataclass(frozen=True, slots=True)
class TrunkRecogniser:
    tenant_id: TenantId | None
    trunk_id: UUID | None
    platform_trunk: str | None
    allowed_sources: tuple[str, ...]
    digest_username: str | None
    host: str
    port: int
    transport: str
    register: bool
    register_expires: int
    digest_password: str | None = field(default=None, repr=False)
    outbound_username: str | None = None
    outbound_password: str | None = field(default=None, repr=False)


async def number_owner(conn: asyncpg.Connection, e164: str) -> NumberOwner | None:
    row = await conn.fetchrow("select * from sb_media_number($1)", e164)
    if row is None:
        return None
    return NumberOwner(
        tenant_id=TenantId(row["tenant_id"]),
        number_id=row["number_id"],
        e164=e164,
        flow_id=row["flow_id"],
        tenant_status=row["tenant_status"],
        max_concurrent_calls=row["max_concurrent_calls"],
        platform_trunk=row["platform_trunk"],
    )


async def trunk_recognisers(
    pool: asyncpg.Pool, vault: Vault, master_key: bytes | None
) -> list[TrunkRecogniser]:
    """Every trunk's inbound recognisers, with digest passwords unsealed (each inside its own
    tenant's transaction)."""
    async with platform_tx(pool) as conn:
        rows = await conn.fetch("select * from sb_media_trunks()")
    out: list[TrunkRecogniser] = []
    for row in rows:
        tenant = None if row["tenant_id"] is None else TenantId(row["tenant_id"])
        password = out_user = out_password = None
        if tenant is not None and (row["digest_username"] is not None or row["register"]):
            async with tenant_tx(pool, tenant) as conn:
                trunk = await load_for_media(conn, tenant, row["trunk_id"], vault)
            password = trunk.inbound_password
            out_user, out_password = trunk.outbound_username, trunk.outbound_password
        elif tenant is None and row["register"]:
            async with platform_tx(pool) as conn:
                platform = await load_platform_for_media(conn, row["platform_trunk"], master_key)
            out_user, out_password = platform.username, platform.password
        out.append(
            TrunkRecogniser(
                tenant_id=tenant,
                trunk_id=row["trunk_id"],
                platform_trunk=row["platform_trunk"],
                allowed_sources=tuple(str(n) for n in row["allowed_sources"]),
                digest_username=row["digest_username"],
                host=row["host"],
                port=row["port"],
                transport=row["transport"],
                register=row["register"],
                register_expires=row["register_expires"],
                digest_password=password,
                outbound_username=out_user,
                outbound_password=out_password,
            )
        )
    return out


async def owns_number(conn: asyncpg.Connection, tenant_id: TenantId, e164: str) -> bool:
    value = await conn.fetchval(
        "select exists (select 1 from numbers where tenant_id = $1 and e164 = $2"
        " and released_at is null)",
        tenant_id,
        e164,
    )
    return bool(value)


async def published_flow(
    conn: asyncpg.Connection, tenant_id: TenantId, flow_id: UUID
) -> bytes | None:
    """The published version's document (JSON) of a tenant's flow, or None."""
    row = await conn.fetchrow(
        """select v.document::text as document from flows f
           join flow_versions v on v.tenant_id = f.tenant_id and v.flow_id = f.id
                               and v.version = f.published_version
           where f.tenant_id = $1 and f.id = $2""",
        tenant_id,
        flow_id,
    )
    return None if row is None else str(row["document"]).encode()


async def prompt_audio(
    conn: asyncpg.Connection, tenant_id: TenantId, prompt_id: UUID
) -> bytes | None:
    """A prompt's audio: 8 kHz mono s16le PCM, as stored."""
    value = await conn.fetchval(
        "select audio from prompts where tenant_id = $1 and id = $2", tenant_id, prompt_id
    )
    return None if value is None else bytes(value)


async def recording_key(conn: asyncpg.Connection, vault: Vault, tenant_id: TenantId) -> bytes:
    """The key a tenant's call recordings are sealed with, derived from its data key."""
    data_key = await vault.data_key(conn, tenant_id)
    return hmac.new(data_key, b"switchboard recording key v1", hashlib.sha256).digest()


async def hold_music_prompt(
    conn: asyncpg.Connection, tenant_id: TenantId, queue_id: UUID
) -> UUID | None:
    """The prompt the queue plays to waiting callers, if it has its own."""
    value = await conn.fetchval(
        "select hold_music_prompt_id from queues where tenant_id = $1 and id = $2",
        tenant_id,
        queue_id,
    )
    return value if isinstance(value, UUID) else None


async def caller_contact(
    conn: asyncpg.Connection, tenant_id: TenantId, e164: str
) -> Contact | None:
    """The tenant's contact calling from `e164`."""
    return await lookup_contact(conn, tenant_id, e164)


LOOKUP_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
"""Standard Webhooks' spelling of a signing secret: the prefix, then the key in base64."""


async def lookup_secret(conn: asyncpg.Connection, vault: Vault, tenant_id: TenantId) -> bytes:
    """The key that signs the tenant's HTTP lookups, derived from its data key: stable, and
    never stored on its own."""
    data_key = await vault.data_key(conn, tenant_id)
    return hmac.new(data_key, b"switchboard http lookup secret v1", hashlib.sha256).digest()


async def reveal_lookup_secret(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, vault: Vault
) -> str:
    """The lookup signing secret as the tenant's endpoint needs it (`whsec_<base64>`), for the
    tenant's owners and admins; every reveal is audited."""
    require(subject, "tenant:write")
    secret = await lookup_secret(conn, vault, subject.tenant_id)
    await audit_by(
        conn, subject, origin, "integration.lookup_secret_revealed", "tenant", subject.tenant_id
    )
    return LOOKUP_SECRET_PREFIX + base64.b64encode(secret).decode()


__all__ = [
    "LOOKUP_SECRET_PREFIX",
    "NumberOwner",
    "TrunkRecogniser",
    "caller_contact",
    "hold_music_prompt",
    "load_for_media",
    "load_platform_for_media",
    "lookup_secret",
    "number_owner",
    "owns_number",
    "prompt_audio",
    "published_flow",
    "recording_key",
    "reveal_lookup_secret",
    "trunk_recognisers",
]

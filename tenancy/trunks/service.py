"""Tenant trunk rules: a carrier the media node can recognise (allow-list or digest), G.711
only, registration only with credentials; passwords sealed in the tenant's vault and never
shown again."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Subject, TenantId
from tenancy.service import audit_by, require
from tenancy.trunks import events as ev
from tenancy.trunks import repository as repo
from tenancy.trunks.checks import (
    check_codecs,
    check_host,
    check_pair,
    check_sources,
    check_trunk_name,
)
from tenancy.trunks.models import (
    MediaTrunk,
    Trunk,
    TrunkCreate,
    TrunkInbound,
    TrunkOutbound,
    TrunkUpdate,
)
from tenancy.vault import Vault

INBOUND_PURPOSE = "trunk.inbound_password"
OUTBOUND_PURPOSE = "trunk.outbound_password"

_UNSET = msgspec.UNSET
# Column -> the field as the API names it (events and audit list these, never values).
_PUBLIC_NAMES = {
    "allowed_sources": "inbound.allowed_sources",
    "inbound_username": "inbound.digest_username",
    "inbound_password": "inbound.digest_password",
    "outbound_username": "outbound.username",
    "outbound_password": "outbound.password",
    "from_domain": "outbound.from_domain",
}

Password = str | bytes | None
"""A new password (str, to be sealed), the stored one (bytes, sealed), or none."""


@dataclass
class _State:
    """A trunk as it is about to be stored, before its new passwords are sealed."""

    name: str
    host: str
    port: int
    transport: str
    allowed_sources: list[str]
    inbound_username: str | None
    inbound_password: Password
    outbound_username: str | None
    outbound_password: Password
    from_domain: str | None
    codecs: list[str]
    max_channels: int
    caller_id_policy: str
    register: bool
    register_expires: int

    @classmethod
    def of(cls, row: asyncpg.Record) -> _State:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["allowed_sources"] = [str(n) for n in row["allowed_sources"]]
        values["codecs"] = list(row["codecs"])
        return cls(**values)

    def check(self) -> None:
        """Rules across fields, checked on the whole trunk after a create or a change."""
        check_pair(
            self.inbound_username,
            self.inbound_password,
            user_field="inbound.digest_username",
            credential_field="inbound.digest_password",
        )
        check_pair(
            self.outbound_username,
            self.outbound_password,
            user_field="outbound.username",
            credential_field="outbound.password",
        )
        if not self.allowed_sources and self.inbound_username is None:
            raise InvalidInput(
                "Say how to recognise this carrier's calls: allowed_sources, digest "
                "credentials, or both.",
                field="inbound",
            )
        if self.register and self.outbound_username is None:
            raise InvalidInput(
                "Registering needs outbound credentials (outbound.username and outbound.password).",
                field="register",
            )


def to_trunk(row: asyncpg.Record) -> Trunk:
    return Trunk(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        port=row["port"],
        transport=row["transport"],
        inbound=TrunkInbound(
            allowed_sources=[str(n) for n in row["allowed_sources"]],
            digest_username=row["inbound_username"],
            has_password=row["inbound_password"] is not None,
        ),
        outbound=TrunkOutbound(
            username=row["outbound_username"],
            has_password=row["outbound_password"] is not None,
            from_domain=row["from_domain"],
        ),
        codecs=list(row["codecs"]),
        max_channels=row["max_channels"],
        caller_id_policy=row["caller_id_policy"],
        register=row["register"],
        register_expires=row["register_expires"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _from_domain(value: str | None) -> str | None:
    # Only written into our From header, never connected to: syntax is all that matters.
    if value is None:
        return None
    return check_host(value, allow_private=True, field="outbound.from_domain")


async def _sealed(
    conn: asyncpg.Connection, vault: Vault, tenant_id: TenantId, state: _State
) -> dict[str, Any]:
    """The state as columns, new passwords sealed."""
    columns = {f.name: getattr(state, f.name) for f in fields(state)}
    for column, purpose in (
        ("inbound_password", INBOUND_PURPOSE),
        ("outbound_password", OUTBOUND_PURPOSE),
    ):
        if isinstance(columns[column], str):
            columns[column] = await vault.seal(conn, tenant_id, columns[column], purpose=purpose)
    return columns


async def create_trunk(
    conn: asyncpg.Connection,
    vault: Vault,
    subject: Subject,
    origin: Origin,
    data: TrunkCreate,
    *,
    allow_private: bool,
) -> Trunk:
    """`allow_private` lets the host and allow-list be internal addresses (test mode only)."""
    require(subject, "trunks:write")
    state = _State(
        name=check_trunk_name(data.name),
        host=check_host(data.host, allow_private=allow_private),
        port=data.port,
        transport=data.transport,
        allowed_sources=check_sources(
            data.inbound.allowed_sources,
            allow_private=allow_private,
            field="inbound.allowed_sources",
        ),
        inbound_username=data.inbound.digest_username,
        inbound_password=data.inbound.digest_password,
        outbound_username=data.outbound.username,
        outbound_password=data.outbound.password,
        from_domain=_from_domain(data.outbound.from_domain),
        codecs=check_codecs(data.codecs),
        max_channels=data.max_channels,
        caller_id_policy=data.caller_id_policy,
        register=data.register,
        register_expires=data.register_expires,
    )
    state.check()
    trunk_id = new_id()
    columns = await _sealed(conn, vault, subject.tenant_id, state)
    row = await repo.insert_trunk(conn, subject.tenant_id, trunk_id, **columns)
    if row is None:
        raise Conflict(f"A trunk named '{state.name}' already exists.", field="name")
    await enqueue(
        conn,
        ev.TrunkCreated(tenant_id=subject.tenant_id, trunk_id=trunk_id, name=state.name),
        ev.codec,
    )
    await audit_by(
        conn, subject, origin, "trunk.created", "trunk", trunk_id, name=state.name, host=state.host
    )
    return to_trunk(row)


async def list_trunks(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Trunk]:
    require(subject, "trunks:read")
    rows = await repo.list_trunks(conn, subject.tenant_id, limit=limit, after=after)
    return [to_trunk(r) for r in rows]


async def get_trunk(conn: asyncpg.Connection, subject: Subject, trunk_id: UUID) -> Trunk:
    require(subject, "trunks:read")
    row = await repo.get_trunk(conn, subject.tenant_id, trunk_id)
    if row is None:
        raise NotFound("Trunk not found.")
    return to_trunk(row)


def _apply(state: _State, data: TrunkUpdate, *, allow_private: bool) -> _State:
    """The trunk with the fields sent in `data` changed; each checked as on create. Fields not
    sent are not re-checked, so a later settings change cannot lock a trunk."""
    new = replace(state, allowed_sources=list(state.allowed_sources), codecs=list(state.codecs))
    if data.name is not _UNSET:
        new.name = check_trunk_name(data.name)
    if data.host is not _UNSET:
        new.host = check_host(data.host, allow_private=allow_private)
    if data.port is not _UNSET:
        new.port = data.port
    if data.transport is not _UNSET:
        new.transport = data.transport
    if data.codecs is not _UNSET:
        new.codecs = check_codecs(data.codecs)
    if data.max_channels is not _UNSET:
        new.max_channels = data.max_channels
    if data.caller_id_policy is not _UNSET:
        new.caller_id_policy = data.caller_id_policy
    if data.register is not _UNSET:
        new.register = data.register
    if data.register_expires is not _UNSET:
        new.register_expires = data.register_expires
    inbound = data.inbound
    if inbound is not _UNSET:
        if inbound.allowed_sources is not _UNSET:
            new.allowed_sources = check_sources(
                inbound.allowed_sources,
                allow_private=allow_private,
                field="inbound.allowed_sources",
            )
        if inbound.digest_username is not _UNSET:
            new.inbound_username = inbound.digest_username
        if inbound.digest_password is not _UNSET:
            new.inbound_password = inbound.digest_password
    outbound = data.outbound
    if outbound is not _UNSET:
        if outbound.username is not _UNSET:
            new.outbound_username = outbound.username
        if outbound.password is not _UNSET:
            new.outbound_password = outbound.password
        if outbound.from_domain is not _UNSET:
            new.from_domain = _from_domain(outbound.from_domain)
    return new


def _differs(before: _State, after: _State, name: str) -> bool:
    value = getattr(after, name)
    if isinstance(value, str) and name.endswith("_password"):
        return True  # a password sent is a change, even if it happens to be the same
    return bool(value != getattr(before, name))


async def update_trunk(
    conn: asyncpg.Connection,
    vault: Vault,
    subject: Subject,
    origin: Origin,
    trunk_id: UUID,
    data: TrunkUpdate,
    *,
    allow_private: bool,
) -> Trunk:
    """Change what was sent. A password sent as a string replaces the stored one; as null,
    clears it."""
    require(subject, "trunks:write")
    row = await repo.get_trunk(conn, subject.tenant_id, trunk_id, for_update=True)
    if row is None:
        raise NotFound("Trunk not found.")
    before = _State.of(row)
    after = _apply(before, data, allow_private=allow_private)
    after.check()
    changed = [f.name for f in fields(after) if _differs(before, after, f.name)]
    if not changed:
        return to_trunk(row)
    if "name" in changed and await repo.name_taken(
        conn, subject.tenant_id, after.name, other_than=trunk_id
    ):
        raise Conflict(f"A trunk named '{after.name}' already exists.", field="name")
    columns = await _sealed(conn, vault, subject.tenant_id, after)
    try:
        updated = await repo.update_trunk(
            conn, subject.tenant_id, trunk_id, **{c: columns[c] for c in changed}
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"A trunk named '{after.name}' already exists.", field="name") from None
    assert updated is not None  # locked above
    public = [_PUBLIC_NAMES.get(c, c) for c in changed]
    await enqueue(
        conn,
        ev.TrunkUpdated(
            tenant_id=subject.tenant_id, trunk_id=trunk_id, name=after.name, changed=public
        ),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "trunk.updated", "trunk", trunk_id, changed=public)
    return to_trunk(updated)


async def delete_trunk(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, trunk_id: UUID
) -> None:
    """Delete the trunk and, with it, its sealed credentials."""
    require(subject, "trunks:write")
    row = await repo.delete_trunk(conn, subject.tenant_id, trunk_id)
    if row is None:
        raise NotFound("Trunk not found.")
    await enqueue(
        conn,
        ev.TrunkDeleted(tenant_id=subject.tenant_id, trunk_id=trunk_id, name=row["name"]),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "trunk.deleted", "trunk", trunk_id, name=row["name"])


async def load_for_media(
    conn: asyncpg.Connection, tenant_id: TenantId, trunk_id: UUID, vault: Vault
) -> MediaTrunk:
    """The trunk with its passwords unsealed, for the media node (which authenticates the
    carrier and registers to it). Never hand this to the API."""
    row = await repo.get_trunk(conn, tenant_id, trunk_id)
    if row is None:
        raise NotFound("Trunk not found.")

    async def unsealed(column: str, purpose: str) -> str | None:
        sealed = row[column]
        if sealed is None:
            return None
        return await vault.unseal(conn, tenant_id, bytes(sealed), purpose=purpose)

    return MediaTrunk(
        tenant_id=tenant_id,
        id=row["id"],
        name=row["name"],
        host=row["host"],
        port=row["port"],
        transport=row["transport"],
        allowed_sources=tuple(str(n) for n in row["allowed_sources"]),
        inbound_username=row["inbound_username"],
        inbound_password=await unsealed("inbound_password", INBOUND_PURPOSE),
        outbound_username=row["outbound_username"],
        outbound_password=await unsealed("outbound_password", OUTBOUND_PURPOSE),
        from_domain=row["from_domain"],
        codecs=tuple(row["codecs"]),
        max_channels=row["max_channels"],
        caller_id_policy=row["caller_id_policy"],
        register=row["register"],
        register_expires=row["register_expires"],
    )

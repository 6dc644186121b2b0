"""Platform trunks: the operator's carriers, which inventory numbers arrive on. Managed with
`switchboard trunks add-platform` / `list-platform`, never through the tenant API. Their
passwords are sealed under the master key itself (there is no tenant data key), bound to the
trunk's name."""

from __future__ import annotations

import asyncpg

from runtime.crypto import seal, unseal
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.trunks import repository as repo
from tenancy.trunks.checks import (
    check_codecs,
    check_host,
    check_pair,
    check_platform_name,
    check_sources,
)
from tenancy.trunks.models import MediaPlatformTrunk, PlatformTrunk, PlatformTrunkCreate
from tenancy.vault import VaultUnavailable

MAX_PLATFORM_CHANNELS = 100_000


def _aad(name: str) -> bytes:
    return b"platform-trunk:" + name.encode()


def to_platform_trunk(row: asyncpg.Record) -> PlatformTrunk:
    return PlatformTrunk(
        name=row["name"],
        host=row["host"],
        port=row["port"],
        transport=row["transport"],
        allowed_sources=[str(n) for n in row["allowed_sources"]],
        username=row["username"],
        has_password=row["password_sealed"] is not None,
        codecs=list(row["codecs"]),
        max_channels=row["max_channels"],
        register=row["register"],
        register_expires=row["register_expires"],
        created_at=row["created_at"],
        inventory_numbers=row["inventory_numbers"],
    )


async def add_platform_trunk(
    conn: asyncpg.Connection, master_key: bytes | None, data: PlatformTrunkCreate
) -> PlatformTrunk:
    """Add an operator trunk. Internal addresses are allowed: the operator's own SBC may well
    sit on a private network."""
    name = check_platform_name(data.name)
    host = check_host(data.host, allow_private=True)
    if not 1 <= data.port <= 65535:
        raise InvalidInput("port must be 1..65535.", field="port")
    sources = check_sources(data.allowed_sources, allow_private=True, field="allow")
    codecs = check_codecs(data.codecs, field="codec")
    if not 1 <= data.max_channels <= MAX_PLATFORM_CHANNELS:
        raise InvalidInput(
            f"max channels must be 1..{MAX_PLATFORM_CHANNELS}.", field="max_channels"
        )
    if not 60 <= data.register_expires <= 3600:
        raise InvalidInput("register expiry must be 60..3600 seconds.", field="register_expires")
    check_pair(data.username, data.password, user_field="username", credential_field="password")
    if data.register and data.username is None:
        raise InvalidInput("Registering needs a username and a password.", field="register")
    sealed = None
    if data.password is not None:
        if master_key is None:
            raise VaultUnavailable(
                "SWITCHBOARD_MASTER_KEY is not set: it is needed to seal the trunk password."
            )
        sealed = seal(master_key, data.password.encode(), aad=_aad(name))
    row = await repo.insert_platform_trunk(
        conn,
        name=name,
        host=host,
        port=data.port,
        transport=data.transport,
        allowed_sources=sources,
        username=data.username,
        password_sealed=sealed,
        codecs=codecs,
        max_channels=data.max_channels,
        register=data.register,
        register_expires=data.register_expires,
    )
    if row is None:
        raise Conflict(f"A platform trunk named '{name}' already exists.", field="name")
    return to_platform_trunk(row)


async def list_platform_trunks(conn: asyncpg.Connection) -> list[PlatformTrunk]:
    return [to_platform_trunk(r) for r in await repo.list_platform_trunks(conn)]


async def load_platform_for_media(
    conn: asyncpg.Connection, name: str, master_key: bytes | None
) -> MediaPlatformTrunk:
    """The platform trunk with its password unsealed, for the media node."""
    row = await repo.get_platform_trunk(conn, name)
    if row is None:
        raise NotFound(f"No platform trunk named '{name}'.")
    password = None
    if row["password_sealed"] is not None:
        if master_key is None:
            raise VaultUnavailable("No master key is configured (SWITCHBOARD_MASTER_KEY).")
        password = unseal(master_key, bytes(row["password_sealed"]), aad=_aad(name)).decode()
    return MediaPlatformTrunk(
        name=row["name"],
        host=row["host"],
        port=row["port"],
        transport=row["transport"],
        allowed_sources=tuple(str(n) for n in row["allowed_sources"]),
        username=row["username"],
        password=password,
        codecs=tuple(row["codecs"]),
        max_channels=row["max_channels"],
        register=row["register"],
        register_expires=row["register_expires"],
    )

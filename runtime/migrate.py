"""Roles, databases and numbered SQL migrations, applied under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

OWNER_ROLE = "switchboard_owner"
APP_ROLE = "switchboard_app"
RESOLVER_ROLE = "switchboard_resolver"
_LOCK_KEY = 0x5B0A_2D11  # any constant shared by every migrator
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


async def ensure_roles(admin: asyncpg.Connection, app_password: str) -> None:
    """Create the three roles if missing. Needs a superuser (or CREATEROLE with BYPASSRLS)."""
    existing = {
        r["rolname"]
        for r in await admin.fetch(
            "select rolname from pg_roles where rolname = any($1::text[])",
            [OWNER_ROLE, APP_ROLE, RESOLVER_ROLE],
        )
    }
    if OWNER_ROLE not in existing:
        await admin.execute(f"create role {OWNER_ROLE} nologin nobypassrls")
    if RESOLVER_ROLE not in existing:
        await admin.execute(f"create role {RESOLVER_ROLE} nologin bypassrls")
    if APP_ROLE not in existing:
        await admin.execute(f"create role {APP_ROLE} login nobypassrls nocreatedb nocreaterole")
    # Re-assert the attributes every time: isolation must not depend on how a role was made.
    await admin.execute(f"alter role {APP_ROLE} nobypassrls nosuperuser")
    password = app_password.replace("'", "''")
    await admin.execute(f"alter role {APP_ROLE} password '{password}'")


async def ensure_database(
    admin: asyncpg.Connection, name: str, template: str | None = None
) -> bool:
    """Create database `name` owned by the owner role; False if it already existed."""
    if await admin.fetchval("select 1 from pg_database where datname = $1", name):
        return False
    ident = _ident(name)
    tmpl = f" template {_ident(template)}" if template else ""
    await admin.execute(f"create database {ident} owner {OWNER_ROLE}{tmpl}")
    await admin.execute(f"revoke all on database {ident} from public")
    await admin.execute(f"grant connect, temporary on database {ident} to {APP_ROLE}")
    return True


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise MigrationError(f"unsafe database name {name!r}")
    return name


async def apply_migrations(admin: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    """Apply what is missing, in order, each in its own transaction as the owner role."""
    await admin.execute("select pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await admin.execute(
            f"""
            create table if not exists schema_migrations (
                version int primary key, name text not null, checksum text not null,
                applied_at timestamptz not null default now());
            alter table schema_migrations owner to {OWNER_ROLE};
            """
        )
        applied = {
            r["version"]: r["checksum"]
            for r in await admin.fetch("select version, checksum from schema_migrations")
        }
        done: list[int] = []
        for m in migrations:
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied"
                    )
                continue
            async with admin.transaction():
                await admin.execute(f"set local role {OWNER_ROLE}")
                await admin.execute(m.sql)
                await admin.execute(
                    "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info("migration applied", extra={"version": m.version, "migration": m.name})
            done.append(m.version)
        return done
    finally:
        await admin.execute("select pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate(
    admin_dsn: str, migrations_dir: Path, *, app_password: str, database: str | None = None
) -> list[int]:
    """Roles, the database (created if missing), then the migrations."""
    target_dsn = admin_dsn
    if database is not None:
        admin = await asyncpg.connect(admin_dsn)
        try:
            # Roles are cluster-wide: serialise migrators that create them or the database.
            await admin.execute("select pg_advisory_lock($1)", _LOCK_KEY)
            await ensure_roles(admin, app_password)
            await ensure_database(admin, database)
        finally:
            await admin.close()
        target_dsn = replace_database(admin_dsn, database)
    conn = await asyncpg.connect(target_dsn)
    try:
        if database is None:
            await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
            try:
                await ensure_roles(conn, app_password)
            finally:
                await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
        return await apply_migrations(conn, load_migrations(migrations_dir))
    finally:
        await conn.close()


def replace_database(dsn: str, database: str) -> str:
    head, _, tail = dsn.partition("?")
    base = head.rsplit("/", 1)[0] if head.count("/") > 2 else head
    return f"{base}/{database}" + (f"?{tail}" if tail else "")

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from pathlib import Path

import asyncpg
import pytest

from runtime.migrate import MigrationError, load_migrations, migrate
from tests.conftest import APP_PASSWORD, MIGRATIONS, Services


async def test_migrate_creates_the_database_is_rerunnable_and_safe_to_run_concurrently(
    services: Services,
) -> None:
    name = f"m_{secrets.token_hex(4)}"
    runs = await asyncio.gather(
        *(
            migrate(services.admin_dsn(), MIGRATIONS, app_password=APP_PASSWORD, database=name)
            for _ in range(3)
        )
    )
    applied = sorted(v for run in runs for v in run)
    assert applied == [m.version for m in load_migrations(MIGRATIONS)]
    assert (
        await migrate(services.admin_dsn(), MIGRATIONS, app_password=APP_PASSWORD, database=name)
        == []
    )
    conn = await asyncpg.connect(services.admin_dsn(name))
    try:
        owner = await conn.fetchval("select tableowner from pg_tables where tablename = 'tenants'")
        assert owner == "switchboard_owner"
    finally:
        await conn.close()
        admin = await asyncpg.connect(services.admin_dsn())
        await admin.execute(f"drop database {name} with (force)")
        await admin.close()


async def test_an_applied_migration_that_changed_is_refused(
    services: Services, database: str, tmp_path: Path
) -> None:
    for m in load_migrations(MIGRATIONS):
        text = m.sql + ("\n-- edited\n" if m.version == 1 else "")
        (tmp_path / f"{m.version:04d}_{m.name}.sql").write_text(text)
    conn = await asyncpg.connect(services.admin_dsn(database))
    try:
        from runtime.migrate import apply_migrations

        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, load_migrations(tmp_path))
    finally:
        await conn.close()


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("select 1")
    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        load_migrations(tmp_path)
    assert dataclasses.is_dataclass(load_migrations(MIGRATIONS)[0])

"""Embedded PostgreSQL clusters and nats-server processes on free localhost ports."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import nats
import pytest

from runtime.embedded import (
    EmbeddedError,
    EmbeddedNats,
    EmbeddedPostgres,
    find_pg_bin,
    free_port,
)

PgFactory = Callable[..., EmbeddedPostgres]


@pytest.fixture
async def make_pg(tmp_path: Path) -> AsyncIterator[PgFactory]:
    """Builds clusters under tmp_path and, afterwards, stops them and deletes their directories
    (as root they may live outside tmp_path, under /var/tmp/switchboard-pg)."""
    made: list[EmbeddedPostgres] = []

    def make(name: str = "pg", port: int = 0) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(tmp_path / name, port, durable=False)
        made.append(pg)
        return pg

    yield make
    for pg in made:
        await pg.destroy()


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def test_started_cluster_answers_queries_and_stop_frees_its_pid_and_port(
    make_pg: PgFactory,
) -> None:
    pg = make_pg()
    await pg.start()
    pid, port = pg.pid, pg.port
    assert pid is not None
    assert port > 0
    assert pg.superuser_dsn == f"postgresql://{pg.superuser}@127.0.0.1:{port}/postgres"

    assert await fetchval(pg.superuser_dsn, "select 1") == 1

    await pg.stop()
    assert pg.pid is None
    assert not pid_exists(pid)
    assert not port_accepts(port)
    await pg.stop()  # idempotent


async def test_cluster_survives_restart_with_its_data(make_pg: PgFactory) -> None:
    async with make_pg() as pg:
        first_port = pg.port
        conn = await asyncpg.connect(pg.superuser_dsn)
        await conn.execute("create table calls (id int primary key, note text)")
        await conn.execute("insert into calls values (1, 'kept')")
        await conn.close()

    second_port = free_port()
    while second_port == first_port:
        second_port = free_port()
    async with make_pg(port=second_port) as again:
        assert again.port == second_port
        assert again.cluster_dir == pg.cluster_dir
        assert await fetchval(again.superuser_dsn, "select note from calls where id = 1") == "kept"


async def test_cluster_restarts_after_kill_now_leaves_a_stale_pid_file(
    make_pg: PgFactory,
) -> None:
    pg = make_pg()
    await pg.start()
    pid = pg.pid
    assert pid is not None

    pg.kill_now()
    assert pg.pid is None
    assert not pid_exists(pid)
    assert (pg.cluster_dir / "postmaster.pid").exists()

    await pg.start()
    assert pg.pid is not None
    assert pg.pid != pid
    assert await fetchval(pg.superuser_dsn, "select 1") == 1
    await pg.stop()


async def test_cluster_refuses_a_port_another_server_already_answers_on(
    make_pg: PgFactory,
) -> None:
    async with make_pg("first") as first:
        second = make_pg("second", port=first.port)
        # The first server trusts our superuser and could answer before the second one dies on
        # bind: start() must notice it is not talking to its own cluster.
        with pytest.raises(EmbeddedError, match=f"port {first.port}"):
            await second.start()
        assert second.pid is None
        assert await fetchval(first.superuser_dsn, "select 1") == 1


async def test_cluster_dir_is_private_to_the_server_user_and_reachable_by_it(
    make_pg: PgFactory,
) -> None:
    async with make_pg() as pg:
        st = pg.cluster_dir.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert (pg.cluster_dir / "PG_VERSION").exists()
        assert (pg.cluster_dir / "postgres.log").exists()
        user = await fetchval(pg.superuser_dsn, "select current_user")
        assert user == pg.superuser
        if os.geteuid() == 0:
            # The server runs as `postgres`, and pytest's tmp_path is not reachable by it.
            assert pg.superuser == "postgres"
            assert pg.cluster_dir.owner() == "postgres"
            assert pg.cluster_dir.parent == Path("/var/tmp/switchboard-pg")  # noqa: S108
        else:
            assert pg.cluster_dir == pg.data_dir.resolve()


async def test_nats_greets_clients_and_has_jetstream_enabled(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    pid = server.pid
    assert pid is not None
    assert server.url == f"nats://127.0.0.1:{server.port}"

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        greeting = sock.makefile("rb").readline()
    assert greeting.startswith(b"INFO {")
    assert json.loads(greeting[len(b"INFO ") :])["jetstream"] is True

    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
    assert (tmp_path / "nats" / "jetstream").is_dir()

    await server.stop()
    assert server.pid is None
    assert not pid_exists(pid)
    assert not port_accepts(server.port)
    await server.stop()  # idempotent


def test_find_pg_bin_explains_how_to_install_postgres_when_the_bin_dir_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_PG_BIN", str(tmp_path))
    with pytest.raises(EmbeddedError, match="apt-get install postgresql") as raised:
        find_pg_bin("initdb")
    assert "SWITCHBOARD_PG_BIN" in str(raised.value)
    assert "initdb" in str(raised.value)

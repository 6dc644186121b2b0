"""A throwaway nats-server and PostgreSQL for the bus tests, on free ports.

Stand-ins until the shared tests/conftest.py exists: one server of each per session, a fresh
EVENTS stream and a fresh database (cloned from a migrated template) per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import nats.js.errors
import pytest

from bus.connection import EVENTS_STREAM, Bus, connect, ensure_events_stream
from runtime.db import create_pool
from runtime.migrate import APP_ROLE, apply_migrations, ensure_database, ensure_roles
from runtime.migrate import load_migrations as load

NATS_SERVER = "/usr/sbin/nats-server"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MIGRATIONS = Path(__file__).resolve().parents[2] / "switchboard" / "migrations"
APP_PASSWORD = "bus-tests"
TEMPLATE_DB = "bus_template"

Eventually = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class NatsServer:
    """nats-server with JetStream on a fixed free port; can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.log = root / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        argv += ["-sd", str(self.root / "js"), "-l", str(self.log)]
        self.proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 15
        while b"Server is ready" not in (
            self.log.read_bytes()[offset:] if self.log.exists() else b""
        ):
            assert self.proc.poll() is None, "nats-server exited while starting"
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, which the test may stop and restart."""
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    # The postgres OS user cannot reach pytest's tmp dirs (mode 0700 under /tmp/pytest-of-root).
    root = Path(tempfile.mkdtemp(prefix="sb-bus-pg-", dir="/var/tmp"))
    shutil.chown(root, "postgres", "postgres")
    data = str(root / "data")
    port = _free_port()
    initdb = [str(PG_BIN / "initdb"), "-D", data, "-U", "postgres", "--auth=trust"]
    initdb += ["-E", "UTF8", "--no-sync", "--locale=C.UTF-8"]
    postgres = [str(PG_BIN / "postgres"), "-D", data, "-p", str(port)]
    for setting in (
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={root}",
        "fsync=off",
        "max_connections=200",
    ):
        postgres += ["-c", setting]
    subprocess.run(
        initdb,
        user="postgres",
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=root,
    )
    with open(root / "postgres.log", "wb") as log:
        proc = subprocess.Popen(
            postgres,
            user="postgres",
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
        ).returncode:
            assert proc.poll() is None, "postgres exited while starting"
            assert time.monotonic() < deadline, "postgres did not start"
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def migrated_template(pg_admin_dsn: str) -> str:
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await ensure_roles(admin, APP_PASSWORD)
        await ensure_database(admin, TEMPLATE_DB)
    finally:
        await admin.close()
    conn = await asyncpg.connect(pg_admin_dsn.rsplit("/", 1)[0] + f"/{TEMPLATE_DB}")
    try:
        await apply_migrations(conn, load(MIGRATIONS))
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture
async def pool(pg_admin_dsn: str, migrated_template: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh migrated database, connected as the app role (RLS applies)."""
    name = f"bus_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await ensure_database(admin, name, template=migrated_template)
    finally:
        await admin.close()
    host = pg_admin_dsn.split("@", 1)[1].rsplit("/", 1)[0]
    app_pool = await create_pool(f"postgresql://{APP_ROLE}:{APP_PASSWORD}@{host}/{name}")
    yield app_pool
    await app_pool.close()
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"drop database {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection with a fresh, empty EVENTS stream."""
    b = await connect(nats_url, name="bus-tests")
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await b.js.delete_stream(EVENTS_STREAM)
    await ensure_events_stream(b)
    yield b
    await b.close()


@pytest.fixture
def eventually() -> Eventually:
    """Waits for a condition that becomes true in the background, failing after 10 s."""

    async def wait(condition: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + 10
        while not await condition():
            assert time.monotonic() < deadline, "condition not met within 10 s"
            await asyncio.sleep(0.05)

    return wait

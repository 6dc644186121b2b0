"""Shared fixtures: a real PostgreSQL and nats-server started on free ports for the session,
a fresh migrated database per test, the API in-process with its worker tasks, and a real SMTP
server (aiosmtpd) catching mail."""

from __future__ import annotations

import asyncio
import contextlib
import email
import itertools
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvloop
from aiosmtpd.controller import Controller

from runtime.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from runtime.migrate import (
    APP_ROLE,
    apply_migrations,
    ensure_database,
    ensure_roles,
    load_migrations,
)
from runtime.settings import Settings, load_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "switchboard" / "migrations"
APP_PASSWORD = "app-" + secrets.token_hex(8)
TEMPLATE = "sb_template"
_db_names = itertools.count()


@dataclass
class Services:
    pg: EmbeddedPostgres
    nats: EmbeddedNats

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_superuser(self.pg)}@127.0.0.1:{self.pg.port}/{database}"

    def app_dsn(self, database: str) -> str:
        return f"postgresql://{APP_ROLE}:{APP_PASSWORD}@127.0.0.1:{self.pg.port}/{database}"


def _superuser(pg: EmbeddedPostgres) -> str:
    return pg.superuser_dsn.split("://", 1)[1].split("@", 1)[0]


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """The suite runs on uvloop, as every `switchboard` role does."""
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="session")
async def services() -> AsyncIterator[Services]:
    base = Path(tempfile.mkdtemp(prefix="sb-test-"))
    pg = EmbeddedPostgres(base / "pg", durable=False)
    nats = EmbeddedNats(base / "nats")
    await asyncio.gather(pg.start(), nats.start())
    try:
        admin = await asyncpg.connect(pg.superuser_dsn)
        try:
            await ensure_roles(admin, APP_PASSWORD)
            await ensure_database(admin, TEMPLATE)
        finally:
            await admin.close()
        conn = await asyncpg.connect(Services(pg, nats).admin_dsn(TEMPLATE))
        try:
            await apply_migrations(conn, load_migrations(MIGRATIONS))
        finally:
            await conn.close()
        yield Services(pg, nats)
    finally:
        await asyncio.gather(nats.stop(), pg.destroy())
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def database(services: Services) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (cloned from the migrated template)."""
    name = f"t_{next(_db_names)}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(services.admin_dsn())
    try:
        await ensure_database(admin, name, template=TEMPLATE)
    finally:
        await admin.close()
    yield name
    admin = await asyncpg.connect(services.admin_dsn())
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
    finally:
        await admin.close()


@pytest.fixture
async def admin_conn(services: Services, database: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the test's database: to look behind the app's back."""
    conn = await asyncpg.connect(services.admin_dsn(database))
    yield conn
    await conn.close()


@pytest.fixture
async def pool(services: Services, database: str) -> AsyncIterator[asyncpg.Pool]:
    from runtime.db import create_pool

    p = await create_pool(services.app_dsn(database), min_size=1, max_size=30)
    yield p
    await p.close()


# --- SMTP ------------------------------------------------------------------------------------


class MailCatcher:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.arrived = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        self.loop.call_soon_threadsafe(self._add, message)
        return "250 OK"

    def _add(self, message: Message) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, to: str, subject_contains: str = "", timeout: float = 15) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                for m in self.messages:
                    if to.lower() in str(m["To"]).lower() and subject_contains in str(m["Subject"]):
                        return m
                self.arrived.clear()
                await self.arrived.wait()

    @staticmethod
    def body(message: Message) -> str:
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()

    @classmethod
    def token_in(cls, message: Message) -> str:
        match = re.search(r"token=([A-Za-z0-9_\-%]+)", cls.body(message))
        assert match, cls.body(message)
        from urllib.parse import unquote

        return unquote(match.group(1))


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[MailCatcher, int]]:
    catcher = MailCatcher()
    port = free_port()
    controller = Controller(catcher, hostname="127.0.0.1", port=port)
    controller.start()
    yield catcher, port
    controller.stop()


# --- the API in-process ----------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    settings: Settings
    pool: asyncpg.Pool
    mail: MailCatcher
    resources: Any
    stop: asyncio.Event
    extra: dict[str, Any] = field(default_factory=dict)

    async def signup_verified(
        self,
        email_addr: str,
        company: str = "Acme Support",
        password: str = "Corr3ct-Horse-9",  # noqa: S107
    ) -> dict[str, Any]:
        """Sign up, verify through the mailed link, log in; returns tokens and ids."""
        r = await self.client.post(
            "/v1/signup",
            json={"company_name": company, "email": email_addr, "password": password},
        )
        assert r.status_code == 201, r.text
        signup = r.json()
        message = await self.mail.wait_for(email_addr, "Verify")
        r = await self.client.post(
            "/v1/auth/verify-email", json={"token": MailCatcher.token_in(message)}
        )
        assert r.status_code == 200, r.text
        r = await self.client.post(
            "/v1/auth/login", json={"email": email_addr, "password": password}
        )
        assert r.status_code == 200, r.text
        tokens = r.json()
        return {**signup, **tokens, "auth": {"Authorization": f"Bearer {tokens['access_token']}"}}

    async def member(self, owner: dict[str, Any], email: str, role: str) -> dict[str, str]:
        """Invite a user with `role`, accept through the mailed link; their auth header."""
        r = await self.client.post(
            "/v1/users", json={"email": email, "role": role}, headers=owner["auth"]
        )
        assert r.status_code == 201, r.text
        token = MailCatcher.token_in(await self.mail.wait_for(email, "invited"))
        r = await self.client.post(
            "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-1"}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


def api_settings(smtp_port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        "public_url": "http://switchboard.test",
        "master_key": secrets.token_hex(32),
        "test_mode": True,
        "max_body_bytes": 64 * 1024,
        "ip_rate": 1000.0,
        "ip_burst": 5000,
        **overrides,
    }
    return load_settings(env={}, **values)


@contextlib.asynccontextmanager
async def running_api(
    services: Services, database: str, mail: MailCatcher, smtp_port: int, **overrides: Any
) -> AsyncIterator[Api]:
    from api.app import create_app
    from switchboard import roles

    settings = api_settings(
        smtp_port,
        database_url=services.app_dsn(database),
        nats_url=services.nats.url,
        db_pool_min=1,
        **overrides,
    )
    stop = asyncio.Event()
    async with roles.open_resources(settings, role="test") as res:
        roles.start_worker(res, stop, mail_poll=0.05)
        try:
            app = create_app(roles.api_deps(res))
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://switchboard.test"
            ) as client:
                yield Api(client, settings, res.pool, mail, res, stop)
        finally:
            # Stop the worker before the pool closes: it holds connections until it stops.
            stop.set()
            await asyncio.gather(*res.tasks, return_exceptions=True)


@pytest.fixture
async def api(
    services: Services, database: str, smtp: tuple[MailCatcher, int]
) -> AsyncIterator[Api]:
    mail, port = smtp
    async with running_api(services, database, mail, port) as running:
        yield running

"""The process roles, wired from the packages: api, worker, and dev (all-in-one)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from api.app import create_app
from api.context import ApiDeps
from billing.gateway import StripeGateway
from billing.models import Gateway
from billing.worker import BillingWorker
from bus.connection import Bus, connect, ensure_events_stream
from bus.outbox import OutboxRelay
from routing.client import RouterClient
from runtime.db import create_pool, platform_tx
from runtime.embedded import EmbeddedNats, EmbeddedPostgres
from runtime.logs import setup_logging
from runtime.mail import ConsoleTransport, MailRelay, MailTransport, SmtpTransport
from runtime.migrate import APP_ROLE, migrate
from runtime.settings import Settings
from runtime.telemetry import setup_tracing, shutdown_tracing
from switchboard.media_role import media_node
from switchboard.router_role import router_node
from tenancy.auth import Authenticator
from tenancy.credentials import KeyRing

log = logging.getLogger("switchboard")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class StartupError(Exception):
    pass


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    bus: Bus
    auth: Authenticator
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    tracer_provider: TracerProvider | None = None
    billing: Gateway | None = None
    """Stripe, when billing is enabled and a key is set."""

    async def readiness(self) -> dict[str, bool]:
        checks = {"postgres": False, "nats": self.bus.is_connected}
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            async with asyncio.timeout(2):
                async with platform_tx(self.pool) as conn:
                    checks["postgres"] = await conn.fetchval("select 1") == 1
        return checks


@contextlib.asynccontextmanager
async def open_resources(settings: Settings, *, role: str) -> AsyncIterator[Resources]:
    if not settings.database_url:
        raise StartupError("SWITCHBOARD_DATABASE_URL is not set (or use `switchboard dev`).")
    if not settings.nats_url:
        raise StartupError("SWITCHBOARD_NATS_URL is not set (or use `switchboard dev`).")
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    try:
        bus = await connect(settings.nats_url, name=f"switchboard-{role}-{settings.node_id}")
        try:
            await ensure_events_stream(bus, replicas=settings.events_stream_replicas)
            keys = KeyRing(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_seconds=settings.access_token_seconds,
                master_key=settings.master_key_bytes,
            )
            auth = Authenticator(pool, settings, keys)
            await auth.load_keys()
            billing = (
                StripeGateway.from_settings(settings)
                if settings.billing_enabled and settings.stripe_api_key
                else None
            )
            yield Resources(settings, pool, bus, auth, billing=billing)
        finally:
            await bus.close()
    finally:
        await pool.close()


def mail_transport(settings: Settings) -> MailTransport:
    if settings.smtp_host:
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    return ConsoleTransport(sys.stdout)


def api_deps(res: Resources) -> ApiDeps:
    return ApiDeps(
        settings=res.settings,
        pool=res.pool,
        auth=res.auth,
        readiness=res.readiness,
        tracer_provider=res.tracer_provider,
        router=RouterClient(
            res.bus, res.settings.router_partitions, namespace=res.settings.router_namespace
        ),
        bus=res.bus,
        billing=res.billing,
    )


async def _every(stop: asyncio.Event, seconds: float, job: Callable[[], Awaitable[Any]]) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await job()
        except (OSError, asyncpg.PostgresError, RuntimeError):
            log.exception("periodic job failed")


def start_worker(res: Resources, stop: asyncio.Event, *, mail_poll: float = 1.0) -> None:
    """Outbox relay, mail delivery and housekeeping, as tasks on the running loop."""
    relay = OutboxRelay(res.pool, res.bus)
    mailer = MailRelay(
        res.pool,
        mail_transport(res.settings),
        sender=res.settings.mail_from,
        poll_interval=mail_poll,
    )

    async def purge_idempotency() -> None:
        async with res.pool.acquire() as conn:
            await conn.fetchval("select sb_idempotency_purge(interval '24 hours')")

    res.tasks += [
        asyncio.create_task(relay.run(stop), name="outbox-relay"),
        asyncio.create_task(mailer.run(stop), name="mail-relay"),
        asyncio.create_task(_every(stop, 3600, purge_idempotency), name="idempotency-purge"),
    ]
    if res.billing is not None:
        res.tasks += BillingWorker(res.pool, res.bus, res.settings, res.billing).start(stop)


def start_key_refresh(res: Resources, stop: asyncio.Event) -> None:
    """Pick up keys rotated by any process within a minute."""
    res.tasks.append(
        asyncio.create_task(
            _every(stop, 60, lambda: res.auth.load_keys(create_if_missing=False)),
            name="key-refresh",
        )
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the role decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(res: Resources, stop: asyncio.Event) -> None:
    app = create_app(api_deps(res))
    config = uvicorn.Config(
        app,
        host=res.settings.http_host,
        port=res.settings.http_port,
        loop="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is honoured only from trusted_proxies, in api/
        timeout_graceful_shutdown=10,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(), name="http")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    stopping.cancel()
    if not server.started:
        raise StartupError(
            f"The API could not listen on {res.settings.http_host}:{res.settings.http_port}."
        )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _finish(res: Resources) -> None:
    for task in res.tasks:
        task.cancel()
    await asyncio.gather(*res.tasks, return_exceptions=True)


async def run_api(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format, "api")
    provider = setup_tracing(settings.service_name, settings.otlp_endpoint, "api")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_resources(settings, role="api") as res:
        res.tracer_provider = provider
        start_key_refresh(res, stop)
        try:
            await serve_api(res, stop)
        finally:
            await _finish(res)
            shutdown_tracing(provider)


async def run_worker(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format, "worker")
    setup_tracing(settings.service_name, settings.otlp_endpoint, "worker")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_resources(settings, role="worker") as res:
        start_worker(res, stop)
        await stop.wait()
        await _finish(res)


async def run_media(settings: Settings) -> None:
    """A media node: SIP and RTP, calls' flows, commands on media.<node_id>.*."""
    setup_logging(settings.log_level, settings.log_format, "media")
    setup_tracing(settings.service_name, settings.otlp_endpoint, "media")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_resources(settings, role="media") as res:
        async with media_node(settings, res.pool, res.bus) as running:
            # Everything built at start-up lives as long as the process: keep it out of the
            # collector's way so full collections scan only what calls allocate.
            gc.freeze()
            sip = ", ".join(f"{t} {p}" for t, p in running.node.sip_ports.items())
            log.info("media node %s serving SIP on %s", settings.node_id, sip)
            await stop.wait()
            running.node.drain()
        await _finish(res)


async def run_router(settings: Settings) -> None:
    """An ACD router: serves its share of the tenant partitions (router.<partition>.*)."""
    setup_logging(settings.log_level, settings.log_format, "router")
    setup_tracing(settings.service_name, settings.otlp_endpoint, "router")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_resources(settings, role="router") as res:
        async with router_node(settings, res.pool, res.bus) as node:
            # As for media nodes: what start-up built lives as long as the process.
            gc.freeze()
            log.info("router %s serving partitions %s", node.instance_id, node.owned)
            await stop.wait()
        await _finish(res)


async def run_migrate(settings: Settings) -> list[int]:
    admin = settings.admin_database_url
    if not admin:
        raise StartupError("SWITCHBOARD_ADMIN_DATABASE_URL is not set: migrations run as admin.")
    password = settings.app_db_password
    if not password:
        raise StartupError("SWITCHBOARD_APP_DB_PASSWORD is not set: the app role needs one.")
    return await migrate(admin, MIGRATIONS, app_password=password)


# --- dev: everything in one process -----------------------------------------------------------


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _data_dir(path: str) -> Path:
    data = Path(path).resolve()
    data.mkdir(parents=True, exist_ok=True)
    return data


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run_dev(settings: Settings) -> None:
    """Embedded PostgreSQL and NATS when no URLs are set, migrations, then API and worker."""
    setup_logging(settings.log_level, settings.log_format, "dev")
    provider = setup_tracing(settings.service_name, settings.otlp_endpoint, "dev")
    stop = asyncio.Event()
    _stop_on_signals(stop)
    data = await asyncio.to_thread(_data_dir, settings.data_dir)
    overrides: dict[str, Any] = {}
    if settings.master_key is None:
        overrides["master_key"] = _secret_file(data / "master.key", lambda: secrets.token_hex(32))
    pg: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    stripe: Any = None
    try:
        if settings.billing_enabled and settings.stripe_api_key is None:
            from billing.emulator import StripeEmulator

            # No Stripe account configured: bill against the emulator, through the same SDK.
            stripe = StripeEmulator(
                webhook_url=f"{settings.base_url}/v1/stripe/webhooks",
                webhook_secret="whsec_" + secrets.token_hex(16),
            )
            overrides["stripe_api_base"] = await stripe.start("127.0.0.1", 0)
            overrides["stripe_api_key"] = "sk_test_emulator"
            overrides["stripe_webhook_secret"] = stripe.webhook_secret
        if settings.database_url is None:
            pg = EmbeddedPostgres(data / "postgres")
            await pg.start()
            password = settings.app_db_password or _secret_file(
                data / "app-db-password", lambda: secrets.token_urlsafe(24)
            )
            await migrate(
                pg.superuser_dsn, MIGRATIONS, app_password=password, database="switchboard"
            )
            overrides["database_url"] = (
                f"postgresql://{APP_ROLE}:{quote(password, safe='')}"
                f"@127.0.0.1:{pg.port}/switchboard"
            )
        if settings.nats_url is None:
            nats = EmbeddedNats(data / "nats")
            await nats.start()
            overrides["nats_url"] = nats.url
        if stop.is_set():
            return
        merged = _merge(settings, overrides)
        async with (
            open_resources(merged, role="dev") as res,
            contextlib.AsyncExitStack() as stack,
        ):
            res.tracer_provider = provider
            start_worker(res, stop)
            start_key_refresh(res, stop)
            media = (
                await stack.enter_async_context(media_node(merged, res.pool, res.bus))
                if merged.media_enabled
                else None
            )
            router = (
                await stack.enter_async_context(router_node(merged, res.pool, res.bus))
                if merged.router_enabled
                else None
            )
            _say("Switchboard dev is running:")
            _say(f"  API        {merged.base_url}   (OpenAPI: {merged.base_url}/schema)")
            _say(f"  sign up    {merged.base_url}/signup")
            _say(
                f"  PostgreSQL {_redact(merged.database_url or '')}"
                + (f"  (embedded, data in {pg.cluster_dir})" if pg else "")
            )
            _say(f"  NATS       {merged.nats_url}" + ("  (embedded, JetStream)" if nats else ""))
            _say(
                "  Stripe     "
                + (
                    f"emulator at {merged.stripe_api_base}"
                    if stripe
                    else ("api.stripe.com" if merged.stripe_api_key else "billing off")
                )
                + f"   (billing page: {merged.base_url}/billing)"
            )
            _say(
                "  mail       "
                + (
                    f"SMTP {merged.smtp_host}:{merged.smtp_port}"
                    if merged.smtp_host
                    else "printed here"
                )
            )
            if media is not None:
                sip = ", ".join(
                    f"{t} {media.node.public_host}:{p}" for t, p in media.node.sip_ports.items()
                )
                _say(f"  SIP        {sip}  (RTP {merged.rtp_port_min}-{merged.rtp_port_max})")
            if router is not None:
                _say(f"  router     partitions {router.owned} of {merged.router_partitions}")
            _say("Press Ctrl-C to stop.")
            try:
                await serve_api(res, stop)
            finally:
                await _finish(res)
    finally:
        shutdown_tracing(provider)
        if stripe is not None:
            await stripe.stop()
        if nats is not None:
            await nats.stop()
        if pg is not None:
            await pg.stop()
        _say("Switchboard dev stopped.")


def _redact(dsn: str) -> str:
    if "@" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.split("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _merge(settings: Settings, overrides: dict[str, Any]) -> Settings:
    import msgspec

    return msgspec.structs.replace(settings, **overrides)


async def import_numbers(settings: Settings, path: str, trunk: str) -> str:
    """Load a CSV of numbers into the platform inventory, reporting progress as it goes."""
    from tenancy.errors import InvalidInput
    from tenancy.numbers.importer import ImportSummary
    from tenancy.numbers.importer import import_numbers as load

    if not settings.database_url:
        raise StartupError("SWITCHBOARD_DATABASE_URL is not set.")

    def progress(summary: ImportSummary) -> None:
        _say(f"  {summary.read} read, {summary.imported} imported so far")

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # noqa: ASYNC230
            conn = await asyncpg.connect(settings.database_url)
            try:
                async with conn.transaction():
                    summary = await load(conn, f, trunk=trunk, progress=progress)
            finally:
                await conn.close()
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror}") from None
    except InvalidInput as exc:
        raise StartupError(f"{path}: {exc.detail}") from None
    lines = [
        f"{summary.read} rows read: {summary.imported} imported, "
        f"{summary.already_present} already in the inventory, "
        f"{sum(summary.skipped.values())} skipped"
    ]
    for reason, count in summary.skipped.most_common():
        lines.append(f"  skipped {count}: {reason} (first at {summary.examples[reason]})")
    return "\n".join(lines)


async def platform_trunks(settings: Settings, args: Any) -> str:
    """`switchboard trunks add-platform NAME ...` and `switchboard trunks list-platform`."""
    from tenancy.errors import TenancyError
    from tenancy.trunks import platform
    from tenancy.trunks.models import PlatformTrunk, PlatformTrunkCreate

    if not settings.database_url:
        raise StartupError("SWITCHBOARD_DATABASE_URL is not set.")
    flags = {"name": "NAME", "password": "--password-env", "max_channels": "--max-channels"}

    def describe(t: PlatformTrunk) -> str:
        user = f"user {t.username}" + (" (password sealed)" if t.has_password else "")
        return (
            f"{t.name}  {t.host}:{t.port}/{t.transport}"
            f"  allow {','.join(t.allowed_sources) or '-'}"
            f"  {user if t.username else 'no credentials'}  {','.join(t.codecs)}"
            f"  {t.max_channels} channels  {'registers' if t.register else 'no registration'}"
            f"  {t.inventory_numbers} inventory numbers"
        )

    password = None
    if getattr(args, "password_env", None):
        password = os.environ.get(args.password_env)
        if not password:
            raise StartupError(f"--password-env: ${args.password_env} is not set or empty.")
    try:
        conn = await asyncpg.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot connect to the database: {exc}") from None
    try:
        async with conn.transaction():
            if args.trunks_command == "list-platform":
                found = await platform.list_platform_trunks(conn)
                return "\n".join(describe(t) for t in found) or "no platform trunks"
            trunk = await platform.add_platform_trunk(
                conn,
                settings.master_key_bytes,
                PlatformTrunkCreate(
                    name=args.name,
                    host=args.host,
                    port=args.sip_port,
                    transport=args.transport,
                    allowed_sources=args.allow,
                    username=args.username,
                    password=password,
                    codecs=args.codec or ["PCMU", "PCMA"],
                    max_channels=args.max_channels,
                    register=args.register,
                ),
            )
    except TenancyError as exc:
        field = str(exc.extra.get("field", ""))
        where = flags.get(field) or (f"--{field.replace('_', '-')}" if field else "")
        raise StartupError(f"trunks {args.trunks_command}: {where}: {exc.detail}") from None
    finally:
        await conn.close()
    lines = [f"platform trunk added: {describe(trunk)}"]
    if trunk.inventory_numbers:
        lines.append(
            f"{trunk.inventory_numbers} inventory numbers already arrive on '{trunk.name}'."
        )
    else:
        lines.append(f"No inventory numbers name '{trunk.name}' yet (switchboard numbers import).")
    if not trunk.allowed_sources:
        lines.append("Note: no --allow networks, so calls from this carrier will be refused.")
    return "\n".join(lines)

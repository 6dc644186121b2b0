"""What every handler needs: the caller (Subject), where it came from, transactions,
pagination and Idempotency-Key handling."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.datastructures import State
from opentelemetry.sdk.trace import TracerProvider

from api import repository as repo
from api.problems import ApiError
from api.ratelimit import TokenBuckets, retry_after_header
from billing.models import Gateway
from bus.connection import Bus
from routing.client import RouterClient
from runtime.db import tenant_tx
from runtime.settings import Settings
from tenancy.auth import Authenticator
from tenancy.errors import Unauthenticated
from tenancy.models import Origin, Subject
from tenancy.numbers.provider import NumberProvider, PlatformInventory
from tenancy.vault import Vault

T = TypeVar("T")
AnyRequest = Request[Any, Any, State]


@dataclass
class ApiDeps:
    """Built by the composition root; the app reads it from `app.state.deps`."""

    settings: Settings
    pool: asyncpg.Pool
    auth: Authenticator
    readiness: Callable[[], Awaitable[dict[str, bool]]]
    tracer_provider: TracerProvider | None = None
    number_provider: NumberProvider = field(default_factory=PlatformInventory)
    router: RouterClient | None = None
    """Asks the ACD router about presence and live queues; None where no bus is wired."""
    bus: Bus | None = None
    """For the agents' softphone connections (commands to media nodes, their notices)."""
    billing: Gateway | None = None
    """Stripe (or the emulator): invoices, the customer portal, reconciliation."""
    vault: Vault = field(init=False)
    ip_limits: TokenBuckets = field(init=False)
    tenant_limits: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.ip_limits = TokenBuckets(self.settings.ip_rate, self.settings.ip_burst)
        self.tenant_limits = TokenBuckets(self.settings.tenant_rate, self.settings.tenant_burst)
        self.vault = Vault(self.settings.master_key_bytes)


def deps_of(request: AnyRequest) -> ApiDeps:
    deps: ApiDeps = request.app.state.deps
    return deps


def client_ip(request: AnyRequest) -> str | None:
    peer = request.client.host if request.client else None
    trusted = deps_of(request).settings.trusted_proxies
    if peer is None or peer not in trusted:
        return _valid_ip(peer)
    forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed(forwarded):
        if hop and hop not in trusted:
            return _valid_ip(hop)
    return _valid_ip(peer)


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


async def provide_origin(request: AnyRequest) -> Origin:
    return Origin(source_ip=client_ip(request), user_agent=request.headers.get("user-agent"))


async def provide_subject(request: AnyRequest) -> Subject:
    """Authenticate the bearer credential, then charge the tenant's rate limit."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("Send 'Authorization: Bearer <access token or API key>'.")
    deps = deps_of(request)
    subject = await deps.auth.authenticate(credential.strip())
    wait = deps.tenant_limits.take(subject.tenant_id)
    if wait:
        raise ApiError(
            429,
            "rate-limited",
            "Too many requests",
            "This tenant is over its request rate.",
            retry_after_header(wait),
        )
    return subject


@asynccontextmanager
async def transaction(request: AnyRequest, subject: Subject) -> AsyncIterator[asyncpg.Connection]:
    async with tenant_tx(deps_of(request).pool, subject.tenant_id) as conn:
        yield conn


# --- pagination -------------------------------------------------------------------------------


class Page(msgspec.Struct, Generic[T], kw_only=True):
    data: list[T]
    has_more: bool


def page_of(items: list[T], limit: int) -> Page[T]:
    """Callers fetch limit + 1 rows; the extra one only says there is more."""
    return Page(data=items[:limit], has_more=len(items) > limit)


async def list_page(
    request: AnyRequest,
    subject: Subject,
    limit: int,
    starting_after: str | None,
    fetch: Callable[..., Awaitable[list[T]]],
) -> Page[T]:
    """One cursor page: `fetch(conn, subject, limit=, after=)` runs in the tenant's transaction
    and is asked for one extra item, which only says whether there is more."""
    check_limit(limit)
    after = uuid_or_none(starting_after)
    async with transaction(request, subject) as conn:
        items = await fetch(conn, subject, limit=limit + 1, after=after)
    return page_of(items, limit)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise ApiError(422, "validation-error", "Invalid request", "limit must be 1..100.")
    return limit


# --- Idempotency-Key --------------------------------------------------------------------------

_MAX_KEY = 255


async def idempotent(
    request: AnyRequest,
    subject: Subject,
    create: Callable[[asyncpg.Connection], Awaitable[Any]],
    *,
    status: int = 201,
    require_key: bool = False,
) -> Response[bytes]:
    """Run a creating handler once per Idempotency-Key: the same key and body replay the stored
    response; the same key with another body is refused with 422. Keys are kept 24 hours."""
    key = request.headers.get("idempotency-key")
    if key is None and require_key:
        raise ApiError(
            400,
            "idempotency-key-required",
            "Idempotency-Key required",
            "This request spends money: send an Idempotency-Key header so a retry cannot "
            "buy twice.",
        )
    if key is not None and not (0 < len(key) <= _MAX_KEY and key.isprintable()):
        raise ApiError(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            f"Idempotency-Key must be 1..{_MAX_KEY} printable characters.",
        )
    body = await request.body()
    async with transaction(request, subject) as conn:
        if key is not None:
            target = request.url.path + ("?" + request.url.query if request.url.query else "")
            fingerprint = hashlib.sha256(
                request.method.encode() + b" " + target.encode() + b"\n" + body
            ).digest()
            owned = await repo.claim_key(
                conn, subject.tenant_id, key, request.method, request.url.path, fingerprint
            )
            if not owned:
                stored = await repo.stored_response(conn, subject.tenant_id, key)
                assert stored is not None
                if stored["fingerprint"] != fingerprint:
                    raise ApiError(
                        422,
                        "idempotency-key-reused",
                        "Idempotency-Key reused",
                        "This Idempotency-Key was used with a different request.",
                    )
                return Response(
                    bytes(stored["response"]),
                    status_code=stored["status_code"],
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
        result = await create(conn)
        encoded = msgspec.json.encode(result)
        if key is not None:
            await repo.store_response(conn, subject.tenant_id, key, status, encoded)
    return Response(encoded, status_code=status, media_type="application/json")


def uuid_or_none(value: str | None) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(
            422, "validation-error", "Invalid request", "starting_after must be an id."
        ) from None

"""The media node's CallDirectory, filled from the catalog (tenancy, routing) and cached.

Lookups are cached for a few seconds so a burst of INVITEs costs one query per number, and
dropped at once when the catalog says something changed (trunk, number and flow events).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg

from media.audio import AudioError, PcmAudio, render_tts
from media.directory import InboundRoute, Network, OutboundRoute, TrunkSource
from routing.flows import FlowInvalid, decode_flow
from routing.interpreter import flow_script
from runtime.db import platform_tx, tenant_tx
from tenancy import media as catalog
from tenancy.models import TenantId
from tenancy.vault import Vault

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """A small TTL + LRU cache whose concurrent misses for one key share one load."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = time.monotonic()
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            self._items.move_to_end(key)
            return hit[1]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # observed: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        self._items[key] = (now + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()


def _networks(sources: Sequence[str]) -> tuple[Network, ...]:
    out: list[Network] = []
    for source in sources:
        try:
            out.append(ipaddress.ip_network(source, strict=False))
        except ValueError:
            log.warning("trunk source %r is not a network; ignored", source)
    return tuple(out)


class CatalogDirectory:
    def __init__(
        self, pool: asyncpg.Pool, vault: Vault, master_key: bytes | None, *, ttl: float = 5.0
    ) -> None:
        self._pool = pool
        self._vault = vault
        self._master_key = master_key
        self._trunks: _Cache[str, list[TrunkSource]] = _Cache(ttl, 1)
        self._routes: _Cache[str, InboundRoute | None] = _Cache(ttl, 100_000)
        self._prompts: _Cache[tuple[UUID, UUID], PcmAudio] = _Cache(300.0, 2_000)
        self._speech: _Cache[tuple[str, str], PcmAudio] = _Cache(3600.0, 500)

    def forget(self) -> None:
        """Drop cached trunks and routes (the catalog changed)."""
        self._trunks.clear()
        self._routes.clear()

    def forget_prompts(self) -> None:
        self._prompts.clear()

    async def trunk_sources(self) -> Sequence[TrunkSource]:
        return await self._trunks.get("all", self._load_trunks)

    async def _load_trunks(self) -> list[TrunkSource]:
        recognisers = await catalog.trunk_recognisers(self._pool, self._vault, self._master_key)
        return [
            TrunkSource(
                tenant_id=r.tenant_id,
                trunk_id=r.trunk_id,
                platform_trunk=r.platform_trunk,
                networks=_networks(r.allowed_sources),
                digest_username=r.digest_username,
                digest_password=r.digest_password,
                host=r.host,
                port=r.port,
                transport=r.transport,
                register=r.register,
                register_expires=r.register_expires,
                outbound_username=r.outbound_username,
                outbound_password=r.outbound_password,
            )
            for r in recognisers
        ]

    async def inbound_route(self, e164: str) -> InboundRoute | None:
        return await self._routes.get(e164, lambda: self._load_route(e164))

    async def _load_route(self, e164: str) -> InboundRoute | None:
        async with platform_tx(self._pool) as conn:
            owner = await catalog.number_owner(conn, e164)
        if owner is None:
            return None
        script = None
        if owner.flow_id is not None:
            async with tenant_tx(self._pool, owner.tenant_id) as conn:
                document = await catalog.published_flow(conn, owner.tenant_id, owner.flow_id)
            if document is not None:
                try:
                    script = flow_script(decode_flow(document))
                except FlowInvalid:
                    log.exception("published flow %s no longer decodes", owner.flow_id)
        return InboundRoute(
            tenant_id=owner.tenant_id,
            number_id=owner.number_id,
            e164=e164,
            tenant_active=owner.tenant_status == "active",
            max_concurrent_calls=owner.max_concurrent_calls,
            platform_trunk=owner.platform_trunk,
            script=script,
        )

    async def owns_number(self, tenant_id: UUID, e164: str) -> bool:
        tenant = TenantId(tenant_id)
        async with tenant_tx(self._pool, tenant) as conn:
            return await catalog.owns_number(conn, tenant, e164)

    async def outbound_route(
        self, tenant_id: UUID, caller_id: str, trunk_id: UUID | None
    ) -> OutboundRoute | None:
        tenant = TenantId(tenant_id)
        if trunk_id is not None:
            async with tenant_tx(self._pool, tenant) as conn:
                trunk = await catalog.load_for_media(conn, tenant, trunk_id, self._vault)
            return OutboundRoute(
                trunk_name=trunk.name,
                host=trunk.host,
                port=trunk.port,
                transport=trunk.transport,
                username=trunk.outbound_username,
                password=trunk.outbound_password,
                from_domain=trunk.from_domain,
                codecs=trunk.codecs,
            )
        async with platform_tx(self._pool) as conn:
            owner = await catalog.number_owner(conn, caller_id)
            if owner is None or owner.tenant_id != tenant or owner.platform_trunk is None:
                return None
            platform = await catalog.load_platform_for_media(
                conn, owner.platform_trunk, self._master_key
            )
        return OutboundRoute(
            trunk_name=platform.name,
            host=platform.host,
            port=platform.port,
            transport=platform.transport,
            username=platform.username,
            password=platform.password,
            from_domain=None,
            codecs=platform.codecs,
        )

    async def prompt(self, tenant_id: UUID, prompt_id: UUID) -> PcmAudio:
        async def load() -> PcmAudio:
            tenant = TenantId(tenant_id)
            async with tenant_tx(self._pool, tenant) as conn:
                samples = await catalog.prompt_audio(conn, tenant, prompt_id)
            if samples is None:
                raise AudioError(f"prompt {prompt_id} is gone")
            return PcmAudio(samples=samples, duration_ms=len(samples) // 16)

        return await self._prompts.get((tenant_id, prompt_id), load)

    async def speech(self, text: str, voice: str) -> PcmAudio:
        return await self._speech.get((text, voice), lambda: render_tts(text, voice=voice))

    async def recording_key(self, tenant_id: UUID) -> bytes:
        tenant = TenantId(tenant_id)
        async with tenant_tx(self._pool, tenant) as conn:
            return await catalog.recording_key(conn, self._vault, tenant)

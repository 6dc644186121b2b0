"""The media node's CallDirectory, filled from the catalog (tenancy, routing) and cached.

Lookups are cached for a few seconds so a burst of INVITEs costs one query per number, and
dropped at once when the catalog says something changed (trunk, number and flow events; contact
events for caller lookups; queue events for hold music).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import re
import sys
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg
import httpx

from media.audio import SAMPLE_RATE, AudioError, PcmAudio, render_tts
from media.directory import (
    CallScript,
    ContactInfo,
    InboundRoute,
    Network,
    OutboundRoute,
    TrunkSource,
    VoicemailRecord,
)
from routing.flows import FlowInvalid, decode_flow
from routing.interpreter import flow_script, suspended_script
from runtime.db import platform_tx, tenant_tx
from tenancy import media as catalog
from tenancy.models import TenantId
from tenancy.vault import Vault
from tenancy.voicemail import service as voicemails

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


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
HOLD_MUSIC_NOTE_SECONDS = 0.4
HOLD_MUSIC_PEAK = 5000
"""About -16 dBFS: soft under announcements, clear through a phone line."""
# An arpeggio over C - Am - F - G, an octave up so it survives the telephone band (300-3400 Hz).
_HOLD_MUSIC_CHORDS = (
    (523.25, 659.25, 783.99),
    (440.00, 523.25, 659.25),
    (349.23, 440.00, 523.25),
    (392.00, 493.88, 587.33),
)
_HOLD_MUSIC_PATTERN = (0, 1, 2, 1, 0, 1, 2, 1)


@functools.cache
def platform_hold_music() -> PcmAudio:
    """The platform's hold music: a soft arpeggio of sine tones, 8 kHz mono PCM. Every note
    fades in and out to silence, so the piece loops without a click."""
    note_samples = int(HOLD_MUSIC_NOTE_SECONDS * SAMPLE_RATE)
    attack = SAMPLE_RATE // 50
    samples = array("h")
    for chord in _HOLD_MUSIC_CHORDS:
        for index in _HOLD_MUSIC_PATTERN:
            frequency = chord[index]
            step = 2 * math.pi * frequency / SAMPLE_RATE
            for n in range(note_samples):
                rise = min(1.0, n / attack)
                fall = 0.5 * (1 + math.cos(math.pi * n / note_samples))
                tone = math.sin(step * n) + 0.25 * math.sin(2 * step * n)
                samples.append(int(HOLD_MUSIC_PEAK / 1.25 * rise * fall * tone))
    if sys.byteorder == "big":
        samples.byteswap()
    pcm = samples.tobytes()
    return PcmAudio(samples=pcm, duration_ms=len(samples) * 1000 // SAMPLE_RATE)


class CatalogDirectory:
    """`http` sends flows' HTTP lookups (a client of its own when none is given; `aclose`
    closes that one). `allow_private_lookups` lets lookups reach private addresses: tests only.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        vault: Vault,
        master_key: bytes | None,
        *,
        ttl: float = 5.0,
        http: httpx.AsyncClient | None = None,
        allow_private_lookups: bool = False,
    ) -> None:
        self._pool = pool
        self._vault = vault
        self._master_key = master_key
        self._own_http = http is None
        # No proxies from the environment: a lookup must go to the address that was checked.
        self._http = (
            http if http is not None else httpx.AsyncClient(follow_redirects=False, trust_env=False)
        )
        self._allow_private_lookups = allow_private_lookups
        self._trunks: _Cache[str, list[TrunkSource]] = _Cache(ttl, 1)
        self._routes: _Cache[str, InboundRoute | None] = _Cache(ttl, 100_000)
        self._prompts: _Cache[tuple[UUID, UUID], PcmAudio] = _Cache(300.0, 2_000)
        self._speech: _Cache[tuple[str, str], PcmAudio] = _Cache(3600.0, 500)
        self._contacts: _Cache[tuple[UUID, str], ContactInfo | None] = _Cache(ttl, 100_000)
        self._hold_prompts: _Cache[tuple[UUID, UUID], UUID | None] = _Cache(ttl, 10_000)
        self._lookup_secrets: _Cache[UUID, bytes] = _Cache(3600.0, 10_000)

    async def aclose(self) -> None:
        """Close the HTTP client, if it is the directory's own."""
        if self._own_http:
            await self._http.aclose()

    def forget(self) -> None:
        """Drop cached trunks and routes (the catalog changed)."""
        self._trunks.clear()
        self._routes.clear()

    def forget_prompts(self) -> None:
        self._prompts.clear()

    def forget_contacts(self) -> None:
        """Drop cached caller lookups (a contact was created, changed, deleted or imported)."""
        self._contacts.clear()

    def forget_queues(self) -> None:
        """Drop which prompt each queue holds callers with (a queue changed)."""
        self._hold_prompts.clear()

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
        script: CallScript | None = None
        if owner.tenant_status == "suspended":
            script = suspended_script
        elif owner.flow_id is not None:
            async with tenant_tx(self._pool, owner.tenant_id) as conn:
                document = await catalog.published_flow(conn, owner.tenant_id, owner.flow_id)
            if document is not None:
                try:
                    script = flow_script(
                        decode_flow(document),
                        directory=self,
                        http=self._http,
                        allow_private_lookups=self._allow_private_lookups,
                    )
                except FlowInvalid:
                    log.exception("published flow %s no longer decodes", owner.flow_id)
        return InboundRoute(
            tenant_id=owner.tenant_id,
            number_id=owner.number_id,
            e164=e164,
            # Past due still works; suspended runs the notice script instead of the flow.
            tenant_active=owner.tenant_status in ("active", "past_due", "suspended"),
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

    async def contact(self, tenant_id: UUID, e164: str) -> ContactInfo | None:
        if not _E164.fullmatch(e164):
            return None  # withheld or not a phone number: nobody in the contact list
        return await self._contacts.get(
            (tenant_id, e164), lambda: self._load_contact(tenant_id, e164)
        )

    async def _load_contact(self, tenant_id: UUID, e164: str) -> ContactInfo | None:
        tenant = TenantId(tenant_id)
        async with tenant_tx(self._pool, tenant) as conn:
            found = await catalog.caller_contact(conn, tenant, e164)
        if found is None:
            return None
        return ContactInfo(
            contact_id=found.id,
            name=found.name,
            vip=found.vip,
            blocked=found.blocked,
            fields=dict(found.attributes),
        )

    async def hold_music(self, tenant_id: UUID, queue_id: UUID) -> PcmAudio:
        async def load() -> UUID | None:
            tenant = TenantId(tenant_id)
            async with tenant_tx(self._pool, tenant) as conn:
                return await catalog.hold_music_prompt(conn, tenant, queue_id)

        prompt_id = await self._hold_prompts.get((tenant_id, queue_id), load)
        if prompt_id is not None:
            try:
                return await self.prompt(tenant_id, prompt_id)
            except AudioError:
                log.warning("hold music prompt %s of queue %s is gone", prompt_id, queue_id)
        return platform_hold_music()

    async def lookup_secret(self, tenant_id: UUID) -> bytes:
        async def load() -> bytes:
            tenant = TenantId(tenant_id)
            async with tenant_tx(self._pool, tenant) as conn:
                return await catalog.lookup_secret(conn, self._vault, tenant)

        return await self._lookup_secrets.get(tenant_id, load)

    async def store_voicemail(self, tenant_id: UUID, voicemail: VoicemailRecord) -> None:
        tenant = TenantId(tenant_id)
        async with tenant_tx(self._pool, tenant) as conn:
            await voicemails.record(
                conn,
                tenant,
                voicemail_id=voicemail.voicemail_id,
                call_id=voicemail.call_id,
                mailbox=voicemail.mailbox,
                queue_id=voicemail.queue_id,
                from_number=voicemail.from_number,
                # Absolute, so the API finds the file whatever directory it runs in.
                path=voicemail.path.absolute(),
                duration_ms=voicemail.duration_ms,
                recorded_at=voicemail.recorded_at,
            )

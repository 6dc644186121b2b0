"""What the media node needs to know about tenants, as a small interface.

media knows no tenant tables: the composition root fills this from the catalog (tenancy,
routing) and caches it. A call's script (its IVR flow) also comes through here, so the node runs
whatever the routing layer hands it without importing routing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from media.audio import PcmAudio

if TYPE_CHECKING:
    from media.control import CallControl

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CallScript = Callable[["CallControl"], Awaitable[None]]
"""Runs one call's flow on the node: answer, play, collect, hang up, ..."""


@dataclass(frozen=True, slots=True)
class TrunkSource:
    """One trunk's inbound recognisers: the networks its INVITEs come from and, optionally,
    the digest user it authenticates as. A platform trunk has no tenant."""

    tenant_id: UUID | None
    trunk_id: UUID | None
    platform_trunk: str | None
    networks: tuple[Network, ...]
    digest_username: str | None = None
    digest_password: str | None = field(default=None, repr=False)
    host: str | None = None
    """Where the trunk is: pinged with OPTIONS, and registered to when `register`."""
    port: int = 5060
    transport: str = "udp"
    register: bool = False
    register_expires: int = 3600
    outbound_username: str | None = None
    outbound_password: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.platform_trunk if self.platform_trunk is not None else str(self.trunk_id)

    def serves(self, route: InboundRoute) -> bool:
        """Whether calls to `route`'s number may arrive over this trunk: the tenant's own
        trunk (BYOC), or the platform trunk the number was bought on."""
        if self.tenant_id is not None:
            return self.tenant_id == route.tenant_id
        return self.platform_trunk is not None and self.platform_trunk == route.platform_trunk


@dataclass(frozen=True, slots=True)
class InboundRoute:
    """Where a dialed number goes."""

    tenant_id: UUID
    number_id: UUID
    e164: str
    tenant_active: bool
    max_concurrent_calls: int
    platform_trunk: str | None
    script: CallScript | None
    """None when the number is not routed to a published flow."""


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """How a tenant's outbound call leaves: the trunk to send it through and its credentials."""

    trunk_name: str
    host: str
    port: int
    transport: str
    username: str | None
    password: str | None = field(repr=False)
    from_domain: str | None
    codecs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """The caller as the tenant's contact list knows them: for VIP and blocked branches and the
    agent's screen pop."""

    contact_id: UUID
    name: str
    vip: bool
    blocked: bool
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class VoicemailRecord:
    """A message a caller left: the encrypted recording on this node and what it belongs to."""

    voicemail_id: UUID
    call_id: UUID
    mailbox: str | None
    queue_id: UUID | None
    from_number: str
    path: Path
    duration_ms: int
    recorded_at: datetime


class CallDirectory(Protocol):
    async def trunk_sources(self) -> Sequence[TrunkSource]:
        """Every trunk that may send calls to this node."""
        ...

    async def inbound_route(self, e164: str) -> InboundRoute | None: ...

    async def owns_number(self, tenant_id: UUID, e164: str) -> bool:
        """Whether `e164` is one of the tenant's active numbers (outbound caller ID)."""
        ...

    async def outbound_route(
        self, tenant_id: UUID, caller_id: str, trunk_id: UUID | None
    ) -> OutboundRoute | None:
        """The tenant's trunk `trunk_id` (BYOC), else the platform trunk `caller_id` came from."""
        ...

    async def prompt(self, tenant_id: UUID, prompt_id: UUID) -> PcmAudio: ...

    async def speech(self, text: str, voice: str) -> PcmAudio: ...

    async def contact(self, tenant_id: UUID, e164: str) -> ContactInfo | None:
        """The tenant's contact calling from `e164`, if any."""
        ...

    async def hold_music(self, tenant_id: UUID, queue_id: UUID) -> PcmAudio:
        """What callers waiting in the queue hear: its own prompt, else the platform's."""
        ...

    async def lookup_secret(self, tenant_id: UUID) -> bytes:
        """The key that signs the tenant's HTTP lookups (stable; the tenant can read it)."""
        ...

    async def store_voicemail(self, tenant_id: UUID, voicemail: VoicemailRecord) -> None: ...

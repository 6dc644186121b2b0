from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from tenancy.models import _In

Transport = Literal["udp", "tcp", "tls"]
Codec = Literal["PCMU", "PCMA"]
CallerIdPolicy = Literal["tenant_numbers_only", "passthrough"]

TrunkName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Host = Annotated[
    str, msgspec.Meta(min_length=1, max_length=253, description="Hostname or IP literal")
]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Cidr = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, description="e.g. 198.51.100.0/28 or an IP")
]
Sources = Annotated[list[Cidr], msgspec.Meta(max_length=50)]
SipUser = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Codecs = Annotated[list[Codec], msgspec.Meta(min_length=1, max_length=2)]
MaxChannels = Annotated[int, msgspec.Meta(ge=1, le=1000)]
RegisterExpires = Annotated[int, msgspec.Meta(ge=60, le=3600, description="Seconds")]

_UNSET = msgspec.UNSET


# --- responses: credentials show only whether a password is set -------------------------------


class TrunkInbound(msgspec.Struct, kw_only=True):
    allowed_sources: list[str]
    digest_username: str | None
    has_password: bool


class TrunkOutbound(msgspec.Struct, kw_only=True):
    username: str | None
    has_password: bool
    from_domain: str | None


class Trunk(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    host: str
    port: int
    transport: Transport
    inbound: TrunkInbound
    outbound: TrunkOutbound
    codecs: list[Codec]
    max_channels: int
    caller_id_policy: CallerIdPolicy
    register: bool
    register_expires: int
    created_at: datetime
    updated_at: datetime


# --- requests ---------------------------------------------------------------------------------


class TrunkInboundIn(_In):
    """How the media node recognises INVITEs from this carrier: its source addresses, digest
    credentials, or both. At least one is required."""

    allowed_sources: Sources = []
    digest_username: SipUser | None = None
    digest_password: Secret | None = None
    """Write-only."""


class TrunkOutboundIn(_In):
    username: SipUser | None = None
    password: Secret | None = None
    """Write-only."""
    from_domain: Host | None = None


class TrunkCreate(_In):
    name: TrunkName
    host: Host
    inbound: TrunkInboundIn
    port: Port = 5060
    transport: Transport = "udp"
    outbound: TrunkOutboundIn = msgspec.field(default_factory=TrunkOutboundIn)
    codecs: Codecs = msgspec.field(default_factory=lambda: ["PCMU", "PCMA"])
    max_channels: MaxChannels = 30
    caller_id_policy: CallerIdPolicy = "tenant_numbers_only"
    register: bool = False
    """Register to the far end (needs outbound credentials)."""
    register_expires: RegisterExpires = 3600


class TrunkInboundUpdate(_In):
    """Only the fields sent change; a password sent as null is cleared."""

    allowed_sources: Sources | msgspec.UnsetType = _UNSET
    digest_username: SipUser | msgspec.UnsetType | None = _UNSET
    digest_password: Secret | msgspec.UnsetType | None = _UNSET


class TrunkOutboundUpdate(_In):
    """Only the fields sent change; a password sent as null is cleared."""

    username: SipUser | msgspec.UnsetType | None = _UNSET
    password: Secret | msgspec.UnsetType | None = _UNSET
    from_domain: Host | msgspec.UnsetType | None = _UNSET


class TrunkUpdate(_In):
    name: TrunkName | msgspec.UnsetType = _UNSET
    host: Host | msgspec.UnsetType = _UNSET
    port: Port | msgspec.UnsetType = _UNSET
    transport: Transport | msgspec.UnsetType = _UNSET
    inbound: TrunkInboundUpdate | msgspec.UnsetType = _UNSET
    outbound: TrunkOutboundUpdate | msgspec.UnsetType = _UNSET
    codecs: Codecs | msgspec.UnsetType = _UNSET
    max_channels: MaxChannels | msgspec.UnsetType = _UNSET
    caller_id_policy: CallerIdPolicy | msgspec.UnsetType = _UNSET
    register: bool | msgspec.UnsetType = _UNSET
    register_expires: RegisterExpires | msgspec.UnsetType = _UNSET


# --- what the media node gets -----------------------------------------------------------------


class MediaTrunk(msgspec.Struct, frozen=True, kw_only=True):
    """A tenant trunk with its credentials unsealed, for the media node only. Its repr hides
    the passwords so a log line cannot leak them."""

    tenant_id: UUID
    id: UUID
    name: str
    host: str
    port: int
    transport: Transport
    allowed_sources: tuple[str, ...]
    inbound_username: str | None
    inbound_password: str | None
    outbound_username: str | None
    outbound_password: str | None
    from_domain: str | None
    codecs: tuple[Codec, ...]
    max_channels: int
    caller_id_policy: CallerIdPolicy
    register: bool
    register_expires: int

    def __repr__(self) -> str:
        return f"MediaTrunk(id={self.id}, name={self.name!r}, host={self.host!r}, secrets=***)"


# --- platform trunks (operator-managed) -------------------------------------------------------


class PlatformTrunkCreate(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    host: str
    port: int = 5060
    transport: Transport = "udp"
    allowed_sources: list[str] = []
    username: str | None = None
    password: str | None = None
    codecs: list[Codec] = msgspec.field(default_factory=lambda: ["PCMU", "PCMA"])
    max_channels: int = 100
    register: bool = False
    register_expires: int = 3600


class PlatformTrunk(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    host: str
    port: int
    transport: Transport
    allowed_sources: list[str]
    username: str | None
    has_password: bool
    codecs: list[Codec]
    max_channels: int
    register: bool
    register_expires: int
    created_at: datetime
    inventory_numbers: int
    """Inventory numbers that name this trunk (imports may precede the trunk)."""


class MediaPlatformTrunk(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    host: str
    port: int
    transport: Transport
    allowed_sources: tuple[str, ...]
    username: str | None
    password: str | None
    codecs: tuple[Codec, ...]
    max_channels: int
    register: bool
    register_expires: int

    def __repr__(self) -> str:
        return f"MediaPlatformTrunk(name={self.name!r}, host={self.host!r}, secrets=***)"

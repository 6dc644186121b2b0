"""SSO shapes: the tenant's provider configuration as the API shows and takes it, and the
values a sign-in passes between its steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

import msgspec

from tenancy.models import Role, _In

Domain = Annotated[
    str, msgspec.Meta(min_length=1, max_length=253, description="A lowercase domain, e.g. acme.com")
]


class SsoConfig(msgspec.Struct, kw_only=True):
    issuer: str
    client_id: str
    has_client_secret: bool
    """The secret itself is write-only."""
    allowed_email_domains: list[str]
    default_role: Role
    password_login: bool
    """False: only owners may still sign in with a password. Owners never sign in through the
    provider; their password is the break-glass way in."""
    redirect_uri: str
    """Register this as the redirect URI at the identity provider."""
    start_url: str
    """Send users here to sign in."""
    created_at: datetime
    updated_at: datetime


class SsoConfigIn(_In):
    issuer: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=500,
            description="The provider's issuer URL (https); its discovery document is checked.",
        ),
    ]
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    allowed_email_domains: Annotated[list[Domain], msgspec.Meta(min_length=1, max_length=50)]
    client_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    """Write-only. Required the first time and whenever issuer or client_id change; left out,
    the stored secret is kept."""
    default_role: Role = Role.AGENT
    """The role of users created at their first sign-in. Never owner."""
    password_login: bool = True
    """False refuses password sign-in to everyone in the tenant but its owners."""


class ProviderMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What Switchboard uses of a provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    signing_algs: tuple[str, ...]
    token_auth_method: str


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the identity provider says signed in, read from a validated ID token."""

    subject: str
    email: str | None
    email_verified: bool
    name: str


@dataclass(frozen=True, kw_only=True)
class PendingLogin:
    """A claimed sign-in, with what the code exchange needs unsealed. Its repr hides them."""

    provider: ProviderMetadata
    client_id: str
    client_secret: str = field(repr=False)
    code_verifier: str = field(repr=False)
    nonce_hash: bytes = field(repr=False)
    allowed_email_domains: tuple[str, ...]
    default_role: Role

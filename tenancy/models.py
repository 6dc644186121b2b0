"""Tenancy values and the API's request/response shapes (msgspec Structs)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, NewType
from uuid import UUID

import msgspec

TenantId = NewType("TenantId", UUID)
"""A tenant's id as established by authentication. Only tenancy mints it."""


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"
    FINANCE = "finance"
    DEVELOPER = "developer"


class TenantStatus(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class UserStatus(StrEnum):
    INVITED = "invited"
    ACTIVE = "active"
    DISABLED = "disabled"


ActorType = Literal["user", "api_key", "oauth_client", "system"]

Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="An email address",
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Scope = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]+:(read|write)$", max_length=64)]


class Subject(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: established only by tenancy.auth from a verified credential."""

    tenant_id: TenantId
    actor_type: ActorType
    actor_id: UUID
    role: Role | None
    permissions: frozenset[str]
    suspended: bool = False
    """The tenant is suspended for non-payment: it may read, and settle its bill, but not change
    anything else."""

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request came from, for the audit log."""

    source_ip: str | None = None
    user_agent: str | None = None


# --- shapes -----------------------------------------------------------------------------------


class _In(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class SignupCreate(_In):
    company_name: Name
    email: Email
    password: Password
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Signup(msgspec.Struct, kw_only=True):
    tenant_id: UUID
    user_id: UUID
    status: TenantStatus
    message: str


class Tenant(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    status: TenantStatus
    plan: str
    time_zone: str
    """IANA zone the tenant's days are counted in: seat-days, number-months and reports."""
    created_at: datetime
    verified_at: datetime | None


class TenantUpdate(_In):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


class EmailTokenIn(_In):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class EmailIn(_In):
    email: Email


class LoginIn(_In):
    email: Email
    password: Password


class RefreshIn(_In):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class PasswordResetConfirm(_In):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    new_password: Password


class InvitationAccept(_In):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    password: Password
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str


class ClientToken(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class User(msgspec.Struct, kw_only=True):
    id: UUID
    email: str
    name: str
    role: Role
    status: UserStatus
    email_verified_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None


class UserInvite(_In):
    email: Email
    role: Role
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class UserUpdate(_In):
    name: Annotated[str, msgspec.Meta(max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    role: Role | msgspec.UnsetType = msgspec.UNSET
    status: Literal["active", "disabled"] | msgspec.UnsetType = msgspec.UNSET


class Me(msgspec.Struct, kw_only=True):
    tenant_id: UUID
    actor_type: str
    actor_id: UUID
    role: Role | None
    permissions: list[str]


class ApiKey(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    scopes: list[str]
    created_by: UUID
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreate(_In):
    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=64)]


class ApiKeyCreated(ApiKey, kw_only=True):
    secret: str
    """The full key. Shown once; only its hash is kept."""


class OAuthClient(msgspec.Struct, kw_only=True):
    id: UUID
    client_id: str
    name: str
    scopes: list[str]
    created_by: UUID
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class OAuthClientCreate(_In):
    name: Name
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=64)]


class OAuthClientCreated(OAuthClient, kw_only=True):
    client_secret: str


class AuditEntry(msgspec.Struct, kw_only=True):
    id: UUID
    at: datetime
    actor_type: str
    actor_id: UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    source_ip: str | None
    details: dict[str, object]

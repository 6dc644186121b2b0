"""Events tenancy publishes (through the outbox). Subjects: tenant.<tenant_id>.<resource>...."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class TenantCreated(Event, frozen=True, kw_only=True, tag="tenant.created"):
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.tenant.created"


class TenantVerified(Event, frozen=True, kw_only=True, tag="tenant.verified"):
    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.tenant.verified"


class TenantUpdated(Event, frozen=True, kw_only=True, tag="tenant.updated"):
    name: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.tenant.updated"


class TenantStatusChanged(Event, frozen=True, kw_only=True, tag="tenant.status_changed"):
    """The tenant became active, past_due, suspended or closed; `reason` says why (for billing
    changes: the Stripe invoice or the grace period that caused it)."""

    status: str
    previous: str
    reason: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.tenant.status_changed"


class UserCreated(Event, frozen=True, kw_only=True, tag="user.created"):
    """A user can now sign in: the owner at verification, an invitee on acceptance."""

    user_id: UUID
    role: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.user.{self.user_id}.created"


class UserInvited(Event, frozen=True, kw_only=True, tag="user.invited"):
    user_id: UUID
    role: str
    invited_by: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.user.{self.user_id}.invited"


class UserUpdated(Event, frozen=True, kw_only=True, tag="user.updated"):
    user_id: UUID
    role: str
    status: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.user.{self.user_id}.updated"


class ApiKeyCreated(Event, frozen=True, kw_only=True, tag="api_key.created"):
    api_key_id: UUID
    scopes: list[str]

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.api_key.{self.api_key_id}.created"


class ApiKeyRevoked(Event, frozen=True, kw_only=True, tag="api_key.revoked"):
    api_key_id: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.api_key.{self.api_key_id}.revoked"


class OAuthClientCreated(Event, frozen=True, kw_only=True, tag="oauth_client.created"):
    client_id: UUID
    scopes: list[str]

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.oauth_client.{self.client_id}.created"


class OAuthClientRevoked(Event, frozen=True, kw_only=True, tag="oauth_client.revoked"):
    client_id: UUID

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.oauth_client.{self.client_id}.revoked"


TENANCY_EVENTS: tuple[type[Event], ...] = (
    TenantCreated,
    TenantVerified,
    TenantUpdated,
    TenantStatusChanged,
    UserCreated,
    UserInvited,
    UserUpdated,
    ApiKeyCreated,
    ApiKeyRevoked,
    OAuthClientCreated,
    OAuthClientRevoked,
)

codec = EventCodec(TENANCY_EVENTS)

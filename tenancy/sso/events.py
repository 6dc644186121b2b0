"""SSO events. Subjects: tenant.<tenant_id>.sso.<verb>. They never carry the client secret."""

from __future__ import annotations

from bus.events import Event, EventCodec


class SsoConfigured(Event, frozen=True, kw_only=True, tag="sso.configured"):
    """The tenant set or changed its identity provider."""

    issuer: str
    password_login: bool

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.sso.configured"


class SsoRemoved(Event, frozen=True, kw_only=True, tag="sso.removed"):
    """Single sign-on is off; password sign-in is open to everyone again."""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.sso.removed"


codec = EventCodec((SsoConfigured, SsoRemoved))

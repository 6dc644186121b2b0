"""Contact events. Subjects: tenant.<tenant_id>.contact.<contact_id>.<verb>, and
tenant.<tenant_id>.contacts.<import_id>.imported for a bulk import (one event, not one per row:
consumers that cache lookups by phone drop the tenant's cache on it)."""

from __future__ import annotations

from uuid import UUID

from bus.events import Event, EventCodec


class ContactCreated(Event, frozen=True, kw_only=True, tag="contact.created"):
    contact_id: UUID
    phone: str
    vip: bool
    blocked: bool

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.contact.{self.contact_id}.created"


class ContactUpdated(Event, frozen=True, kw_only=True, tag="contact.updated"):
    contact_id: UUID
    phone: str
    previous_phone: str | None
    """Set when the phone changed, so a cache keyed by the old number can drop it."""
    vip: bool
    blocked: bool
    fields: list[str]
    """The fields whose value changed."""

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.contact.{self.contact_id}.updated"


class ContactDeleted(Event, frozen=True, kw_only=True, tag="contact.deleted"):
    contact_id: UUID
    phone: str

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.contact.{self.contact_id}.deleted"


class ContactsImported(Event, frozen=True, kw_only=True, tag="contacts.imported"):
    import_id: UUID
    created: int
    updated: int
    unchanged: int
    rejected: int

    def subject(self) -> str:
        return f"tenant.{self.tenant_id}.contacts.{self.import_id}.imported"


codec = EventCodec((ContactCreated, ContactUpdated, ContactDeleted, ContactsImported))

"""Contact rules: one contact per phone (E.164) in a tenant; bulk CSV import by phone; the
lookup the IVR runs on an incoming call."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from bus.events import Event
from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy.contacts import events as ev
from tenancy.contacts import repository as repo
from tenancy.contacts.importer import ImportRow, read_csv
from tenancy.contacts.models import (
    MAX_ATTRIBUTES,
    Contact,
    ContactCreate,
    ContactImport,
    ContactQuery,
    ContactUpdate,
    ImportRowError,
)
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Subject, TenantId
from tenancy.numbers.e164 import parse_e164
from tenancy.service import audit_by, require

UPSERT_BATCH = 1000


def to_contact(row: asyncpg.Record) -> Contact:
    return Contact(
        id=row["id"],
        phone=row["phone"],
        name=row["name"],
        vip=row["vip"],
        blocked=row["blocked"],
        attributes=dict(row["attributes"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def normalise_phone(raw: str, country: str | None) -> str:
    if country is not None and not (len(country) == 2 and country.isascii() and country.isalpha()):
        raise InvalidInput("country must be an ISO 3166-1 alpha-2 code.", field="country")
    return parse_e164(raw, region=country.upper() if country else None, field="phone").e164


async def _publish(conn: asyncpg.Connection, event: Event) -> None:
    await enqueue(conn, event, ev.codec)


async def _taken(conn: asyncpg.Connection, tenant_id: TenantId, phone: str) -> Conflict:
    other = await repo.lookup_by_phone(conn, tenant_id, phone)
    holder = f"Contact {other['id']}" if other is not None else "Another contact"
    return Conflict(f"{holder} already has the phone {phone}.", field="phone")


async def create_contact(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: ContactCreate
) -> Contact:
    require(subject, "contacts:write")
    phone = normalise_phone(data.phone, data.country)
    contact_id = new_id()
    row = await repo.insert_contact(
        conn,
        subject.tenant_id,
        contact_id=contact_id,
        phone=phone,
        name=data.name.strip(),
        vip=data.vip,
        blocked=data.blocked,
        attributes=data.attributes,
    )
    if row is None:
        raise await _taken(conn, subject.tenant_id, phone)
    await _publish(
        conn,
        ev.ContactCreated(
            tenant_id=subject.tenant_id,
            contact_id=contact_id,
            phone=phone,
            vip=row["vip"],
            blocked=row["blocked"],
        ),
    )
    await audit_by(conn, subject, origin, "contact.created", "contact", contact_id)
    return to_contact(row)


async def list_contacts(
    conn: asyncpg.Connection,
    subject: Subject,
    query: ContactQuery,
    *,
    limit: int,
    after: UUID | None,
) -> list[Contact]:
    require(subject, "contacts:read")
    if query.country is not None and query.phone is None:
        raise InvalidInput("country only applies together with phone.", field="country")
    phone = normalise_phone(query.phone, query.country) if query.phone is not None else None
    rows = await repo.list_contacts(
        conn,
        subject.tenant_id,
        phone=phone,
        vip=query.vip,
        blocked=query.blocked,
        limit=limit,
        after=after,
    )
    return [to_contact(r) for r in rows]


async def get_contact(conn: asyncpg.Connection, subject: Subject, contact_id: UUID) -> Contact:
    require(subject, "contacts:read")
    row = await repo.get_contact(conn, subject.tenant_id, contact_id)
    if row is None:
        raise NotFound("Contact not found.")
    return to_contact(row)


async def update_contact(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    contact_id: UUID,
    data: ContactUpdate,
) -> Contact:
    require(subject, "contacts:write")
    wanted: dict[str, Any] = {}
    if data.phone is not msgspec.UNSET:
        country = None if data.country is msgspec.UNSET else data.country
        wanted["phone"] = normalise_phone(data.phone, country)
    elif data.country is not msgspec.UNSET:
        raise InvalidInput("country only applies together with phone.", field="country")
    if data.name is not msgspec.UNSET:
        wanted["name"] = data.name.strip()
    for name in ("vip", "blocked", "attributes"):
        if (value := getattr(data, name)) is not msgspec.UNSET:
            wanted[name] = value
    current = await repo.get_contact(conn, subject.tenant_id, contact_id, for_update=True)
    if current is None:
        raise NotFound("Contact not found.")
    changes = {k: v for k, v in wanted.items() if current[k] != v}
    if not changes:
        return to_contact(current)
    try:
        row = await repo.update_contact(conn, subject.tenant_id, contact_id, **changes)
    except asyncpg.UniqueViolationError:
        # The transaction is spoiled either way; the request answers 409 and rolls it back.
        raise Conflict(
            f"Another contact already has the phone {changes['phone']}.", field="phone"
        ) from None
    assert row is not None
    await _publish(
        conn,
        ev.ContactUpdated(
            tenant_id=subject.tenant_id,
            contact_id=contact_id,
            phone=row["phone"],
            previous_phone=current["phone"] if "phone" in changes else None,
            vip=row["vip"],
            blocked=row["blocked"],
            fields=sorted(changes),
        ),
    )
    await audit_by(
        conn, subject, origin, "contact.updated", "contact", contact_id, fields=sorted(changes)
    )
    return to_contact(row)


async def delete_contact(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, contact_id: UUID
) -> None:
    require(subject, "contacts:write")
    row = await repo.delete_contact(conn, subject.tenant_id, contact_id)
    if row is None:
        raise NotFound("Contact not found.")
    await _publish(
        conn,
        ev.ContactDeleted(tenant_id=subject.tenant_id, contact_id=contact_id, phone=row["phone"]),
    )
    await audit_by(conn, subject, origin, "contact.deleted", "contact", contact_id)


async def lookup(conn: asyncpg.Connection, tenant_id: TenantId, e164: str) -> Contact | None:
    """The contact calling from `e164` (already E.164), for the IVR's VIP / blocked branches
    and the agent's screen pop. Internal callers only: there is no subject to check."""
    row = await repo.lookup_by_phone(conn, tenant_id, e164)
    return to_contact(row) if row is not None else None


def _merged(
    row: ImportRow, current: asyncpg.Record | None
) -> tuple[str, bool, bool, dict[str, str]]:
    """What the contact says once the row is applied: columns the file lacks keep their value."""
    attributes: dict[str, str] = dict(current["attributes"]) if current is not None else {}
    for key in row.drop_attributes:
        attributes.pop(key, None)
    attributes.update(row.set_attributes)

    def keep(value: Any, column: str, default: Any) -> Any:
        if value is not None:
            return value
        return current[column] if current is not None else default

    return (
        keep(row.name, "name", ""),
        keep(row.vip, "vip", False),
        keep(row.blocked, "blocked", False),
        attributes,
    )


async def import_contacts(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: bytes
) -> ContactImport:
    """Upsert every valid row by phone and report the others; one event for the import."""
    require(subject, "contacts:write")
    parsed = read_csv(data)
    errors = list(parsed.errors)
    existing = {
        r["phone"]: r
        for r in await repo.contacts_by_phone(
            conn, subject.tenant_id, [row.phone for row in parsed.rows]
        )
    }
    upserts: list[tuple[UUID, str, str, bool, bool, dict[str, str]]] = []
    for row in parsed.rows:
        name, vip, blocked, attributes = _merged(row, existing.get(row.phone))
        if len(attributes) > MAX_ATTRIBUTES:
            errors.append(
                ImportRowError(
                    line=row.line,
                    field="attributes",
                    message=f"The contact would have {len(attributes)} attributes; at most "
                    f"{MAX_ATTRIBUTES}.",
                )
            )
            continue
        upserts.append((new_id(), row.phone, name, vip, blocked, attributes))
    new_ids = {u[0] for u in upserts}
    created = updated = 0
    for start in range(0, len(upserts), UPSERT_BATCH):
        for r in await repo.upsert_contacts(
            conn, subject.tenant_id, upserts[start : start + UPSERT_BATCH]
        ):
            if r["id"] in new_ids:
                created += 1
            else:
                updated += 1
    errors.sort(key=lambda e: e.line)
    result = ContactImport(
        created=created,
        updated=updated,
        unchanged=len(upserts) - created - updated,
        errors=errors,
    )
    import_id = new_id()
    rejected = len({e.line for e in errors})
    await _publish(
        conn,
        ev.ContactsImported(
            tenant_id=subject.tenant_id,
            import_id=import_id,
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
            rejected=rejected,
        ),
    )
    await audit_by(
        conn,
        subject,
        origin,
        "contacts.imported",
        "contact_import",
        import_id,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        rejected=rejected,
    )
    return result

"""Number rules: search, purchase within the plan, relabel, release into quarantine."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import msgspec

from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy.errors import InvalidInput, NotFound
from tenancy.models import Origin, Subject
from tenancy.numbers import events as ev
from tenancy.numbers import repository as repo
from tenancy.numbers.e164 import parse_e164
from tenancy.numbers.models import (
    AvailableNumber,
    Number,
    NumberPurchase,
    NumberQuery,
    NumberUpdate,
)
from tenancy.numbers.provider import NumberProvider, NumberUnavailable
from tenancy.plans import enforce_limit
from tenancy.service import audit_by, require


def to_number(row: asyncpg.Record) -> Number:
    return Number(
        id=row["id"],
        e164=row["e164"],
        country=row["country"],
        capabilities=list(row["capabilities"]),
        provider=row["provider"],
        flow_id=row["flow_id"],
        label=row["label"],
        purchased_at=row["purchased_at"],
    )


def check_query(query: NumberQuery) -> NumberQuery:
    if query.prefix is not None:
        prefix = query.prefix if query.prefix.startswith("+") else "+" + query.prefix
        if not prefix[1:].isdigit() or len(prefix) > 16:
            raise InvalidInput("prefix must be digits after an optional +.", field="prefix")
        query = msgspec.structs.replace(query, prefix=prefix)
    for name in ("area_code", "contains"):
        value = getattr(query, name)
        if value is not None and not (value.isdigit() and len(value) <= 15):
            raise InvalidInput(f"{name} must be 1-15 digits.", field=name)
    if query.country is not None and not (len(query.country) == 2 and query.country.isalpha()):
        raise InvalidInput("country must be an ISO 3166-1 alpha-2 code.", field="country")
    if not 1 <= query.limit <= 100:
        raise InvalidInput("limit must be 1..100.", field="limit")
    return msgspec.structs.replace(query, country=query.country.upper() if query.country else None)


async def search(
    conn: asyncpg.Connection, provider: NumberProvider, subject: Subject, query: NumberQuery
) -> list[AvailableNumber]:
    require(subject, "numbers:read")
    return await provider.search(conn, check_query(query))


async def purchase(
    conn: asyncpg.Connection,
    provider: NumberProvider,
    subject: Subject,
    origin: Origin,
    data: NumberPurchase,
) -> Number:
    require(subject, "numbers:write")
    parsed = parse_e164(data.e164)
    await enforce_limit(conn, subject.tenant_id, "numbers", repo.COUNT_ACTIVE)
    taken = await provider.acquire(conn, parsed.e164)
    number_id = new_id()
    try:
        row = await repo.insert_number(
            conn,
            subject.tenant_id,
            number_id=number_id,
            e164=taken.e164,
            provider=provider.name,
            country=taken.country,
            capabilities=taken.capabilities,
            label=data.label.strip(),
        )
    except asyncpg.UniqueViolationError:
        raise NumberUnavailable(f"{parsed.e164} is not available.", field="e164") from None
    await enqueue(
        conn,
        ev.NumberPurchased(
            tenant_id=subject.tenant_id,
            number_id=number_id,
            e164=taken.e164,
            provider=provider.name,
            purchased_at=row["purchased_at"],
        ),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "number.purchased", "number", number_id, e164=taken.e164)
    return to_number(row)


async def list_numbers(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Number]:
    require(subject, "numbers:read")
    rows = await repo.list_numbers(conn, subject.tenant_id, limit=limit, after=after)
    return [to_number(r) for r in rows]


async def get_number(conn: asyncpg.Connection, subject: Subject, number_id: UUID) -> Number:
    require(subject, "numbers:read")
    row = await repo.get_number(conn, subject.tenant_id, number_id)
    if row is None:
        raise NotFound("Number not found.")
    return to_number(row)


async def update_number(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, number_id: UUID, data: NumberUpdate
) -> Number:
    require(subject, "numbers:write")
    if data.label is msgspec.UNSET:
        return await get_number(conn, subject, number_id)
    row = await repo.update_number(conn, subject.tenant_id, number_id, label=data.label.strip())
    if row is None:
        raise NotFound("Number not found.")
    await audit_by(conn, subject, origin, "number.updated", "number", number_id)
    return to_number(row)


async def release(
    conn: asyncpg.Connection,
    provider: NumberProvider,
    subject: Subject,
    origin: Origin,
    number_id: UUID,
) -> None:
    require(subject, "numbers:write")
    row = await repo.mark_released(conn, subject.tenant_id, number_id)
    if row is None:
        raise NotFound("Number not found.")
    await provider.release(conn, row["e164"])
    await enqueue(
        conn,
        ev.NumberReleased(
            tenant_id=subject.tenant_id,
            number_id=number_id,
            e164=row["e164"],
            released_at=row["released_at"],
        ),
        ev.codec,
    )
    await audit_by(conn, subject, origin, "number.released", "number", number_id, e164=row["e164"])

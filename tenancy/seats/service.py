"""Seat rules: within the plan; only agents (and supervisors, who also take calls) hold one."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from bus.events import Event
from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy import repository as accounts
from tenancy.errors import Conflict, InvalidInput, NotFound
from tenancy.models import Origin, Role, Subject
from tenancy.plans import enforce_limit
from tenancy.seats import events as ev
from tenancy.seats import repository as repo
from tenancy.seats.models import Seat, SeatCreate
from tenancy.service import audit_by, require

SEAT_ROLES = {Role.AGENT, Role.SUPERVISOR}


def to_seat(row: asyncpg.Record) -> Seat:
    return Seat(
        id=row["id"],
        label=row["label"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        assigned_at=row["assigned_at"],
    )


async def _publish(conn: asyncpg.Connection, event: Event) -> None:
    await enqueue(conn, event, ev.codec)


async def create_seat(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: SeatCreate
) -> Seat:
    require(subject, "seats:write")
    await enforce_limit(conn, subject.tenant_id, "seats", repo.COUNT_ACTIVE)
    seat_id = new_id()
    row = await repo.insert_seat(conn, subject.tenant_id, seat_id, data.label.strip())
    await _publish(
        conn,
        ev.SeatCreated(tenant_id=subject.tenant_id, seat_id=seat_id, created_at=row["created_at"]),
    )
    await audit_by(conn, subject, origin, "seat.created", "seat", seat_id)
    if data.user_id is not None:
        return await assign(conn, subject, origin, seat_id, data.user_id)
    return to_seat(row)


async def list_seats(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[Seat]:
    require(subject, "seats:read")
    return [
        to_seat(r) for r in await repo.list_seats(conn, subject.tenant_id, limit=limit, after=after)
    ]


async def get_seat(conn: asyncpg.Connection, subject: Subject, seat_id: UUID) -> Seat:
    require(subject, "seats:read")
    row = await repo.get_seat(conn, subject.tenant_id, seat_id)
    if row is None:
        raise NotFound("Seat not found.")
    return to_seat(row)


async def assign(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, seat_id: UUID, user_id: UUID | None
) -> Seat:
    """Give the seat to an agent (or take it back with None). Moving a seat between agents
    ends one assignment and starts the next, each with its own event."""
    require(subject, "seats:write")
    seat = await repo.get_seat(conn, subject.tenant_id, seat_id)
    if seat is None:
        raise NotFound("Seat not found.")
    if seat["user_id"] == user_id:
        return to_seat(seat)
    now = datetime.now(UTC)
    if user_id is not None:
        user = await accounts.get_user(conn, subject.tenant_id, user_id)
        if user is None:
            raise InvalidInput("No such user in this tenant.", field="user_id")
        if Role(user["role"]) not in SEAT_ROLES:
            raise InvalidInput(
                f"Seats are for agents and supervisors; this user is {user['role']}.",
                field="user_id",
            )
        if user["status"] == "disabled":
            raise InvalidInput("This user is disabled.", field="user_id")
        held = await repo.seat_of_user(conn, subject.tenant_id, user_id)
        if held is not None:
            raise Conflict(f"This user already holds seat {held['id']}.", field="user_id")
    if seat["user_id"] is not None:
        await _publish(
            conn,
            ev.SeatUnassigned(
                tenant_id=subject.tenant_id,
                seat_id=seat_id,
                user_id=seat["user_id"],
                unassigned_at=now,
            ),
        )
    row = await repo.set_user(conn, subject.tenant_id, seat_id, user_id)
    if user_id is not None:
        await _publish(
            conn,
            ev.SeatAssigned(
                tenant_id=subject.tenant_id,
                seat_id=seat_id,
                user_id=user_id,
                assigned_at=row["assigned_at"],
            ),
        )
    await audit_by(
        conn,
        subject,
        origin,
        "seat.assigned" if user_id else "seat.unassigned",
        "seat",
        seat_id,
        user_id=str(user_id or seat["user_id"]),
    )
    return to_seat(row)


async def release(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, seat_id: UUID
) -> None:
    require(subject, "seats:write")
    seat = await repo.get_seat(conn, subject.tenant_id, seat_id)
    if seat is None:
        raise NotFound("Seat not found.")
    if seat["user_id"] is not None:
        await assign(conn, subject, origin, seat_id, None)
    row = await repo.release_seat(conn, subject.tenant_id, seat_id)
    await _publish(
        conn,
        ev.SeatReleased(
            tenant_id=subject.tenant_id, seat_id=seat_id, released_at=row["released_at"]
        ),
    )
    await audit_by(conn, subject, origin, "seat.released", "seat", seat_id)

"""Numbers (search, purchase, relabel, release) and seats."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Response, delete, get, patch, post, put
from litestar.params import Parameter

from api.context import (
    AnyRequest,
    Page,
    deps_of,
    idempotent,
    list_page,
    transaction,
)
from api.controllers.tenant import _RESPONSES, After, IdempotencyKey, Limit, TenantScoped
from tenancy.models import Origin, Subject
from tenancy.numbers import service as numbers
from tenancy.numbers.models import (
    AvailableNumbers,
    Capability,
    Number,
    NumberPurchase,
    NumberQuery,
    NumberUpdate,
)
from tenancy.seats import service as seats
from tenancy.seats.models import Seat, SeatAssign, SeatCreate

RequiredIdempotencyKey = Annotated[
    str,
    Parameter(
        header="Idempotency-Key",
        required=True,
        description="Required: a retry with the same key cannot buy twice.",
    ),
]


class NumberController(TenantScoped):
    path = "/v1/numbers"
    tags = ["numbers"]

    @get("/available", responses=_RESPONSES, summary="Search numbers available to buy")
    async def search(
        self,
        request: AnyRequest,
        subject: Subject,
        country: str | None = None,
        area_code: str | None = None,
        prefix: str | None = None,
        contains: str | None = None,
        capability: Capability | None = None,
        limit: Limit = 20,
    ) -> AvailableNumbers:
        query = NumberQuery(
            country=country,
            area_code=area_code,
            prefix=prefix,
            contains=contains,
            capability=capability,
            limit=limit,
        )
        async with transaction(request, subject) as conn:
            found = await numbers.search(conn, deps_of(request).number_provider, subject, query)
        return AvailableNumbers(data=found)

    @post("/", responses=_RESPONSES, summary="Buy a number", status_code=201)
    async def purchase(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: NumberPurchase,
        idempotency_key: RequiredIdempotencyKey,
    ) -> Response[Number]:
        provider = deps_of(request).number_provider
        return await idempotent(  # type: ignore[return-value]
            request,
            subject,
            lambda conn: numbers.purchase(conn, provider, subject, origin, data),
            require_key=True,
        )

    @get("/", responses=_RESPONSES, summary="The tenant's numbers")
    async def list_numbers(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Number]:
        return await list_page(request, subject, limit, starting_after, numbers.list_numbers)

    @get("/{number_id:uuid}", responses=_RESPONSES, summary="Get a number")
    async def get_number(self, request: AnyRequest, subject: Subject, number_id: UUID) -> Number:
        async with transaction(request, subject) as conn:
            return await numbers.get_number(conn, subject, number_id)

    @patch("/{number_id:uuid}", responses=_RESPONSES, summary="Relabel a number")
    async def update_number(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        number_id: UUID,
        data: NumberUpdate,
    ) -> Number:
        async with transaction(request, subject) as conn:
            return await numbers.update_number(conn, subject, origin, number_id, data)

    @delete(
        "/{number_id:uuid}",
        responses=_RESPONSES,
        summary="Release a number (quarantined 30 days, then back to inventory)",
    )
    async def release(
        self, request: AnyRequest, subject: Subject, origin: Origin, number_id: UUID
    ) -> None:
        provider = deps_of(request).number_provider
        async with transaction(request, subject) as conn:
            await numbers.release(conn, provider, subject, origin, number_id)


class SeatController(TenantScoped):
    path = "/v1/seats"
    tags = ["seats"]

    @post("/", responses=_RESPONSES, summary="Create a seat (optionally assigned)", status_code=201)
    async def create_seat(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: SeatCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Seat]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: seats.create_seat(conn, subject, origin, data)
        )

    @get("/", responses=_RESPONSES, summary="The tenant's seats")
    async def list_seats(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Seat]:
        return await list_page(request, subject, limit, starting_after, seats.list_seats)

    @get("/{seat_id:uuid}", responses=_RESPONSES, summary="Get a seat")
    async def get_seat(self, request: AnyRequest, subject: Subject, seat_id: UUID) -> Seat:
        async with transaction(request, subject) as conn:
            return await seats.get_seat(conn, subject, seat_id)

    @put("/{seat_id:uuid}/user", responses=_RESPONSES, summary="Assign or unassign the seat")
    async def assign(
        self, request: AnyRequest, subject: Subject, origin: Origin, seat_id: UUID, data: SeatAssign
    ) -> Seat:
        async with transaction(request, subject) as conn:
            return await seats.assign(conn, subject, origin, seat_id, data.user_id)

    @delete("/{seat_id:uuid}", responses=_RESPONSES, summary="Release a seat")
    async def release(
        self, request: AnyRequest, subject: Subject, origin: Origin, seat_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await seats.release(conn, subject, origin, seat_id)

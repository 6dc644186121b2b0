"""Contacts: CRUD, lookup by phone, and CSV import."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Response, delete, get, patch, post
from litestar.params import Parameter

from api.context import (
    AnyRequest,
    Page,
    idempotent,
    list_page,
    transaction,
)
from api.controllers.tenant import _RESPONSES, After, IdempotencyKey, Limit, TenantScoped
from api.problems import ApiError, problem_spec
from tenancy.contacts import service as contacts
from tenancy.contacts.importer import MAX_ROWS
from tenancy.contacts.models import (
    Contact,
    ContactCreate,
    ContactImport,
    ContactQuery,
    ContactUpdate,
)
from tenancy.models import Origin, Subject

MAX_IMPORT_BYTES = 5 * 1024 * 1024
CSV = "text/csv"

PhoneFilter = Annotated[
    str | None,
    Parameter(description="Exact match after normalising to E.164 (national format needs country)"),
]
CountryFilter = Annotated[
    str | None, Parameter(description="ISO 3166-1 alpha-2 region for a national-format phone")
]
_IMPORT_DESCRIPTION = f"""Send the file as the request body with `Content-Type: {CSV}` (UTF-8,
at most {MAX_IMPORT_BYTES // (1024 * 1024)} MiB and {MAX_ROWS} rows). The header names the
columns, in any order: `phone` (required), `name`, `vip`, `blocked` (true/false/yes/no/1/0, empty
is false), `country` (the region a national-format phone is dialled in) and `attr_<key>` (an
attribute; an empty cell removes it). Rows are upserted by phone; a column the header lacks leaves
existing contacts' value as it is. Valid rows are applied and invalid rows are reported in
`errors` with their line and column, all with status 200; 422 means the file itself is unusable
(not UTF-8 CSV, no `phone` column, unknown column, no rows) and nothing was stored."""


class ContactController(TenantScoped):
    path = "/v1/contacts"
    tags = ["contacts"]

    @post("/", responses=_RESPONSES, summary="Create a contact", status_code=201)
    async def create_contact(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: ContactCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Contact]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: contacts.create_contact(conn, subject, origin, data)
        )

    @get(
        "/", responses=_RESPONSES, summary="The tenant's contacts, optionally by phone/vip/blocked"
    )
    async def list_contacts(
        self,
        request: AnyRequest,
        subject: Subject,
        phone: PhoneFilter = None,
        country: CountryFilter = None,
        vip: bool | None = None,
        blocked: bool | None = None,
        limit: Limit = 20,
        starting_after: After = None,
    ) -> Page[Contact]:
        query = ContactQuery(phone=phone, country=country, vip=vip, blocked=blocked)
        return await list_page(
            request,
            subject,
            limit,
            starting_after,
            lambda conn, subject, **page: contacts.list_contacts(conn, subject, query, **page),
        )

    @post(
        "/import",
        responses={
            **_RESPONSES,
            415: problem_spec(f"The body is not {CSV}"),
        },
        summary=f"Import contacts from a CSV file sent as the request body ({CSV})",
        description=_IMPORT_DESCRIPTION,
        status_code=200,
        request_max_body_size=MAX_IMPORT_BYTES,
    )
    async def import_contacts(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ContactImport]:
        media_type, _ = request.content_type
        if media_type != CSV:
            raise ApiError(
                415,
                "unsupported-media-type",
                "Unsupported media type",
                f"Send the CSV file as the request body with Content-Type: {CSV}.",
            )
        body = await request.body()
        return await idempotent(  # type: ignore[return-value]
            request,
            subject,
            lambda conn: contacts.import_contacts(conn, subject, origin, body),
            status=200,
        )

    @get("/{contact_id:uuid}", responses=_RESPONSES, summary="Get a contact")
    async def get_contact(self, request: AnyRequest, subject: Subject, contact_id: UUID) -> Contact:
        async with transaction(request, subject) as conn:
            return await contacts.get_contact(conn, subject, contact_id)

    @patch(
        "/{contact_id:uuid}",
        responses=_RESPONSES,
        summary="Change a contact (attributes, if sent, replace the whole map)",
    )
    async def update_contact(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        contact_id: UUID,
        data: ContactUpdate,
    ) -> Contact:
        async with transaction(request, subject) as conn:
            return await contacts.update_contact(conn, subject, origin, contact_id, data)

    @delete("/{contact_id:uuid}", responses=_RESPONSES, summary="Delete a contact")
    async def delete_contact(
        self, request: AnyRequest, subject: Subject, origin: Origin, contact_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await contacts.delete_contact(conn, subject, origin, contact_id)

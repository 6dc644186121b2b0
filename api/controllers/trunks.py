"""Tenants' own SIP trunks (BYOC). Passwords go in, never come out."""

from __future__ import annotations

from uuid import UUID

from litestar import Response, delete, get, patch, post

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
from tenancy.trunks import service as trunks
from tenancy.trunks.models import Trunk, TrunkCreate, TrunkUpdate


class TrunkController(TenantScoped):
    path = "/v1/trunks"
    tags = ["trunks"]

    @post("/", responses=_RESPONSES, summary="Add a trunk to your own carrier", status_code=201)
    async def create_trunk(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: TrunkCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Trunk]:
        deps = deps_of(request)
        return await idempotent(  # type: ignore[return-value]
            request,
            subject,
            lambda conn: trunks.create_trunk(
                conn,
                deps.vault,
                subject,
                origin,
                data,
                allow_private=deps.settings.test_mode,
            ),
        )

    @get("/", responses=_RESPONSES, summary="The tenant's trunks")
    async def list_trunks(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Trunk]:
        return await list_page(request, subject, limit, starting_after, trunks.list_trunks)

    @get("/{trunk_id:uuid}", responses=_RESPONSES, summary="Get a trunk (never its passwords)")
    async def get_trunk(self, request: AnyRequest, subject: Subject, trunk_id: UUID) -> Trunk:
        async with transaction(request, subject) as conn:
            return await trunks.get_trunk(conn, subject, trunk_id)

    @patch(
        "/{trunk_id:uuid}",
        responses=_RESPONSES,
        summary="Change a trunk; a password sent replaces the stored one, null clears it",
    )
    async def update_trunk(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        trunk_id: UUID,
        data: TrunkUpdate,
    ) -> Trunk:
        deps = deps_of(request)
        async with transaction(request, subject) as conn:
            return await trunks.update_trunk(
                conn,
                deps.vault,
                subject,
                origin,
                trunk_id,
                data,
                allow_private=deps.settings.test_mode,
            )

    @delete("/{trunk_id:uuid}", responses=_RESPONSES, summary="Delete a trunk and its credentials")
    async def delete_trunk(
        self, request: AnyRequest, subject: Subject, origin: Origin, trunk_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await trunks.delete_trunk(conn, subject, origin, trunk_id)

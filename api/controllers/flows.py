"""IVR flows: drafts, published versions, and routing numbers to them."""

from __future__ import annotations

from uuid import UUID

from litestar import Response, delete, get, patch, post, put

from api.context import (
    AnyRequest,
    Page,
    idempotent,
    list_page,
    transaction,
)
from api.controllers.tenant import _RESPONSES, After, IdempotencyKey, Limit, TenantScoped
from routing import service as flows
from routing.models import Flow, FlowCreate, FlowUpdate, FlowVersion, NumberRoute
from tenancy.models import Origin, Subject
from tenancy.numbers.models import Number


class FlowController(TenantScoped):
    path = "/v1/flows"
    tags = ["flows"]

    @post(
        "/", responses=_RESPONSES, summary="Create a flow with a validated draft", status_code=201
    )
    async def create_flow(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: FlowCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Flow]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: flows.create_flow(conn, subject, origin, data)
        )

    @get("/", responses=_RESPONSES, summary="List flows")
    async def list_flows(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[Flow]:
        return await list_page(request, subject, limit, starting_after, flows.list_flows)

    @get("/{flow_id:uuid}", responses=_RESPONSES, summary="Get a flow and its draft")
    async def get_flow(self, request: AnyRequest, subject: Subject, flow_id: UUID) -> Flow:
        async with transaction(request, subject) as conn:
            return await flows.get_flow(conn, subject, flow_id)

    @patch("/{flow_id:uuid}", responses=_RESPONSES, summary="Rename or replace the draft")
    async def update_flow(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        flow_id: UUID,
        data: FlowUpdate,
    ) -> Flow:
        async with transaction(request, subject) as conn:
            return await flows.update_flow(conn, subject, origin, flow_id, data)

    @post(
        "/{flow_id:uuid}/publish",
        responses=_RESPONSES,
        summary="Publish the draft as a new immutable version",
        status_code=201,
    )
    async def publish(
        self, request: AnyRequest, subject: Subject, origin: Origin, flow_id: UUID
    ) -> FlowVersion:
        async with transaction(request, subject) as conn:
            return await flows.publish(conn, subject, origin, flow_id)

    @get("/{flow_id:uuid}/versions", responses=_RESPONSES, summary="Published versions")
    async def versions(
        self, request: AnyRequest, subject: Subject, flow_id: UUID
    ) -> list[FlowVersion]:
        async with transaction(request, subject) as conn:
            return await flows.list_versions(conn, subject, flow_id)

    @get("/{flow_id:uuid}/versions/{version:int}", responses=_RESPONSES, summary="One version")
    async def version(
        self, request: AnyRequest, subject: Subject, flow_id: UUID, version: int
    ) -> FlowVersion:
        async with transaction(request, subject) as conn:
            return await flows.get_version(conn, subject, flow_id, version)

    @delete("/{flow_id:uuid}", responses=_RESPONSES, summary="Delete a flow no number uses")
    async def delete_flow(
        self, request: AnyRequest, subject: Subject, origin: Origin, flow_id: UUID
    ) -> None:
        async with transaction(request, subject) as conn:
            await flows.delete_flow(conn, subject, origin, flow_id)


class NumberRoutingController(TenantScoped):
    path = "/v1/numbers"
    tags = ["numbers"]

    @put(
        "/{number_id:uuid}/flow",
        responses=_RESPONSES,
        summary="Route a number to a published flow (null to stop)",
    )
    async def route(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        number_id: UUID,
        data: NumberRoute,
    ) -> Number:
        async with transaction(request, subject) as conn:
            return await flows.route_number(conn, subject, origin, number_id, data.flow_id)

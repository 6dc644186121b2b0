"""The caller's own tenant, users, credentials and audit log."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.params import Parameter

from api.context import (
    AnyRequest,
    Page,
    idempotent,
    list_page,
    provide_origin,
    provide_subject,
    transaction,
)
from api.problems import AUTH_RESPONSES, problem_spec
from tenancy import service
from tenancy.models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    AuditEntry,
    Me,
    OAuthClient,
    OAuthClientCreate,
    OAuthClientCreated,
    Origin,
    Subject,
    Tenant,
    TenantUpdate,
    User,
    UserInvite,
    UserUpdate,
)

IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key",
        required=False,
        description="Retry-safe creation: the same key and body replay the first response.",
    ),
]
Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size (1-100)")]
After = Annotated[str | None, Parameter(description="Return items after this id")]

_RESPONSES = {**AUTH_RESPONSES, 409: problem_spec("Conflicts with the resource's state")}


class TenantScoped(Controller):
    dependencies = {"subject": Provide(provide_subject), "origin": Provide(provide_origin)}
    security = [{"bearerAuth": []}]


class TenantController(TenantScoped):
    path = "/v1"
    tags = ["tenant"]

    @get("/me", responses=_RESPONSES, summary="Who the credential belongs to")
    async def me(self, subject: Subject) -> Me:
        return Me(
            tenant_id=subject.tenant_id,
            actor_type=subject.actor_type,
            actor_id=subject.actor_id,
            role=subject.role,
            permissions=sorted(subject.permissions),
        )

    @get("/tenant", responses=_RESPONSES, summary="The caller's tenant")
    async def get_tenant(self, request: AnyRequest, subject: Subject) -> Tenant:
        async with transaction(request, subject) as conn:
            return await service.get_tenant(conn, subject)

    @patch("/tenant", responses=_RESPONSES, summary="Rename the tenant")
    async def update_tenant(
        self, request: AnyRequest, subject: Subject, origin: Origin, data: TenantUpdate
    ) -> Tenant:
        async with transaction(request, subject) as conn:
            return await service.update_tenant(conn, subject, origin, data)

    @get("/audit-log", responses=_RESPONSES, summary="Security-relevant actions, newest first")
    async def audit_log(
        self, request: AnyRequest, subject: Subject, limit: Limit = 50, starting_after: After = None
    ) -> Page[AuditEntry]:
        return await list_page(request, subject, limit, starting_after, service.list_audit)


class UserController(TenantScoped):
    path = "/v1/users"
    tags = ["users"]

    @get("/", responses=_RESPONSES, summary="List users")
    async def list_users(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[User]:
        return await list_page(request, subject, limit, starting_after, service.list_users)

    @get("/{user_id:uuid}", responses=_RESPONSES, summary="Get a user")
    async def get_user(self, request: AnyRequest, subject: Subject, user_id: UUID) -> User:
        async with transaction(request, subject) as conn:
            return await service.get_user(conn, subject, user_id)

    @post("/", responses=_RESPONSES, summary="Invite a user by email", status_code=201)
    async def invite_user(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: UserInvite,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[User]:
        settings = request.app.state.deps.settings
        return await idempotent(  # type: ignore[return-value]
            request,
            subject,
            lambda conn: service.invite_user(conn, settings, subject, origin, data),
        )

    @patch("/{user_id:uuid}", responses=_RESPONSES, summary="Change a user's name, role or status")
    async def update_user(
        self, request: AnyRequest, subject: Subject, origin: Origin, user_id: UUID, data: UserUpdate
    ) -> User:
        async with transaction(request, subject) as conn:
            return await service.update_user(conn, subject, origin, user_id, data)


class ApiKeyController(TenantScoped):
    path = "/v1/api-keys"
    tags = ["api keys"]

    @get("/", responses=_RESPONSES, summary="List API keys")
    async def list_keys(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[ApiKey]:
        return await list_page(request, subject, limit, starting_after, service.list_api_keys)

    @get("/{key_id:uuid}", responses=_RESPONSES, summary="Get an API key (never its secret)")
    async def get_key(self, request: AnyRequest, subject: Subject, key_id: UUID) -> ApiKey:
        async with transaction(request, subject) as conn:
            return await service.get_api_key(conn, subject, key_id)

    @post(
        "/",
        responses=_RESPONSES,
        summary="Create an API key; the secret is shown once",
        status_code=201,
    )
    async def create_key(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: ApiKeyCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[ApiKeyCreated]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: service.create_api_key(conn, subject, origin, data)
        )

    @delete("/{key_id:uuid}", responses=_RESPONSES, summary="Revoke an API key", status_code=200)
    async def revoke_key(
        self, request: AnyRequest, subject: Subject, origin: Origin, key_id: UUID
    ) -> ApiKey:
        async with transaction(request, subject) as conn:
            return await service.revoke_api_key(conn, subject, origin, key_id)


class OAuthClientController(TenantScoped):
    path = "/v1/oauth-clients"
    tags = ["oauth clients"]

    @get("/", responses=_RESPONSES, summary="List OAuth clients")
    async def list_clients(
        self, request: AnyRequest, subject: Subject, limit: Limit = 20, starting_after: After = None
    ) -> Page[OAuthClient]:
        return await list_page(request, subject, limit, starting_after, service.list_oauth_clients)

    @post(
        "/",
        responses=_RESPONSES,
        summary="Create an OAuth client; the secret is shown once",
        status_code=201,
    )
    async def create_client(
        self,
        request: AnyRequest,
        subject: Subject,
        origin: Origin,
        data: OAuthClientCreate,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[OAuthClientCreated]:
        return await idempotent(  # type: ignore[return-value]
            request, subject, lambda conn: service.create_oauth_client(conn, subject, origin, data)
        )

    @delete(
        "/{client_id:uuid}", responses=_RESPONSES, summary="Revoke an OAuth client", status_code=200
    )
    async def revoke_client(
        self, request: AnyRequest, subject: Subject, origin: Origin, client_id: UUID
    ) -> OAuthClient:
        async with transaction(request, subject) as conn:
            return await service.revoke_oauth_client(conn, subject, origin, client_id)

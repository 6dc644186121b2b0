"""Single sign-on: the tenant's OpenID Connect provider (owners and admins), and the public start
and callback of a sign-in."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, put
from litestar.di import Provide
from litestar.params import Parameter, QueryParameter
from litestar.response import Redirect

from api.context import AnyRequest, deps_of, provide_origin, transaction
from api.controllers.tenant import _RESPONSES, TenantScoped
from api.problems import COMMON_RESPONSES, problem_spec
from tenancy.models import Origin, Subject, TokenPair
from tenancy.sso import service as sso
from tenancy.sso.models import SsoConfig, SsoConfigIn

_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_SIGN_IN_RESPONSES = {
    **COMMON_RESPONSES,
    400: problem_spec("The sign-in's state is unknown, already used or expired"),
    401: problem_spec("The provider refused the sign-in, or its ID token did not verify"),
    403: problem_spec(
        "The address is unverified, outside the allowed domains, disabled, or another "
        "tenant's; or the tenant is not active"
    ),
    404: problem_spec("The tenant has not set up single sign-on"),
    502: problem_spec("The identity provider could not be reached"),
}
_CONFIG_RESPONSES = {**_RESPONSES, 502: problem_spec("The identity provider could not be reached")}

Code = Annotated[
    str | None, Parameter(max_length=2048, description="The provider's authorization code")
]
# `state` is a name litestar reserves for application state, hence the alias.
SignInState = Annotated[
    str | None,
    QueryParameter(name="state", max_length=200, description="The state /start sent"),
]
ProviderError = Annotated[
    str | None, Parameter(max_length=200, description="Set by the provider when it refused")
]


class SsoController(TenantScoped):
    path = "/v1/sso"
    tags = ["single sign-on"]

    @put(
        "/",
        responses=_CONFIG_RESPONSES,
        summary="Set up or change the tenant's OpenID Connect provider",
    )
    async def configure(
        self, request: AnyRequest, subject: Subject, origin: Origin, data: SsoConfigIn
    ) -> SsoConfig:
        """Needs `tenant:write`. The issuer's discovery document and keys are fetched and checked
        first (422 naming `issuer` if unreachable or inconsistent). The client secret is sealed
        and never returned; leave it out to keep the stored one. With `password_login` false,
        only owners may still sign in with a password: owners stand outside single sign-on
        (break-glass), and the provider never signs anyone in as an owner."""
        deps = deps_of(request)
        provider = await sso.prepare_configuration(
            subject, data, allow_insecure=deps.settings.test_mode
        )
        async with transaction(request, subject) as conn:
            return await sso.save_configuration(
                conn, deps.vault, subject, origin, data, provider, base_url=deps.settings.base_url
            )

    @get("/", responses=_RESPONSES, summary="The tenant's single sign-on set-up (never its secret)")
    async def get_config(self, request: AnyRequest, subject: Subject) -> SsoConfig:
        async with transaction(request, subject) as conn:
            return await sso.get_configuration(
                conn, subject, base_url=deps_of(request).settings.base_url
            )

    @delete("/", responses=_RESPONSES, summary="Turn single sign-on off")
    async def remove(self, request: AnyRequest, subject: Subject, origin: Origin) -> None:
        """Pending sign-ins end; password sign-in is open to the tenant's users again."""
        async with transaction(request, subject) as conn:
            await sso.remove_configuration(conn, subject, origin)


class SsoSignInController(Controller):
    path = "/v1/sso"
    tags = ["single sign-on"]
    dependencies = {"origin": Provide(provide_origin)}

    @get(
        "/{tenant_id:uuid}/start",
        responses=_SIGN_IN_RESPONSES,
        status_code=302,
        summary="Start signing in to a tenant through its identity provider",
    )
    async def start(self, request: AnyRequest, tenant_id: UUID) -> Redirect:
        """Redirects (302) to the provider's authorization endpoint with `state`, `nonce` and a
        PKCE `code_challenge` (S256). The sign-in must finish within 10 minutes."""
        deps = deps_of(request)
        url = await deps.auth.start_sso(tenant_id, deps.vault)
        return Redirect(path=url, status_code=302, headers=_NO_STORE)

    @get(
        "/callback",
        responses=_SIGN_IN_RESPONSES,
        summary="Finish a sign-in: the provider's redirect URI",
    )
    async def callback(
        self,
        request: AnyRequest,
        origin: Origin,
        code: Code = None,
        sign_in_state: SignInState = None,
        error: ProviderError = None,
    ) -> Response[TokenPair]:
        """Register `<public URL>/v1/sso/callback` at the provider. The answer is the same JSON
        token pair as `POST /v1/auth/login`, so a browser front end may call this endpoint
        itself with the `code` and `state` the provider sent and keep the tokens. Each state
        works once: a replayed, unknown or expired state is a 400 and signs nobody in."""
        deps = deps_of(request)
        pair = await deps.auth.finish_sso(sign_in_state, code, error, deps.vault, origin)
        return Response(pair, headers=_NO_STORE)

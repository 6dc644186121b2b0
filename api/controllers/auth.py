"""Sign-up, email verification, sessions, password reset, invitations, OAuth2 tokens, JWKS."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import unquote

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from api.context import AnyRequest, deps_of, provide_origin
from api.problems import COMMON_RESPONSES, problem_spec
from tenancy.errors import InvalidCredentials, InvalidInput
from tenancy.models import (
    ClientToken,
    EmailIn,
    EmailTokenIn,
    InvitationAccept,
    LoginIn,
    Origin,
    PasswordResetConfirm,
    RefreshIn,
    Signup,
    SignupCreate,
    Tenant,
    TokenPair,
)

_AUTH_ERRORS = {
    **COMMON_RESPONSES,
    401: problem_spec("Wrong credentials or an invalid token"),
    403: problem_spec("Email not verified, or tenant not active"),
    409: problem_spec("Conflict, e.g. the email address is taken"),
}


class AuthController(Controller):
    path = "/v1"
    tags = ["auth"]
    dependencies = {"origin": Provide(provide_origin)}

    @post("/signup", responses=_AUTH_ERRORS, summary="Sign up a company and its owner")
    async def signup(self, request: AnyRequest, data: SignupCreate, origin: Origin) -> Signup:
        """Creates a tenant pending verification and emails the owner a verification link."""
        return await deps_of(request).auth.signup(data, origin)

    @post(
        "/auth/verify-email",
        responses=_AUTH_ERRORS,
        status_code=HTTP_200_OK,
        summary="Verify an email address",
    )
    async def verify_email(self, request: AnyRequest, data: EmailTokenIn, origin: Origin) -> Tenant:
        return await deps_of(request).auth.verify_email(data.token, origin)

    @post(
        "/auth/resend-verification",
        responses=_AUTH_ERRORS,
        status_code=HTTP_202_ACCEPTED,
        summary="Send the verification mail again",
    )
    async def resend_verification(self, request: AnyRequest, data: EmailIn, origin: Origin) -> None:
        await deps_of(request).auth.resend_verification(data.email, origin)

    @post(
        "/auth/login",
        responses=_AUTH_ERRORS,
        status_code=HTTP_200_OK,
        summary="Sign in with email and password",
    )
    async def login(self, request: AnyRequest, data: LoginIn, origin: Origin) -> TokenPair:
        return await deps_of(request).auth.login(data.email, data.password, origin)

    @post(
        "/auth/refresh",
        responses=_AUTH_ERRORS,
        status_code=HTTP_200_OK,
        summary="Rotate a refresh token",
    )
    async def refresh(self, request: AnyRequest, data: RefreshIn, origin: Origin) -> TokenPair:
        return await deps_of(request).auth.refresh(data.refresh_token, origin)

    @post(
        "/auth/logout",
        responses=_AUTH_ERRORS,
        status_code=HTTP_204_NO_CONTENT,
        summary="End a session",
    )
    async def logout(self, request: AnyRequest, data: RefreshIn, origin: Origin) -> None:
        await deps_of(request).auth.logout(data.refresh_token, origin)

    @post(
        "/auth/password-reset",
        responses=_AUTH_ERRORS,
        status_code=HTTP_202_ACCEPTED,
        summary="Mail a reset link",
    )
    async def password_reset(self, request: AnyRequest, data: EmailIn, origin: Origin) -> None:
        await deps_of(request).auth.request_password_reset(data.email, origin)

    @post(
        "/auth/password-reset/confirm",
        responses=_AUTH_ERRORS,
        status_code=HTTP_204_NO_CONTENT,
        summary="Set a new password with a reset link",
    )
    async def password_reset_confirm(
        self, request: AnyRequest, data: PasswordResetConfirm, origin: Origin
    ) -> None:
        await deps_of(request).auth.reset_password(data.token, data.new_password, origin)

    @post(
        "/auth/accept-invitation",
        responses=_AUTH_ERRORS,
        status_code=HTTP_200_OK,
        summary="Accept an invitation and sign in",
    )
    async def accept_invitation(
        self, request: AnyRequest, data: InvitationAccept, origin: Origin
    ) -> TokenPair:
        return await deps_of(request).auth.accept_invitation(
            data.token, data.password, data.name, origin
        )


class OAuthController(Controller):
    path = "/"
    tags = ["auth"]
    dependencies = {"origin": Provide(provide_origin)}

    @post(
        "/oauth/token",
        responses=_AUTH_ERRORS,
        status_code=HTTP_200_OK,
        summary="OAuth2 client-credentials grant",
    )
    async def token(
        self,
        request: AnyRequest,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)],
        origin: Origin,
    ) -> ClientToken:
        """RFC 6749 §4.4. Client authentication by HTTP Basic or client_id/client_secret fields."""
        form = {k: (v[0] if isinstance(v, list) else v) for k, v in data.items()}
        if form.get("grant_type") != "client_credentials":
            raise InvalidInput(
                "Only grant_type=client_credentials is supported.",
                error="unsupported_grant_type",
                field="grant_type",
            )
        client_id, client_secret = _basic_credentials(request.headers.get("authorization"))
        client_id = client_id or str(form.get("client_id") or "")
        client_secret = client_secret or str(form.get("client_secret") or "")
        if not client_id or not client_secret:
            raise InvalidCredentials("Client authentication is required.", error="invalid_client")
        scope = form.get("scope")
        return await deps_of(request).auth.client_credentials(
            client_id, client_secret, str(scope) if scope else None, origin
        )

    @get(
        "/.well-known/jwks.json",
        responses=_AUTH_ERRORS,
        summary="Public keys that verify access tokens",
    )
    async def jwks(self, request: AnyRequest) -> dict[str, Any]:
        return deps_of(request).auth.keys.jwks()


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials("Malformed Basic credentials.", error="invalid_client") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidCredentials("Malformed Basic credentials.", error="invalid_client")
    return unquote(user), unquote(password)

"""Authentication: every flow that starts from a credential rather than a known tenant.

This is the only place a TenantId is minted: from a verified access token, API key, client
secret, refresh token, emailed token or single sign-on state, or for a brand-new tenant at
signup.
"""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import UUID

import asyncpg
import msgspec

from runtime.db import platform_tx, tenant_tx
from runtime.ids import new_id
from runtime.settings import Settings
from tenancy import credentials as cred
from tenancy import events as ev
from tenancy import mail, service
from tenancy import repository as repo
from tenancy.errors import (
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    TenancyError,
    TenantNotActive,
    Unauthenticated,
)
from tenancy.models import (
    ClientToken,
    Origin,
    Role,
    Signup,
    SignupCreate,
    Subject,
    Tenant,
    TenantId,
    TenantStatus,
    TokenPair,
)
from tenancy.permissions import ALL_PERMISSIONS, permissions_for
from tenancy.sso import service as sso
from tenancy.vault import Vault

# A suspended tenant can still sign in and read (and settle its bill); `Subject.suspended`
# makes every other change refuse.
_USABLE = {TenantStatus.ACTIVE, TenantStatus.PAST_DUE, TenantStatus.SUSPENDED}


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, keys: cred.KeyRing) -> None:
        self.pool = pool
        self.settings = settings
        self.keys = keys
        self._status: dict[UUID, tuple[float, str]] = {}

    # --- signing keys -------------------------------------------------------------------------

    async def load_keys(self, *, create_if_missing: bool = True) -> None:
        async with platform_tx(self.pool) as conn:
            rows = await repo.signing_keys(conn)
            if not any(r["retired_at"] is None for r in rows) and create_if_missing:
                await conn.execute("select pg_advisory_xact_lock(7251)")
                rows = await repo.signing_keys(conn)
                if not any(r["retired_at"] is None for r in rows):
                    kid, data, sealed = self.keys.new_key_row()
                    await repo.add_signing_key(conn, kid, data, sealed, retire_others=False)
                    rows = await repo.signing_keys(conn)
        self.keys.load(list(rows))

    async def rotate_keys(self) -> str:
        """A new key signs from now on; old keys keep verifying until their tokens expire."""
        kid, data, sealed = self.keys.new_key_row()
        async with platform_tx(self.pool) as conn:
            await repo.add_signing_key(conn, kid, data, sealed, retire_others=True)
        await self.load_keys()
        return kid

    # --- bearer credentials -------------------------------------------------------------------

    async def authenticate(self, bearer: str) -> Subject:
        if bearer.startswith(cred.API_KEY + "_"):
            return await self._authenticate_api_key(bearer)
        claims = self.keys.verify(bearer)
        tenant_id = TenantId(UUID(claims.tid))
        suspended = await self._require_usable(tenant_id)
        if claims.act == "user" and claims.role is not None:
            try:
                role = Role(claims.role)
            except ValueError:
                raise Unauthenticated("The access token names an unknown role.") from None
            subject = service.subject_for_user(tenant_id, UUID(claims.sub), role)
            return msgspec.structs.replace(subject, suspended=suspended) if suspended else subject
        if claims.act == "oauth_client":
            return Subject(
                tenant_id=tenant_id,
                actor_type="oauth_client",
                actor_id=UUID(claims.sub),
                role=None,
                permissions=frozenset(claims.scope.split()) & ALL_PERMISSIONS,
                suspended=suspended,
            )
        raise Unauthenticated("The access token names no known actor.")

    async def _require_usable(self, tenant_id: TenantId) -> bool:
        """Whether the tenant is suspended; raises if it may not be used at all.
        Closed tenants are shut out (and suspended ones restricted) within seconds, without a
        query per call."""
        hit = self._status.get(tenant_id)
        now = time.monotonic()
        if hit is None or hit[0] < now:
            async with tenant_tx(self.pool, tenant_id) as conn:
                row = await repo.get_tenant(conn, tenant_id)
            status = row["status"] if row else TenantStatus.CLOSED
            self._status[tenant_id] = (now + 5.0, status)
            if len(self._status) > 100_000:
                self._status.clear()
        else:
            status = hit[1]
        if status not in _USABLE:
            raise TenantNotActive(f"The tenant is {status}.")
        return bool(status == TenantStatus.SUSPENDED)

    async def _authenticate_api_key(self, raw: str) -> Subject:
        try:
            token = cred.parse_token(cred.API_KEY, raw)
        except InvalidToken:
            raise Unauthenticated("The API key is invalid.") from None
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await repo.get_credential(conn, token.tenant_id, "api_keys", token.id)
            if (
                row is None
                or not cred.secret_matches(token.secret, row["secret_hash"])
                or row["revoked_at"] is not None
            ):
                raise Unauthenticated("The API key is invalid or revoked.")
            await repo.touch_credential(conn, token.tenant_id, "api_keys", token.id)
        suspended = await self._require_usable(token.tenant_id)
        return Subject(
            tenant_id=token.tenant_id,
            actor_type="api_key",
            actor_id=token.id,
            role=None,
            permissions=frozenset(row["scopes"]) & ALL_PERMISSIONS,
            suspended=suspended,
        )

    # --- signup and email tokens --------------------------------------------------------------

    async def signup(self, data: SignupCreate, origin: Origin) -> Signup:
        cred.check_password_strength(data.password, email=data.email)
        password_hash = await cred.hash_password(data.password)
        tenant_id = TenantId(new_id())
        async with tenant_tx(self.pool, tenant_id) as conn:
            user_id = await service.signup(
                conn,
                self.settings,
                tenant_id,
                company_name=data.company_name,
                email=data.email,
                password_hash=password_hash,
                name=data.name,
                origin=origin,
            )
        return Signup(
            tenant_id=tenant_id,
            user_id=user_id,
            status=TenantStatus.PENDING_VERIFICATION,
            message="Check your email for a verification link.",
        )

    async def _use_email_token(
        self, conn: asyncpg.Connection, token: cred.OpaqueToken, purpose: str
    ) -> asyncpg.Record:
        row = await repo.lock_email_token(conn, token.tenant_id, token.id)
        if (
            row is None
            or row["purpose"] != purpose
            or not cred.secret_matches(token.secret, row["token_hash"])
        ):
            raise InvalidToken("The link is not valid.")
        if row["used_at"] is not None:
            raise InvalidToken("The link has already been used.")
        if row["expires_at"] <= service.now():
            raise InvalidToken("The link has expired.")
        await repo.use_email_token(conn, token.tenant_id, token.id)
        return row

    async def verify_email(self, raw: str, origin: Origin) -> Tenant:
        token = cred.parse_token(cred.EMAIL, raw)
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await self._use_email_token(conn, token, "verify_email")
            tenant = await repo.get_tenant(conn, token.tenant_id)
            assert tenant is not None
            await repo.update_user(
                conn, token.tenant_id, row["user_id"], email_verified_at=service.now()
            )
            if tenant["status"] == TenantStatus.PENDING_VERIFICATION:
                await repo.set_tenant_status(conn, token.tenant_id, "active", verified=True)
                await service.publish(conn, ev.TenantVerified(tenant_id=token.tenant_id))
                await service.publish(
                    conn,
                    ev.UserCreated(tenant_id=token.tenant_id, user_id=row["user_id"], role="owner"),
                )
            await service.audit(
                conn,
                token.tenant_id,
                origin,
                "tenant.verified",
                actor_type="user",
                actor_id=row["user_id"],
                target_type="tenant",
                target_id=token.tenant_id,
            )
            tenant = await repo.get_tenant(conn, token.tenant_id)
            assert tenant is not None
        self._status.pop(token.tenant_id, None)
        return service.to_tenant(tenant)

    async def resend_verification(self, email: str, origin: Origin) -> None:
        """Always succeeds from the caller's view: it must not reveal who has an account."""
        async with platform_tx(self.pool) as conn:
            found = await repo.find_login(conn, email)
        if found is None:
            return
        tenant_id, user_id = found
        async with tenant_tx(self.pool, tenant_id) as conn:
            tenant = await repo.get_tenant(conn, tenant_id)
            if tenant is None or tenant["status"] != TenantStatus.PENDING_VERIFICATION:
                return
            token = await service.send_email_token(
                conn,
                self.settings,
                tenant_id,
                user_id,
                "verify_email",
                self.settings.verification_token_seconds,
            )
            subject, body = mail.verification(self.settings.base_url, tenant["name"], token)
            await repo.queue_mail(conn, tenant_id, to=email, subject=subject, body=body)

    # --- sessions -----------------------------------------------------------------------------

    async def _issue_pair(
        self,
        conn: asyncpg.Connection,
        tenant_id: TenantId,
        user_id: UUID,
        role: Role,
        family_id: UUID | None = None,
    ) -> TokenPair:
        token_id, secret = new_id(), cred.new_secret()
        await repo.insert_refresh_token(
            conn,
            tenant_id,
            token_id=token_id,
            user_id=user_id,
            family_id=family_id or token_id,
            token_hash=cred.hash_secret(secret),
            expires_at=service.now() + timedelta(seconds=self.settings.refresh_token_seconds),
        )
        access = self.keys.issue(
            tenant_id=tenant_id, subject=user_id, scope=sorted(permissions_for(role)), role=role
        )
        return TokenPair(
            access_token=access,
            token_type="Bearer",  # noqa: S106
            expires_in=self.keys.ttl,
            refresh_token=cred.format_token(cred.REFRESH, tenant_id, token_id, secret),
        )

    @staticmethod
    def _check_can_sign_in(tenant: asyncpg.Record, user: asyncpg.Record) -> None:
        if user["status"] != "active":
            raise InvalidCredentials("The email or password is wrong.")
        if tenant["status"] == TenantStatus.PENDING_VERIFICATION:
            raise Forbidden("Verify your email address before signing in.", code="email-unverified")
        if tenant["status"] not in _USABLE:
            raise TenantNotActive(f"The tenant is {tenant['status']}.")

    async def login(self, email: str, password: str, origin: Origin) -> TokenPair:
        async with platform_tx(self.pool) as conn:
            found = await repo.find_login(conn, email)
        if found is None:
            await cred.verify_password(None, password)
            raise InvalidCredentials("The email or password is wrong.")
        tenant_id, user_id = found
        async with tenant_tx(self.pool, tenant_id) as conn:
            user = await repo.get_user(conn, tenant_id, user_id)
            tenant = await repo.get_tenant(conn, tenant_id)
        assert user is not None
        assert tenant is not None
        ok = await cred.verify_password(user["password_hash"], password)
        async with tenant_tx(self.pool, tenant_id) as conn:
            if not ok:
                await service.audit(
                    conn,
                    tenant_id,
                    origin,
                    "auth.login_failed",
                    actor_type="user",
                    actor_id=user_id,
                    target_type="user",
                    target_id=user_id,
                )
            else:
                self._check_can_sign_in(tenant, user)
                if not await sso.password_login_allowed(conn, tenant_id, Role(user["role"])):
                    raise Forbidden(
                        "Your organization signs in with single sign-on: start at "
                        f"{sso.start_url(self.settings.base_url, tenant_id)}.",
                        code="password-login-disabled",
                    )
                await repo.update_user(conn, tenant_id, user_id, last_login_at=service.now())
                await service.audit(
                    conn,
                    tenant_id,
                    origin,
                    "auth.login",
                    actor_type="user",
                    actor_id=user_id,
                    target_type="user",
                    target_id=user_id,
                )
                return await self._issue_pair(conn, tenant_id, user_id, Role(user["role"]))
        raise InvalidCredentials("The email or password is wrong.")

    async def refresh(self, raw: str, origin: Origin) -> TokenPair:
        try:
            token = cred.parse_token(cred.REFRESH, raw)
        except InvalidToken:
            raise Unauthenticated("The refresh token is invalid.") from None
        reuse = False
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await repo.lock_refresh_token(conn, token.tenant_id, token.id)
            if row is None or not cred.secret_matches(token.secret, row["token_hash"]):
                raise Unauthenticated("The refresh token is invalid.")
            if row["revoked_at"] is None and row["used_at"] is not None:
                # A rotated token came back: someone holds a copy. End the whole session.
                await repo.revoke_refresh_family(conn, token.tenant_id, row["family_id"])
                await service.audit(
                    conn,
                    token.tenant_id,
                    origin,
                    "auth.refresh_reuse_detected",
                    actor_type="user",
                    actor_id=row["user_id"],
                    target_type="session",
                    target_id=row["family_id"],
                )
                reuse = True
            elif row["revoked_at"] is None and row["expires_at"] > service.now():
                user = await repo.get_user(conn, token.tenant_id, row["user_id"])
                tenant = await repo.get_tenant(conn, token.tenant_id)
                assert user is not None
                assert tenant is not None
                self._check_can_sign_in(tenant, user)
                await repo.mark_refresh_used(conn, token.tenant_id, token.id)
                return await self._issue_pair(
                    conn, token.tenant_id, row["user_id"], Role(user["role"]), row["family_id"]
                )
        raise Unauthenticated(
            "The refresh token was already used; the session has been ended."
            if reuse
            else "The refresh token has expired or was revoked."
        )

    async def logout(self, raw: str, origin: Origin) -> None:
        try:
            token = cred.parse_token(cred.REFRESH, raw)
        except InvalidToken:
            raise Unauthenticated("The refresh token is invalid.") from None
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await repo.lock_refresh_token(conn, token.tenant_id, token.id)
            if row is None or not cred.secret_matches(token.secret, row["token_hash"]):
                raise Unauthenticated("The refresh token is invalid.")
            if row["revoked_at"] is None:
                await repo.revoke_refresh_family(conn, token.tenant_id, row["family_id"])
                await service.audit(
                    conn,
                    token.tenant_id,
                    origin,
                    "auth.logout",
                    actor_type="user",
                    actor_id=row["user_id"],
                    target_type="session",
                    target_id=row["family_id"],
                )

    # --- passwords and invitations ------------------------------------------------------------

    async def request_password_reset(self, email: str, origin: Origin) -> None:
        """Always succeeds from the caller's view: it must not reveal who has an account."""
        async with platform_tx(self.pool) as conn:
            found = await repo.find_login(conn, email)
        if found is None:
            return
        tenant_id, user_id = found
        async with tenant_tx(self.pool, tenant_id) as conn:
            user = await repo.get_user(conn, tenant_id, user_id)
            if user is None or user["status"] != "active":
                return
            token = await service.send_email_token(
                conn,
                self.settings,
                tenant_id,
                user_id,
                "password_reset",
                self.settings.password_reset_seconds,
            )
            subject, body = mail.password_reset(self.settings.base_url, token)
            await repo.queue_mail(conn, tenant_id, to=user["email"], subject=subject, body=body)
            await service.audit(
                conn,
                tenant_id,
                origin,
                "auth.password_reset_requested",
                actor_type="user",
                actor_id=None,
                target_type="user",
                target_id=user_id,
            )

    async def reset_password(self, raw: str, new_password: str, origin: Origin) -> None:
        token = cred.parse_token(cred.EMAIL, raw)
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await repo.lock_email_token(conn, token.tenant_id, token.id)
            user = row and await repo.get_user(conn, token.tenant_id, row["user_id"])
        if user is None:
            raise InvalidToken("The link is not valid.")
        cred.check_password_strength(new_password, email=user["email"])
        password_hash = await cred.hash_password(new_password)
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await self._use_email_token(conn, token, "password_reset")
            await repo.update_user(
                conn, token.tenant_id, row["user_id"], password_hash=password_hash
            )
            await repo.revoke_user_refresh_tokens(conn, token.tenant_id, row["user_id"])
            await service.audit(
                conn,
                token.tenant_id,
                origin,
                "auth.password_reset",
                actor_type="user",
                actor_id=row["user_id"],
                target_type="user",
                target_id=row["user_id"],
            )

    async def accept_invitation(
        self, raw: str, password: str, name: str, origin: Origin
    ) -> TokenPair:
        token = cred.parse_token(cred.EMAIL, raw)
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await repo.lock_email_token(conn, token.tenant_id, token.id)
            user = row and await repo.get_user(conn, token.tenant_id, row["user_id"])
        if user is None:
            raise InvalidToken("The link is not valid.")
        cred.check_password_strength(password, email=user["email"])
        password_hash = await cred.hash_password(password)
        async with tenant_tx(self.pool, token.tenant_id) as conn:
            row = await self._use_email_token(conn, token, "invitation")
            user = await repo.get_user(conn, token.tenant_id, row["user_id"])
            tenant = await repo.get_tenant(conn, token.tenant_id)
            assert user is not None
            assert tenant is not None
            if user["status"] != "invited":
                raise InvalidToken("The invitation is no longer valid.")
            fields: dict[str, object] = {
                "password_hash": password_hash,
                "status": "active",
                "email_verified_at": service.now(),
            }
            if name.strip():
                fields["name"] = name.strip()
            user = await repo.update_user(conn, token.tenant_id, user["id"], **fields)
            assert user is not None
            self._check_can_sign_in(tenant, user)
            await service.publish(
                conn,
                ev.UserCreated(tenant_id=token.tenant_id, user_id=user["id"], role=user["role"]),
            )
            await service.audit(
                conn,
                token.tenant_id,
                origin,
                "user.invitation_accepted",
                actor_type="user",
                actor_id=user["id"],
                target_type="user",
                target_id=user["id"],
            )
            return await self._issue_pair(conn, token.tenant_id, user["id"], Role(user["role"]))

    # --- single sign-on (OpenID Connect) ------------------------------------------------------

    async def start_sso(self, tenant: UUID, vault: Vault) -> str:
        """The identity provider's authorization URL for a new sign-in to `tenant`."""
        tenant_id = TenantId(tenant)
        async with tenant_tx(self.pool, tenant_id) as conn:
            row = await repo.get_tenant(conn, tenant_id)
            if row is not None and row["status"] not in _USABLE:
                raise TenantNotActive(f"The tenant is {row['status']}.")
            return await sso.begin_login(conn, vault, tenant_id, base_url=self.settings.base_url)

    async def finish_sso(
        self, state: str | None, code: str | None, error: str | None, vault: Vault, origin: Origin
    ) -> TokenPair:
        """The provider sent the browser back: spend the state, check the ID token, find or
        create the user, and issue a session. Refusals after the state are audited."""
        tenant, secret = sso.parse_state(state)
        tenant_id = TenantId(tenant)
        async with tenant_tx(self.pool, tenant_id) as conn:
            pending = await sso.claim_login(conn, vault, tenant_id, secret)
        try:
            identity, email = await sso.verify_identity(
                pending,
                code=code,
                error=error,
                base_url=self.settings.base_url,
                allow_insecure=self.settings.test_mode,
            )
            async with tenant_tx(self.pool, tenant_id) as conn:
                tenant_row = await repo.get_tenant(conn, tenant_id)
                assert tenant_row is not None
                user = await sso.find_or_create_user(
                    conn, tenant_id, origin, pending, identity, email
                )
                self._check_can_sign_in(tenant_row, user)
                await repo.update_user(conn, tenant_id, user["id"], last_login_at=service.now())
                await service.audit(
                    conn,
                    tenant_id,
                    origin,
                    "auth.sso_login",
                    actor_type="user",
                    actor_id=user["id"],
                    target_type="user",
                    target_id=user["id"],
                    issuer=pending.provider.issuer,
                    provider_subject=identity.subject,
                )
                return await self._issue_pair(conn, tenant_id, user["id"], Role(user["role"]))
        except TenancyError as exc:
            async with tenant_tx(self.pool, tenant_id) as conn:
                await sso.record_refusal(
                    conn, tenant_id, origin, str(exc.extra.get("code", exc.code)), exc.detail
                )
            raise

    # --- OAuth2 client credentials ------------------------------------------------------------

    async def client_credentials(
        self, client_id: str, client_secret: str, scope: str | None, origin: Origin
    ) -> ClientToken:
        tenant_id, cid = cred.parse_client_id(client_id)
        async with tenant_tx(self.pool, tenant_id) as conn:
            row = await repo.get_credential(conn, tenant_id, "oauth_clients", cid)
            if (
                row is None
                or row["revoked_at"] is not None
                or not cred.secret_matches(client_secret, row["secret_hash"])
            ):
                raise InvalidCredentials(
                    "The client credentials are wrong.", error="invalid_client"
                )
            granted = set(row["scopes"])
            requested = set(scope.split()) if scope else granted
            if not requested <= granted:
                raise InvalidInput(
                    f"Scopes not granted to this client: {' '.join(sorted(requested - granted))}.",
                    error="invalid_scope",
                )
            await repo.touch_credential(conn, tenant_id, "oauth_clients", cid)
        await self._require_usable(tenant_id)
        scopes = sorted(requested)
        access = self.keys.issue(
            tenant_id=tenant_id,
            subject=cid,
            scope=scopes,
            client_id=client_id,
            actor="oauth_client",
        )
        return ClientToken(
            access_token=access,
            token_type="Bearer",  # noqa: S106
            expires_in=self.keys.ttl,
            scope=" ".join(scopes),
        )


__all__ = ["Authenticator", "TenancyError"]

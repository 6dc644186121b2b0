"""SSO rules: configuring the tenant's identity provider, starting a sign-in, claiming it when
the provider sends the browser back, and finding or creating the user it signs in.

A sign-in's state is `<tenant hex>.<random>`: the tenant part only says where to look, the
random part is what authenticates (only its SHA-256 is stored, as for opaque tokens). The PKCE
verifier is sealed in the tenant's vault and the nonce is kept as a hash. A state is claimed
once, within ten minutes, whatever happens next.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from uuid import UUID

import asyncpg

from bus.outbox import enqueue
from runtime.ids import new_id
from tenancy import credentials as cred
from tenancy import events as tenancy_events
from tenancy import repository as tenancy_repo
from tenancy.errors import Forbidden, InvalidCredentials, InvalidInput, InvalidToken, NotFound
from tenancy.models import Origin, Role, Subject, TenantId
from tenancy.service import audit, audit_by, now, publish, require
from tenancy.sso import events as ev
from tenancy.sso import oidc
from tenancy.sso import repository as repo
from tenancy.sso.models import Identity, PendingLogin, ProviderMetadata, SsoConfig, SsoConfigIn
from tenancy.vault import Vault

CLIENT_SECRET_PURPOSE = "sso.client_secret"  # noqa: S105 - a vault purpose, not a secret
CODE_VERIFIER_PURPOSE = "sso.code_verifier"
LOGIN_TTL = timedelta(minutes=10)
CALLBACK_PATH = "/v1/sso/callback"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")
_STATE_INVALID = "This sign-in is unknown, already used or expired: start again."


def redirect_uri(base_url: str) -> str:
    """What the tenant registers at its identity provider."""
    return base_url.rstrip("/") + CALLBACK_PATH


def start_url(base_url: str, tenant_id: UUID) -> str:
    return f"{base_url.rstrip('/')}/v1/sso/{tenant_id}/start"


def to_config(row: asyncpg.Record, *, base_url: str) -> SsoConfig:
    return SsoConfig(
        issuer=row["issuer"],
        client_id=row["client_id"],
        has_client_secret=row["client_secret"] is not None,
        allowed_email_domains=list(row["allowed_email_domains"]),
        default_role=Role(row["default_role"]),
        password_login=row["password_login"],
        redirect_uri=redirect_uri(base_url),
        start_url=start_url(base_url, row["tenant_id"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _provider(row: asyncpg.Record) -> ProviderMetadata:
    return ProviderMetadata(
        issuer=row["issuer"],
        authorization_endpoint=row["authorization_endpoint"],
        token_endpoint=row["token_endpoint"],
        jwks_uri=row["jwks_uri"],
        signing_algs=tuple(row["signing_algs"]),
        token_auth_method=row["token_auth_method"],
    )


# --- configuration ----------------------------------------------------------------------------


def _check_domains(domains: list[str]) -> list[str]:
    out: list[str] = []
    for domain in domains:
        if domain != domain.strip().lower():
            raise InvalidInput(
                f"'{domain}' must be written in lower case, without spaces: "
                f"{domain.strip().lower()}.",
                field="allowed_email_domains",
            )
        if len(domain) > 253 or not _DOMAIN.fullmatch(domain) or domain.rsplit(".")[-1].isdigit():
            raise InvalidInput(
                f"'{domain}' is not a domain name (e.g. acme.com; subdomains are listed one by "
                "one, wildcards are not accepted).",
                field="allowed_email_domains",
            )
        if domain not in out:
            out.append(domain)
    return out


def _check_input(data: SsoConfigIn) -> list[str]:
    if not data.client_id.strip():
        raise InvalidInput("client_id must not be blank.", field="client_id")
    if data.default_role is Role.OWNER:
        raise InvalidInput(
            "Users created by single sign-on cannot be owners; choose another role.",
            field="default_role",
        )
    return _check_domains(data.allowed_email_domains)


async def prepare_configuration(
    subject: Subject, data: SsoConfigIn, *, allow_insecure: bool
) -> ProviderMetadata:
    """Check the caller and the input, then the provider's discovery document: before any
    transaction, since it is a network round trip to somebody else's server."""
    require(subject, "tenant:write")
    _check_input(data)
    return await oidc.discover(data.issuer, allow_insecure=allow_insecure)


async def save_configuration(
    conn: asyncpg.Connection,
    vault: Vault,
    subject: Subject,
    origin: Origin,
    data: SsoConfigIn,
    provider: ProviderMetadata,
    *,
    base_url: str,
) -> SsoConfig:
    require(subject, "tenant:write")
    domains = _check_input(data)
    tenant_id = subject.tenant_id
    current = await repo.get_config(conn, tenant_id, for_update=True)
    client_id = data.client_id.strip()
    if data.client_secret is not None:
        sealed = await vault.seal(
            conn, tenant_id, data.client_secret, purpose=CLIENT_SECRET_PURPOSE
        )
    elif (
        current is not None
        and current["issuer"] == provider.issuer
        and current["client_id"] == client_id
    ):
        sealed = bytes(current["client_secret"])
    else:
        raise InvalidInput(
            "client_secret is required to set up single sign-on, or to change its issuer or "
            "client_id.",
            field="client_secret",
        )
    row = await repo.upsert_config(
        conn,
        tenant_id,
        issuer=provider.issuer,
        client_id=client_id,
        client_secret=sealed,
        allowed_email_domains=domains,
        default_role=data.default_role.value,
        password_login=data.password_login,
        authorization_endpoint=provider.authorization_endpoint,
        token_endpoint=provider.token_endpoint,
        jwks_uri=provider.jwks_uri,
        signing_algs=list(provider.signing_algs),
        token_auth_method=provider.token_auth_method,
    )
    await enqueue(
        conn,
        ev.SsoConfigured(
            tenant_id=tenant_id, issuer=provider.issuer, password_login=data.password_login
        ),
        ev.codec,
    )
    await audit_by(
        conn,
        subject,
        origin,
        "sso.configured",
        "tenant",
        tenant_id,
        issuer=provider.issuer,
        client_id=client_id,
        client_secret_changed=data.client_secret is not None,
        allowed_email_domains=domains,
        default_role=data.default_role.value,
        password_login=data.password_login,
    )
    return to_config(row, base_url=base_url)


async def get_configuration(
    conn: asyncpg.Connection, subject: Subject, *, base_url: str
) -> SsoConfig:
    require(subject, "tenant:read")
    row = await repo.get_config(conn, subject.tenant_id)
    if row is None:
        raise NotFound("Single sign-on is not set up for this tenant.")
    return to_config(row, base_url=base_url)


async def remove_configuration(conn: asyncpg.Connection, subject: Subject, origin: Origin) -> None:
    require(subject, "tenant:write")
    if not await repo.delete_config(conn, subject.tenant_id):
        raise NotFound("Single sign-on is not set up for this tenant.")
    await enqueue(conn, ev.SsoRemoved(tenant_id=subject.tenant_id), ev.codec)
    await audit_by(conn, subject, origin, "sso.removed", "tenant", subject.tenant_id)


async def password_login_allowed(conn: asyncpg.Connection, tenant_id: TenantId, role: Role) -> bool:
    """Owners stand outside single sign-on: they keep their password as the way in when the
    identity provider fails (they can fix its configuration), and no provider signs anyone in
    as an owner. Everyone else follows the tenant's setting."""
    return role is Role.OWNER or await repo.password_login_allowed(conn, tenant_id)


# --- signing in -------------------------------------------------------------------------------


def format_state(tenant_id: UUID, secret: str) -> str:
    return f"{tenant_id.hex}.{secret}"


def parse_state(raw: str | None) -> tuple[UUID, str]:
    """The tenant a state names and its random part. Raises InvalidToken for anything else."""
    tenant, _, secret = (raw or "").partition(".")
    if len(tenant) != 32 or not 20 <= len(secret) <= 100:
        raise InvalidToken(_STATE_INVALID)
    try:
        return UUID(hex=tenant), secret
    except ValueError:
        raise InvalidToken(_STATE_INVALID) from None


async def begin_login(
    conn: asyncpg.Connection, vault: Vault, tenant_id: TenantId, *, base_url: str
) -> str:
    """Record a pending sign-in and return the provider's authorization URL for it."""
    config = await repo.get_config(conn, tenant_id)
    if config is None:
        raise NotFound("This tenant has not set up single sign-on.")
    secret, nonce = cred.new_secret(), cred.new_secret()
    verifier = secrets.token_urlsafe(64)
    await repo.purge_logins(conn, tenant_id)
    await repo.insert_login(
        conn,
        tenant_id,
        state_hash=cred.hash_secret(secret),
        nonce_hash=cred.hash_secret(nonce),
        code_verifier=await vault.seal(conn, tenant_id, verifier, purpose=CODE_VERIFIER_PURPOSE),
        expires_at=now() + LOGIN_TTL,
    )
    return oidc.authorization_url(
        _provider(config),
        client_id=config["client_id"],
        redirect_uri=redirect_uri(base_url),
        state=format_state(tenant_id, secret),
        nonce=nonce,
        code_verifier=verifier,
    )


async def claim_login(
    conn: asyncpg.Connection, vault: Vault, tenant_id: TenantId, secret: str
) -> PendingLogin:
    """Spend the sign-in the state names. Unknown, used and expired states look the same."""
    row = await repo.claim_login(conn, tenant_id, cred.hash_secret(secret))
    config = row and await repo.get_config(conn, tenant_id)
    if row is None or config is None:
        raise InvalidToken(_STATE_INVALID)
    return PendingLogin(
        provider=_provider(config),
        client_id=config["client_id"],
        client_secret=await vault.unseal(
            conn, tenant_id, bytes(config["client_secret"]), purpose=CLIENT_SECRET_PURPOSE
        ),
        code_verifier=await vault.unseal(
            conn, tenant_id, bytes(row["code_verifier"]), purpose=CODE_VERIFIER_PURPOSE
        ),
        nonce_hash=bytes(row["nonce_hash"]),
        allowed_email_domains=tuple(config["allowed_email_domains"]),
        default_role=Role(config["default_role"]),
    )


async def verify_identity(
    pending: PendingLogin,
    *,
    code: str | None,
    error: str | None,
    base_url: str,
    allow_insecure: bool,
) -> tuple[Identity, str]:
    """Exchange the code and check whom it signs in: a verified address in an allowed domain.
    Returns the identity and its email address."""
    if error is not None:
        raise InvalidCredentials(
            f"The identity provider did not sign you in ({error[:100]}).", code="sso-denied"
        )
    if not code:
        raise InvalidToken("The identity provider sent no authorization code: start again.")
    identity = await oidc.sign_in(
        pending.provider,
        client_id=pending.client_id,
        client_secret=pending.client_secret,
        redirect_uri=redirect_uri(base_url),
        code=code,
        code_verifier=pending.code_verifier,
        nonce_hash=pending.nonce_hash,
        allow_insecure=allow_insecure,
    )
    email = identity.email
    if email is None or "@" not in email or len(email) > 254:
        raise Forbidden(
            "The identity provider did not share an email address.", code="sso-email-missing"
        )
    if not identity.email_verified:
        raise Forbidden(
            "The identity provider has not verified this email address.",
            code="sso-email-unverified",
        )
    domain = email.rsplit("@", 1)[1].lower()
    if domain not in pending.allowed_email_domains:
        raise Forbidden(
            f"Addresses at {domain} may not sign in to this tenant.",
            code="sso-domain-not-allowed",
        )
    return identity, email


async def find_or_create_user(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    origin: Origin,
    pending: PendingLogin,
    identity: Identity,
    email: str,
) -> asyncpg.Record:
    """The tenant's user with this address: created just in time with the default role, or
    activated if invited (the provider has verified the address). Refuses disabled users,
    owners, and addresses that belong to another tenant."""
    user = await repo.find_user_by_email(conn, tenant_id, email)
    if user is None:
        user = await tenancy_repo.insert_user(
            conn,
            tenant_id,
            user_id=new_id(),
            email=email,
            name=identity.name,
            role=pending.default_role,
            status="active",
            password_hash=None,
        )
        if user is None:
            # Addresses are unique platform-wide; this one has an account in another tenant.
            raise Forbidden(
                "This email address belongs to an account of another organization.",
                code="sso-email-in-another-tenant",
            )
        action = "user.created"
    elif user["status"] == "disabled":
        raise Forbidden("This user is disabled.", code="user-disabled")
    elif user["role"] == Role.OWNER:
        # Otherwise an admin could configure a provider of their own that vouches for the
        # owner's address, and become the owner.
        raise Forbidden(
            "Owners sign in with their password, not through the identity provider.",
            code="sso-owner-not-allowed",
        )
    elif user["status"] == "invited":
        action = "user.invitation_accepted"
    else:
        return user
    user = await tenancy_repo.update_user(
        conn, tenant_id, user["id"], status="active", email_verified_at=now()
    )
    assert user is not None
    await publish(
        conn, tenancy_events.UserCreated(tenant_id=tenant_id, user_id=user["id"], role=user["role"])
    )
    await audit(
        conn,
        tenant_id,
        origin,
        action,
        actor_type="user",
        actor_id=user["id"],
        target_type="user",
        target_id=user["id"],
        via="sso",
        role=user["role"],
    )
    return user


async def record_refusal(
    conn: asyncpg.Connection, tenant_id: TenantId, origin: Origin, code: str, detail: str
) -> None:
    """A sign-in that got past its state but was refused, for the tenant's audit log."""
    await audit(
        conn,
        tenant_id,
        origin,
        "auth.sso_login_failed",
        actor_type="user",
        actor_id=None,
        reason=code,
        detail=detail,
    )

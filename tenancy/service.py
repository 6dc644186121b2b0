"""Tenancy rules. Functions take a connection inside the caller's transaction; none commit."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from bus.events import Event
from bus.outbox import enqueue
from runtime.ids import new_id
from runtime.settings import Settings
from tenancy import credentials as cred
from tenancy import events as ev
from tenancy import mail
from tenancy import repository as repo
from tenancy.errors import (
    Conflict,
    EmailTaken,
    Forbidden,
    InvalidInput,
    NotFound,
    TenantSuspended,
)
from tenancy.models import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    AuditEntry,
    OAuthClient,
    OAuthClientCreate,
    OAuthClientCreated,
    Origin,
    Role,
    Subject,
    Tenant,
    TenantId,
    TenantUpdate,
    User,
    UserInvite,
    UserUpdate,
)
from tenancy.permissions import permissions_for, unknown_scopes


def now() -> datetime:
    return datetime.now(UTC)


async def publish(conn: asyncpg.Connection, event: Event) -> None:
    await enqueue(conn, event, ev.codec)


async def audit(
    conn: asyncpg.Connection,
    tenant_id: TenantId,
    origin: Origin,
    action: str,
    *,
    actor_type: str,
    actor_id: UUID | None,
    target_type: str | None = None,
    target_id: str | UUID | None = None,
    **details: Any,
) -> None:
    await repo.insert_audit(
        conn,
        tenant_id,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        source_ip=origin.source_ip,
        details=details,
    )


async def audit_by(
    conn: asyncpg.Connection,
    subject: Subject,
    origin: Origin,
    action: str,
    target_type: str,
    target_id: str | UUID,
    **details: Any,
) -> None:
    await audit(
        conn,
        subject.tenant_id,
        origin,
        action,
        actor_type=subject.actor_type,
        actor_id=subject.actor_id,
        target_type=target_type,
        target_id=target_id,
        **details,
    )


# What a suspended tenant may still change: its billing, so that it can pay and be reinstated.
_ALLOWED_WHILE_SUSPENDED = frozenset({"billing:write"})


def require(subject: Subject, permission: str) -> None:
    if not subject.can(permission):
        raise Forbidden(f"This action needs the '{permission}' permission.")
    if (
        subject.suspended
        and not permission.endswith(":read")
        and permission not in _ALLOWED_WHILE_SUSPENDED
    ):
        raise TenantSuspended(
            "The account is suspended because an invoice is unpaid, so changes are refused. "
            "An owner or finance user can pay it from the billing page (/billing); the account "
            "is active again as soon as the payment goes through."
        )


def to_tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(
        id=row["tenant_id"],
        name=row["name"],
        status=row["status"],
        plan=row["plan"],
        time_zone=row["time_zone"],
        created_at=row["created_at"],
        verified_at=row["verified_at"],
    )


def to_user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        role=Role(row["role"]),
        status=row["status"],
        email_verified_at=row["email_verified_at"],
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


def to_api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=list(row["scopes"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def to_oauth_client(row: asyncpg.Record, tenant_id: TenantId) -> OAuthClient:
    return OAuthClient(
        id=row["id"],
        client_id=cred.format_client_id(tenant_id, row["id"]),
        name=row["name"],
        scopes=list(row["scopes"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def send_email_token(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant_id: TenantId,
    user_id: UUID,
    purpose: str,
    ttl_seconds: int,
) -> str:
    """Create a single-use token (replacing older ones of the purpose) and return it."""
    await repo.expire_email_tokens(conn, tenant_id, user_id, purpose)
    token_id, secret = new_id(), cred.new_secret()
    await repo.insert_email_token(
        conn,
        tenant_id,
        token_id=token_id,
        user_id=user_id,
        purpose=purpose,
        token_hash=cred.hash_secret(secret),
        expires_at=now() + timedelta(seconds=ttl_seconds),
    )
    return cred.format_token(cred.EMAIL, tenant_id, token_id, secret)


# --- signup -----------------------------------------------------------------------------------


async def signup(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant_id: TenantId,
    *,
    company_name: str,
    email: str,
    password_hash: str,
    name: str,
    origin: Origin,
) -> UUID:
    """Create a pending tenant and its owner, and queue the verification mail."""
    await repo.insert_tenant(conn, tenant_id, company_name.strip())
    user_id = new_id()
    created = await repo.insert_user(
        conn,
        tenant_id,
        user_id=user_id,
        email=email.strip(),
        name=name.strip(),
        role=Role.OWNER,
        status="active",
        password_hash=password_hash,
    )
    if created is None:
        raise EmailTaken("An account with this email address already exists.", field="email")
    token = await send_email_token(
        conn, settings, tenant_id, user_id, "verify_email", settings.verification_token_seconds
    )
    subject, body = mail.verification(settings.base_url, company_name, token)
    await repo.queue_mail(conn, tenant_id, to=email, subject=subject, body=body)
    await publish(conn, ev.TenantCreated(tenant_id=tenant_id, name=company_name))
    await audit(
        conn,
        tenant_id,
        origin,
        "tenant.signup",
        actor_type="user",
        actor_id=user_id,
        target_type="tenant",
        target_id=tenant_id,
    )
    return user_id


# --- tenant -----------------------------------------------------------------------------------


async def get_tenant(conn: asyncpg.Connection, subject: Subject) -> Tenant:
    require(subject, "tenant:read")
    row = await repo.get_tenant(conn, subject.tenant_id)
    if row is None:
        raise NotFound("Tenant not found.")
    return to_tenant(row)


async def update_tenant(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: TenantUpdate
) -> Tenant:
    require(subject, "tenant:write")
    if data.name is msgspec.UNSET and data.time_zone is msgspec.UNSET:
        return await get_tenant(conn, subject)
    if data.time_zone is not msgspec.UNSET and not _known_time_zone(data.time_zone):
        raise InvalidInput(
            f"Unknown time zone {data.time_zone!r}: use an IANA name such as 'Europe/Paris'.",
            field="time_zone",
        )
    row = await repo.update_tenant(
        conn,
        subject.tenant_id,
        name=None if data.name is msgspec.UNSET else data.name.strip(),
        time_zone=None if data.time_zone is msgspec.UNSET else data.time_zone,
    )
    if row is None:
        raise NotFound("Tenant not found.")
    await publish(conn, ev.TenantUpdated(tenant_id=subject.tenant_id, name=row["name"]))
    await audit_by(conn, subject, origin, "tenant.updated", "tenant", subject.tenant_id)
    return to_tenant(row)


def _known_time_zone(name: str) -> bool:
    if name in ("localtime", "Factory"):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# --- users ------------------------------------------------------------------------------------


async def list_users(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[User]:
    require(subject, "users:read")
    return [
        to_user(r) for r in await repo.list_users(conn, subject.tenant_id, limit=limit, after=after)
    ]


async def get_user(conn: asyncpg.Connection, subject: Subject, user_id: UUID) -> User:
    if not (subject.actor_type == "user" and subject.actor_id == user_id):
        require(subject, "users:read")
    row = await repo.get_user(conn, subject.tenant_id, user_id)
    if row is None:
        raise NotFound("User not found.")
    return to_user(row)


async def invite_user(
    conn: asyncpg.Connection,
    settings: Settings,
    subject: Subject,
    origin: Origin,
    data: UserInvite,
) -> User:
    require(subject, "users:write")
    if data.role is Role.OWNER and subject.role is not Role.OWNER:
        raise Forbidden("Only an owner can invite another owner.")
    tenant = await repo.get_tenant(conn, subject.tenant_id)
    assert tenant is not None
    user_id = new_id()
    row = await repo.insert_user(
        conn,
        subject.tenant_id,
        user_id=user_id,
        email=data.email.strip(),
        name=data.name.strip(),
        role=data.role,
        status="invited",
        password_hash=None,
    )
    if row is None:
        raise EmailTaken("This email address already has an account.", field="email")
    token = await send_email_token(
        conn, settings, subject.tenant_id, user_id, "invitation", settings.invitation_token_seconds
    )
    mail_subject, body = mail.invitation(settings.base_url, tenant["name"], data.role, token)
    await repo.queue_mail(conn, subject.tenant_id, to=data.email, subject=mail_subject, body=body)
    await publish(
        conn,
        ev.UserInvited(
            tenant_id=subject.tenant_id,
            user_id=user_id,
            role=data.role,
            invited_by=subject.actor_id,
        ),
    )
    await audit_by(conn, subject, origin, "user.invited", "user", user_id, role=data.role)
    return to_user(row)


async def update_user(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, user_id: UUID, data: UserUpdate
) -> User:
    require(subject, "users:write")
    current = await repo.get_user(conn, subject.tenant_id, user_id)
    if current is None:
        raise NotFound("User not found.")
    fields: dict[str, Any] = {}
    if data.name is not msgspec.UNSET:
        fields["name"] = data.name.strip()
    if data.role is not msgspec.UNSET and data.role != current["role"]:
        if Role.OWNER in (data.role, current["role"]) and subject.role is not Role.OWNER:
            raise Forbidden("Only an owner can grant or remove the owner role.")
        fields["role"] = data.role
    if data.status is not msgspec.UNSET and data.status != current["status"]:
        if current["status"] == "invited":
            raise Conflict("An invited user becomes active by accepting the invitation.")
        fields["status"] = data.status
    if not fields:
        return to_user(current)
    losing_owner = (
        current["role"] == "owner"
        and current["status"] == "active"
        and (fields.get("role", "owner") != "owner" or fields.get("status", "active") != "active")
    )
    if losing_owner and await repo.count_active_owners(conn, subject.tenant_id) <= 1:
        raise Conflict("A tenant must keep at least one active owner.")
    row = await repo.update_user(conn, subject.tenant_id, user_id, **fields)
    assert row is not None
    if fields.get("status") == "disabled":
        await repo.revoke_user_refresh_tokens(conn, subject.tenant_id, user_id)
    await publish(
        conn,
        ev.UserUpdated(
            tenant_id=subject.tenant_id, user_id=user_id, role=row["role"], status=row["status"]
        ),
    )
    await audit_by(
        conn,
        subject,
        origin,
        "user.updated",
        "user",
        user_id,
        changes={k: v for k, v in fields.items()},
    )
    return to_user(row)


# --- API keys and OAuth clients ---------------------------------------------------------------


def _check_scopes(subject: Subject, scopes: list[str]) -> list[str]:
    unknown = unknown_scopes(scopes)
    if unknown:
        raise InvalidInput(f"Unknown scopes: {', '.join(unknown)}.", field="scopes")
    beyond = sorted(set(scopes) - subject.permissions)
    if beyond:
        raise Forbidden(f"You cannot grant scopes you do not hold: {', '.join(beyond)}.")
    return sorted(set(scopes))


async def create_api_key(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: ApiKeyCreate
) -> ApiKeyCreated:
    require(subject, "api_keys:write")
    scopes = _check_scopes(subject, data.scopes)
    key_id, secret = new_id(), cred.new_secret()
    row = await repo.insert_credential(
        conn,
        subject.tenant_id,
        "api_keys",
        credential_id=key_id,
        name=data.name.strip(),
        secret_hash=cred.hash_secret(secret),
        scopes=scopes,
        created_by=subject.actor_id,
    )
    await publish(
        conn, ev.ApiKeyCreated(tenant_id=subject.tenant_id, api_key_id=key_id, scopes=scopes)
    )
    await audit_by(conn, subject, origin, "api_key.created", "api_key", key_id, scopes=scopes)
    public = to_api_key(row)
    return ApiKeyCreated(
        **msgspec.structs.asdict(public),
        secret=cred.format_token(cred.API_KEY, subject.tenant_id, key_id, secret),
    )


async def list_api_keys(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[ApiKey]:
    require(subject, "api_keys:read")
    rows = await repo.list_credentials(
        conn, subject.tenant_id, "api_keys", limit=limit, after=after
    )
    return [to_api_key(r) for r in rows]


async def get_api_key(conn: asyncpg.Connection, subject: Subject, key_id: UUID) -> ApiKey:
    require(subject, "api_keys:read")
    row = await repo.get_credential(conn, subject.tenant_id, "api_keys", key_id)
    if row is None:
        raise NotFound("API key not found.")
    return to_api_key(row)


async def revoke_api_key(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, key_id: UUID
) -> ApiKey:
    require(subject, "api_keys:write")
    before = await repo.get_credential(conn, subject.tenant_id, "api_keys", key_id)
    if before is None:
        raise NotFound("API key not found.")
    row = await repo.revoke_credential(conn, subject.tenant_id, "api_keys", key_id)
    assert row is not None
    if before["revoked_at"] is None:
        await publish(conn, ev.ApiKeyRevoked(tenant_id=subject.tenant_id, api_key_id=key_id))
        await audit_by(conn, subject, origin, "api_key.revoked", "api_key", key_id)
    return to_api_key(row)


async def create_oauth_client(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, data: OAuthClientCreate
) -> OAuthClientCreated:
    require(subject, "oauth_clients:write")
    scopes = _check_scopes(subject, data.scopes)
    client_id, secret = new_id(), cred.new_secret()
    row = await repo.insert_credential(
        conn,
        subject.tenant_id,
        "oauth_clients",
        credential_id=client_id,
        name=data.name.strip(),
        secret_hash=cred.hash_secret(secret),
        scopes=scopes,
        created_by=subject.actor_id,
    )
    await publish(
        conn, ev.OAuthClientCreated(tenant_id=subject.tenant_id, client_id=client_id, scopes=scopes)
    )
    await audit_by(conn, subject, origin, "oauth_client.created", "oauth_client", client_id)
    public = to_oauth_client(row, subject.tenant_id)
    return OAuthClientCreated(**msgspec.structs.asdict(public), client_secret=secret)


async def list_oauth_clients(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[OAuthClient]:
    require(subject, "oauth_clients:read")
    rows = await repo.list_credentials(
        conn, subject.tenant_id, "oauth_clients", limit=limit, after=after
    )
    return [to_oauth_client(r, subject.tenant_id) for r in rows]


async def revoke_oauth_client(
    conn: asyncpg.Connection, subject: Subject, origin: Origin, client_id: UUID
) -> OAuthClient:
    require(subject, "oauth_clients:write")
    before = await repo.get_credential(conn, subject.tenant_id, "oauth_clients", client_id)
    if before is None:
        raise NotFound("OAuth client not found.")
    row = await repo.revoke_credential(conn, subject.tenant_id, "oauth_clients", client_id)
    assert row is not None
    if before["revoked_at"] is None:
        await publish(conn, ev.OAuthClientRevoked(tenant_id=subject.tenant_id, client_id=client_id))
        await audit_by(conn, subject, origin, "oauth_client.revoked", "oauth_client", client_id)
    return to_oauth_client(row, subject.tenant_id)


# --- audit ------------------------------------------------------------------------------------


async def list_audit(
    conn: asyncpg.Connection, subject: Subject, *, limit: int, after: UUID | None
) -> list[AuditEntry]:
    require(subject, "audit:read")
    rows = await repo.list_audit(conn, subject.tenant_id, limit=limit, after=after)
    return [
        AuditEntry(
            id=r["id"],
            at=r["at"],
            actor_type=r["actor_type"],
            actor_id=r["actor_id"],
            action=r["action"],
            target_type=r["target_type"],
            target_id=r["target_id"],
            source_ip=r["source_ip"],
            details=r["details"],
        )
        for r in rows
    ]


def subject_for_user(tenant_id: TenantId, user_id: UUID, role: Role) -> Subject:
    return Subject(
        tenant_id=tenant_id,
        actor_type="user",
        actor_id=user_id,
        role=role,
        permissions=permissions_for(role),
    )

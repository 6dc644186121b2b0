"""Roles grant permissions; API keys and OAuth clients carry a subset as scopes."""

from __future__ import annotations

from tenancy.models import Role

RESOURCES = ("tenant", "users", "api_keys", "oauth_clients", "audit")
ALL_PERMISSIONS: frozenset[str] = frozenset(
    f"{r}:{a}" for r in RESOURCES for a in ("read", "write")
)

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: ALL_PERMISSIONS,
    Role.ADMIN: ALL_PERMISSIONS,
    Role.SUPERVISOR: frozenset({"tenant:read", "users:read"}),
    Role.AGENT: frozenset({"tenant:read"}),
    Role.FINANCE: frozenset({"tenant:read", "users:read", "audit:read"}),
    Role.DEVELOPER: frozenset(
        {
            "tenant:read",
            "users:read",
            "api_keys:read",
            "api_keys:write",
            "oauth_clients:read",
            "oauth_clients:write",
        }
    ),
}


def permissions_for(role: Role) -> frozenset[str]:
    return ROLE_PERMISSIONS[role]


def unknown_scopes(scopes: list[str]) -> list[str]:
    return sorted(set(scopes) - ALL_PERMISSIONS)

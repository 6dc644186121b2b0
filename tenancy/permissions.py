"""Roles grant permissions; API keys and OAuth clients carry a subset as scopes."""

from __future__ import annotations

from tenancy.models import Role

RESOURCES = (
    "tenant",
    "users",
    "api_keys",
    "oauth_clients",
    "audit",
    "numbers",
    "seats",
    "skills",
    "queues",
    "flows",
    "prompts",
    "contacts",
    "trunks",
    "presence",
    "voicemails",
    "calls",
    "billing",
)
_CONTACT_CENTER = frozenset(
    f"{r}:{a}"
    for r in (
        "seats",
        "skills",
        "queues",
        "flows",
        "prompts",
        "contacts",
        "presence",
        "voicemails",
        "calls",
    )
    for a in ("read", "write")
)
ALL_PERMISSIONS: frozenset[str] = frozenset(
    f"{r}:{a}" for r in RESOURCES for a in ("read", "write")
)

# Money is for the owner and finance: an admin runs the contact center, not its bill.
_BILLING = frozenset({"billing:read", "billing:write"})

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: ALL_PERMISSIONS,
    Role.ADMIN: ALL_PERMISSIONS - _BILLING,
    Role.SUPERVISOR: _CONTACT_CENTER | {"tenant:read", "users:read", "numbers:read"},
    # The tenant's numbers: the caller IDs an agent may dial out with.
    Role.AGENT: frozenset({"tenant:read", "contacts:read", "numbers:read"}),
    Role.FINANCE: frozenset(
        {"tenant:read", "users:read", "audit:read", "numbers:read", "seats:read"}
    )
    | _BILLING,
    Role.DEVELOPER: frozenset(
        {
            "tenant:read",
            "users:read",
            "api_keys:read",
            "api_keys:write",
            "oauth_clients:read",
            "oauth_clients:write",
            "numbers:read",
            "seats:read",
            "skills:read",
            "queues:read",
            "flows:read",
            "prompts:read",
            "contacts:read",
            "contacts:write",
            "trunks:read",
            "presence:read",
        }
    ),
}


def permissions_for(role: Role) -> frozenset[str]:
    return ROLE_PERMISSIONS[role]


def unknown_scopes(scopes: list[str]) -> list[str]:
    return sorted(set(scopes) - ALL_PERMISSIONS)

"""Domain errors. Each carries what the HTTP edge needs to answer with problem+json."""

from __future__ import annotations

from typing import Any, ClassVar


class TenancyError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(TenancyError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(TenancyError):
    status, code, title = 409, "conflict", "Conflict"


class EmailTaken(Conflict):
    code, title = "email-taken", "Email address already registered"


class InvalidInput(TenancyError):
    status, code, title = 422, "invalid-input", "Invalid input"


class WeakPassword(InvalidInput):
    code, title = "weak-password", "Password too weak"


class InvalidCredentials(TenancyError):
    status, code, title = 401, "invalid-credentials", "Invalid credentials"


class InvalidToken(TenancyError):
    status, code, title = 400, "invalid-token", "Invalid or expired token"


class Unauthenticated(TenancyError):
    status, code, title = 401, "unauthenticated", "Authentication required"


class Forbidden(TenancyError):
    status, code, title = 403, "forbidden", "Forbidden"


class TenantNotActive(Forbidden):
    code, title = "tenant-not-active", "Tenant is not active"


class TenantSuspended(Forbidden):
    code, title = "tenant-suspended", "Tenant is suspended"

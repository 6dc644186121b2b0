"""RFC 9457 problem+json for every error the API returns."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from tenancy.errors import TenancyError

log = logging.getLogger("api")
PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, kw_only=True):
    field: str
    message: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    code: str | None = None
    error: str | None = None
    """For OAuth2 endpoints: the RFC 6749 error code."""
    limit: str | None = None
    plan: str | None = None
    allowed: int | None = None


class ApiError(Exception):
    """An HTTP-level problem raised by the API itself (not by a domain package)."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.headers = headers or {}


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    title: str,
    detail: str | None,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    oauth_error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[bytes]:
    body = Problem(
        type=f"/problems/{code}",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors,
        code=code,
        error=oauth_error,
        **{k: v for k, v in (extra or {}).items() if k in _EXTENSIONS},
    )
    return Response(
        msgspec.json.encode(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


_EXTENSIONS = {"limit", "plan", "allowed"}
_MISSING_PARAM = re.compile(r"Missing required (\w+) parameter '([^']+)'")
_FIELD_IN_MESSAGE = re.compile(r"`\$\.([\w.\[\]]+)`")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _field_errors(extra: Any) -> list[FieldError]:
    """Name the offending field: from msgspec's message (`$.a.b`, unknown/missing field `x`),
    else from the parameter litestar was filling."""
    out: list[FieldError] = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", "invalid"))
        key = str(item.get("key") or "")
        named = _NAMED_FIELD.search(message)
        path = _FIELD_IN_MESSAGE.search(message)
        if named:
            field = named.group(1)
        elif key and key != "data":
            field = key + (f".{path.group(1)}" if path and path.group(1) != key else "")
        elif path:
            field = path.group(1)
        else:
            field = "body"
        out.append(FieldError(field=field, message=message))
    return out


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if isinstance(exc, TenancyError):
        field = exc.extra.get("field")
        errors = [FieldError(field=str(field), message=exc.detail)] if field else None
        if isinstance(exc.extra.get("errors"), list):
            errors = [FieldError(field=str(f), message=str(m)) for f, m in exc.extra["errors"]]
        code = str(exc.extra.get("code", exc.code))
        return problem_response(
            request,
            exc.status,
            code,
            exc.title,
            exc.detail,
            errors=errors,
            oauth_error=exc.extra.get("error"),
            extra=exc.extra,
        )
    if isinstance(exc, ApiError):
        return problem_response(
            request, exc.status, exc.code, exc.title, exc.detail, headers=exc.headers
        )
    if isinstance(exc, ValidationException):
        detail = str(exc.detail)
        if "malformed" in detail.lower():
            return problem_response(
                request,
                400,
                "malformed-json",
                "Malformed JSON",
                "The request body is not valid JSON.",
            )
        errors = _field_errors(exc.extra)
        missing = _MISSING_PARAM.search(detail)
        if missing:
            errors = [FieldError(field=missing.group(2), message=f"Missing {missing.group(1)}.")]
            summary = f"Missing required {missing.group(1)} parameter '{missing.group(2)}'."
        elif errors:
            summary = f"Invalid value for: {', '.join(e.field for e in errors)}."
        else:
            summary = detail
        return problem_response(
            request, 422, "validation-error", "Invalid request", summary, errors=errors
        )
    if isinstance(exc, HTTPException):
        titles = {
            404: ("not-found", "Not found"),
            405: ("method-not-allowed", "Method not allowed"),
            413: ("payload-too-large", "Request body too large"),
            415: ("unsupported-media-type", "Unsupported media type"),
            401: ("unauthenticated", "Authentication required"),
            403: ("forbidden", "Forbidden"),
            429: ("rate-limited", "Too many requests"),
        }
        code, title = titles.get(exc.status_code, ("http-error", "Request failed"))
        return problem_response(
            request, exc.status_code, code, title, str(exc.detail), headers=exc.headers
        )
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem_response(
        request, 500, "internal-error", "Internal error", "Something went wrong on our side."
    )


def problem_spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=Problem, description=description, media_type=PROBLEM_JSON)


COMMON_RESPONSES: dict[int, ResponseSpec] = {
    400: problem_spec("Malformed request (problem+json)"),
    413: problem_spec("Request body too large"),
    422: problem_spec("Invalid fields; `errors` names each field"),
    429: problem_spec("Rate limited; see Retry-After"),
}
AUTH_RESPONSES: dict[int, ResponseSpec] = {
    **COMMON_RESPONSES,
    401: problem_spec("Missing, invalid or expired credentials"),
    403: problem_spec("The credential lacks the permission, or the tenant is not active"),
    404: problem_spec("No such resource in this tenant"),
}

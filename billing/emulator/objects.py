"""Stripe-shaped building blocks: errors, ids, parameter readers, lists."""

import calendar
import secrets
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

API_VERSION = "2026-10-28.endive"
METER_EVENT_PAST_LIMIT = 35 * 86400  # Stripe refuses meter events older than 35 days
METER_EVENT_FUTURE_LIMIT = 5 * 60  # ... or more than 5 minutes ahead


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        self.code = code

    def body(self) -> Json:
        error: Json = {"type": self.kind, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
        return {"error": error}


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", param, code="parameter_missing")


def invalid(param: str, message: str) -> StripeError:
    return StripeError(400, message, param, code="parameter_invalid")


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", param, code="resource_missing")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def add_month(ts: int) -> int:
    """One calendar month later, clamped to the month's last day (Jan 31 -> Feb 28/29)."""
    at = datetime.fromtimestamp(ts, UTC)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    day = min(at.day, calendar.monthrange(year, month)[1])
    return int(at.replace(year=year, month=month, day=day).timestamp())


def read_str(params: Json, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise invalid(name, f"Invalid string: {name} must be a string.")
    return value


def read_int(params: Json, name: str, *, required: bool = False, default: int | None = None) -> Any:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(name, f"Invalid integer: {value!r}") from None


def read_metadata(params: Json, name: str = "metadata") -> dict[str, str]:
    value = params.get(name, {})
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid(name, "Invalid object: metadata must be a hash.")
    return {str(k): str(v) for k, v in value.items()}


def is_true(value: Any) -> bool:
    return value in (True, "true", "1")


def list_of(url: str, data: list[Json], has_more: bool = False) -> Json:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def allow_only(params: Json, *allowed: str) -> None:
    for name in params:
        if name not in allowed and name != "expand":
            raise StripeError(400, f"Received unknown parameter: {name}", name)


def dicts(items: list[Any]) -> list[Json]:
    return [item if isinstance(item, dict) else {} for item in items]


def copy_json(obj: Json) -> Json:
    """A deep copy of JSON data, so later changes never reach a stored event or response."""
    return {k: _copy(v) for k, v in obj.items()}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value

"""Supervising live calls from the API: listen to, whisper on, or barge into a call of the
tenant over the supervisor's own softphone line (which must be connected, on the node holding
the call). The same as the softphone's monitor messages, for wallboards and integrations."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec
from litestar import delete, post

from api.context import AnyRequest, deps_of
from api.controllers.tenant import _RESPONSES, TenantScoped
from api.problems import ApiError
from bus.requests import NoResponder, send_command
from tenancy.errors import Forbidden
from tenancy.models import Subject, _In
from webrtc.desk import agent_command_subject

MONITOR_PERMISSION = "calls:write"


class MonitorRequest(_In):
    mode: Literal["listen", "whisper", "barge"]
    """listen: hear both sides, heard by neither; whisper: heard by the agent only; barge:
    heard by both."""


class MonitorView(msgspec.Struct, kw_only=True):
    call_id: UUID
    mode: str
    agent_id: UUID


_NOT_FOUND = frozenset({"call_not_found", "not_monitoring"})


async def _command(
    request: AnyRequest, subject: Subject, verb: str, body: dict[str, str]
) -> dict[str, object]:
    if not subject.can(MONITOR_PERMISSION):
        raise Forbidden(f"Supervising calls needs the {MONITOR_PERMISSION} permission.")
    if subject.actor_type != "user":
        raise Forbidden("Only a signed-in user, with a softphone, can supervise a call.")
    bus = deps_of(request).bus
    if bus is None:
        raise ApiError(503, "media-unavailable", "Media unavailable", "No media plane is wired.")
    payload = msgspec.json.encode(
        {"tenant_id": str(subject.tenant_id), "agent_id": str(subject.actor_id), **body}
    )
    try:
        raw = await send_command(
            bus, agent_command_subject(subject.tenant_id, subject.actor_id, verb), payload
        )
    except NoResponder as exc:
        raise ApiError(
            409,
            "no-media",
            "Softphone not connected",
            "Connect your softphone (/softphone) first: the call's audio reaches you there.",
        ) from exc
    reply: dict[str, object] = msgspec.json.decode(raw)
    if not reply.get("ok"):
        code = str(reply.get("error"))
        message = str(reply.get("message", ""))
        if code in _NOT_FOUND:
            raise ApiError(404, "not-found", "Not found", message)
        raise ApiError(409, code.replace("_", "-"), "Not possible now", message)
    return reply


class CallMonitorController(TenantScoped):
    path = "/v1/calls"
    tags = ["calls"]

    @post(
        "/{call_id:uuid}/monitor",
        responses=_RESPONSES,
        summary="Listen to, whisper on or barge into a live call (or change how)",
        status_code=200,
    )
    async def monitor(
        self, request: AnyRequest, subject: Subject, call_id: UUID, data: MonitorRequest
    ) -> MonitorView:
        reply = await _command(
            request, subject, "monitor", {"call_id": str(call_id), "mode": data.mode}
        )
        return msgspec.convert(reply, MonitorView, strict=False)

    @delete("/{call_id:uuid}/monitor", responses=_RESPONSES, summary="Stop supervising the call")
    async def stop(self, request: AnyRequest, subject: Subject, call_id: UUID) -> None:
        await _command(request, subject, "stop_monitor", {"call_id": str(call_id)})

"""Agent presence (available, away with a reason, offline), wrap-up, and the live queue numbers
supervisors watch. The ACD router owns this state; these handlers ask it over the bus."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import get, post, put

from api.context import AnyRequest, deps_of
from api.controllers.tenant import _RESPONSES, TenantScoped
from api.problems import ApiError
from routing.client import RouterClient, RouterRefused, RouterUnavailable
from routing.devices import DeviceRejected, check_device
from tenancy.errors import Forbidden
from tenancy.models import Subject, _In

AwayReason = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="Why the agent is away: break, lunch, meeting, training, ...",
    ),
]


class PresenceUpdate(_In):
    state: Literal["available", "away", "offline"]
    reason: AwayReason | None = None
    """Only with "away"."""
    device: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    """Where calls ring: an E.164 number or sip:user@ip[:port] (allowed networks only).
    Needed once before going available; kept until changed."""


class AgentPresence(msgspec.Struct, kw_only=True):
    agent_id: UUID
    state: str
    reason: str | None = None
    since: datetime
    call_id: UUID | None = None
    pending: str | None = None
    """A state the agent asked for while busy, applied after wrap-up."""
    pending_reason: str | None = None
    calls_handled: int = 0
    """Calls answered since the router started serving the tenant."""
    wrap_up_until: datetime | None = None
    device: str | None = None


class QueueLiveView(msgspec.Struct, kw_only=True):
    queue_id: UUID
    waiting: int
    """Calls holding a place, callbacks included."""
    callbacks: int = 0
    offered: int = 0
    """Calls ringing an agent now."""
    longest_wait_seconds: float
    agents: dict[str, int]
    """Member agents by state."""
    staffed: int = 0
    ewt_seconds: float | None = None
    """Estimated wait for a call arriving now."""
    aht_seconds: float | None = None
    arrivals_per_hour: float | None = None
    answered: int = 0
    """Since the router began serving the tenant (reports give exact intervals)."""
    answered_within_service_level: int = 0
    abandoned: int = 0
    overflowed: int = 0


def _client(request: AnyRequest) -> RouterClient:
    client = deps_of(request).router
    if client is None:
        raise ApiError(503, "router-unavailable", "Routing unavailable", "No router is configured.")
    return client


def _may_manage(subject: Subject, agent_id: UUID) -> None:
    if subject.can("presence:write"):
        return
    if subject.actor_type == "user" and subject.actor_id == agent_id:
        return
    raise Forbidden("You may change only your own presence.")


async def _ask(call: Any) -> Any:
    try:
        return await call
    except RouterUnavailable as exc:
        raise ApiError(
            503,
            "router-unavailable",
            "Routing unavailable",
            "The router for this tenant is not answering; try again in a few seconds.",
            {"Retry-After": "2"},
        ) from exc
    except RouterRefused as exc:
        if exc.code in ("unknown_agent", "unknown_queue"):
            raise ApiError(404, "not-found", "Not found", exc.message) from exc
        raise ApiError(409, exc.code.replace("_", "-"), "Not possible now", exc.message) from exc


def _presence(raw: dict[str, Any]) -> AgentPresence:
    return msgspec.convert(raw, AgentPresence)


class AgentPresenceController(TenantScoped):
    path = "/v1/agents"
    tags = ["agents"]

    @get("/presence", responses=_RESPONSES, summary="Every agent's presence, for supervisors")
    async def list_presence(self, request: AnyRequest, subject: Subject) -> list[AgentPresence]:
        if not subject.can("presence:read"):
            raise Forbidden("Reading agents' presence needs the presence:read permission.")
        agents = await _ask(_client(request).agents(subject.tenant_id))
        return [_presence(agent) for agent in agents]

    @put(
        "/{agent_id:uuid}/presence",
        responses=_RESPONSES,
        summary="Go available, away (with a reason) or offline",
    )
    async def set_presence(
        self, request: AnyRequest, subject: Subject, agent_id: UUID, data: PresenceUpdate
    ) -> AgentPresence:
        _may_manage(subject, agent_id)
        if data.reason is not None and data.state != "away":
            raise ApiError(
                422, "invalid-input", "Invalid input", "A reason goes only with state 'away'."
            )
        device = None
        if data.device is not None:
            try:
                device = check_device(data.device, deps_of(request).settings.agent_device_networks)
            except DeviceRejected as exc:
                raise ApiError(422, "invalid-device", "Invalid device", str(exc)) from exc
        agent = await _ask(
            _client(request).set_presence(
                subject.tenant_id, agent_id, data.state, reason=data.reason, device=device
            )
        )
        return _presence(agent)

    @post(
        "/{agent_id:uuid}/wrap-up/end",
        responses=_RESPONSES,
        summary="Finish after-call work early",
        status_code=200,
    )
    async def end_wrap_up(
        self, request: AnyRequest, subject: Subject, agent_id: UUID
    ) -> AgentPresence:
        _may_manage(subject, agent_id)
        return _presence(await _ask(_client(request).end_wrap_up(subject.tenant_id, agent_id)))


class QueueLiveController(TenantScoped):
    path = "/v1/queues"
    tags = ["queues"]

    @get("/{queue_id:uuid}/live", responses=_RESPONSES, summary="Waiting calls and agents now")
    async def live(self, request: AnyRequest, subject: Subject, queue_id: UUID) -> QueueLiveView:
        if not subject.can("presence:read"):
            raise Forbidden("Live queue numbers need the presence:read permission.")
        raw = await _ask(_client(request).queue(subject.tenant_id, queue_id))
        return msgspec.convert(raw, QueueLiveView)

"""Liveness and readiness probes."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get

from api.context import AnyRequest, deps_of


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    checks: dict[str, bool]


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/healthz", summary="The process is alive")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz", summary="PostgreSQL and NATS are reachable")
    async def readyz(self, request: AnyRequest) -> Response[Readiness]:
        checks = await deps_of(request).readiness()
        ready = all(checks.values())
        return Response(Readiness(ready=ready, checks=checks), status_code=200 if ready else 503)

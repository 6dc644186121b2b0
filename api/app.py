"""The litestar application factory."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from api.context import ApiDeps, _valid_ip
from api.controllers.agent_ws import agent_socket
from api.controllers.agents import AgentPresenceController, QueueLiveController
from api.controllers.auth import AuthController, OAuthController
from api.controllers.billing import BillingController, StripeWebhookController
from api.controllers.billing_page import BillingPageController
from api.controllers.calls import CallMonitorController
from api.controllers.contacts import ContactController
from api.controllers.flows import FlowController, NumberRoutingController
from api.controllers.health import HealthController
from api.controllers.numbers import NumberController, SeatController
from api.controllers.pages import PagesController
from api.controllers.prompts import PromptController
from api.controllers.queues import AgentSkillController, QueueController, SkillController
from api.controllers.softphone import SoftphoneController
from api.controllers.sso import SsoController, SsoSignInController
from api.controllers.tenant import (
    ApiKeyController,
    OAuthClientController,
    TenantController,
    UserController,
)
from api.controllers.trunks import TrunkController
from api.controllers.voicemail import IntegrationController, VoicemailController
from api.problems import PROBLEM_JSON, Problem, handle_exception
from api.ratelimit import retry_after_header

_UNLIMITED = ("/healthz", "/readyz")


def _ip_rate_limit(deps: ApiDeps) -> Any:
    """Per-client-IP token bucket in front of everything but the probes."""
    import msgspec

    trusted = set(deps.settings.trusted_proxies)

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope["path"] in _UNLIMITED:
                await app(scope, receive, send)
                return
            peer = scope.get("client")
            ip: str = peer[0] if peer else "unknown"
            if ip in trusted:
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        hops = [h.strip() for h in value.decode("latin-1").split(",")]
                        untrusted = [h for h in hops if h and h not in trusted]
                        ip = (_valid_ip(untrusted[-1]) if untrusted else ip) or "unknown"
            wait = deps.ip_limits.take(ip)
            if not wait:
                await app(scope, receive, send)
                return
            body = msgspec.json.encode(
                Problem(
                    type="/problems/rate-limited",
                    title="Too many requests",
                    status=429,
                    detail="This client is over its request rate.",
                    instance=scope["path"],
                    code="rate-limited",
                )
            )
            headers = [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ] + [(k.lower().encode(), v.encode()) for k, v in retry_after_header(wait).items()]
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 429,
                "headers": headers,
            }
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return middleware

    return factory


def create_app(deps: ApiDeps, *, debug: bool = False) -> Litestar:
    openapi = OpenAPIConfig(
        title="Switchboard API",
        version="1.0.0",
        description=(
            "Multi-tenant call center API. Errors are RFC 9457 problem+json. Lists are cursor "
            "pages (limit, starting_after, has_more). Creating POSTs accept Idempotency-Key."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=Components(
            security_schemes={
                "bearerAuth": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT access token (ES256) or API key (sbk_...)",
                    description="User or OAuth client access token, or an API key.",
                )
            }
        ),
    )
    plugins = []
    if deps.tracer_provider is not None:
        plugins.append(
            OpenTelemetryPlugin(
                OpenTelemetryConfig(tracer_provider=deps.tracer_provider, exclude=list(_UNLIMITED))
            )
        )
    return Litestar(
        plugins=plugins,
        route_handlers=[
            HealthController,
            AgentPresenceController,
            QueueLiveController,
            AuthController,
            OAuthController,
            TenantController,
            UserController,
            ApiKeyController,
            OAuthClientController,
            NumberController,
            SeatController,
            ContactController,
            FlowController,
            NumberRoutingController,
            TrunkController,
            PromptController,
            SkillController,
            AgentSkillController,
            QueueController,
            SsoController,
            SsoSignInController,
            VoicemailController,
            IntegrationController,
            PagesController,
            SoftphoneController,
            CallMonitorController,
            BillingController,
            BillingPageController,
            StripeWebhookController,
            agent_socket,
        ],
        state=State({"deps": deps}),
        exception_handlers={Exception: handle_exception},
        middleware=[_ip_rate_limit(deps)],
        openapi_config=openapi,
        request_max_body_size=deps.settings.max_body_bytes,
        debug=debug,
        logging_config=None,
    )

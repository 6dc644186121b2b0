"""The agents' browser softphone: one HTML page and the ES modules and stylesheet beside it."""

from __future__ import annotations

from litestar import Controller, Response, get

from api.context import AnyRequest
from api.static_site import STATIC, StaticSite

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; "
    "media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
DIRECTORY = STATIC / "softphone"
SITE = StaticSite(
    DIRECTORY,
    {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    },
)


def served_files() -> list[str]:
    """Names reachable under /softphone/."""
    return SITE.served_files()


class SoftphoneController(Controller):
    path = "/softphone"
    include_in_schema = False

    @get("/")
    async def page(self, request: AnyRequest) -> Response[bytes]:
        return SITE.page(request)

    @get("/{name:str}")
    async def asset(self, request: AnyRequest, name: str) -> Response[bytes]:
        return SITE.file(request, name)

"""The billing page for finance users and owners: one HTML page and the modules beside it."""

from __future__ import annotations

from litestar import Controller, Response, get

from api.context import AnyRequest
from api.static_site import STATIC, StaticSite

DIRECTORY = STATIC / "billing"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
SITE = StaticSite(
    DIRECTORY,
    {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    },
    # Signing in is the softphone's session module, served here too.
    shared={"auth.js": STATIC / "softphone" / "auth.js"},
)


def served_files() -> list[str]:
    """Names reachable under /billing/."""
    return SITE.served_files()


class BillingPageController(Controller):
    path = "/billing"
    include_in_schema = False

    @get("/")
    async def page(self, request: AnyRequest) -> Response[bytes]:
        return SITE.page(request)

    @get("/{name:str}")
    async def asset(self, request: AnyRequest, name: str) -> Response[bytes]:
        return SITE.file(request, name)

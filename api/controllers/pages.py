"""Small pages behind the links we email: verify, accept an invitation, reset a password."""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, Response, get

_PAGE = (Path(__file__).resolve().parent.parent / "static" / "account.html").read_bytes()


class PagesController(Controller):
    path = "/"
    include_in_schema = False

    @get(["/signup", "/login", "/verify-email", "/accept-invitation", "/reset-password"])
    async def account_page(self) -> Response[bytes]:
        return Response(
            _PAGE,
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
                " style-src 'unsafe-inline'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer",
            },
        )

"""The agents' browser softphone: one HTML page and the ES modules and stylesheet beside it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from litestar import Controller, Response, get
from litestar.exceptions import NotFoundException

from api.context import AnyRequest

DIRECTORY = Path(__file__).resolve().parent.parent / "static" / "softphone"
# litestar adds "; charset=utf-8" to text/* types.
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src 'self' ws: wss:; "
    "media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}


class _Asset:
    __slots__ = ("body", "etag", "media_type")

    def __init__(self, body: bytes, media_type: str) -> None:
        self.body = body
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _load() -> tuple[_Asset, dict[str, _Asset]]:
    """The page and a whitelist of the files beside it, read once: nothing else is served."""
    page = _Asset((DIRECTORY / "index.html").read_bytes(), "text/html")
    files = {
        path.name: _Asset(path.read_bytes(), MEDIA_TYPES[path.suffix])
        for path in sorted(DIRECTORY.iterdir())
        if path.is_file() and path.suffix in MEDIA_TYPES
    }
    return page, files


_PAGE, _FILES = _load()


def served_files() -> list[str]:
    """Names reachable under /softphone/."""
    return sorted(_FILES)


def _respond(request: AnyRequest, asset: _Asset) -> Response[bytes]:
    headers = {**_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(b"", status_code=304, headers=headers, media_type=asset.media_type)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class SoftphoneController(Controller):
    path = "/softphone"
    include_in_schema = False

    @get("/")
    async def page(self, request: AnyRequest) -> Response[bytes]:
        return _respond(request, _PAGE)

    @get("/{name:str}")
    async def asset(self, request: AnyRequest, name: str) -> Response[bytes]:
        asset = _FILES.get(name)
        if asset is None:
            raise NotFoundException()
        return _respond(request, asset)

"""A page served from a folder of static files (HTML plus ES modules, no build step): read once
at start-up, a whitelist of the files beside the page, strict security headers, ETags."""

from __future__ import annotations

import hashlib
from pathlib import Path

from litestar import Response
from litestar.exceptions import NotFoundException

from api.context import AnyRequest

STATIC = Path(__file__).resolve().parent / "static"
# litestar adds "; charset=utf-8" to text/* types.
MEDIA_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


class _Asset:
    __slots__ = ("body", "etag", "media_type")

    def __init__(self, body: bytes, media_type: str) -> None:
        self.body = body
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class StaticSite:
    def __init__(
        self, directory: Path, headers: dict[str, str], shared: dict[str, Path] | None = None
    ) -> None:
        """`shared` serves files of another folder under the names given (one module used
        by two pages)."""
        self._headers = headers
        self._page = _Asset((directory / "index.html").read_bytes(), "text/html")
        self._files = {
            path.name: _Asset(path.read_bytes(), MEDIA_TYPES[path.suffix])
            for path in sorted(directory.iterdir())
            if path.is_file() and path.suffix in MEDIA_TYPES
        }
        for name, path in (shared or {}).items():
            self._files[name] = _Asset(path.read_bytes(), MEDIA_TYPES[path.suffix])

    def served_files(self) -> list[str]:
        return sorted(self._files)

    def page(self, request: AnyRequest) -> Response[bytes]:
        return self._respond(request, self._page)

    def file(self, request: AnyRequest, name: str) -> Response[bytes]:
        asset = self._files.get(name)
        if asset is None:
            raise NotFoundException()
        return self._respond(request, asset)

    def _respond(self, request: AnyRequest, asset: _Asset) -> Response[bytes]:
        headers = {**self._headers, "ETag": asset.etag}
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(b"", status_code=304, headers=headers, media_type=asset.media_type)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

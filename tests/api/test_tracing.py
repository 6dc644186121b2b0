"""Requests become OpenTelemetry spans exported over OTLP/HTTP when an endpoint is set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from api.app import create_app
from runtime.embedded import free_port
from runtime.telemetry import setup_tracing, shutdown_tracing
from switchboard import roles
from tests.conftest import Api


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


async def test_request_spans_reach_the_otlp_endpoint(api: Api, collector: str) -> None:
    provider = setup_tracing("switchboard-test", collector, "api")
    assert provider is not None
    api.resources.tracer_provider = provider
    app = create_app(roles.api_deps(api.resources))
    owner = await api.signup_verified("owner@acme.test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v1/me", headers=owner["auth"])).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    shutdown_tracing(provider)
    assert _Collector.received, "no spans were exported"
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces"}
    payload = b"".join(body for _, body in _Collector.received)
    assert b"/v1/me" in payload
    assert b"switchboard-test" in payload
    assert b"/healthz" not in payload  # probes are not traced


def test_without_an_endpoint_tracing_is_off() -> None:
    assert setup_tracing("switchboard", None, "api") is None

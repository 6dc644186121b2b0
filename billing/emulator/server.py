"""The emulator's HTTP edge: litestar routes served by uvicorn on the running loop.

Stripe API requests (`/v1/...`) pass through the API-key check, injected faults and
`Idempotency-Key` handling before the account acts; `/_emulator/...` drives it from tests."""

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, get, post, route

from billing.emulator.forms import FormError, parse_form
from billing.emulator.invoicing import close_period, pay_invoice, set_payments
from billing.emulator.objects import API_VERSION, Json, StripeError
from billing.emulator.state import StripeAccount
from billing.emulator.webhooks import WebhookSender

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"POST", "DELETE"})


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes


@dataclass
class _Faults:
    status: int = 0
    status_count: int = 0
    delay: float = 0.0
    delay_count: int = 0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(raw, status_code=status, media_type="application/json", headers=headers)


def _error(exc: StripeError) -> Response[bytes]:
    return _json(exc.body(), exc.status)


class StripeEmulator:
    def __init__(
        self,
        webhook_url: str | None = None,
        webhook_secret: str = "whsec_emulator",  # noqa: S107 - a test secret, never a real one
        api_version: str = API_VERSION,
    ) -> None:
        self.webhook_url = webhook_url
        self.api_version = api_version
        self.url = ""
        self.account = StripeAccount(lambda: self.url, self._on_event)
        self.requests = 0
        self.replays = 0
        self.requests_by_path: Counter[str] = Counter()
        self._sender = WebhookSender(webhook_secret)
        self._idempotent: dict[str, _Stored] = {}
        self._faults = _Faults()
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def webhook_secret(self) -> str:
        return self._sender.secret

    @webhook_secret.setter
    def webhook_secret(self, secret: str) -> None:
        self._sender.secret = secret

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        config = uvicorn.Config(
            self._app(),
            host=host,
            port=port,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        self._sender.start()
        self._server = server
        self._serving = asyncio.create_task(server.serve(), name="stripe-emulator")
        while not server.started:
            if self._serving.done():
                await self._sender.stop()
                raise RuntimeError(f"The Stripe emulator could not listen on {host}:{port}.")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
            self._server = self._serving = None
        await self._sender.stop()

    def _on_event(self, event: Json) -> None:
        event["api_version"] = self.api_version
        if self.webhook_url:
            self._sender.send(self.webhook_url, event)

    # --- the Stripe API -----------------------------------------------------------------------

    async def _stripe(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        method, path = request.method, request.url.path
        self.requests += 1
        self.requests_by_path[f"{method} {path}"] += 1
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer sk_"):
            return _error(
                StripeError(
                    401,
                    "You did not provide a valid API key. Use `Authorization: Bearer sk_...`.",
                )
            )
        if self._faults.status_count > 0:
            self._faults.status_count -= 1
            kind = "rate_limit_error" if self._faults.status == 429 else "api_error"
            fault = StripeError(self._faults.status, "An emulated fault occurred.", kind=kind)
            return _error(fault)
        delay = 0.0
        if self._faults.delay_count > 0:
            self._faults.delay_count -= 1
            delay = self._faults.delay
        body = await request.body()
        response = self._act(method, path, request.scope["query_string"], body, request)
        if delay:
            await asyncio.sleep(delay)
        return response

    def _act(
        self,
        method: str,
        path: str,
        query: bytes,
        body: bytes,
        request: Request[Any, Any, Any],
    ) -> Response[bytes]:
        key = request.headers.get("idempotency-key") if method in IDEMPOTENT_METHODS else None
        fingerprint = hashlib.sha256(
            f"{method} {path}?".encode() + query + b"\n" + body
        ).hexdigest()
        if key is not None and (stored := self._idempotent.get(key)) is not None:
            if stored.fingerprint != fingerprint:
                return _error(
                    StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters"
                        " they were first used with. Try using a key other than"
                        f" '{key}' if you meant to execute a different request.",
                        kind="idempotency_error",
                    )
                )
            self.replays += 1
            return _json(
                stored.body,
                stored.status,
                {"Idempotent-Replayed": "true", "Idempotency-Key": key},
            )
        try:
            params = parse_form(query)
            params.update(parse_form(body))
            status, raw = 200, json.dumps(self.account.handle(method, path, params)).encode()
        except FormError as exc:
            status, raw = 400, json.dumps(StripeError(400, str(exc)).body()).encode()
        except StripeError as exc:
            status, raw = exc.status, json.dumps(exc.body()).encode()
        headers = {"Request-Id": f"req_{fingerprint[:14]}"}
        if key is not None and status < 500:
            self._idempotent[key] = _Stored(fingerprint, status, raw)
            headers["Idempotency-Key"] = key
        return _json(raw, status, headers)

    # --- the control endpoints ----------------------------------------------------------------

    def _app(self) -> Litestar:
        account = self.account

        @route("/v1/{rest:path}", http_method=["GET", "POST", "DELETE"])
        async def stripe_api(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await self._stripe(request)

        @post("/_emulator/faults")
        async def faults(request: Request[Any, Any, Any]) -> Response[bytes]:
            spec = await _control_body(request)
            count = int(spec.get("count", 1))
            if spec.get("clear"):
                self._faults = _Faults()
            elif "status" in spec:
                self._faults.status, self._faults.status_count = int(spec["status"]), count
            elif "delay" in spec:
                self._faults.delay, self._faults.delay_count = float(spec["delay"]), count
            else:
                return _error(StripeError(400, "Give status, delay or clear."))
            return _json(self._faults.__dict__)

        @post("/_emulator/customers/{customer_id:str}/payments")
        async def payments(request: Request[Any, Any, Any], customer_id: str) -> Response[bytes]:
            spec = await _control_body(request)
            try:
                set_payments(account, customer_id, bool(spec.get("fail")))
            except StripeError as exc:
                return _error(exc)
            return _json({"customer": customer_id, "fail": bool(spec.get("fail"))})

        @post("/_emulator/customers/{customer_id:str}/close_period")
        async def close(customer_id: str) -> Response[bytes]:
            try:
                return _json(close_period(account, customer_id))
            except StripeError as exc:
                return _error(exc)

        @post("/_emulator/invoices/{invoice_id:str}/pay")
        async def pay(invoice_id: str) -> Response[bytes]:
            try:
                return _json(pay_invoice(account, invoice_id))
            except StripeError as exc:
                return _error(exc)

        @get("/_emulator/invoices/{name:str}")
        async def invoice_document(name: str) -> Response[bytes]:
            invoice = account.invoices.get(name.removesuffix(".pdf"))
            if invoice is None:
                return _error(StripeError(404, f"No such invoice: '{name}'"))
            if name.endswith(".pdf"):
                return Response(_pdf(invoice), media_type="application/pdf")
            page = f"<h1>Invoice {escape(invoice['number'])}</h1><p>{_money(invoice)}</p>"
            return Response(page.encode(), media_type="text/html")

        @get("/_emulator/portal/{session_id:str}")
        async def portal(session_id: str) -> Response[bytes]:
            session = account.sessions.get(session_id)
            if session is None:
                return _error(StripeError(404, f"No such session: '{session_id}'"))
            back = escape(session["return_url"] or "/")
            page = f'<h1>Billing portal</h1><a href="{back}">Return</a>'
            return Response(page.encode(), media_type="text/html")

        @get("/_emulator/meter_events")
        async def meter_events(customer: str | None = None) -> Response[bytes]:
            return _json({"data": account.accepted_meter_events(customer)})

        @get("/_emulator/events")
        async def events(type: str | None = None) -> Response[bytes]:
            found = [e for e in account.events.values() if type is None or e["type"] == type]
            return _json({"data": found})

        @post("/_emulator/events/{event_id:str}/resend")
        async def resend(event_id: str) -> Response[bytes]:
            event = account.events.get(event_id)
            if event is None:
                return _error(StripeError(404, f"No such event: '{event_id}'"))
            if self.webhook_url:
                self._sender.send(self.webhook_url, event)
            return _json(event)

        @get("/_emulator/state")
        async def state() -> Response[bytes]:
            return _json(
                {
                    **account.counts(),
                    "requests": self.requests,
                    "replays": self.replays,
                    "requests_by_path": dict(self.requests_by_path),
                    "webhooks_delivered": self._sender.delivered,
                    "webhooks_dropped": self._sender.dropped,
                }
            )

        handlers = [
            stripe_api,
            faults,
            payments,
            close,
            pay,
            invoice_document,
            portal,
            meter_events,
            events,
            resend,
            state,
        ]
        return Litestar(route_handlers=handlers, openapi_config=None, debug=False)


async def _control_body(request: Request[Any, Any, Any]) -> Json:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _money(invoice: Json) -> str:
    return f"{invoice['total'] / 100:.2f} {invoice['currency'].upper()} ({invoice['status']})"


def _pdf(invoice: Json) -> bytes:
    """A tiny but well-formed one-page PDF naming the invoice and its total."""
    text = f"Invoice {invoice['number']}: {_money(invoice)}".replace("(", "[").replace(")", "]")
    stream = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)

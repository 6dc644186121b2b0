"""The browser softphone: the page and its modules are served with strict headers and nothing
else is; every module parses and imports only files that are served; the page's own logic (call
list, backoff, checks) in node; and the page driven in headless Chromium against a stand-in for
the agent signaling endpoint that speaks the protocol and answers the audio leg with aiortc."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    WebSocketDisconnect,
)

from api.controllers.softphone import (
    CONTENT_SECURITY_POLICY,
    DIRECTORY,
    SoftphoneController,
    served_files,
)
from runtime.embedded import free_port

SPEC_IDS = (
    "login-email",
    "login-password",
    "login-submit",
    "state-select",
    "away-reason",
    "status-line",
    "leg-state",
    "offer-banner",
    "offer-from",
    "offer-contact",
    "offer-queue",
    "offer-waited",
    "offer-path",
    "answer-btn",
    "reject-btn",
    "call-panel",
    "call-state",
    "hangup-btn",
    "hold-btn",
    "mute-btn",
    "keypad",
    "transfer-btn",
    "transfer-kind",
    "transfer-to",
    "transfer-attended",
    "transfer-submit",
    "wrapup-form",
    "wrapup-code",
    "wrapup-notes",
    "wrapup-submit",
    "call-list",
    "alert",
    "dial-form",
    "dial-number",
    "dial-caller-id",
    "dial-submit",
    "dial-error",
    "monitor-panel",
    "monitor-call-id",
    "monitor-mode",
    "monitor-start",
    "monitor-stop",
    "monitor-status",
    "supervisor-indicator",
)
MODULES = sorted(p.name for p in DIRECTORY.glob("*.js"))
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed on this machine")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Litestar(route_handlers=[SoftphoneController])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://switchboard.test") as c:
        yield c


def _assert_strict_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'", "ws:", "wss:"]
    assert directives["media-src"] == ["'self'", "blob:", "mediastream:"]
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_page_is_served_as_html_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/softphone")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    _assert_strict_headers(r)
    assert r.content == (DIRECTORY / "index.html").read_bytes()


async def test_the_page_has_every_element_the_tests_drive_and_no_inline_script(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/softphone")).text
    for element_id in SPEC_IDS:
        assert len(re.findall(rf'\bid="{re.escape(element_id)}"', html)) == 1, element_id
    keypad = html.split('id="keypad"', 1)[1].split("</div>", 1)[0]
    assert re.findall(r'data-digit="([^"]+)"', keypad) == list("123456789*0#")
    # script-src 'self' forbids inline code: every script is an external module.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts
    for attributes, body in scripts:
        assert 'type="module"' in attributes
        assert 'src="/softphone/' in attributes
        assert body.strip() == ""
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers are blocked by the CSP"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        *((m, "text/javascript; charset=utf-8") for m in MODULES),
        ("softphone.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_each_module_and_the_stylesheet_are_served_with_their_type(
    client: httpx.AsyncClient, name: str, content_type: str
) -> None:
    r = await client.get(f"/softphone/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    _assert_strict_headers(r)
    assert r.content == (DIRECTORY / name).read_bytes()


async def test_an_unchanged_file_is_revalidated_without_its_body(
    client: httpx.AsyncClient,
) -> None:
    first = await client.get("/softphone/app.js")
    again = await client.get("/softphone/app.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    stale = await client.get("/softphone/app.js", headers={"if-none-match": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == first.content


@pytest.mark.parametrize(
    "path",
    [
        "/softphone/nope.js",
        "/softphone/index.html",
        "/softphone/APP.JS",
        "/softphone/app.js.map",
        "/softphone/x/app.js",
        "/softphone/.hidden.js",
    ],
)
async def test_names_outside_the_whitelist_are_not_found(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 404


async def _raw_get(path: str) -> tuple[int, bytes]:
    """A GET with the path exactly as given: no client normalises the dot segments away."""
    app = Litestar(route_handlers=[SoftphoneController])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"switchboard.test")],
        "client": ("127.0.0.1", 1234),
        "server": ("switchboard.test", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


@pytest.mark.parametrize(
    "path",
    [
        "/softphone/../controllers/softphone.py",
        "/softphone/..%2Fcontrollers%2Fsoftphone.py",
        "/softphone/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/softphone/..\\..\\pyproject.toml",
        "/softphone/%2Fetc%2Fpasswd",
    ],
)
async def test_path_traversal_is_refused(path: str) -> None:
    status, body = await _raw_get(path)
    assert status == 404
    assert b"import" not in body
    assert b"root:" not in body


def _module_copy(tmp_path: Path) -> Path:
    """The modules in a folder node reads as ES modules."""
    folder = tmp_path / "softphone"
    folder.mkdir()
    for name in MODULES:
        shutil.copy(DIRECTORY / name, folder / name)
    (folder / "package.json").write_text('{"type": "module"}')
    return folder


@needs_node
@pytest.mark.parametrize("name", MODULES)
def test_every_module_passes_node_check(tmp_path: Path, name: str) -> None:
    folder = _module_copy(tmp_path)
    result = subprocess.run(
        [str(NODE), "--check", str(folder / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


_IMPORT = re.compile(
    r"""^\s*import\s+(?:[\w*{}\s,$]+?\s+from\s+)?["']([^"']+)["']"""
    r"""|\bimport\(\s*["']([^"']+)["']\s*\)"""
    r"""|^\s*export\s+(?:\*(?:\s+as\s+\w+)?|\{[^}]*\})\s*from\s*["']([^"']+)["']""",
    re.M,
)


async def test_every_import_names_a_file_that_is_served(client: httpx.AsyncClient) -> None:
    seen: set[str] = set()
    for name in MODULES:
        source = (DIRECTORY / name).read_text()
        for match in _IMPORT.finditer(source):
            target = next(g for g in match.groups() if g)
            assert target.startswith("./"), (name, target)
            assert "/" not in target[2:], (name, target)
            seen.add(target[2:])
            r = await client.get(f"/softphone/{target[2:]}")
            assert r.status_code == 200, (name, target)
            assert r.headers["content-type"].startswith("text/javascript")
    # The modules import each other, and everything imported is a module on disk.
    assert {"auth.js", "calls.js", "media.js", "ringer.js", "signaling.js", "ui.js"} <= seen
    assert seen <= set(served_files())
    html = (await client.get("/softphone")).text
    for ref in re.findall(r'(?:src|href)="(/softphone/[^"]+)"', html):
        assert (await client.get(ref)).status_code == 200, ref


_LOGIC = """
import { backoffSeconds } from "./signaling.js";
import { CallLog, formatDuration, screenPop, transferProblem, wrapUpCode } from "./calls.js";

const at = (hms) => `2026-03-02T${hms}Z`;
const log = new CallLog();
log.apply({ type: "call", call_id: "a", state: "ringing", direction: "inbound",
            from_number: "+14155550101", to_number: "+14155550900", at: at("10:00:00") });
log.apply({ type: "call", call_id: "a", state: "connected", direction: "inbound",
            from_number: "+14155550101", to_number: "+14155550900", at: at("10:00:05") });
log.apply({ type: "call", call_id: "a", state: "held", at: at("10:01:00") });
log.apply({ type: "call", call_id: "a", state: "ended", cause: "caller_hangup",
            at: at("10:02:10") });
log.apply({ type: "call", call_id: "b", state: "offer_withdrawn", direction: "inbound",
            from_number: "+14155550102", at: at("11:00:00") });
log.markRejected("c");
log.apply({ type: "call", call_id: "c", state: "offer_withdrawn", direction: "inbound",
            from_number: "+14155550103", at: at("12:00:00") });
log.apply({ type: "call", call_id: "d", state: "ringing", direction: "outbound",
            from_number: "+14155550900", to_number: "+14155550104", at: at("13:00:00") });
log.apply({ type: "call", call_id: "d", state: "ended", cause: "no_answer", at: at("13:00:30") });
const restored = new CallLog(JSON.parse(JSON.stringify(log)));

console.log(JSON.stringify({
  backoff: [0, 1, 2, 3, 4, 5, 12].map(backoffSeconds),
  rows: log.describeAll().map((r) => [r.call_id, r.number, r.outcome, r.duration, r.cause]),
  restored: restored.describeAll().map((r) => [r.call_id, r.outcome, r.duration]),
  durations: [0, 9.7, 65, 3725].map(formatDuration),
  transfer: [
    transferProblem("number", "+14155550123"),
    transferProblem("number", "4155550123"),
    transferProblem("agent", "0190a000-0000-7000-8000-0000000000aa"),
    transferProblem("queue", "sales"),
  ].map((p) => p === null ? null : "refused"),
  codes: ["", "  ", "resolved", "Follow up", "9lives", "x".repeat(33)].map(wrapUpCode),
  pop: screenPop({
    call_id: "a", queue_id: "q1", queue_name: null, from_number: "+14155550101",
    to_number: "+14155550900", waited_seconds: 42.5, timeout_seconds: 20,
    context: { contact: { name: "Ada", vip: true, blocked: false, company: "Acme" },
               lookup: { tier: "gold", open_tickets: 2 }, path: ["welcome", "menu:2"],
               language: "fr" },
  }),
}));
"""


@needs_node
def test_the_call_list_backoff_and_input_checks_behave(tmp_path: Path) -> None:
    folder = _module_copy(tmp_path)
    (folder / "logic.js").write_text(_LOGIC)
    result = subprocess.run(
        [str(NODE), str(folder / "logic.js")],
        capture_output=True,
        text=True,
        check=False,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backoff"] == [1, 2, 4, 8, 15, 15, 15]
    assert out["rows"] == [
        ["d", "+14155550104", "not answered", None, "no_answer"],
        ["c", "+14155550103", "rejected", None, None],
        ["b", "+14155550102", "missed", None, None],
        ["a", "+14155550101", "answered", 125, "caller_hangup"],
    ]
    assert out["restored"] == [[r[0], r[2], r[3]] for r in out["rows"]]
    assert out["durations"] == ["0:00", "0:09", "1:05", "1:02:05"]
    assert out["transfer"] == [None, "refused", None, "refused"]
    assert [c["code"] for c in out["codes"]] == [None, None, "resolved", "follow_up", None, None]
    assert [c["error"] is None for c in out["codes"]] == [True, True, True, True, False, False]
    pop = out["pop"]
    assert pop["from"] == "+14155550101"
    assert (pop["contactName"], pop["vip"], pop["blocked"]) == ("Ada", True, False)
    assert pop["queue"] == "q1"
    assert pop["path"] == ["welcome", "menu:2"]
    assert pop["lookup"] == [["Tier", "gold"], ["Open tickets", "2"]]
    assert pop["details"] == [["Company", "Acme"], ["Language", "fr"]]


_DIAL_LOGIC = """
import {
  CallLog, DIAL_ERRORS, MONITOR_ERRORS, dialNumber, dialOutcome, isLive, monitorStatus,
  supervisorNotice,
} from "./calls.js";

const at = (hms) => `2026-03-02T${hms}Z`;
const out = { type: "call", direction: "outbound", from_number: "+14155550900" };
const log = new CallLog();
const seen = [];
log.apply({ ...out, call_id: "o1", state: "dialing", to_number: "+14155550123",
            at: at("09:00:00") });
seen.push(log.describeAll().map((r) => [r.call_id, r.number, r.direction, r.outcome]));
log.apply({ ...out, call_id: "o1", state: "connected", to_number: "+14155550123",
            at: at("09:00:10") });
log.apply({ ...out, call_id: "o1", state: "ended", cause: "customer_hangup",
            to_number: "+14155550123", at: at("09:01:15") });
log.apply({ ...out, call_id: "o2", state: "dialing", to_number: "+442079460958",
            at: at("09:05:00") });
log.apply({ ...out, call_id: "o2", state: "ended", cause: "busy", to_number: "+442079460958",
            at: at("09:05:20") });

const monitor = { call_id: "c", agent_id: "a1", from_number: "+14155550101" };
console.log(JSON.stringify({
  seen,
  rows: log.describeAll().map((r) => [r.call_id, r.number, r.direction, r.outcome, r.duration,
                                      r.cause]),
  numbers: ["+1 (415) 555-0123", "+44 20 7946.0958", "4155550123", "+1415", "", "+0123456789",
            "+1234567890123456", "+1415555"].map(dialNumber),
  live: ["dialing", "ringing", "connected", "held", "ended", "offer_withdrawn"].map(isLive),
  outcomes: ["no_answer", "busy", "failed", "cancelled", "agent_hangup", "rejected", null].map(
    (c) => dialOutcome(c, "+14155550123")),
  monitor: [
    monitorStatus({ ...monitor, mode: "listen" }, "Bob Agent"),
    monitorStatus({ ...monitor, mode: "whisper" }),
    monitorStatus({ ...monitor, mode: "barge" }, "Bob Agent"),
    ...["stopped", "call_ended", "transferred", "supervisor_unreachable", "odd_reason"].map(
      (cause) => monitorStatus({ ...monitor, mode: "ended", cause })),
  ],
  supervisor: ["whisper", "barge", null, "listen"].map(supervisorNotice),
  dialErrors: Object.keys(DIAL_ERRORS).sort(),
  monitorErrors: Object.keys(MONITOR_ERRORS).sort(),
}));
"""


@needs_node
def test_dialing_checks_outbound_calls_and_supervising_texts_behave(tmp_path: Path) -> None:
    folder = _module_copy(tmp_path)
    (folder / "dial.js").write_text(_DIAL_LOGIC)
    result = subprocess.run(
        [str(NODE), str(folder / "dial.js")],
        capture_output=True,
        text=True,
        check=False,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["seen"] == [[["o1", "+14155550123", "outbound", "dialing"]]]
    assert out["rows"] == [
        ["o2", "+442079460958", "outbound", "not answered", None, "busy"],
        ["o1", "+14155550123", "outbound", "answered", 65, "customer_hangup"],
    ]
    assert [n["number"] for n in out["numbers"]] == [
        "+14155550123",
        "+442079460958",
        None,
        None,
        None,
        None,
        None,
        "+1415555",
    ]
    assert [n["error"] is None for n in out["numbers"]] == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert "international format" in out["numbers"][2]["error"]
    assert out["live"] == [True, True, True, True, False, False]
    assert out["outcomes"] == [
        "No answer from +14155550123.",
        "+14155550123 is busy. Try again later.",
        "The call to +14155550123 could not be connected.",
        None,
        None,
        "The call to +14155550123 ended: rejected.",
        None,
    ]
    assert out["monitor"] == [
        "Listening to +14155550101 (agent Bob Agent). Nobody hears you.",
        "Whispering to the agent (a1). The caller does not hear you.",
        "Barged in: +14155550101 and the agent (Bob Agent) both hear you.",
        "Ended: you stopped supervising.",
        "Ended: the call ended.",
        "Ended: the call was transferred.",
        "Ended: your audio line dropped.",
        "Ended: odd reason.",
    ]
    assert out["supervisor"] == [
        "A supervisor is coaching you (only you hear them)",
        "A supervisor joined the call",
        "",
        "",
    ]
    # Every refusal the server names for these messages has its own plain words.
    assert set(out["dialErrors"]) >= {
        "busy",
        "no_media",
        "caller_id_not_owned",
        "international_not_allowed",
        "premium_not_allowed",
        "invalid_destination",
        "no_trunk",
        "concurrent_call_limit",
        "tenant_inactive",
        "invalid_message",
    }
    assert set(out["monitorErrors"]) >= {
        "forbidden",
        "no_media",
        "busy",
        "already_monitoring",
        "not_connected",
        "own_call",
        "monitored",
        "call_not_found",
        "not_monitoring",
    }


# ---------------------------------------------------------------------------------------------
# The page in a browser, against a stand-in for /v1/agent/ws


EMAIL = "agent@acme.test"
PASSWORD = "Corr3ct-Horse-9"
AGENT_ID = "0190a000-0000-7000-8000-000000000a01"
CALL_ID = "0190a000-0000-7000-8000-0000000000c1"
OTHER_AGENT_ID = "0190a000-0000-7000-8000-000000000a02"
SUPERVISOR_ID = "0190a000-0000-7000-8000-000000000a03"
NUMBERS = [
    {
        "id": "0190a000-0000-7000-8000-0000000000e1",
        "e164": "+14155550900",
        "country": "US",
        "capabilities": ["voice"],
        "provider": "stand-in",
        "flow_id": None,
        "label": "Main line",
        "purchased_at": "2026-01-05T09:00:00Z",
    },
    {
        "id": "0190a000-0000-7000-8000-0000000000e2",
        "e164": "+14155550901",
        "country": "US",
        "capabilities": ["voice"],
        "provider": "stand-in",
        "flow_id": None,
        "label": "",
        "purchased_at": "2026-01-05T09:00:00Z",
    },
]


@dataclass
class AgentLine:
    """One softphone connection as the stand-in sees it."""

    socket: WebSocket[Any, Any, Any]
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def expect(self, kind: str, timeout: float = 15) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if msg.get("type") == "ping":
                await self.send({"type": "pong", "id": msg.get("id")})
                continue
            assert msg.get("type") == kind, f"expected {kind}, got {msg}"
            return msg

    async def send(self, msg: dict[str, Any]) -> None:
        await self.socket.send_text(json.dumps(msg))


@dataclass
class StandIn:
    base: str
    lines: asyncio.Queue[AgentLine]
    legs: list[Any]
    heard_microphone: asyncio.Event
    tokens: dict[str, Any]
    api: dict[str, Any]
    """The REST answers the page reads: "numbers" (None: refused) and the "requests" seen."""
    listeners: list[asyncio.Future[None]] = field(default_factory=list)

    async def next_line(self, timeout: float = 15) -> AgentLine:
        return await asyncio.wait_for(self.lines.get(), timeout)

    async def answer_leg(self, line: AgentLine, timeout: float = 15) -> dict[str, Any]:
        """Reads the page's offer and answers it with an aiortc leg that sends audio."""
        from aiortc import RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

        offer = await line.expect("sdp_offer", timeout=timeout)
        pc = RTCPeerConnection()
        self.legs.append(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            async def listen() -> None:
                with contextlib.suppress(MediaStreamError):
                    for _ in range(5):
                        await track.recv()
                    self.heard_microphone.set()

            self.listeners.append(asyncio.ensure_future(listen()))

        pc.addTrack(AudioStreamTrack())
        # Only loopback candidates: media between the browser and the stand-in stays on lo.
        sdp = "".join(
            line_ + "\r\n"
            for line_ in offer["sdp"].splitlines()
            if not line_.startswith("a=candidate:") or " 127.0.0.1 " in line_
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await line.send({"type": "sdp_answer", "sdp": pc.localDescription.sdp, "node_id": "node-1"})
        await line.send({"type": "leg", "state": "connecting"})
        return offer


def _hello(presence: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "hello",
        "agent_id": AGENT_ID,
        "tenant_id": "0190a000-0000-7000-8000-0000000000f1",
        "name": "Ada Agent",
        "ice_servers": [],
        "presence": presence,
        "away_reasons": ["break", "lunch", "meeting"],
    }


def _presence(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "presence",
        "state": state,
        "reason": None,
        "since": "2026-03-02T10:00:00Z",
        "call_id": None,
        "wrap_up_until": None,
        "calls_handled": 0,
        **extra,
    }


def _stand_in_app(
    lines: asyncio.Queue[AgentLine], tokens: dict[str, Any], api: dict[str, Any]
) -> Litestar:
    def pair() -> dict[str, Any]:
        tokens["issued"] += 1
        access = f"access-{tokens['issued']}"
        if tokens.get("role"):
            # JWT-shaped, so the page can read the role (it never trusts it: the server checks).
            claims = json.dumps({"sub": AGENT_ID, "role": tokens["role"]}).encode()
            access += "." + base64.urlsafe_b64encode(claims).rstrip(b"=").decode() + ".stand-in"
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": tokens["expires_in"],
            "refresh_token": f"refresh-{tokens['issued']}",
        }

    def seen(request: Request[Any, Any, Any], name: str) -> None:
        authorization = request.headers.get("authorization", "")
        api["requests"].append((name, authorization, request.query_params.get("limit")))
        if not authorization.startswith("Bearer access-"):
            raise NotAuthorizedException("No bearer token")

    @get("/v1/numbers")
    async def numbers(request: Request[Any, Any, Any]) -> dict[str, Any]:
        seen(request, "numbers")
        if api["numbers"] is None:
            raise PermissionDeniedException("Not allowed")
        return {"data": api["numbers"], "has_more": False}

    @get("/v1/queues")
    async def queues(request: Request[Any, Any, Any]) -> dict[str, Any]:
        seen(request, "queues")
        return {"data": [{"id": "0190a000-0000-7000-8000-0000000000b1", "name": "Support"}]}

    @get("/v1/users")
    async def users(request: Request[Any, Any, Any]) -> dict[str, Any]:
        seen(request, "users")
        bob = {"id": OTHER_AGENT_ID, "name": "Bob Agent", "email": "bob@acme.test"}
        return {"data": [{**bob, "role": "agent", "status": "active"}], "has_more": False}

    @post("/v1/auth/login", status_code=200)
    async def login(data: dict[str, Any]) -> dict[str, Any]:
        if data != {"email": EMAIL, "password": PASSWORD}:
            raise NotAuthorizedException("Wrong credentials")
        return pair()

    @post("/v1/auth/refresh", status_code=200)
    async def refresh(data: dict[str, Any]) -> dict[str, Any]:
        # Rotation: only the newest refresh token is good.
        if data.get("refresh_token") != f"refresh-{tokens['issued']}":
            raise NotAuthorizedException("Invalid token")
        tokens["refreshes"] += 1
        return pair()

    @websocket("/v1/agent/ws")
    async def agent_ws(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        line = AgentLine(socket)
        await lines.put(line)
        try:
            while True:
                line.inbox.put_nowait(json.loads(await socket.receive_text()))
        except WebSocketDisconnect:
            pass
        finally:
            line.closed.set()

    return Litestar(
        route_handlers=[SoftphoneController, login, refresh, agent_ws, numbers, queues, users]
    )


@pytest.fixture
async def stand_in(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandIn]:
    pytest.importorskip("aiortc", reason="aiortc answers the page's audio leg")
    uvicorn = pytest.importorskip("uvicorn")
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    lines: asyncio.Queue[AgentLine] = asyncio.Queue()
    tokens: dict[str, Any] = {"issued": 0, "refreshes": 0, "expires_in": 900, "role": None}
    api: dict[str, Any] = {"numbers": NUMBERS, "requests": []}
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _stand_in_app(lines, tokens, api),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.ensure_future(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    legs: list[Any] = []
    stand_in = StandIn(f"http://127.0.0.1:{port}", lines, legs, asyncio.Event(), tokens, api)
    try:
        yield stand_in
    finally:
        for pc in legs:
            await pc.close()
        for listener in stand_in.listeners:
            listener.cancel()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="Playwright drives the page in Chromium"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine")
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=executable,
            args=[
                "--use-fake-device-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield b
        finally:
            await b.close()


async def _open(browser: Any, stand_in: StandIn, *, microphone: bool = True) -> Any:
    context = await browser.new_context()
    if microphone:
        await context.grant_permissions(["microphone"], origin=stand_in.base)
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.problems = problems
    await page.goto(f"{stand_in.base}/softphone")
    return page


async def _sign_in(page: Any, stand_in: StandIn) -> AgentLine:
    await page.fill("#login-email", EMAIL)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    line = await stand_in.next_line()
    auth = await line.expect("auth")
    assert auth["token"].startswith("access-")
    return line


async def _connect_leg(
    page: Any, stand_in: StandIn, line: AgentLine, *, timeout: float = 15
) -> None:
    offer = await stand_in.answer_leg(line, timeout=timeout)
    sdp = offer["sdp"]
    assert sdp.count("m=audio") == 1
    assert "m=video" not in sdp
    assert "a=sendrecv" in sdp
    assert "a=candidate:" in sdp, "the offer waits for ICE gathering (non-trickle)"
    await page.wait_for_function(
        "() => window.softphone.pc && window.softphone.pc.connectionState === 'connected'",
        timeout=20_000,
    )
    await line.send({"type": "leg", "state": "connected"})


async def _expect_text(page: Any, selector: str, text: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.textContent || '').includes(t)",
        arg=[selector, text],
        timeout=timeout,
    )


async def test_an_agent_signs_in_takes_a_call_and_wraps_up(browser: Any, stand_in: StandIn) -> None:
    page = await _open(browser, stand_in)
    await page.fill("#login-email", EMAIL)
    await page.fill("#login-password", "wrong-password-1")
    await page.click("#login-submit")
    await _expect_text(page, "#alert", "Wrong email or password.")
    page.problems.clear()  # Chromium logs the 401 itself

    line = await _sign_in(page, stand_in)
    await line.send(_hello(None))
    await _connect_leg(page, stand_in, line)
    await asyncio.wait_for(stand_in.heard_microphone.wait(), 10)
    await _expect_text(page, "#leg-state", "connected")

    # The caller's audio arrives in the remote stream the <audio> element plays.
    await page.wait_for_function(
        """async () => {
            const s = window.softphone.remoteStream;
            if (!s || s.getAudioTracks()[0]?.readyState !== 'live') return false;
            if (document.getElementById('remote-audio').srcObject !== s) return false;
            const stats = await window.softphone.pc.getStats();
            return [...stats.values()].some(
                (r) => r.type === 'inbound-rtp' && r.kind === 'audio' && r.packetsReceived > 0);
        }""",
        timeout=10_000,
    )
    await _expect_text(page, "#agent-name", "Ada Agent")

    # Going available: refused first (no_media), then accepted.
    await page.select_option("#state-select", "available")
    ask = await line.expect("presence")
    assert ask["state"] == "available"
    assert "reason" not in ask
    await line.send({"type": "error", "code": "no_media", "message": "no media", "ref": ask["ref"]})
    await _expect_text(page, "#alert", "audio line is not connected yet")
    assert await page.input_value("#state-select") == "offline"
    await page.select_option("#state-select", "available")
    await line.expect("presence")
    await line.send(_presence("available"))
    await _expect_text(page, "#status-line", "Available")
    assert await page.evaluate("window.softphone.state") == "available"

    # Away with a reason from hello's list.
    assert await page.eval_on_selector_all("#away-reason option", "os => os.map(o => o.value)") == [
        "break",
        "lunch",
        "meeting",
    ]
    await page.select_option("#away-reason", "lunch")
    await page.select_option("#state-select", "away")
    away = await line.expect("presence")
    assert (away["state"], away["reason"]) == ("away", "lunch")
    await line.send(_presence("away", reason="lunch"))
    await _expect_text(page, "#status-line", "Away (Lunch)")
    await page.select_option("#state-select", "available")
    await line.expect("presence")
    await line.send(_presence("available"))

    # An offer with its screen pop.
    offered = {
        "type": "offered",
        "call_id": CALL_ID,
        "queue_id": "0190a000-0000-7000-8000-0000000000b1",
        "queue_name": "Support",
        "from_number": "+14155550101",
        "to_number": "+14155550900",
        "waited_seconds": 42.0,
        "timeout_seconds": 30,
        "context": {
            "contact": {"name": "Grace Hopper", "vip": True, "blocked": False},
            "lookup": {"tier": "gold"},
            "path": ["welcome", "support_menu"],
            "language": "<b>fr</b>",
        },
    }
    await line.send(offered)
    await page.wait_for_selector("#offer-banner", state="visible")
    assert await page.text_content("#offer-from") == "+14155550101"
    assert "Grace Hopper" in (await page.text_content("#offer-contact") or "")
    assert "VIP" in (await page.text_content("#offer-contact") or "")
    assert await page.text_content("#offer-queue") == "Support"
    assert "welcome" in (await page.text_content("#offer-path") or "")
    assert (await page.text_content("#offer-waited") or "").startswith("0:4")
    assert "gold" in (await page.text_content("#offer-lookup") or "")
    # Context from the flow is shown as text, never as markup.
    assert await page.text_content("#offer-details") == "Language<b>fr</b>"
    assert await page.evaluate("window.softphone.lastOffer.call_id") == CALL_ID
    countdown = int(await page.text_content("#offer-countdown") or "0")
    assert 25 <= countdown <= 30

    await page.click("#answer-btn")
    assert (await line.expect("answer"))["call_id"] == CALL_ID
    call = {
        "type": "call",
        "call_id": CALL_ID,
        "from_number": "+14155550101",
        "to_number": "+14155550900",
        "direction": "inbound",
    }
    await line.send({**call, "state": "connected", "at": "2026-03-02T10:00:05Z"})
    await page.wait_for_selector("#call-panel", state="visible")
    await page.wait_for_selector("#offer-banner", state="hidden")
    await _expect_text(page, "#call-state", "connected")

    # Mute: the message goes out and the microphone track goes silent here too.
    await page.click("#mute-btn")
    mute = await line.expect("mute")
    assert (mute["call_id"], mute["muted"]) == (CALL_ID, True)
    assert await page.evaluate(
        "window.softphone.pc.getSenders().every(s => !s.track || !s.track.enabled)"
    )
    assert await page.get_attribute("#mute-btn", "aria-pressed") == "true"
    await page.click("#mute-btn")
    assert (await line.expect("mute"))["muted"] is False
    assert await page.evaluate("window.softphone.pc.getSenders().some(s => s.track?.enabled)")

    # Hold and resume follow the server's call state.
    await page.click("#hold-btn")
    assert (await line.expect("hold"))["call_id"] == CALL_ID
    await line.send({**call, "state": "held", "at": "2026-03-02T10:00:20Z"})
    await _expect_text(page, "#hold-btn", "Resume")
    await page.click("#hold-btn")
    assert (await line.expect("resume"))["call_id"] == CALL_ID
    await line.send({**call, "state": "connected", "at": "2026-03-02T10:00:30Z"})
    await _expect_text(page, "#hold-btn", "Hold")

    # Keypad, by click and by keyboard.
    await page.click('#keypad button[data-digit="5"]')
    assert (await line.expect("dtmf"))["digits"] == "5"
    await page.focus('#keypad button[data-digit="1"]')
    await page.keyboard.press("#")
    assert (await line.expect("dtmf"))["digits"] == "#"
    await _expect_text(page, "#dtmf-sent", "5#")

    # Transfer: a bad number is refused on the page, a good one is sent.
    await page.click("#transfer-btn")
    await page.select_option("#transfer-kind", "number")
    await page.fill("#transfer-to", "555-0199")
    await page.click("#transfer-submit")
    await _expect_text(page, "#transfer-error", "international format")
    await page.fill("#transfer-to", "+1 (415) 555-0199")
    await page.check("#transfer-attended")
    await page.click("#transfer-submit")
    transfer = await line.expect("transfer")
    assert transfer == {
        "type": "transfer",
        "call_id": CALL_ID,
        "to_kind": "number",
        "to": "+14155550199",
        "attended": True,
        "ref": transfer["ref"],
    }

    # The call ends; wrap-up shows while the agent is in wrap-up.
    await page.click("#hangup-btn")
    assert (await line.expect("hangup"))["call_id"] == CALL_ID
    await line.send(
        {**call, "state": "ended", "cause": "agent_hangup", "at": "2026-03-02T10:02:10Z"}
    )
    await page.wait_for_selector("#call-panel", state="hidden")
    assert await page.is_hidden("#wrapup-form")
    await line.send(
        _presence("wrap_up", call_id=CALL_ID, wrap_up_until="2099-01-01T00:00:00Z", calls_handled=1)
    )
    await page.wait_for_selector("#wrapup-form", state="visible")
    await page.fill("#wrapup-code", "Follow up")
    await page.fill("#wrapup-notes", "Wants a callback on Monday.")
    await page.click("#wrapup-submit")
    wrap = await line.expect("wrap_up")
    assert (wrap["call_id"], wrap["code"], wrap["notes"]) == (
        CALL_ID,
        "follow_up",
        "Wants a callback on Monday.",
    )
    await page.wait_for_selector("#wrapup-form", state="hidden")

    rows = await page.eval_on_selector_all(
        "#call-list tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert len(rows) == 1
    assert rows[0][1:] == ["+14155550101", "In", "2:05", "Answered - Agent hangup"]
    assert page.problems == []


async def test_the_page_reconnects_and_renegotiates_its_audio_leg(
    browser: Any, stand_in: StandIn
) -> None:
    page = await _open(browser, stand_in)
    line = await _sign_in(page, stand_in)
    await line.send(_hello(_presence("available")))
    await _connect_leg(page, stand_in, line)
    first = await page.evaluate_handle("window.softphone.pc")

    # The node reports the leg failed: a new offer on the same connection.
    await line.send({"type": "leg", "state": "failed"})
    await _connect_leg(page, stand_in, line)
    assert await page.evaluate("pc => pc !== window.softphone.pc", first)

    # The media goes away under a live connection: once the browser's peer connection has
    # been disconnected for more than 3 s, a new offer.
    await stand_in.legs[-1].close()
    await _connect_leg(page, stand_in, line, timeout=40)
    await _expect_text(page, "#leg-state", "connected")

    # The connection drops: a plain message, then a new connection after about a second that
    # authenticates again and renegotiates.
    await line.socket.close(code=1011)
    await _expect_text(page, "#alert", "Connection lost - reconnecting...")
    again = await stand_in.next_line(timeout=10)
    assert (await again.expect("auth"))["token"].startswith("access-")
    await again.send(_hello(_presence("available")))
    await _connect_leg(page, stand_in, again)
    await page.wait_for_function(
        "() => !document.getElementById('alert').textContent.includes('Connection lost')"
    )
    await _expect_text(page, "#status-line", "Available")

    # Replaced by another window: say so and stay quiet until asked.
    await again.socket.close(code=4409)
    await _expect_text(page, "#alert", "opened in another window")
    with pytest.raises(TimeoutError):
        await stand_in.next_line(timeout=2.5)
    await page.click("#reconnect-btn")
    third = await stand_in.next_line()
    await third.expect("auth")

    # A reload keeps the agent signed in (sessionStorage) and connects again.
    await page.reload()
    fourth = await stand_in.next_line()
    await fourth.expect("auth")
    await fourth.send(_hello(_presence("offline")))
    await _connect_leg(page, stand_in, fourth)
    await page.wait_for_selector("#phone-view", state="visible")
    assert page.problems == []


async def test_a_denied_microphone_gets_a_plain_message_until_it_is_allowed(
    browser: Any, stand_in: StandIn
) -> None:
    page = await _open(browser, stand_in, microphone=False)
    line = await _sign_in(page, stand_in)
    await line.send(_hello(None))
    await _expect_text(page, "#alert", "Allow microphone access to take calls")
    assert await page.is_visible("#mic-retry")
    with contextlib.suppress(TimeoutError):
        msg = await line.expect("sdp_offer", timeout=1)
        raise AssertionError(f"no offer without a microphone, got {msg}")

    # Once allowed, the page notices by itself, sets the leg up and the message goes away.
    await page.context.grant_permissions(["microphone"], origin=stand_in.base)
    await _connect_leg(page, stand_in, line)
    await page.wait_for_selector("#mic-retry", state="hidden")
    assert "microphone" not in (await page.text_content("#alert") or "")


async def test_the_access_token_is_renewed_before_it_expires(
    browser: Any, stand_in: StandIn
) -> None:
    stand_in.tokens["expires_in"] = 4
    page = await _open(browser, stand_in)
    line = await _sign_in(page, stand_in)
    await line.send(_hello(_presence("offline")))
    for _ in range(100):
        if stand_in.tokens["refreshes"] >= 2:
            break
        await asyncio.sleep(0.1)
    assert stand_in.tokens["refreshes"] >= 2, "each new token is renewed in turn"
    # A new connection authenticates with the newest token, not the one from sign-in.
    await line.socket.close(code=1011)
    again = await stand_in.next_line()
    token = (await again.expect("auth"))["token"]
    assert token != "access-1"
    assert int(token.removeprefix("access-")) >= 3
    assert page.problems == []


async def _rows_by_call(page: Any) -> dict[str, list[str]]:
    """The shift's call list: each row's cells after the time, by call id."""
    rows: list[list[str]] = await page.eval_on_selector_all(
        "#call-list tr",
        "rows => rows.map(r => [r.dataset.callId,"
        " ...[...r.cells].slice(1).map(c => c.textContent)])",
    )
    return {row[0]: row[1:] for row in rows}


async def _texts(page: Any, selector: str) -> str:
    return str(await page.text_content(selector) or "")


async def test_an_agent_calls_out_and_is_told_when_a_supervisor_speaks(
    browser: Any, stand_in: StandIn
) -> None:
    stand_in.tokens["role"] = "agent"
    page = await _open(browser, stand_in)
    line = await _sign_in(page, stand_in)
    await line.send(_hello(_presence("offline")))

    # The caller ID is picked from the tenant's numbers, read with the agent's token.
    await page.wait_for_function(
        "() => document.querySelectorAll('#dial-caller-id option').length === 2"
    )
    options = await page.eval_on_selector_all(
        "#dial-caller-id option", "os => os.map(o => [o.value, o.textContent])"
    )
    assert options == [
        ["+14155550900", "+14155550900 - Main line"],
        ["+14155550901", "+14155550901"],
    ]
    assert [(name, limit) for name, _, limit in stand_in.api["requests"]] == [("numbers", "100")]
    assert stand_in.api["requests"][0][1].startswith("Bearer access-1.")
    # Agents do not supervise: the panel is not there for them, nor are the directory lists.
    assert await page.is_hidden("#monitor-panel")

    # No audio line yet: no dialing, and the page says why.
    assert await page.is_disabled("#dial-submit")
    await _expect_text(page, "#dial-hint", "audio line is connected")
    await _connect_leg(page, stand_in, line)
    await page.wait_for_selector("#dial-submit:enabled")

    # A number that is not E.164 is refused on the page; nothing is sent (the next message the
    # stand-in reads is the good dial below).
    await page.fill("#dial-number", "555-0199")
    await page.click("#dial-submit")
    await _expect_text(page, "#dial-error", "international format")
    assert await page.evaluate("document.activeElement.id") == "dial-number"

    # Refused by the server: a plain message by the form, not a second one at the top.
    await page.fill("#dial-number", "+1 (415) 555-0123")
    assert await _texts(page, "#dial-error") == ""
    await page.select_option("#dial-caller-id", "+14155550901")
    await page.click("#dial-submit")
    dial = await line.expect("dial")
    assert dial == {
        "type": "dial",
        "number": "+14155550123",
        "caller_id": "+14155550901",
        "ref": dial["ref"],
    }
    assert await page.is_disabled("#dial-submit")
    await line.send(
        {"type": "error", "code": "international_not_allowed", "message": "x", "ref": dial["ref"]}
    )
    await _expect_text(page, "#dial-error", "does not allow calls to other countries")
    await page.wait_for_selector("#dial-submit:enabled")
    assert await _texts(page, "#alert") == ""

    # Placed, answered, hung up by the customer.
    out_id = "0190a000-0000-7000-8000-0000000000d1"
    await page.click("#dial-submit")
    dial = await line.expect("dial")
    await line.send({"type": "dialing", "call_id": out_id, "ref": dial["ref"]})
    out = {
        "type": "call",
        "call_id": out_id,
        "direction": "outbound",
        "from_number": "+14155550901",
        "to_number": "+14155550123",
    }
    await line.send({**out, "state": "dialing", "at": "2026-03-02T11:00:00Z"})
    await page.wait_for_selector("#call-panel", state="visible")
    await _expect_text(page, "#call-state", "dialing")
    assert await _texts(page, "#call-number") == "+14155550123"
    assert await _texts(page, "#call-direction") == "Outgoing call"
    for control in ("#hold-btn", "#mute-btn", "#transfer-btn", '#keypad button[data-digit="5"]'):
        assert await page.is_disabled(control), control
    assert await page.is_enabled("#hangup-btn")
    assert await page.is_disabled("#dial-submit")
    await _expect_text(page, "#announcer", "Calling +14155550123")
    assert (await _rows_by_call(page))[out_id] == ["+14155550123", "Out", "-", "Dialing"]

    await line.send({**out, "state": "connected", "at": "2026-03-02T11:00:10Z"})
    await page.wait_for_selector("#hold-btn:enabled")
    await _expect_text(page, "#call-state", "connected")
    assert await page.is_enabled("#transfer-btn")

    # A supervisor whispers, then barges in, then goes quiet: shown and read out each time.
    assert await page.is_hidden("#supervisor-indicator")
    whisper = {
        "type": "supervisor",
        "call_id": out_id,
        "mode": "whisper",
        "supervisor_id": SUPERVISOR_ID,
    }
    await line.send(whisper)
    await page.wait_for_selector("#supervisor-indicator", state="visible")
    await _expect_text(
        page, "#supervisor-indicator", "A supervisor is coaching you (only you hear them)"
    )
    await _expect_text(page, "#announcer", "A supervisor is coaching you")
    await line.send({**whisper, "mode": "barge"})
    await _expect_text(page, "#supervisor-indicator", "A supervisor joined the call")
    await _expect_text(page, "#announcer", "A supervisor joined the call")
    await line.send({**whisper, "mode": None, "supervisor_id": None})
    await page.wait_for_selector("#supervisor-indicator", state="hidden")
    await _expect_text(page, "#announcer", "no longer speaking")
    # Coaching again when the call ends: the indicator goes with the call.
    await line.send(whisper)
    await page.wait_for_selector("#supervisor-indicator", state="visible")
    await line.send(
        {**out, "state": "ended", "cause": "customer_hangup", "at": "2026-03-02T11:01:15Z"}
    )
    await page.wait_for_selector("#call-panel", state="hidden")
    assert await page.is_hidden("#supervisor-indicator")
    assert (await _rows_by_call(page))[out_id] == [
        "+14155550123",
        "Out",
        "1:05",
        "Answered - Customer hangup",
    ]
    assert await _texts(page, "#dial-error") == ""

    # Hung up while it rings (the node's notice first this time, then the reply).
    cancelled_id = "0190a000-0000-7000-8000-0000000000d2"
    await page.wait_for_selector("#dial-submit:enabled")
    await page.fill("#dial-number", "+44 20 7946 0958")
    await page.click("#dial-submit")
    dial = await line.expect("dial")
    assert (dial["number"], dial["caller_id"]) == ("+442079460958", "+14155550901")
    cancelled = {**out, "call_id": cancelled_id, "to_number": "+442079460958"}
    await line.send({**cancelled, "state": "dialing", "at": "2026-03-02T11:05:00Z"})
    await line.send({"type": "dialing", "call_id": cancelled_id, "ref": dial["ref"]})
    await page.wait_for_selector("#call-panel", state="visible")
    await _expect_text(page, "#call-number", "+442079460958")
    await page.click("#hangup-btn")
    assert (await line.expect("hangup"))["call_id"] == cancelled_id
    await line.send(
        {**cancelled, "state": "ended", "cause": "cancelled", "at": "2026-03-02T11:05:04Z"}
    )
    await page.wait_for_selector("#call-panel", state="hidden")
    assert (await _rows_by_call(page))[cancelled_id] == [
        "+442079460958",
        "Out",
        "-",
        "Not answered - Cancelled",
    ]
    assert await _texts(page, "#dial-error") == ""

    # Nobody answers (only the reply before the end: the panel shows from the reply alone).
    unanswered_id = "0190a000-0000-7000-8000-0000000000d3"
    await page.wait_for_selector("#dial-submit:enabled")
    await page.fill("#dial-number", "+14155550188")
    await page.click("#dial-submit")
    dial = await line.expect("dial")
    await line.send({"type": "dialing", "call_id": unanswered_id, "ref": dial["ref"]})
    await page.wait_for_selector("#call-panel", state="visible")
    await _expect_text(page, "#call-state", "dialing")
    unanswered = {**out, "call_id": unanswered_id, "to_number": "+14155550188"}
    await line.send({**unanswered, "state": "ended", "cause": "no_answer"})
    await page.wait_for_selector("#call-panel", state="hidden")
    await _expect_text(page, "#dial-error", "No answer from +14155550188.")
    rows = await _rows_by_call(page)
    assert rows[unanswered_id] == ["+14155550188", "Out", "-", "Not answered - No answer"]
    assert len(rows) == 3
    assert page.problems == []


async def test_a_supervisor_listens_whispers_barges_and_stops(
    browser: Any, stand_in: StandIn
) -> None:
    stand_in.tokens["role"] = "supervisor"
    stand_in.api["numbers"] = None  # the numbers cannot be read: the caller ID is typed
    page = await _open(browser, stand_in)
    line = await _sign_in(page, stand_in)
    await line.send(_hello(_presence("offline")))
    await page.wait_for_selector("#monitor-panel", state="visible")
    await _expect_text(page, "#monitor-status", "Not supervising a call.")
    await page.wait_for_selector("input#dial-caller-id")
    await _expect_text(page, "#dial-caller-id-help", "could not be loaded")
    # The label still names the control that took the list's place.
    control = await page.eval_on_selector("label[for='dial-caller-id']", "l => l.control?.tagName")
    assert control == "INPUT"
    page.problems.clear()  # Chromium logs the refused request itself
    await _connect_leg(page, stand_in, line)

    # Not a call id: refused on the page.
    await page.fill("#monitor-call-id", "the call from Grace")
    await page.click("#monitor-start")
    await _expect_text(page, "#monitor-error", "Paste the call's ID")

    # Refused by the server (another supervisor is on it): said plainly, nothing started.
    await page.fill("#monitor-call-id", f"  {CALL_ID.upper()} ")
    assert await _texts(page, "#monitor-error") == ""
    await page.click("#monitor-start")
    start = await line.expect("monitor")
    assert start == {"type": "monitor", "call_id": CALL_ID, "mode": "listen", "ref": start["ref"]}
    await _expect_text(page, "#monitor-status", "Joining the call")
    await line.send({"type": "error", "code": "monitored", "message": "x", "ref": start["ref"]})
    await _expect_text(page, "#monitor-error", "Another supervisor is on that call already.")
    await _expect_text(page, "#monitor-status", "Not supervising a call.")
    assert await _texts(page, "#alert") == ""

    # Listening.
    await page.click("#monitor-start")
    start = await line.expect("monitor")
    assert (start["call_id"], start["mode"]) == (CALL_ID, "listen")
    notice = {
        "type": "monitor",
        "call_id": CALL_ID,
        "agent_id": OTHER_AGENT_ID,
        "from_number": "+14155550101",
        "at": "2026-03-02T10:00:00Z",
    }
    await line.send({**notice, "mode": "listen"})
    await _expect_text(page, "#monitor-status", "Listening to +14155550101 (agent Bob Agent)")
    await _expect_text(page, "#monitor-start", "Switch mode")
    assert await page.get_attribute("#monitor-call-id", "readonly") is not None
    assert await page.evaluate("window.softphone.monitor.mode") == "listen"
    # While supervising, the supervisor's line is taken: no dialing.
    assert await page.is_disabled("#dial-submit")
    await _expect_text(page, "#dial-hint", "Stop supervising")

    # Whispering to the agent, then barging in.
    await page.select_option("#monitor-mode", "whisper")
    await page.click("#monitor-start")
    change = await line.expect("monitor")
    assert change == {
        "type": "monitor",
        "call_id": CALL_ID,
        "mode": "whisper",
        "ref": change["ref"],
    }
    await line.send({**notice, "mode": "whisper"})
    await _expect_text(page, "#monitor-status", "Whispering to the agent (Bob Agent)")
    await page.select_option("#monitor-mode", "barge")
    await page.click("#monitor-start")
    assert (await line.expect("monitor"))["mode"] == "barge"
    await line.send({**notice, "mode": "barge"})
    await _expect_text(page, "#monitor-status", "Barged in")

    # Stopping.
    await page.click("#monitor-stop")
    stop = await line.expect("stop_monitor")
    assert stop == {"type": "stop_monitor", "call_id": CALL_ID, "ref": stop["ref"]}
    await line.send({**notice, "mode": "ended", "cause": "stopped"})
    await _expect_text(page, "#monitor-status", "Ended: you stopped supervising.")
    await _expect_text(page, "#monitor-start", "Start supervising")
    assert await page.get_attribute("#monitor-call-id", "readonly") is None
    assert await page.is_disabled("#monitor-stop")
    assert await page.evaluate("window.softphone.monitor") is None

    # Listening again until the call ends under the supervisor.
    await page.select_option("#monitor-mode", "listen")
    await page.click("#monitor-start")
    assert (await line.expect("monitor"))["mode"] == "listen"
    await line.send({**notice, "mode": "listen"})
    await _expect_text(page, "#monitor-status", "Listening to")
    await line.send({**notice, "mode": "ended", "cause": "call_ended"})
    await _expect_text(page, "#monitor-status", "Ended: the call ended.")
    await page.wait_for_selector("#dial-submit:enabled")

    # A typed caller ID is cleaned up and sent; a refusal of it is said plainly.
    await page.fill("#dial-number", "+14155550123")
    await page.fill("#dial-caller-id", "+1 415 555 0900")
    await page.click("#dial-submit")
    dial = await line.expect("dial")
    assert (dial["number"], dial["caller_id"]) == ("+14155550123", "+14155550900")
    await line.send(
        {"type": "error", "code": "caller_id_not_owned", "message": "x", "ref": dial["ref"]}
    )
    await _expect_text(page, "#dial-error", "not one of your organisation's numbers")
    assert page.problems == []

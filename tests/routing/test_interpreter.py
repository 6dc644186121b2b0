"""The flow interpreter over a scripted call: every node type and branch, each executed node on
the call's timeline, and HTTP lookups against a real local HTTPS server (signed, bounded in time
and size, refused for private addresses)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from media.audio import AudioError, PcmAudio
from media.control import Voicemail
from media.directory import ContactInfo
from routing.flows import decode_flow
from routing.interpreter import FlowRun, flow_script, refused_address

TENANT = UUID("0190a000-0000-7000-8000-000000000001")
QUEUE = UUID("0190a000-0000-7000-8000-0000000000aa")
CALLER = "+4930123456"
DIALED = "+4940987654"
SECRET = b"lookup-secret-of-the-tenant-0123"
NOON = dt.datetime(2025, 6, 4, 12, 0, tzinfo=dt.UTC)  # a Wednesday


class FixedClock(dt.datetime):
    at = NOON

    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> FixedClock:
        return cls.at.astimezone(tz)  # type: ignore[return-value]


def _audio(label: str) -> PcmAudio:
    data = label.encode()
    if len(data) % 2:
        data += b" "
    return PcmAudio(samples=data, duration_ms=len(data) // 16)


def _label(audio: PcmAudio) -> str:
    return audio.samples.decode().rstrip()


@dataclass
class ScriptedCall:
    """A call that answers the interpreter from a script and writes down what it was told."""

    keys: list[str] = field(default_factory=list)
    """What each `collect` returns, in order ("" is silence)."""
    caller: str = CALLER
    dialed: str = DIALED
    message: Voicemail | None = None
    store_fails: bool = False
    transfer_outcome: str = "answered"
    speech_fails: bool = False
    call_id: UUID = field(default_factory=uuid4)
    tenant_id: UUID = TENANT
    variables: dict[str, object] = field(default_factory=dict)
    did: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[str, str, str | None, dict[str, str]]] = field(default_factory=list)
    context: dict[str, Any] | None = None
    """What the last `enqueue` sent along for the screen pop."""

    async def answer(self) -> None:
        self.did.append(("answer",))

    async def play(self, audio: PcmAudio) -> None:
        self.did.append(("play", _label(audio)))

    async def prompt(self, prompt_id: UUID) -> PcmAudio:
        return _audio(f"prompt:{prompt_id}")

    async def speech(self, text: str, voice: str) -> PcmAudio:
        if self.speech_fails:
            raise AudioError("espeak-ng is not installed")
        return _audio(f"say:{text}")

    async def collect(
        self,
        *,
        max_digits: int,
        between_digits: float,
        first_digit_within: float | None = None,
        terminator: str | None = "#",
        announcement: PcmAudio | None = None,
    ) -> str:
        heard = _label(announcement) if announcement is not None else None
        self.did.append(("collect", max_digits, heard))
        return self.keys.pop(0)

    async def hangup(self, reason: str = "normal") -> None:
        self.did.append(("hangup", reason))

    def step(
        self,
        node: str,
        node_type: str,
        outcome: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        self.steps.append((node, node_type, outcome, dict(detail or {})))

    async def enqueue(
        self,
        queue_id: UUID,
        *,
        priority: int,
        skills: dict[str, int],
        attributes: dict[str, str],
        context: dict[str, Any] | None = None,
    ) -> None:
        self.did.append(("enqueue", queue_id, priority, skills, attributes))
        self.context = context

    async def record_message(
        self, *, max_seconds: int = 120, beep: bool = True
    ) -> Voicemail | None:
        self.did.append(("record_message", max_seconds, beep))
        return self.message

    async def leave_voicemail(
        self, voicemail: Voicemail, *, mailbox: str | None, queue_id: UUID | None = None
    ) -> None:
        if self.store_fails:
            raise ConnectionError("database unreachable")
        self.did.append(("leave_voicemail", voicemail, mailbox, queue_id))

    async def transfer(self, number: str, *, caller_id: str, timeout_seconds: float = 30) -> str:
        self.did.append(("transfer", number, caller_id))
        return self.transfer_outcome

    @property
    def path(self) -> list[tuple[str, str | None]]:
        return [(node, outcome) for node, _type, outcome, _detail in self.steps]


@dataclass
class Directory:
    contacts: dict[str, ContactInfo] = field(default_factory=dict)
    broken: bool = False

    async def contact(self, tenant_id: UUID, e164: str) -> ContactInfo | None:
        if self.broken:
            raise ConnectionError("database unreachable")
        return self.contacts.get(e164) if tenant_id == TENANT else None

    async def lookup_secret(self, tenant_id: UUID) -> bytes:
        return SECRET if tenant_id == TENANT else b"another tenant's secret"


async def _run(
    document: dict[str, Any],
    call: ScriptedCall,
    directory: Directory | None = None,
    *,
    http: httpx.AsyncClient | None = None,
    allow_private: bool = True,
) -> ScriptedCall:
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient())
        run = FlowRun(
            decode_flow(document),
            call,
            directory=directory or Directory(),
            http=http,
            allow_private_lookups=allow_private,
            now=FixedClock,
        )
        await run.run()
    return call


def _hangups(call: ScriptedCall) -> list[str]:
    return [entry[1] for entry in call.did if entry[0] == "hangup"]


# --- caller-facing nodes ----------------------------------------------------------------------


async def test_a_played_prompt_is_followed_by_next_and_the_flow_hangs_up_at_its_end() -> None:
    prompt = uuid4()
    call = await _run(
        {
            "start": "hello",
            "nodes": {
                "hello": {"type": "play", "prompt_id": str(prompt), "next": "bye"},
                "bye": {"type": "play", "text": "Goodbye"},
            },
        },
        ScriptedCall(),
    )
    assert call.did == [
        ("play", f"prompt:{prompt}"),
        ("play", "say:Goodbye"),
        ("hangup", "flow_finished"),
    ]
    assert call.steps == [("hello", "play", "played", {}), ("bye", "play", "played", {})]


MENU = {
    "start": "menu",
    "nodes": {
        "menu": {
            "type": "menu",
            "text": "Press 1 for sales",
            "options": {"1": "sales"},
            "retries": 1,
            "failed": "sorry",
        },
        "sales": {"type": "hangup", "reason": "went_to_sales"},
        "sorry": {"type": "hangup", "reason": "menu_failed"},
    },
}


async def test_a_menu_key_takes_its_option_and_the_key_is_the_steps_outcome() -> None:
    call = await _run(MENU, ScriptedCall(keys=["1"]))
    assert call.did == [("collect", 1, "say:Press 1 for sales"), ("hangup", "went_to_sales")]
    assert call.path == [("menu", "1"), ("sales", "went_to_sales")]


async def test_a_menu_asks_again_and_then_fails_after_its_retries() -> None:
    call = await _run(MENU, ScriptedCall(keys=["", "7"]))
    assert [d[0] for d in call.did] == ["collect", "collect", "hangup"]
    assert call.path == [("menu", "failed"), ("sorry", "menu_failed")]


async def test_a_menu_with_timeout_and_invalid_branches_takes_them() -> None:
    document = json.loads(json.dumps(MENU))
    document["nodes"]["menu"] |= {"timeout": "silent", "invalid": "wrong"}
    document["nodes"]["silent"] = {"type": "hangup", "reason": "silent"}
    document["nodes"]["wrong"] = {"type": "hangup", "reason": "wrong"}
    silent = await _run(document, ScriptedCall(keys=[""]))
    wrong = await _run(document, ScriptedCall(keys=["9"]))
    assert silent.path == [("menu", "timeout"), ("silent", "silent")]
    assert wrong.path == [("menu", "invalid"), ("wrong", "wrong")]


GATHER = {
    "start": "account",
    "nodes": {
        "account": {
            "type": "gather",
            "text": "Your account number",
            "min_digits": 4,
            "max_digits": 8,
            "variable": "account",
            "next": "queue",
            "timeout": "bye",
        },
        "queue": {"type": "enqueue", "queue_id": str(QUEUE)},
        "bye": {"type": "hangup", "reason": "no_account"},
    },
}


async def test_gathered_digits_go_into_a_variable_but_not_onto_the_timeline() -> None:
    call = await _run(GATHER, ScriptedCall(keys=["123456"]))
    assert call.variables["account"] == "123456"
    assert call.steps[0] == ("account", "gather", "collected", {"digits": "6"})
    assert "123456" not in json.dumps(call.steps)
    # The gathered text travels with the call to the queue, as an attribute.
    assert call.did[-1] == ("enqueue", QUEUE, 0, {}, {"account": "123456"})


async def test_too_few_digits_take_the_timeout_branch_and_store_nothing() -> None:
    call = await _run(GATHER, ScriptedCall(keys=["12"]))
    assert "account" not in call.variables
    assert call.path == [("account", "timeout"), ("bye", "no_account")]


HOURS = {
    "start": "hours",
    "nodes": {
        "hours": {
            "type": "business_hours",
            "timezone": "Europe/Berlin",
            "weekly": {"wed": [["09:00", "17:00"]]},
            "open": "open",
            "closed": "closed",
        },
        "open": {"type": "hangup", "reason": "open"},
        "closed": {"type": "hangup", "reason": "closed"},
    },
}


async def test_business_hours_branch_on_the_tenants_wall_clock() -> None:
    FixedClock.at = NOON  # 14:00 in Berlin
    open_call = await _run(HOURS, ScriptedCall())
    FixedClock.at = NOON.replace(hour=17)  # 19:00 in Berlin
    try:
        closed_call = await _run(HOURS, ScriptedCall())
    finally:
        FixedClock.at = NOON
    assert open_call.path == [("hours", "open"), ("open", "open")]
    assert closed_call.path == [("hours", "closed"), ("closed", "closed")]


async def test_a_hangup_node_hangs_up_once_with_its_reason() -> None:
    call = await _run(
        {"start": "end", "nodes": {"end": {"type": "hangup", "reason": "spam"}}}, ScriptedCall()
    )
    assert _hangups(call) == ["spam"]
    assert call.steps == [("end", "hangup", "spam", {})]


# --- set and enqueue --------------------------------------------------------------------------


def _set_then_enqueue(enqueue_priority: int | None = None) -> dict[str, Any]:
    enqueue: dict[str, Any] = {"type": "enqueue", "queue_id": str(QUEUE)}
    if enqueue_priority is not None:
        enqueue["priority"] = enqueue_priority
    return {
        "start": "tag",
        "nodes": {
            "tag": {
                "type": "set",
                "priority": 4,
                "skills": {"French": 3, "billing": 2},
                "attributes": {"segment": "smb"},
                "next": "queue",
            },
            "queue": enqueue,
        },
    }


async def test_enqueue_hands_the_call_to_the_queue_with_what_the_flow_set_and_never_hangs_up() -> (
    None
):
    call = await _run(_set_then_enqueue(), ScriptedCall())
    assert call.did == [
        ("enqueue", QUEUE, 4, {"French": 3, "billing": 2}, {"segment": "smb"}),
    ]
    assert _hangups(call) == []
    assert call.steps == [
        (
            "tag",
            "set",
            None,
            {"priority": "4", "skills": "French:3,billing:2", "attributes": "segment"},
        ),
        ("queue", "enqueue", "queued", {"queue_id": str(QUEUE), "priority": "4"}),
    ]


async def test_an_enqueue_nodes_own_priority_wins_over_the_flows_variable() -> None:
    call = await _run(_set_then_enqueue(enqueue_priority=9), ScriptedCall())
    assert call.did[0][:3] == ("enqueue", QUEUE, 9)


async def test_a_call_enqueued_without_a_set_node_has_priority_zero_and_no_skills() -> None:
    call = await _run(
        {"start": "q", "nodes": {"q": {"type": "enqueue", "queue_id": str(QUEUE)}}},
        ScriptedCall(),
    )
    assert call.did == [("enqueue", QUEUE, 0, {}, {})]


# --- contact lookup ---------------------------------------------------------------------------

LOOKUP = {
    "start": "who",
    "nodes": {
        "who": {
            "type": "contact_lookup",
            "blocked": "reject",
            "vip": "vip_queue",
            "next": "queue",
            "vip_priority": 9,
        },
        "reject": {"type": "hangup", "reason": "blocked_caller"},
        "vip_queue": {"type": "enqueue", "queue_id": str(QUEUE)},
        "queue": {"type": "enqueue", "queue_id": str(QUEUE), "priority": 1},
    },
}


def _contact(*, vip: bool = False, blocked: bool = False) -> ContactInfo:
    return ContactInfo(
        contact_id=UUID("0190a000-0000-7000-8000-0000000000cc"),
        name="Ann Example",
        vip=vip,
        blocked=blocked,
        fields={"tier": "gold"},
    )


async def test_a_vip_caller_gets_the_vip_priority_and_branch_and_a_screen_pop() -> None:
    directory = Directory(contacts={CALLER: _contact(vip=True)})
    call = await _run(LOOKUP, ScriptedCall(), directory)
    assert call.did == [("enqueue", QUEUE, 9, {}, {})]
    assert call.variables["contact"] == {
        "contact_id": "0190a000-0000-7000-8000-0000000000cc",
        "name": "Ann Example",
        "vip": True,
        "blocked": False,
        "fields": {"tier": "gold"},
    }
    # The contact travels with the queued call for the agent's screen pop.
    assert call.context == {"contact": call.variables["contact"]}
    assert call.steps[0] == (
        "who",
        "contact_lookup",
        "vip",
        {"contact_id": "0190a000-0000-7000-8000-0000000000cc"},
    )


async def test_a_vip_boost_never_lowers_a_higher_priority_already_set() -> None:
    document = json.loads(json.dumps(LOOKUP))
    document["start"] = "first"
    document["nodes"]["first"] = {"type": "set", "priority": 10, "next": "who"}
    call = await _run(document, ScriptedCall(), Directory(contacts={CALLER: _contact(vip=True)}))
    assert call.did == [("enqueue", QUEUE, 10, {}, {})]


async def test_a_vip_without_a_vip_branch_goes_on_to_next() -> None:
    document = json.loads(json.dumps(LOOKUP))
    del document["nodes"]["who"]["vip"]
    del document["nodes"]["vip_queue"]
    call = await _run(document, ScriptedCall(), Directory(contacts={CALLER: _contact(vip=True)}))
    assert call.path == [("who", "vip"), ("queue", "queued")]
    assert call.variables["priority"] == 9


async def test_a_blocked_caller_takes_the_blocked_branch_even_when_vip() -> None:
    directory = Directory(contacts={CALLER: _contact(vip=True, blocked=True)})
    call = await _run(LOOKUP, ScriptedCall(), directory)
    assert call.path == [("who", "blocked"), ("reject", "blocked_caller")]
    assert not any(d[0] == "enqueue" for d in call.did)
    assert "priority" not in call.variables


async def test_known_and_unknown_callers_go_on_to_next() -> None:
    known = await _run(LOOKUP, ScriptedCall(), Directory(contacts={CALLER: _contact()}))
    unknown = await _run(LOOKUP, ScriptedCall(caller="+4930999999"), Directory())
    assert known.path == [("who", "known"), ("queue", "queued")]
    assert known.variables["contact"]["name"] == "Ann Example"  # type: ignore[index]
    assert unknown.path == [("who", "unknown"), ("queue", "queued")]
    assert "contact" not in unknown.variables


async def test_a_failed_contact_lookup_lets_the_caller_through_and_says_so() -> None:
    call = await _run(LOOKUP, ScriptedCall(), Directory(broken=True))
    assert call.path == [("who", "error"), ("queue", "queued")]


# --- voicemail --------------------------------------------------------------------------------


def _voicemail_flow(**node: Any) -> dict[str, Any]:
    return {"start": "vm", "nodes": {"vm": {"type": "voicemail", **node}}}


async def test_a_voicemail_is_greeted_recorded_left_in_its_mailbox_and_hung_up(
    tmp_path: Path,
) -> None:
    message = Voicemail(path=tmp_path / "m.sbrec", duration_ms=4200, voicemail_id=uuid4())
    call = await _run(
        _voicemail_flow(mailbox="sales", text="Leave a message"), ScriptedCall(message=message)
    )
    assert call.did == [
        ("play", "say:Leave a message"),
        ("record_message", 120, True),
        ("leave_voicemail", message, "sales", None),
        ("hangup", "voicemail"),
    ]
    assert call.steps == [
        (
            "vm",
            "voicemail",
            "recorded",
            {"voicemail_id": str(message.voicemail_id), "duration_ms": "4200"},
        )
    ]


async def test_a_voicemail_for_a_queue_without_greeting_records_at_once(tmp_path: Path) -> None:
    message = Voicemail(path=tmp_path / "m.sbrec", duration_ms=900, voicemail_id=uuid4())
    call = await _run(_voicemail_flow(queue_id=str(QUEUE)), ScriptedCall(message=message))
    assert call.did[:2] == [
        ("record_message", 120, True),
        ("leave_voicemail", message, None, QUEUE),
    ]


async def test_a_silent_voicemail_leaves_nothing_and_hangs_up() -> None:
    call = await _run(_voicemail_flow(mailbox="sales"), ScriptedCall(message=None))
    assert not any(d[0] == "leave_voicemail" for d in call.did)
    assert _hangups(call) == ["voicemail_empty"]
    assert call.path == [("vm", "empty")]


async def test_a_voicemail_that_cannot_be_stored_is_not_reported_as_recorded(
    tmp_path: Path,
) -> None:
    message = Voicemail(path=tmp_path / "m.sbrec", duration_ms=900, voicemail_id=uuid4())
    call = await _run(
        _voicemail_flow(mailbox="sales"), ScriptedCall(message=message, store_fails=True)
    )
    assert _hangups(call) == ["voicemail_not_stored"]
    assert call.path == [("vm", "not_stored")]


# --- transfer ---------------------------------------------------------------------------------


def _transfer_flow(caller_id: str) -> dict[str, Any]:
    return {
        "start": "out",
        "nodes": {"out": {"type": "transfer", "number": "+12125550199", "caller_id": caller_id}},
    }


async def test_an_answered_transfer_ends_the_script_and_leaves_the_call_to_the_bridge() -> None:
    call = await _run(_transfer_flow("tenant_number"), ScriptedCall(transfer_outcome="answered"))
    assert call.did == [("transfer", "+12125550199", DIALED)]
    assert call.steps == [("out", "transfer", "answered", {"to": "+12125550199"})]


async def test_a_failed_transfer_apologises_and_hangs_up_with_the_outcome() -> None:
    call = await _run(_transfer_flow("caller"), ScriptedCall(transfer_outcome="busy"))
    assert call.did == [
        ("transfer", "+12125550199", CALLER),
        ("play", "say:Sorry, we could not connect your call. Please try again later."),
        ("hangup", "transfer_failed:busy"),
    ]
    assert call.path == [("out", "busy")]


async def test_a_failed_transfer_still_hangs_up_when_the_apology_cannot_be_spoken() -> None:
    call = await _run(
        _transfer_flow("caller"),
        ScriptedCall(transfer_outcome="refused:destination_not_allowed", speech_fails=True),
    )
    assert _hangups(call) == ["transfer_failed:refused:destination_not_allowed"]


# --- the whole path ---------------------------------------------------------------------------


async def test_every_executed_node_lands_on_the_timeline_in_order() -> None:
    document = {
        "start": "hello",
        "nodes": {
            "hello": {"type": "play", "text": "Welcome", "next": "hours"},
            "hours": {
                "type": "business_hours",
                "timezone": "UTC",
                "weekly": {"wed": [["08:00", "18:00"]]},
                "open": "who",
                "closed": "vm",
            },
            "who": {"type": "contact_lookup", "blocked": "bye", "next": "menu"},
            "menu": {
                "type": "menu",
                "text": "1 sales, 2 voicemail",
                "options": {"1": "tag", "2": "vm"},
                "failed": "bye",
            },
            "tag": {"type": "set", "skills": {"sales": 1}, "next": "queue"},
            "queue": {"type": "enqueue", "queue_id": str(QUEUE)},
            "vm": {"type": "voicemail", "mailbox": "main"},
            "bye": {"type": "hangup"},
        },
    }
    call = await _run(document, ScriptedCall(keys=["1"]), Directory())
    assert [(node, kind, outcome) for node, kind, outcome, _ in call.steps] == [
        ("hello", "play", "played"),
        ("hours", "business_hours", "open"),
        ("who", "contact_lookup", "unknown"),
        ("menu", "menu", "1"),
        ("tag", "set", None),
        ("queue", "enqueue", "queued"),
    ]


async def test_flow_script_runs_the_flow_against_a_call() -> None:
    async with httpx.AsyncClient() as http:
        script = flow_script(
            decode_flow({"start": "end", "nodes": {"end": {"type": "hangup", "reason": "x"}}}),
            directory=Directory(),
            http=http,
        )
        call = ScriptedCall()
        await script(call)  # type: ignore[arg-type]
    assert _hangups(call) == ["x"]


# --- HTTP lookups -----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LookupServer:
    """An HTTPS endpoint of the tenant's: records each request, answers as told."""

    port: int = 0
    status: int = 200
    content_type: str = "application/json"
    answer: bytes = b"{}"
    extra_headers: str = ""
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(method, target, headers, body))
            if self.delay:
                await asyncio.sleep(self.delay)
            writer.write(
                (
                    f"HTTP/1.1 {self.status} Answer\r\nContent-Type: {self.content_type}\r\n"
                    f"Content-Length: {len(self.answer)}\r\n{self.extra_headers}"
                    "Connection: close\r\n\r\n"
                ).encode()
                + self.answer
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A certificate for 127.0.0.1 and localhost that only the test's client trusts."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lookup.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=pem.decode())
    return Tls(server=server, client=client)


@contextlib.asynccontextmanager
async def lookup_server(tls: Tls, **behaviour: Any) -> AsyncIterator[LookupServer]:
    endpoint = LookupServer(**behaviour)
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0, ssl=tls.server)
    endpoint.port = server.sockets[0].getsockname()[1]
    try:
        yield endpoint
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def _lookup_flow(url: str, timeout_ms: int = 1500) -> dict[str, Any]:
    return {
        "start": "tag",
        "nodes": {
            "tag": {"type": "set", "attributes": {"segment": "smb"}, "next": "crm"},
            "crm": {
                "type": "http_lookup",
                "url": url,
                "timeout_ms": timeout_ms,
                "store_as": "crm",
                "next": "found",
                "fallback": "missing",
            },
            "found": {"type": "hangup", "reason": "found"},
            "missing": {"type": "hangup", "reason": "missing"},
        },
    }


async def _lookup(
    tls: Tls, url: str, *, allow_private: bool = True, timeout_ms: int = 1500
) -> ScriptedCall:
    async with httpx.AsyncClient(verify=tls.client) as http:
        return await _run(
            _lookup_flow(url, timeout_ms),
            ScriptedCall(),
            http=http,
            allow_private=allow_private,
        )


def _fallback_reason(call: ScriptedCall) -> str:
    node, kind, outcome, detail = call.steps[1]
    assert (node, kind, outcome) == ("crm", "http_lookup", "fallback"), call.steps
    assert _hangups(call) == ["missing"]
    return detail["reason"]


async def test_an_http_lookup_posts_the_call_signed_with_the_tenants_secret(tls: Tls) -> None:
    answer = {"tier": "gold", "balance": 12.5, "open_tickets": 3, "churn_risk": False}
    nested = {"orders": [1, 2], "owner": {"name": "x"}, "note": None}
    async with lookup_server(tls, answer=json.dumps(answer | nested).encode()) as server:
        call = await _lookup(tls, f"https://127.0.0.1:{server.port}/crm/lookup?source=ivr")
    [request] = server.received
    assert request.method == "POST"
    assert request.target == "/crm/lookup?source=ivr"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "call_id": str(call.call_id),
        "from": CALLER,
        "to": DIALED,
        "variables": {"segment": "smb"},
    }
    # Standard Webhooks: v1,base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")).
    message_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    assert timestamp == str(int(NOON.timestamp()))
    signed = f"{message_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    wrong = base64.b64encode(hmac.new(b"other", signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] != f"v1,{wrong}"
    # Only plain values of the answer are kept, under store_as.
    assert call.variables["crm"] == answer
    assert call.steps[1] == ("crm", "http_lookup", "ok", {"status": "200"})
    assert _hangups(call) == ["found"]


async def test_an_http_lookup_by_host_name_is_sent_to_the_checked_address(tls: Tls) -> None:
    async with lookup_server(tls, answer=b'{"tier": "silver"}') as server:
        call = await _lookup(tls, f"https://localhost:{server.port}/lookup")
    assert server.received[0].headers["host"] == f"localhost:{server.port}"
    assert call.variables["crm"] == {"tier": "silver"}


async def test_an_http_lookup_that_answers_too_late_takes_the_fallback(tls: Tls) -> None:
    async with lookup_server(tls, delay=3.0) as server:
        call = await _lookup(tls, f"https://127.0.0.1:{server.port}/", timeout_ms=300)
    assert len(server.received) == 1
    assert _fallback_reason(call) == "no answer within 300 ms"
    assert "crm" not in call.variables


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ({"status": 500, "answer": b'{"tier": "gold"}'}, "answered with status 500"),
        ({"status": 404}, "answered with status 404"),
        (
            {"status": 302, "extra_headers": "Location: https://127.0.0.1:1/\r\n"},
            "answered with status 302",
        ),
        ({"answer": b"<html>hello</html>", "content_type": "text/html"}, "answer is not JSON"),
        ({"answer": b'["gold"]'}, "answer is not a JSON object"),
        ({"answer": b'{"blob": "' + b"x" * 20_000 + b'"}'}, "answer over 16384 bytes"),
    ],
    ids=["server-error", "not-found", "redirect", "not-json", "not-an-object", "too-large"],
)
async def test_an_http_lookup_with_an_unusable_answer_takes_the_fallback(
    tls: Tls, behaviour: dict[str, Any], reason: str
) -> None:
    async with lookup_server(tls, **behaviour) as server:
        call = await _lookup(tls, f"https://127.0.0.1:{server.port}/")
    assert len(server.received) == 1
    assert _fallback_reason(call) == reason
    assert "crm" not in call.variables


async def test_an_http_lookup_to_an_untrusted_certificate_takes_the_fallback(tls: Tls) -> None:
    async with (
        lookup_server(tls) as server,
        httpx.AsyncClient() as http,  # the system's trust store: the test CA is not in it
    ):
        call = await _run(
            _lookup_flow(f"https://127.0.0.1:{server.port}/"), ScriptedCall(), http=http
        )
    assert _fallback_reason(call).startswith("request failed")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_an_http_lookup_to_a_private_address_is_refused_unless_allowed(
    tls: Tls, host: str
) -> None:
    async with lookup_server(tls) as server:
        call = await _lookup(tls, f"https://{host}:{server.port}/", allow_private=False)
    assert server.received == []
    assert _fallback_reason(call) == f"{host} resolves to a non-public address (127.0.0.1)"


async def test_an_http_lookup_to_a_name_that_does_not_resolve_takes_the_fallback(
    tls: Tls,
) -> None:
    call = await _lookup(tls, "https://no-such-host.invalid/lookup")
    assert _fallback_reason(call) == "no-such-host.invalid does not resolve"


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("127.0.0.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),  # noqa: S104
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:10.0.0.1", True),
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_only_public_unicast_addresses_may_be_looked_up(address: str, refused: bool) -> None:
    assert refused_address(ipaddress.ip_address(address)) is refused

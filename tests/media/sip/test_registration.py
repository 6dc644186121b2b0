"""Registering with a trunk's registrar and pinging trunks, against a registrar and a trunk
played by a bare UDP socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from media.sip.call import UserAgent
from media.sip.dialog import Login
from media.sip.digest import NonceIssuer, Verdict, parse_credentials
from media.sip.endpoint import SipEndpoint
from media.sip.message import SipRequest, SipResponse, build_response, parse_message
from media.sip.registration import (
    PeerHealth,
    Registration,
    TrunkKeepalive,
    granted_expiry,
    refresh_delay,
    retry_delay,
)
from media.sip.transport import Peer

HOST = "127.0.0.1"
REALM = "carrier.example.net"

Script = Callable[[SipRequest], list[SipResponse] | None]


class FarEnd(asyncio.DatagramProtocol):
    """A registrar or trunk: `script` decides the responses to each request (None: silence)."""

    def __init__(self) -> None:
        self.requests: list[SipRequest] = []
        self.arrived: asyncio.Queue[SipRequest] = asyncio.Queue()
        self.script: Script = lambda request: [build_response(request, 200, "OK")]
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            return
        self.requests.append(message)
        self.arrived.put_nowait(message)
        for response in self.script(message) or []:
            assert self.transport is not None
            self.transport.sendto(bytes(response), addr)

    async def next(self, method: str, timeout: float = 3) -> SipRequest:
        async with asyncio.timeout(timeout):
            while True:
                request = await self.arrived.get()
                if request.method == method:
                    return request

    @property
    def peer(self) -> Peer:
        return Peer("udp", HOST, self.port)


@pytest.fixture
async def far_end() -> AsyncIterator[FarEnd]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(FarEnd, local_addr=(HOST, 0))
    yield protocol
    transport.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    async def no_calls(call: Any) -> None:
        call.reject(603)

    ua = UserAgent(on_invite=no_calls)
    sip = SipEndpoint(ua, public_host=HOST, t1=0.01, t2=0.08)
    ua.bind(sip)
    await sip.listen("udp", HOST, 0)
    yield sip
    await sip.close()


class Registrar:
    """Challenges every REGISTER without valid credentials, then keeps the binding."""

    def __init__(self, *, expires: int) -> None:
        self.issuer = NonceIssuer(b"registrar secret, 32 bytes long.", clock=time.time)
        self.expires = expires
        self.accepted: list[SipRequest] = []

    def __call__(self, request: SipRequest) -> list[SipResponse]:
        authorization = request.header("Authorization")
        if authorization is None or self._verdict(authorization) is not Verdict.OK:
            values = self.issuer.challenge(REALM)
            return [
                build_response(
                    request,
                    401,
                    "Unauthorized",
                    to_tag="reg",
                    headers=[("WWW-Authenticate", v) for v in values],
                )
            ]
        self.accepted.append(request)
        asked = int(request.header("Expires") or "0")
        granted = min(asked, self.expires)
        contact = request.header("Contact") or ""
        binding = contact.split(";")[0]
        headers = [("Contact", f"{binding};expires={granted}")] if granted else []
        return [build_response(request, 200, "OK", to_tag="reg", headers=headers)]

    def _verdict(self, value: str) -> Verdict:
        return self.issuer.verify(
            parse_credentials(value),
            method="REGISTER",
            realm=REALM,
            password_lookup=lambda user: "reg-pass" if user == "acme" else None,
        )


# Registration


async def test_register_answers_the_challenge_refreshes_before_expiry_and_unregisters_on_stop(
    endpoint: SipEndpoint, far_end: FarEnd
) -> None:
    registrar = Registrar(expires=1)  # shorter than asked: the registrar's word counts
    far_end.script = registrar
    changes: asyncio.Queue[bool] = asyncio.Queue()
    registration = Registration(
        endpoint,
        registrar=far_end.peer,
        aor=f"sip:acme@{REALM}",
        login=Login("acme", "reg-pass"),
        expires=3600,
        on_change=changes.put_nowait,
    )

    registration.start()
    assert await asyncio.wait_for(changes.get(), 2) is True
    assert registration.registered
    assert registration.granted == 1
    assert far_end.requests[0].header("Authorization") is None
    assert len(registrar.accepted) == 1

    refreshed = len(registrar.accepted)
    async with asyncio.timeout(2):
        while len(registrar.accepted) == refreshed:
            await far_end.next("REGISTER")

    await registration.stop()

    last = far_end.requests[-1]
    assert last.header("Expires") == "0"
    assert last.header("Authorization") is not None
    assert registrar.accepted[-1] is last
    assert not registration.registered
    assert changes.get_nowait() is False
    assert changes.empty()
    call_ids = {r.call_id for r in far_end.requests}
    assert len(call_ids) == 1
    cseqs = [r.cseq.sequence for r in far_end.requests]
    assert cseqs == sorted(cseqs)
    assert len(set(cseqs)) == len(cseqs)


async def test_wrong_password_is_not_registered_and_is_retried_later(
    endpoint: SipEndpoint, far_end: FarEnd
) -> None:
    far_end.script = Registrar(expires=60)
    registration = Registration(
        endpoint,
        registrar=far_end.peer,
        aor=f"sip:acme@{REALM}",
        login=Login("acme", "wrong"),
        retry_base=0.2,
    )

    registration.start()
    await far_end.next("REGISTER")
    await far_end.next("REGISTER")  # the one answer to the challenge, refused again
    await asyncio.sleep(0.05)
    assert not registration.registered
    assert registration.last_status == 401
    await far_end.next("REGISTER", timeout=1)  # the back-off is over: a fresh attempt

    await registration.stop()


async def test_interval_too_brief_is_retried_with_the_registrar_minimum(
    endpoint: SipEndpoint, far_end: FarEnd
) -> None:
    def script(request: SipRequest) -> list[SipResponse]:
        if int(request.header("Expires") or "0") < 600:
            return [
                build_response(request, 423, "Interval Too Brief", headers=[("Min-Expires", "600")])
            ]
        return [build_response(request, 200, "OK", headers=[("Expires", "600")])]

    far_end.script = script
    registration = Registration(
        endpoint, registrar=far_end.peer, aor=f"sip:acme@{REALM}", expires=60
    )

    registration.start()
    await far_end.next("REGISTER")
    second = await far_end.next("REGISTER")
    await asyncio.sleep(0.05)

    assert second.header("Expires") == "600"
    assert registration.registered
    assert registration.granted == 600
    await registration.stop()


def test_granted_expiry_prefers_our_contact_then_the_expires_header_then_the_request() -> None:
    request = SipRequest.create(
        "REGISTER",
        "sip:carrier.example.net",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1"),
            ("From", "<sip:acme@carrier.example.net>;tag=a"),
            ("To", "<sip:acme@carrier.example.net>"),
            ("Call-ID", "reg-1"),
            ("CSeq", "1 REGISTER"),
        ],
    )
    both = build_response(
        request,
        200,
        "OK",
        headers=[
            ("Contact", "<sip:other@192.0.2.9>;expires=30, <sip:ACME@192.0.2.1:5060>;expires=120"),
            ("Expires", "90"),
        ],
    )
    header_only = build_response(request, 200, "OK", headers=[("Expires", "90")])
    bare = build_response(request, 200, "OK")

    assert granted_expiry(both, "<sip:ACME@192.0.2.1>", 3600) == 120
    assert granted_expiry(header_only, "<sip:acme@192.0.2.1>", 3600) == 90
    assert granted_expiry(bare, "<sip:acme@192.0.2.1>", 3600) == 3600
    assert refresh_delay(120) == 60


def test_failures_back_off_doubling_to_a_cap_unless_the_server_says_when() -> None:
    delays = [retry_delay(n, base=30, cap=600) for n in range(1, 8)]

    assert 24 <= delays[0] <= 30
    assert 48 <= delays[1] <= 60
    assert all(480 <= d <= 600 for d in delays[5:])
    assert retry_delay(3, base=30, cap=600, retry_after=5) == 5


# Keepalive


async def test_keepalive_marks_a_silent_trunk_down_and_up_again_when_it_answers(
    endpoint: SipEndpoint, far_end: FarEnd
) -> None:
    states: asyncio.Queue[bool] = asyncio.Queue()
    keepalive = TrunkKeepalive(
        endpoint, peer=far_end.peer, interval=0.05, down_after=2, on_change=states.put_nowait
    )

    keepalive.start()
    assert await asyncio.wait_for(states.get(), 2) is True
    ping = await far_end.next("OPTIONS")
    assert str(ping.uri) == f"sip:{HOST}:{far_end.port}"

    far_end.script = lambda request: None
    assert await asyncio.wait_for(states.get(), 4) is False
    assert keepalive.up is False
    assert keepalive.health.failures >= 2

    far_end.script = lambda request: [build_response(request, 404, "Not Found")]
    assert await asyncio.wait_for(states.get(), 2) is True
    assert keepalive.last_status == 404

    await keepalive.stop()


async def test_trunk_answering_503_counts_as_unavailable(
    endpoint: SipEndpoint, far_end: FarEnd
) -> None:
    far_end.script = lambda request: [build_response(request, 503, "Service Unavailable")]
    keepalive = TrunkKeepalive(endpoint, peer=far_end.peer)

    assert await keepalive.ping() is False
    assert keepalive.last_status == 503


def test_health_needs_consecutive_failures_to_go_down_and_one_success_to_come_up() -> None:
    health = PeerHealth(down_after=3)

    assert health.record(True) is True
    assert [health.record(False) for _ in range(2)] == [None, None]
    assert health.record(True) is None  # the run of failures is broken
    assert [health.record(False) for _ in range(3)] == [None, None, False]
    assert health.record(False) is None
    assert health.record(True) is True
    assert PeerHealth().record(False) is False  # unknown to down at the first failure

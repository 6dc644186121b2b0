"""SipEndpoint on loopback sockets, with plain UDP/TCP/TLS sockets playing the carrier."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from media.sip.endpoint import (
    Peer,
    ServerTransaction,
    SipEndpoint,
    SipTimeout,
    SourceLimits,
    TransactionStateError,
    TransportError,
    TransportName,
)
from media.sip.message import Keepalive, SipRequest, SipResponse, build_response, parse_message

T1 = 0.05
HOST = "127.0.0.1"
_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)", re.I | re.M)


# The call center's side: a handler that records what reaches it


Answer = Callable[[ServerTransaction], Awaitable[None]]


async def answer_ok(tx: ServerTransaction) -> None:
    tx.reply(200)


class Desk:
    """A RequestHandler that records every callback and answers as the test tells it."""

    def __init__(self) -> None:
        self.requests: list[ServerTransaction] = []
        self.cancels: list[tuple[ServerTransaction, SipRequest]] = []
        self.strays: list[tuple[SipResponse, Peer]] = []
        self.answer: Answer = answer_ok

    async def on_request(self, tx: ServerTransaction) -> None:
        self.requests.append(tx)
        if tx.request.method != "ACK":
            await self.answer(tx)

    async def on_cancel(self, invite_tx: ServerTransaction, cancel: SipRequest) -> None:
        self.cancels.append((invite_tx, cancel))
        if not invite_tx.answered:
            invite_tx.reply(487)

    def on_stray_response(self, response: SipResponse, peer: Peer) -> None:
        self.strays.append((response, peer))

    def methods(self) -> list[str]:
        return [tx.request.method for tx in self.requests]


@dataclass
class Node:
    endpoint: SipEndpoint
    desk: Desk
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def udp(self) -> int:
        return self.ports["udp"]

    @property
    def tcp(self) -> int:
        return self.ports["tcp"]


MakeNode = Callable[..., Coroutine[Any, Any, Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    made: list[SipEndpoint] = []

    async def make(
        *, transports: tuple[TransportName, ...] = ("udp", "tcp"), **options: Any
    ) -> Node:
        desk = Desk()
        options.setdefault("t1", T1)
        endpoint = SipEndpoint(desk, public_host=HOST, **options)
        made.append(endpoint)
        node = Node(endpoint, desk)
        for transport in transports:
            node.ports[transport] = await endpoint.listen(transport, HOST, 0)
        return node

    yield make
    for endpoint in made:
        await endpoint.close()


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


# The carrier's side: plain sockets


class UdpPhone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.inbox.put_nowait((data, asyncio.get_running_loop().time()))

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, data: bytes | SipRequest | SipResponse, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(data), (HOST, port))

    async def receive_raw(self, timeout: float = 2.0) -> tuple[bytes, float]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def receive(self, timeout: float = 2.0) -> SipRequest | SipResponse:
        data, _ = await self.receive_raw(timeout)
        message = parse_message(data)
        assert not isinstance(message, Keepalive)
        return message

    async def response(self, timeout: float = 2.0) -> SipResponse:
        message = await self.receive(timeout)
        assert isinstance(message, SipResponse)
        return message

    async def request(self, timeout: float = 2.0) -> SipRequest:
        message = await self.receive(timeout)
        assert isinstance(message, SipRequest)
        return message

    async def hears_nothing_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        leftovers = []
        while not self.inbox.empty():
            leftovers.append(self.inbox.get_nowait()[0][:60])
        assert leftovers == []


MakePhone = Callable[[], Coroutine[Any, Any, UdpPhone]]


@pytest.fixture
async def make_phone() -> AsyncIterator[MakePhone]:
    phones: list[UdpPhone] = []

    async def make() -> UdpPhone:
        _, phone = await asyncio.get_running_loop().create_datagram_endpoint(
            UdpPhone, local_addr=(HOST, 0)
        )
        phones.append(phone)
        return phone

    yield make
    for phone in phones:
        assert phone.transport is not None
        phone.transport.close()


@pytest.fixture
async def phone(make_phone: MakePhone) -> UdpPhone:
    return await make_phone()


def carrier_request(
    method: str,
    *,
    via_port: int,
    branch: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    rport: bool = True,
    via_host: str = HOST,
    transport: str = "UDP",
    max_forwards: str = "70",
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """A request as a carrier would send it to the call center."""
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    call_id = call_id or secrets.token_hex(8) + "@carrier"
    via = f"SIP/2.0/{transport} {via_host}:{via_port};branch={branch}" + (";rport" if rport else "")
    lines = [
        f"{method} sip:+15551230000@{HOST} SIP/2.0",
        f"Via: {via}",
        f"Max-Forwards: {max_forwards}",
        "From: <sip:+15557654321@carrier.example.com>;tag=carrier1",
        "To: <sip:+15551230000@switchboard.example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def our_request(
    endpoint: SipEndpoint, method: str, port: int, transport: TransportName = "udp"
) -> SipRequest:
    """A request the call center sends to a carrier listening on `port`."""
    return SipRequest.create(
        method,
        f"sip:+15557654321@{HOST}:{port}",
        [
            ("Via", endpoint.via(transport)),
            ("Max-Forwards", "70"),
            ("From", "<sip:queue@switchboard.example.com>;tag=sb1"),
            ("To", "<sip:+15557654321@carrier.example.com>"),
            ("Call-ID", secrets.token_hex(8) + "@switchboard"),
            ("CSeq", f"1 {method}"),
            ("Contact", endpoint.contact(transport, "queue")),
        ],
    )


def answer_to(request: SipRequest, status: int, reason: str, to_tag: str = "carrier9") -> bytes:
    return bytes(build_response(request, status, reason, to_tag=to_tag))


# UDP, the call center answering


async def test_options_over_udp_reaches_the_handler_and_the_answer_returns_to_its_source(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    phone.send(carrier_request("OPTIONS", via_port=phone.port, call_id="probe-1"), node.udp)
    response = await phone.response()

    assert (response.status, response.call_id) == (200, "probe-1")
    assert response.header("Server") == "Switchboard"
    assert response.via.received == HOST
    assert response.via.rport == phone.port
    [tx] = node.desk.requests
    assert tx.peer == Peer("udp", HOST, phone.port)
    assert tx.answered


async def test_without_rport_the_answer_goes_to_the_port_in_the_via(
    make_node: MakeNode, make_phone: MakePhone
) -> None:
    node = await make_node()
    sender, via_listener = await make_phone(), await make_phone()

    sender.send(carrier_request("OPTIONS", via_port=via_listener.port, rport=False), node.udp)

    response = await via_listener.response()
    assert response.status == 200
    assert response.via.received is None  # the sent-by address was already right
    await sender.hears_nothing_for(0.1)


async def test_a_hostname_in_the_via_gets_received_and_the_answer_goes_to_the_source_ip(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    phone.send(
        carrier_request(
            "OPTIONS", via_host="sbc.carrier.example.com", via_port=phone.port, rport=False
        ),
        node.udp,
    )

    response = await phone.response()
    assert response.via.host == "sbc.carrier.example.com"
    assert response.via.received == HOST
    assert node.desk.requests[0].request.via.received == HOST


async def test_only_the_top_via_is_stamped_and_every_proxy_via_is_copied_back(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    request = carrier_request("OPTIONS", via_port=phone.port, branch="z9hG4bKtop").replace(
        b"z9hG4bKtop;rport\r\n",
        b"z9hG4bKtop;rport , SIP/2.0/UDP edge.carrier.example.com;branch=z9hG4bKedge\r\n"
        b"Via: SIP/2.0/TCP core.carrier.example.com:5070;branch=z9hG4bKcore;received=192.0.2.9\r\n",
    )

    phone.send(request, node.udp)
    response = await phone.response()

    top, edge, core = response.vias
    assert (top.branch, top.received, top.rport) == ("z9hG4bKtop", HOST, phone.port)
    assert (edge.host, edge.branch, edge.received) == (
        "edge.carrier.example.com",
        "z9hG4bKedge",
        None,
    )
    assert (core.transport, core.sent_by, core.received) == (
        "TCP",
        "core.carrier.example.com:5070",
        "192.0.2.9",
    )


async def test_a_retransmitted_request_reaches_the_handler_once_and_gets_the_answer_again(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    release = asyncio.Event()

    async def slow_ok(tx: ServerTransaction) -> None:
        await release.wait()
        tx.reply(200)

    node.desk.answer = slow_ok
    options = carrier_request("OPTIONS", via_port=phone.port)

    phone.send(options, node.udp)
    await eventually(lambda: len(node.desk.requests) == 1)
    phone.send(options, node.udp)  # nothing to resend yet
    await phone.hears_nothing_for(0.05)
    release.set()
    first = await phone.response()
    phone.send(options, node.udp)
    again = await phone.response()

    assert first.status == again.status == 200
    assert bytes(first) == bytes(again)
    assert node.desk.methods() == ["OPTIONS"]
    assert node.endpoint.stats.retransmissions_absorbed == 2


async def test_a_rejected_invite_is_resent_until_the_ack_which_the_handler_never_sees(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    async def busy(tx: ServerTransaction) -> None:
        tx.reply(486, to_tag="desk486")

    node.desk.answer = busy
    phone.send(carrier_request("INVITE", via_port=phone.port, branch="z9hG4bKbusy1"), node.udp)

    arrivals = [await phone.receive_raw() for _ in range(3)]
    responses = [parse_message(data) for data, _ in arrivals]
    assert all(isinstance(r, SipResponse) and r.status == 486 for r in responses)
    # Timer G doubles from T1: copies at 0, T1 and 3*T1 (a fixed interval would give 2*T1).
    assert arrivals[1][1] - arrivals[0][1] >= T1 * 0.9
    assert arrivals[2][1] - arrivals[0][1] >= 3 * T1 * 0.9

    phone.send(
        carrier_request("ACK", via_port=phone.port, branch="z9hG4bKbusy1", to_tag="desk486"),
        node.udp,
    )
    await phone.hears_nothing_for(6 * T1)
    assert node.desk.methods() == ["INVITE"]


async def test_cancel_of_a_ringing_invite_gets_200_and_the_invite_487(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    async def ring(tx: ServerTransaction) -> None:
        tx.reply(180, to_tag="desk180")

    node.desk.answer = ring
    invite = dict(via_port=phone.port, branch="z9hG4bKring1", call_id="ring-1")
    phone.send(carrier_request("INVITE", **invite), node.udp)  # type: ignore[arg-type]
    assert (await phone.response()).status == 180

    phone.send(carrier_request("CANCEL", **invite), node.udp)  # type: ignore[arg-type]
    answers = sorted([await phone.response(), await phone.response()], key=lambda r: r.status)

    assert [(r.status, r.cseq.method) for r in answers] == [(200, "CANCEL"), (487, "INVITE")]
    assert answers[0].to.tag == "desk180"  # RFC 3261 §9.2: same To tag as the INVITE's answers
    [(invite_tx, cancel)] = node.desk.cancels
    assert invite_tx is node.desk.requests[0]
    assert cancel.method == "CANCEL"
    assert node.desk.methods() == ["INVITE"]  # CANCEL never reaches on_request


async def test_cancel_that_matches_no_invite_is_answered_481(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    phone.send(carrier_request("CANCEL", via_port=phone.port), node.udp)

    assert (await phone.response()).status == 481
    assert node.desk.requests == []
    assert node.desk.cancels == []


async def test_the_ack_for_a_2xx_reaches_the_handler_and_cannot_be_answered(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    async def answer(tx: ServerTransaction) -> None:
        tx.reply(200, to_tag="desk200")

    node.desk.answer = answer
    phone.send(carrier_request("INVITE", via_port=phone.port, call_id="answered-1"), node.udp)
    assert (await phone.response()).status == 200
    phone.send(
        carrier_request("ACK", via_port=phone.port, call_id="answered-1", to_tag="desk200"),
        node.udp,
    )
    await eventually(lambda: len(node.desk.requests) == 2)

    ack_tx = node.desk.requests[1]
    assert ack_tx.request.method == "ACK"
    assert ack_tx.request.call_id == "answered-1"
    assert not ack_tx.answered
    with pytest.raises(TransactionStateError):
        ack_tx.reply(200)


async def test_after_the_2xx_a_retransmitted_invite_is_absorbed_and_a_late_cancel_changes_nothing(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    async def answer(tx: ServerTransaction) -> None:
        tx.reply(200, to_tag="desk200")

    node.desk.answer = answer
    invite = carrier_request("INVITE", via_port=phone.port, branch="z9hG4bKlate1")
    phone.send(invite, node.udp)
    ok = await phone.response()

    phone.send(invite, node.udp)  # the carrier missed our 200: not a second call
    await phone.hears_nothing_for(0.05)
    assert node.desk.methods() == ["INVITE"]

    phone.send(carrier_request("CANCEL", via_port=phone.port, branch="z9hG4bKlate1"), node.udp)
    cancel_ok = await phone.response()
    assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
    await eventually(lambda: len(node.desk.cancels) == 1)
    assert node.desk.cancels[0][0].answered
    await phone.hears_nothing_for(0.05)  # no 487 after a 200

    # The UA retransmits its 2xx itself, through the transaction or statelessly.
    invite_tx = node.desk.requests[0]
    invite_tx.respond(ok)
    node.endpoint.send(ok, invite_tx.peer)
    assert [(await phone.response()).status for _ in range(2)] == [200, 200]
    with pytest.raises(TransactionStateError):
        invite_tx.reply(486)


async def test_a_malformed_request_gets_400_and_the_next_request_is_served(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    broken = carrier_request("OPTIONS", via_port=phone.port, call_id="broken-1").replace(
        b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS"
    )

    phone.send(broken, node.udp)
    rejected, _ = await phone.receive_raw()  # it copies the bad CSeq, so it does not parse
    phone.send(b"\x00\xff not sip at all", node.udp)
    phone.send(b"\r\n\r\n", node.udp)  # keepalive
    await phone.hears_nothing_for(0.05)
    phone.send(carrier_request("OPTIONS", via_port=phone.port, call_id="fine-1"), node.udp)
    served = await phone.response()

    assert rejected.startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert b"\r\nCall-ID: broken-1\r\n" in rejected
    assert (served.status, served.call_id) == (200, "fine-1")
    assert node.endpoint.stats.parse_errors == 2
    assert node.desk.methods() == ["OPTIONS"]


async def test_an_invite_with_no_hops_left_is_refused_483_but_options_is_answered(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    phone.send(carrier_request("INVITE", via_port=phone.port, max_forwards="0"), node.udp)
    refused = await phone.response()
    phone.send(carrier_request("OPTIONS", via_port=phone.port, max_forwards="0"), node.udp)
    probed = await phone.response()

    assert refused.status == 483
    assert probed.status == 200
    assert node.desk.methods() == ["OPTIONS"]


async def test_requests_over_the_source_rate_limit_are_dropped_silently(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node(limits=SourceLimits(requests_per_second=1.0, burst=3))

    for _ in range(6):
        phone.send(carrier_request("OPTIONS", via_port=phone.port), node.udp)
    answered = [await phone.response() for _ in range(3)]
    await phone.hears_nothing_for(0.15)

    assert [r.status for r in answered] == [200, 200, 200]
    assert len(node.desk.requests) == 3
    assert node.endpoint.stats.rate_limited == 3


async def test_a_scanner_user_agent_gets_no_answer_at_all(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()

    phone.send(
        carrier_request(
            "OPTIONS", via_port=phone.port, headers=(("User-Agent", "friendly-scanner"),)
        ),
        node.udp,
    )
    phone.send(
        carrier_request("REGISTER", via_port=phone.port, headers=(("User-Agent", "sipvicious"),)),
        node.udp,
    )
    await phone.hears_nothing_for(0.15)
    phone.send(carrier_request("OPTIONS", via_port=phone.port), node.udp)

    assert (await phone.response()).status == 200
    assert node.desk.methods() == ["OPTIONS"]
    assert node.endpoint.stats.scanners_dropped == 2


async def test_a_handler_that_raises_answers_500_and_the_endpoint_keeps_serving(
    make_node: MakeNode, phone: UdpPhone, caplog: pytest.LogCaptureFixture
) -> None:
    node = await make_node()

    async def broken(tx: ServerTransaction) -> None:
        if tx.request.call_id == "fails-1":
            raise RuntimeError("queue lookup failed")
        tx.reply(200)

    node.desk.answer = broken
    phone.send(carrier_request("INVITE", via_port=phone.port, call_id="fails-1"), node.udp)
    failed = await phone.response()
    phone.send(carrier_request("OPTIONS", via_port=phone.port, call_id="works-1"), node.udp)
    served = await phone.response()

    assert (failed.status, failed.call_id) == (500, "fails-1")
    assert (served.status, served.call_id) == (200, "works-1")
    assert node.endpoint.stats.handler_errors == 1
    assert "queue lookup failed" in caplog.text


# UDP, the call center asking


async def test_an_unanswered_request_is_resent_with_timer_e_doubling_until_the_final(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node(t2=8 * T1)
    request = our_request(node.endpoint, "OPTIONS", phone.port)
    asking = asyncio.create_task(node.endpoint.request(request, Peer("udp", HOST, phone.port)))

    arrivals = [await phone.receive_raw() for _ in range(3)]
    phone.send(answer_to(request, 200, "OK"), node.udp)
    response = await asking

    assert response.status == 200
    assert {data for data, _ in arrivals} == {bytes(request)}
    # Timer E doubles from T1: copies at 0, T1 and 3*T1 (a fixed interval would give 2*T1).
    assert arrivals[1][1] - arrivals[0][1] >= T1 * 0.9
    assert arrivals[2][1] - arrivals[0][1] >= 3 * T1 * 0.9
    await phone.hears_nothing_for(8 * T1)  # retransmission stopped


async def test_an_invite_is_resent_per_timer_a_until_ringing_then_waits_for_the_final(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    invite = our_request(node.endpoint, "INVITE", phone.port)
    provisional: list[int] = []
    asking = asyncio.create_task(
        node.endpoint.request(
            invite,
            Peer("udp", HOST, phone.port),
            on_provisional=lambda r: provisional.append(r.status),
        )
    )

    copies = [await phone.request() for _ in range(3)]
    phone.send(answer_to(invite, 180, "Ringing"), node.udp)
    await phone.hears_nothing_for(8 * T1)
    phone.send(answer_to(invite, 200, "OK"), node.udp)
    response = await asking

    assert all(copy.method == "INVITE" for copy in copies)
    assert provisional == [180]
    assert response.status == 200
    assert node.desk.strays == []


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
async def test_a_request_nobody_answers_raises_sip_timeout_after_64_t1(
    make_node: MakeNode, phone: UdpPhone, method: str
) -> None:
    node = await make_node(t1=0.01)
    request = our_request(node.endpoint, method, phone.port)

    with pytest.raises(SipTimeout):
        await node.endpoint.request(request, Peer("udp", HOST, phone.port))

    copies = phone.inbox.qsize()
    assert copies >= 5
    assert node.endpoint.stats.timeouts == 1
    phone.send(answer_to(request, 200, "OK"), node.udp)  # too late: nobody is waiting
    await eventually(lambda: len(node.desk.strays) == 1)


async def test_a_rejected_outgoing_invite_is_acknowledged_by_the_transaction(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    invite = our_request(node.endpoint, "INVITE", phone.port)
    asking = asyncio.create_task(node.endpoint.request(invite, Peer("udp", HOST, phone.port)))
    await phone.request()

    busy = answer_to(invite, 486, "Busy Here", to_tag="busy1")
    phone.send(busy, node.udp)
    response = await asking
    ack = await phone.request()
    phone.send(busy, node.udp)  # our ACK was lost
    second_ack = await phone.request()

    assert response.status == 486
    assert ack.method == "ACK"
    assert ack.via.branch == invite.via.branch
    assert (ack.cseq.sequence, ack.cseq.method) == (1, "ACK")
    assert ack.to.tag == "busy1"
    assert bytes(second_ack) == bytes(ack)
    assert node.desk.strays == []


async def test_a_2xx_matching_no_transaction_is_handed_over_as_stray(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    invite = our_request(node.endpoint, "INVITE", phone.port)
    asking = asyncio.create_task(node.endpoint.request(invite, Peer("udp", HOST, phone.port)))
    await phone.request()
    ok = answer_to(invite, 200, "OK")
    phone.send(ok, node.udp)
    assert (await asking).status == 200

    phone.send(ok, node.udp)  # the carrier did not get our ACK yet

    await eventually(lambda: len(node.desk.strays) == 1)
    stray, peer = node.desk.strays[0]
    assert (stray.status, stray.call_id) == (200, invite.call_id)
    assert peer == Peer("udp", HOST, phone.port)


# TCP


async def read_message(
    reader: asyncio.StreamReader, timeout: float = 2.0
) -> SipRequest | SipResponse:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        match = _LENGTH_RE.search(head)
        body = await reader.readexactly(int(match.group(1)) if match else 0)
    message = parse_message(head + body)
    assert not isinstance(message, Keepalive)
    return message


@contextlib.asynccontextmanager
async def tcp_client(
    port: int, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_two_requests_in_one_tcp_segment_are_both_answered_on_that_connection(
    make_node: MakeNode,
) -> None:
    node = await make_node()
    async with tcp_client(node.tcp) as (reader, writer):
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(
            carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="one")
            + carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="two")
        )
        first, second = await read_message(reader), await read_message(reader)

    assert [(m.call_id, getattr(m, "status", None)) for m in (first, second)] == [
        ("one", 200),
        ("two", 200),
    ]
    assert [tx.peer for tx in node.desk.requests] == [Peer("tcp", HOST, local_port)] * 2


async def test_a_request_split_across_segments_is_framed_by_its_content_length(
    make_node: MakeNode,
) -> None:
    node = await make_node()
    body = b"v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\n\r\nCSeq: 7 INVITE\r\n"
    invite = carrier_request(
        "INVITE",
        via_port=5060,
        transport="TCP",
        call_id="split-1",
        headers=(("Content-Type", "application/sdp"),),
        body=body,
    )
    no_length = carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="bare-1")
    no_length = no_length.replace(b"Content-Length: 0\r\n", b"")

    async with tcp_client(node.tcp) as (reader, writer):
        for start, end in ((0, 40), (40, len(invite) - 10), (len(invite) - 10, len(invite))):
            writer.write(invite[start:end])
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(no_length)
        answers = [await read_message(reader), await read_message(reader)]
        writer.write(b"\r\n\r\n")  # a keepalive ping
        pong = await asyncio.wait_for(reader.readexactly(2), 2.0)

    assert [(m.call_id, getattr(m, "status", None)) for m in answers] == [
        ("split-1", 200),
        ("bare-1", 200),
    ]
    assert node.desk.requests[0].request.body == body
    assert node.desk.requests[1].request.body == b""
    assert pong == b"\r\n"


async def test_a_tcp_source_over_its_rate_limit_is_disconnected(make_node: MakeNode) -> None:
    node = await make_node(limits=SourceLimits(requests_per_second=0.1, burst=1))
    async with tcp_client(node.tcp) as (reader, writer):
        writer.write(
            carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="first")
            + carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="second")
        )
        until_closed = await asyncio.wait_for(reader.read(), 2.0)

    assert node.desk.methods() == ["OPTIONS"]
    assert node.endpoint.stats.rate_limited == 1
    assert b"Call-ID: second" not in until_closed


async def test_an_oversized_tcp_message_closes_the_connection(make_node: MakeNode) -> None:
    node = await make_node()
    async with tcp_client(node.tcp) as (reader, writer):
        writer.write(b"INVITE sip:queue@127.0.0.1 SIP/2.0\r\nX-Padding: " + b"a" * 70_000)
        closed = await asyncio.wait_for(reader.read(), 2.0)

    assert closed == b""
    assert node.desk.requests == []


async def test_a_request_over_tcp_opens_a_connection_and_reuses_it(make_node: MakeNode) -> None:
    node = await make_node()
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def carrier(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append((reader, writer))
        with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
            while True:
                request = await read_message(reader, timeout=5.0)
                assert isinstance(request, SipRequest)
                writer.write(answer_to(request, 200, "OK"))

    server = await asyncio.start_server(carrier, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    peer = Peer("tcp", HOST, port)
    try:
        first = await node.endpoint.request(
            our_request(node.endpoint, "OPTIONS", port, "tcp"), peer
        )
        second = await node.endpoint.request(our_request(node.endpoint, "INFO", port, "tcp"), peer)
        # The carrier may send its own requests back over the connection we opened.
        _, writer = connections[0]
        writer.write(carrier_request("OPTIONS", via_port=port, transport="TCP", call_id="back-1"))
        await eventually(lambda: len(node.desk.requests) == 1)
    finally:
        for _, writer in connections:
            writer.close()
        server.close()

    assert (first.status, second.status) == (200, 200)
    assert len(connections) == 1
    assert node.desk.requests[0].request.call_id == "back-1"
    assert node.desk.requests[0].peer == peer


async def test_a_request_to_a_closed_tcp_port_raises_transport_error(make_node: MakeNode) -> None:
    node = await make_node()
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]

    with pytest.raises(TransportError):
        await node.endpoint.request(
            our_request(node.endpoint, "OPTIONS", port, "tcp"), Peer("tcp", HOST, port)
        )


async def test_a_connection_lost_before_the_final_fails_the_request(make_node: MakeNode) -> None:
    node = await make_node()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_message(reader)
        writer.close()

    server = await asyncio.start_server(hang_up, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError):
            await node.endpoint.request(
                our_request(node.endpoint, "INVITE", port, "tcp"), Peer("tcp", HOST, port)
            )
    finally:
        server.close()


# TLS


@dataclass
class Certificate:
    server: ssl.SSLContext
    client: ssl.SSLContext


def self_signed(tmp: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchboard.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "cert.pem").write_bytes(cert_pem)
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return Certificate(server, client)


async def test_tls_carries_a_request_and_its_answer_both_ways(
    make_node: MakeNode, tmp_path: Path
) -> None:
    certificate = self_signed(tmp_path)
    node = await make_node(transports=())
    tls_port = await node.endpoint.listen("tls", HOST, 0, ssl=certificate.server)
    caller = await make_node(transports=("udp",), client_ssl=certificate.client)

    async with tcp_client(tls_port, certificate.client) as (reader, writer):
        writer.write(carrier_request("OPTIONS", via_port=5061, transport="TLS", call_id="tls-1"))
        answer = await read_message(reader)
    # One endpoint calling the other: request() opens the TLS connection itself.
    response = await caller.endpoint.request(
        our_request(caller.endpoint, "OPTIONS", tls_port, "udp"), Peer("tls", HOST, tls_port)
    )

    assert isinstance(answer, SipResponse)
    assert (answer.status, answer.call_id) == (200, "tls-1")
    assert response.status == 200
    assert [tx.peer.transport for tx in node.desk.requests] == ["tls", "tls"]
    assert node.endpoint.contact("tls", "queue") == f"<sip:queue@{HOST}:{tls_port};transport=tls>"


# Identity and loops


async def test_contact_and_via_name_this_endpoint_and_every_branch_is_new(
    make_node: MakeNode,
) -> None:
    node = await make_node()

    assert node.endpoint.contact("udp", "queue") == f"<sip:queue@{HOST}:{node.udp}>"
    assert node.endpoint.contact("tcp") == f"<sip:{HOST}:{node.tcp};transport=tcp>"
    via = node.endpoint.via("tcp")
    assert re.fullmatch(rf"SIP/2\.0/TCP {HOST}:{node.tcp};branch=z9hG4bK\w+;rport", via)
    assert node.endpoint.new_branch() != node.endpoint.new_branch()
    with pytest.raises(ValueError, match="tls"):
        node.endpoint.contact("tls")


async def _call_between_two_endpoints() -> list[int]:
    """Two endpoints on loopback asking each other over UDP and TCP."""
    statuses: list[int] = []
    callee_desk, caller_desk = Desk(), Desk()
    callee = SipEndpoint(callee_desk, public_host=HOST, t1=T1)
    caller = SipEndpoint(caller_desk, public_host=HOST, t1=T1)
    try:
        ports = {
            "udp": await callee.listen("udp", HOST, 0),
            "tcp": await callee.listen("tcp", HOST, 0),
        }
        await caller.listen("udp", HOST, 0)
        await caller.listen("tcp", HOST, 0)
        transport: TransportName
        for transport in ("udp", "tcp"):
            port = ports[transport]
            request = our_request(caller, "OPTIONS", port, transport)
            statuses.append((await caller.request(request, Peer(transport, HOST, port))).status)

        async def busy(tx: ServerTransaction) -> None:
            tx.reply(486, to_tag="b")

        callee_desk.answer = busy
        invite = our_request(caller, "INVITE", ports["udp"])
        statuses.append((await caller.request(invite, Peer("udp", HOST, ports["udp"]))).status)
        # The transaction's ACK reaches the callee and is absorbed there.
        await eventually(lambda: callee.stats.retransmissions_absorbed >= 1)
        assert callee_desk.methods() == ["OPTIONS", "OPTIONS", "INVITE"]
    finally:
        await caller.close()
        await callee.close()
    return statuses


def test_the_endpoint_works_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_call_between_two_endpoints()) == [200, 200, 486]


async def test_the_endpoint_works_on_the_default_loop() -> None:
    assert await _call_between_two_endpoints() == [200, 200, 486]


async def test_close_fails_pending_requests_and_stops_listening(
    make_node: MakeNode, phone: UdpPhone
) -> None:
    node = await make_node()
    asking = asyncio.create_task(
        node.endpoint.request(
            our_request(node.endpoint, "OPTIONS", phone.port), Peer("udp", HOST, phone.port)
        )
    )
    await phone.request()

    await node.endpoint.close()

    with pytest.raises(TransportError):
        await asking
    phone.send(carrier_request("OPTIONS", via_port=phone.port), node.udp)
    await phone.hears_nothing_for(0.05)

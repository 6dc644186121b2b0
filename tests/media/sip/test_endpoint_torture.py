"""The RFC 4475 torture messages sent to a live endpoint over UDP and over TCP.

What each file should produce comes from the parser's own tables in test_message (which parse,
which are rejected and with what status). On a stream three rejects behave differently, as the
corpus README says: a negative or conflicting Content-Length leaves no way to find the next
message, so the connection is closed; a Content-Length beyond the data just waits for more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from media.sip.endpoint import SipEndpoint
from media.sip.message import SipParseError, SipRequest, SipResponse, parse_message
from media.sip.transaction import ServerKey, server_key
from tests.media.sip.test_endpoint import (
    HOST,
    Desk,
    MakePhone,
    UdpPhone,
    carrier_request,
    eventually,
    make_phone,
    read_message,
    tcp_client,
)
from tests.media.sip.test_message import PARSES, REJECTS

__all__ = ["make_phone"]  # a fixture used here by name

CORPUS = Path(__file__).resolve().parents[3] / ".." / "shared" / "testdata" / "rfc4475"
VALID_REQUESTS = sorted(name for name, row in PARSES.items() if isinstance(row[0], str))
VALID_RESPONSES = sorted(name for name, row in PARSES.items() if isinstance(row[0], int))
STREAM_CLOSES = {"ncl", "mcl01"}
# clerr's Content-Length runs past the data and baddn has no empty line after its headers: on a
# stream both are simply not complete yet.
STREAM_WAITS = {"clerr", "baddn"}
QUIET = 0.1


def corpus(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def rejection(name: str) -> tuple[int | None, str | None]:
    """The status the parser chose for this file and the Call-ID its error answer copies."""
    with pytest.raises(SipParseError) as caught:
        parse_message(corpus(name))
    return REJECTS[name], caught.value.call_id


class Node:
    def __init__(self, endpoint: SipEndpoint, desk: Desk, udp: int, tcp: int) -> None:
        self.endpoint, self.desk, self.udp, self.tcp = endpoint, desk, udp, tcp

    def call_ids(self) -> list[str]:
        return [tx.request.call_id for tx in self.desk.requests]


@pytest.fixture
async def node(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Node]:
    desk = Desk()
    endpoint = SipEndpoint(desk, public_host=HOST, t1=0.05)
    udp = await endpoint.listen("udp", HOST, 0)
    tcp = await endpoint.listen("tcp", HOST, 0)
    yield Node(endpoint, desk, udp, tcp)
    await endpoint.close()
    # Nothing in the corpus may make a protocol callback, a handler or a timer blow up.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_every_corpus_file_is_covered() -> None:
    on_disk = {p.stem for p in CORPUS.glob("*.dat")}
    assert len(on_disk) == 50
    assert on_disk == set(VALID_REQUESTS) | set(VALID_RESPONSES) | set(REJECTS)


# UDP


@pytest.mark.parametrize("name", VALID_REQUESTS)
async def test_a_valid_torture_request_over_udp_reaches_the_handler(
    node: Node, phone: UdpPhone, name: str
) -> None:
    method, call_id, sequence, _ = PARSES[name]

    phone.send(corpus(name), node.udp)
    await eventually(lambda: len(node.desk.requests) == 1)

    [tx] = node.desk.requests
    assert (tx.request.method, tx.request.call_id) == (method, call_id)
    assert tx.request.cseq.sequence == sequence
    assert tx.answered  # the handler's 200 went out (to wherever the Via points)
    assert node.endpoint.stats.send_errors == 0


@pytest.mark.parametrize("name", VALID_RESPONSES)
async def test_a_valid_torture_response_over_udp_is_handed_over_as_stray(
    node: Node, phone: UdpPhone, name: str
) -> None:
    phone.send(corpus(name), node.udp)
    await eventually(lambda: len(node.desk.strays) == 1)

    response, peer = node.desk.strays[0]
    assert response.call_id == PARSES[name][1]
    assert peer.port == phone.port
    await phone.hears_nothing_for(QUIET)


@pytest.mark.parametrize("name", sorted(REJECTS))
async def test_an_invalid_torture_message_over_udp_gets_its_error_or_nothing(
    node: Node, phone: UdpPhone, name: str
) -> None:
    status, call_id = rejection(name)

    phone.send(corpus(name), node.udp)

    if status is None:
        await phone.hears_nothing_for(QUIET)
    else:
        answer, _ = await phone.receive_raw()
        assert answer.startswith(f"SIP/2.0 {status} ".encode())
        assert f"\r\nCall-ID: {call_id}\r\n".encode() in answer
    assert node.desk.requests == []
    assert node.desk.strays == []
    assert node.endpoint.stats.parse_errors == 1


async def test_after_the_whole_corpus_over_udp_a_normal_options_is_answered(
    node: Node, phone: UdpPhone
) -> None:
    for path in sorted(CORPUS.glob("*.dat")):
        phone.send(path.read_bytes(), node.udp)
    await eventually(lambda: node.call_ids() == first_of_each_transaction())

    phone.send(carrier_request("OPTIONS", via_port=phone.port, call_id="after-udp"), node.udp)

    async def answered() -> SipResponse:
        while True:
            data, _ = await phone.receive_raw()
            with contextlib.suppress(SipParseError):
                message = parse_message(data)
                if isinstance(message, SipResponse) and message.call_id == "after-udp":
                    return message

    assert (await asyncio.wait_for(answered(), 2.0)).status == 200
    assert node.desk.requests[-1].request.call_id == "after-udp"


def first_of_each_transaction() -> list[str]:
    """Call-IDs of the valid requests, in sending order, less those that repeat a transaction.

    Some files reuse another's branch, sent-by and method (novelsc and unkscm, cparam01 and
    cparam02, escnull and regescrt); from one source over UDP the second is, by RFC 3261
    §17.2.3, a retransmission of the first and is absorbed.
    """
    seen: set[ServerKey] = set()
    call_ids: list[str] = []
    for name in sorted(VALID_REQUESTS):
        request = parse_message(corpus(name))
        assert isinstance(request, SipRequest)
        key = server_key(request)
        if key not in seen:
            seen.add(key)
            call_ids.append(request.call_id)
    return call_ids


# TCP, one connection per file


async def silent(reader: asyncio.StreamReader) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), QUIET)
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize("name", VALID_REQUESTS)
async def test_a_valid_torture_request_over_tcp_reaches_the_handler_and_is_answered(
    node: Node, name: str
) -> None:
    method, call_id, sequence, _ = PARSES[name]

    async with tcp_client(node.tcp) as (reader, writer):
        writer.write(corpus(name))
        answer = await read_message(reader)

    assert isinstance(answer, SipResponse)
    assert (answer.status, answer.call_id) == (200, call_id)
    tx = node.desk.requests[0]
    assert (tx.request.method, tx.request.call_id) == (method, call_id)
    assert tx.request.cseq.sequence == sequence
    assert tx.peer.transport == "tcp"


@pytest.mark.parametrize("name", VALID_RESPONSES)
async def test_a_valid_torture_response_over_tcp_is_handed_over_as_stray(
    node: Node, name: str
) -> None:
    async with tcp_client(node.tcp) as (reader, writer):
        writer.write(corpus(name))
        await eventually(lambda: len(node.desk.strays) == 1)
        assert await silent(reader)

    response, peer = node.desk.strays[0]
    assert response.call_id == PARSES[name][1]
    assert peer.transport == "tcp"


@pytest.mark.parametrize("name", sorted(REJECTS))
async def test_an_invalid_torture_message_over_tcp_gets_its_error_nothing_or_a_close(
    node: Node, name: str
) -> None:
    status, call_id = rejection(name)

    async with tcp_client(node.tcp) as (reader, writer):
        writer.write(corpus(name))
        if name in STREAM_CLOSES:
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
        elif name in STREAM_WAITS or status is None:
            assert await silent(reader)
        else:
            async with asyncio.timeout(2.0):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(f"SIP/2.0 {status} ".encode())
            assert f"\r\nCall-ID: {call_id}\r\n".encode() in head
            assert int(re.findall(rb"Content-Length: ([0-9]+)", head)[0]) == 0

    assert node.desk.requests == []
    assert node.desk.strays == []


async def test_after_the_whole_corpus_over_tcp_a_normal_options_is_answered(
    node: Node,
) -> None:
    writers: list[asyncio.StreamWriter] = []
    try:
        for path in sorted(CORPUS.glob("*.dat")):
            _, writer = await asyncio.open_connection(HOST, node.tcp)
            writer.write(path.read_bytes())
            writers.append(writer)
        # dblreq's trailing INVITE is a second message on a stream, so it is delivered too.
        expected = {PARSES[name][1] for name in VALID_REQUESTS}
        await eventually(lambda: expected <= set(node.call_ids()))

        async with tcp_client(node.tcp) as (reader, writer):
            writer.write(
                carrier_request("OPTIONS", via_port=5060, transport="TCP", call_id="after-tcp")
            )
            answer = await read_message(reader)
    finally:
        for writer in writers:
            writer.close()

    assert isinstance(answer, SipResponse)
    assert (answer.status, answer.call_id) == (200, "after-tcp")


@pytest.fixture
async def phone(make_phone: MakePhone) -> UdpPhone:
    return await make_phone()

"""Calls between two user agents on loopback, each on its own SipEndpoint over UDP, and against
a bare UDP socket where the far end must misbehave (never ACK, challenge, race a CANCEL)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from media import sdp
from media.sip.call import CallEnd, CallEnded, InboundCall, OutboundCall, UserAgent
from media.sip.digest import Algorithm, NonceIssuer, Verdict, parse_credentials
from media.sip.endpoint import SipEndpoint
from media.sip.message import SipRequest, SipResponse, build_response, parse_message
from media.sip.transport import Peer, TransportName

HOST = "127.0.0.1"
T1 = 0.05


def offer(
    version: int = 1, direction: sdp.Direction = sdp.Direction.SENDRECV
) -> sdp.SessionDescription:
    return sdp.make_offer(
        address=HOST, port=40000, session_id=7, version=version, direction=direction
    )


def answer_to(remote: sdp.SessionDescription, version: int = 1) -> sdp.SessionDescription:
    return sdp.answer(remote, address=HOST, port=42000, session_id=9, version=version).answer


def direction(description: sdp.SessionDescription) -> sdp.Direction:
    return description.direction_of(description.media[0])


@dataclass
class Agent:
    ua: UserAgent
    endpoint: SipEndpoint
    port: int
    invites: asyncio.Queue[InboundCall] = field(default_factory=asyncio.Queue)
    transport: TransportName = "udp"

    @property
    def peer(self) -> Peer:
        return Peer(self.transport, HOST, self.port)

    @property
    def uri(self) -> str:
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:agent@{HOST}:{self.port}{suffix}"

    async def call(self, callee: Agent, **kwargs: Any) -> OutboundCall:
        return await self.ua.originate(
            target=callee.uri,
            peer=callee.peer,
            from_uri=f"sip:caller@{HOST}",
            offer=kwargs.pop("offer", offer()),
            **kwargs,
        )

    async def next_call(self) -> InboundCall:
        return await asyncio.wait_for(self.invites.get(), 2)


OnInvite = Callable[[InboundCall], Awaitable[None]]
MakeAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def agent() -> AsyncIterator[MakeAgent]:
    made: list[Agent] = []

    async def make(
        on_invite: OnInvite | None = None,
        *,
        t1: float = T1,
        transport: TransportName = "udp",
        **ua_kwargs: Any,
    ) -> Agent:
        queue: asyncio.Queue[InboundCall] = asyncio.Queue()

        async def queue_it(call: InboundCall) -> None:
            await queue.put(call)

        ua = UserAgent(on_invite=on_invite or queue_it, **ua_kwargs)
        endpoint = SipEndpoint(ua, public_host=HOST, t1=t1, t2=8 * t1)
        ua.bind(endpoint)
        port = await endpoint.listen(transport, HOST, 0)
        made.append(Agent(ua, endpoint, port, queue, transport))
        return made[-1]

    yield make
    for each in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(each.ua.shutdown(), 5)
        await each.endpoint.close()


async def answered_call(
    caller: Agent, callee: Agent, **kwargs: Any
) -> tuple[OutboundCall, InboundCall]:
    outbound = await caller.call(callee, **kwargs)
    inbound = await callee.next_call()
    assert inbound.offer is not None
    await inbound.answer(answer_to(inbound.offer))
    await asyncio.wait_for(outbound.answered, 2)
    return outbound, inbound


async def ended(call: InboundCall | OutboundCall, timeout: float = 3) -> CallEnd:
    return await asyncio.wait_for(asyncio.shield(call.ended), timeout)


# A bare UDP socket playing the far end


class Raw(asyncio.DatagramProtocol):
    """A far end written by hand; it answers BYE with 200 so that hang-ups finish."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.log: list[SipRequest | SipResponse] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transports do not subclass DatagramTransport, so no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        message = parse_message(data)
        if not isinstance(message, SipRequest | SipResponse):
            return
        self.log.append(message)
        if isinstance(message, SipRequest) and message.method == "BYE":
            self.send(build_response(message, 200, "OK"), addr[1])
        self.received.put_nowait(message)

    def send(self, message: SipRequest | SipResponse, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(message), (HOST, port))

    async def expect(
        self, predicate: Callable[[SipRequest | SipResponse], bool], timeout: float = 3
    ) -> SipRequest | SipResponse:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.received.get()
                if predicate(message):
                    return message

    async def response(self, status: int, method: str = "INVITE") -> SipResponse:
        message = await self.expect(
            lambda m: isinstance(m, SipResponse) and m.status == status and m.cseq.method == method
        )
        assert isinstance(message, SipResponse)
        return message

    async def request(self, method: str, timeout: float = 3) -> SipRequest:
        message = await self.expect(
            lambda m: isinstance(m, SipRequest) and m.method == method, timeout
        )
        assert isinstance(message, SipRequest)
        return message

    def count(self, predicate: Callable[[SipRequest | SipResponse], bool]) -> int:
        return sum(1 for m in self.log if predicate(m))


@pytest.fixture
async def raw() -> AsyncIterator[Raw]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Raw, local_addr=(HOST, 0))
    yield protocol
    transport.close()


def raw_invite(
    raw: Raw, callee: Agent, *, branch: str = "z9hG4bKraw1", extra: tuple[tuple[str, str], ...] = ()
) -> SipRequest:
    return SipRequest.create(
        "INVITE",
        callee.uri,
        [
            ("Via", f"SIP/2.0/UDP {HOST}:{raw.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:raw@{HOST}>;tag=rawtag"),
            ("To", f"<{callee.uri}>"),
            ("Call-ID", f"raw-{branch}@{HOST}"),
            ("CSeq", "10 INVITE"),
            ("Contact", f"<sip:raw@{HOST}:{raw.port}>"),
            *extra,
            ("Content-Type", "application/sdp"),
        ],
        bytes(offer()),
    )


def raw_in_dialog(
    raw: Raw, invite: SipRequest, final: SipResponse, method: str, cseq: int, branch: str
) -> SipRequest:
    to = final.header("To")
    assert to is not None
    return SipRequest.create(
        method,
        str(final.contacts[0].uri),
        [
            ("Via", f"SIP/2.0/UDP {HOST}:{raw.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", to),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{cseq} {method}"),
        ],
    )


def raw_ack(raw: Raw, invite: SipRequest, final: SipResponse) -> SipRequest:
    ack = raw_in_dialog(raw, invite, final, "ACK", invite.cseq.sequence, "z9hG4bKrawack")
    return ack


# Answering, ringing, hanging up


async def test_call_rings_is_answered_and_acknowledged_and_the_caller_hangs_up(
    agent: MakeAgent,
) -> None:
    alice, bob = await agent(), await agent()
    outbound = await alice.call(bob)
    inbound = await bob.next_call()
    inbound.ringing()
    await asyncio.wait_for(outbound.ringing.wait(), 2)
    assert not outbound.answered.done()

    assert inbound.offer is not None
    await inbound.answer(answer_to(inbound.offer))  # returns once the ACK is in
    remote = await asyncio.wait_for(outbound.answered, 2)
    assert remote.media[0].port == 42000
    assert inbound.call_id == outbound.call_id
    assert {c.call_id for c in bob.ua.calls()} == {inbound.call_id}

    await outbound.hangup()

    assert (await ended(inbound)).cause == "remote_bye"
    assert (await ended(outbound)).cause == "local_hangup"
    assert bob.ua.calls() == []
    assert alice.ua.calls() == []


async def test_callee_hangs_up_and_the_caller_sees_remote_bye(agent: MakeAgent) -> None:
    alice, bob = await agent(), await agent()
    outbound, inbound = await answered_call(alice, bob)

    await inbound.hangup("flow_finished")

    assert (await ended(outbound)).cause == "remote_bye"
    end = await ended(inbound)
    assert (end.cause, end.reason) == ("local_hangup", "flow_finished")
    with pytest.raises(CallEnded):
        await inbound.hangup()


async def test_rejected_call_ends_both_sides_with_the_status(agent: MakeAgent) -> None:
    alice, bob = await agent(), await agent()
    outbound = await alice.call(bob)
    inbound = await bob.next_call()

    inbound.reject(486)

    with pytest.raises(CallEnded) as raised:
        await asyncio.wait_for(outbound.answered, 2)
    assert (raised.value.end.cause, raised.value.end.sip_status) == ("rejected", 486)
    assert (await ended(inbound)).sip_status == 486


async def test_2xx_is_retransmitted_until_the_ack_never_comes_then_bye_ends_the_call(
    agent: MakeAgent, raw: Raw
) -> None:
    bob = await agent(t1=0.02)
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None

    with pytest.raises(CallEnded) as raised:
        await inbound.answer(answer_to(inbound.offer))

    assert raised.value.end.cause == "ack_timeout"
    bye = await raw.request("BYE")
    assert bye.call_id == invite.call_id
    assert bye.header("To") == invite.header("From")
    oks = raw.count(lambda m: isinstance(m, SipResponse) and m.status == 200)
    assert oks >= 5  # the first 200 and its retransmissions, T1 doubling to T2


async def test_ack_stops_the_2xx_retransmissions(agent: MakeAgent, raw: Raw) -> None:
    bob = await agent(t1=0.02)
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None
    answering = asyncio.ensure_future(inbound.answer(answer_to(inbound.offer)))
    ok = await raw.response(200)

    raw.send(raw_ack(raw, invite, ok), bob.port)
    await asyncio.wait_for(answering, 2)
    seen = raw.count(lambda m: isinstance(m, SipResponse) and m.status == 200)
    await asyncio.sleep(0.5)

    assert raw.count(lambda m: isinstance(m, SipResponse) and m.status == 200) <= seen + 1
    assert not inbound.ended.done()
    await inbound.hangup()


async def test_retransmitted_invite_while_ringing_offers_one_call(
    agent: MakeAgent, raw: Raw
) -> None:
    calls: list[InboundCall] = []

    async def ring(call: InboundCall) -> None:
        calls.append(call)
        call.ringing()

    bob = await agent(ring)
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    await raw.response(180)
    raw.send(invite, bob.port)
    await raw.response(180)  # the transaction repeats its last response
    await asyncio.sleep(0.1)

    assert len(calls) == 1
    calls[0].reject(480)


async def test_request_below_the_dialog_cseq_is_refused_with_500(
    agent: MakeAgent, raw: Raw
) -> None:
    bob = await agent()
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None
    answering = asyncio.ensure_future(inbound.answer(answer_to(inbound.offer)))
    ok = await raw.response(200)
    raw.send(raw_ack(raw, invite, ok), bob.port)
    await answering

    raw.send(raw_in_dialog(raw, invite, ok, "BYE", 5, "z9hG4bKlow"), bob.port)

    assert (await raw.response(500, "BYE")).status == 500
    assert not inbound.ended.done()
    raw.send(raw_in_dialog(raw, invite, ok, "BYE", 11, "z9hG4bKbye"), bob.port)
    await raw.response(200, "BYE")
    assert (await ended(inbound)).cause == "remote_bye"


async def test_call_over_tcp_is_answered_and_hung_up_over_tcp(agent: MakeAgent) -> None:
    alice, bob = await agent(transport="tcp"), await agent(transport="tcp")
    outbound, inbound = await answered_call(alice, bob)

    assert inbound.peer.transport == "tcp"
    assert "transport=tcp" in (inbound.request.header("Contact") or "")
    await inbound.hangup()

    assert (await ended(outbound)).cause == "remote_bye"


async def test_invite_without_sdp_gets_our_offer_and_the_ack_carries_the_answer(
    agent: MakeAgent, raw: Raw
) -> None:
    bob = await agent()
    with_sdp = raw_invite(raw, bob)
    invite = SipRequest.create(
        "INVITE",
        str(with_sdp.uri),
        [h for h in with_sdp.headers if h[0] not in ("Content-Type", "Content-Length")],
    )
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is None
    ours = offer()
    answering = asyncio.ensure_future(inbound.answer(ours))
    ok = await raw.response(200)
    assert sdp.SessionDescription.parse(ok.body) == ours

    ack = raw_ack(raw, invite, ok)
    ack = SipRequest.create(
        "ACK",
        str(ack.uri),
        [
            *(h for h in ack.headers if h[0] != "Content-Length"),
            ("Content-Type", "application/sdp"),
        ],
        bytes(answer_to(ours)),
    )
    raw.send(ack, bob.port)
    await asyncio.wait_for(answering, 2)

    assert inbound.remote_sdp == answer_to(ours)
    await inbound.hangup()


# CANCEL


async def test_cancel_before_answer_gets_487_and_the_call_can_no_longer_be_answered(
    agent: MakeAgent,
) -> None:
    alice, bob = await agent(), await agent()
    outbound = await alice.call(bob)
    inbound = await bob.next_call()
    inbound.ringing()
    await asyncio.wait_for(outbound.ringing.wait(), 2)

    await asyncio.wait_for(outbound.cancel(), 3)

    end = await ended(inbound)
    assert (end.cause, end.sip_status) == ("cancelled", 487)
    assert inbound.offer is not None
    with pytest.raises(CallEnded):
        await inbound.answer(answer_to(inbound.offer))
    caller_end = await ended(outbound)
    assert (caller_end.cause, caller_end.sip_status) == ("cancelled", 487)
    with pytest.raises(CallEnded):
        await outbound.answered


async def test_cancel_arriving_after_the_200_leaves_the_call_up(agent: MakeAgent, raw: Raw) -> None:
    bob = await agent()
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None
    answering = asyncio.ensure_future(inbound.answer(answer_to(inbound.offer)))
    ok = await raw.response(200)

    cancel = SipRequest.create(
        "CANCEL",
        str(invite.uri),
        [
            ("Via", invite.header_values("Via")[0]),
            ("Max-Forwards", "70"),
            ("From", invite.header("From") or ""),
            ("To", invite.header("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.sequence} CANCEL"),
        ],
    )
    raw.send(cancel, bob.port)
    assert (await raw.response(200, "CANCEL")).status == 200
    raw.send(raw_ack(raw, invite, ok), bob.port)
    await asyncio.wait_for(answering, 2)
    await asyncio.sleep(0.1)

    assert not inbound.ended.done()
    assert raw.count(lambda m: isinstance(m, SipResponse) and m.status == 487) == 0
    await inbound.hangup()
    assert (await raw.request("BYE")).call_id == invite.call_id


# Re-INVITE: hold and resume


async def test_hold_and_resume_by_reinvite_are_answered_through_on_reoffer(
    agent: MakeAgent,
) -> None:
    alice, bob = await agent(), await agent()
    outbound, inbound = await answered_call(alice, bob)
    offers: list[sdp.SessionDescription] = []

    def reoffer(new: sdp.SessionDescription) -> sdp.SessionDescription:
        offers.append(new)
        return answer_to(new, version=1 + len(offers))

    inbound.on_reoffer = reoffer

    held = await outbound.reoffer(offer(version=2, direction=sdp.Direction.SENDONLY))
    assert direction(held) is sdp.Direction.RECVONLY
    assert sdp.is_hold(offers[-1])

    resumed = await outbound.reoffer(offer(version=3))
    assert direction(resumed) is sdp.Direction.SENDRECV
    assert not sdp.is_hold(offers[-1])
    assert inbound.remote_sdp == offers[-1]
    assert not inbound.ended.done()
    assert not outbound.ended.done()


async def test_reinvite_without_a_handler_is_refused_and_the_call_goes_on(
    agent: MakeAgent,
) -> None:
    from media.sip.call import ReofferFailed

    alice, bob = await agent(), await agent()
    outbound, inbound = await answered_call(alice, bob)

    with pytest.raises(ReofferFailed) as raised:
        await outbound.reoffer(offer(version=2, direction=sdp.Direction.SENDONLY))

    assert raised.value.status == 488
    assert not inbound.ended.done()
    await outbound.hangup()
    assert (await ended(inbound)).cause == "remote_bye"


async def test_reinvite_crossing_our_own_is_refused_with_491_and_ours_completes(
    agent: MakeAgent, raw: Raw
) -> None:
    bob = await agent()
    invite = raw_invite(raw, bob)
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None
    answering = asyncio.ensure_future(inbound.answer(answer_to(inbound.offer)))
    ok = await raw.response(200)
    raw.send(raw_ack(raw, invite, ok), bob.port)
    await answering
    reoffering = asyncio.ensure_future(
        inbound.reoffer(offer(version=2, direction=sdp.Direction.SENDONLY))
    )
    ours = await raw.expect(lambda m: isinstance(m, SipRequest) and m.method == "INVITE")
    assert isinstance(ours, SipRequest)

    crossing = raw_in_dialog(raw, invite, ok, "INVITE", 11, "z9hG4bKglare")
    crossing = SipRequest.create(
        "INVITE",
        str(crossing.uri),
        [
            *(h for h in crossing.headers if h[0] != "Content-Length"),
            ("Contact", f"<sip:raw@{HOST}:{raw.port}>"),
        ],
    )
    raw.send(crossing, bob.port)
    assert (await raw.response(491)).cseq.sequence == 11

    held = build_response(
        ours,
        200,
        "OK",
        headers=[("Contact", f"<sip:raw@{HOST}:{raw.port}>"), ("Content-Type", "application/sdp")],
    )
    remote_offer = sdp.SessionDescription.parse(ours.body)
    raw.send(
        SipResponse.create(200, "OK", held.headers, bytes(answer_to(remote_offer, 2))), bob.port
    )
    answered = await asyncio.wait_for(reoffering, 2)
    ack = await raw.request("ACK")

    assert direction(answered) is sdp.Direction.RECVONLY
    assert ack.cseq.sequence == ours.cseq.sequence
    assert ours.cseq.sequence != invite.cseq.sequence
    assert not inbound.ended.done()
    await inbound.hangup()


# Requests outside any call


def out_of_dialog(method: str, target: Agent, via: str, *, to_tag: str | None = None) -> SipRequest:
    to = f"<{target.uri}>" + (f";tag={to_tag}" if to_tag else "")
    return SipRequest.create(
        method,
        target.uri,
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<sip:probe@{HOST}>;tag=probe1"),
            ("To", to),
            ("Call-ID", f"probe-{method}-{time.monotonic_ns()}"),
            ("CSeq", f"1 {method}"),
        ],
    )


async def test_options_outside_a_call_is_answered_with_what_we_allow(agent: MakeAgent) -> None:
    alice, bob = await agent(), await agent()

    response = await alice.endpoint.request(
        out_of_dialog("OPTIONS", bob, alice.endpoint.via("udp")), bob.peer
    )

    assert response.status == 200
    allow = response.header("Allow") or ""
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE"} <= {
        m.strip() for m in allow.split(",")
    }
    assert response.header("Accept") == "application/sdp"


async def test_bye_for_an_unknown_call_gets_481_and_register_gets_405(agent: MakeAgent) -> None:
    alice, bob = await agent(), await agent()

    bye = out_of_dialog("BYE", bob, alice.endpoint.via("udp"), to_tag="nosuchcall")
    register = out_of_dialog("REGISTER", bob, alice.endpoint.via("udp"))

    assert (await alice.endpoint.request(bye, bob.peer)).status == 481
    refused = await alice.endpoint.request(register, bob.peer)
    assert refused.status == 405
    assert "INVITE" in (refused.header("Allow") or "")


# Digest challenges on calls we place


async def test_proxy_challenge_is_answered_once_and_the_answer_is_acked_even_when_repeated(
    agent: MakeAgent, raw: Raw
) -> None:
    alice = await agent()
    issuer = NonceIssuer(b"a trunk secret of 32 bytes......", clock=time.time)
    realm = "carrier.example.net"
    outbound = await alice.ua.originate(
        target=f"sip:+15551230000@{HOST}:{raw.port}",
        peer=Peer("udp", HOST, raw.port),
        from_uri=f"sip:+15559870000@{HOST}",
        offer=offer(),
        username="acme",
        password="trunk-pass",
    )

    first = await raw.request("INVITE")
    challenge = build_response(
        first,
        407,
        "Proxy Authentication Required",
        to_tag="uas1",
        headers=[
            ("Proxy-Authenticate", v) for v in issuer.challenge(realm, algorithm=Algorithm.MD5)
        ],
    )
    raw.send(challenge, alice.port)
    raw.send(challenge, alice.port)  # retransmitted: the transaction absorbs it
    second = await raw.request("INVITE")

    assert second.cseq.sequence == first.cseq.sequence + 1
    assert second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag
    assert second.via.branch != first.via.branch
    credentials = parse_credentials(second.header("Proxy-Authorization") or "")
    verdict = issuer.verify(
        credentials,
        method="INVITE",
        realm=realm,
        password_lookup=lambda user: "trunk-pass" if user == "acme" else None,
    )
    assert verdict is Verdict.OK

    ok = build_response(
        second,
        200,
        "OK",
        to_tag="uas2",
        headers=[("Contact", f"<sip:uas@{HOST}:{raw.port}>"), ("Content-Type", "application/sdp")],
    )
    ok = SipResponse.create(200, "OK", ok.headers, bytes(answer_to(offer())))
    raw.send(ok, alice.port)
    ack = await raw.expect(
        lambda m: isinstance(m, SipRequest) and m.method == "ACK" and m.to.tag == "uas2"
    )
    assert ack.cseq.sequence == second.cseq.sequence
    await asyncio.wait_for(outbound.answered, 2)

    raw.send(ok, alice.port)  # the 2xx again, as if our ACK were lost
    await raw.expect(
        lambda m: isinstance(m, SipRequest) and m.method == "ACK" and m.to.tag == "uas2"
    )
    await asyncio.sleep(0.2)

    invites = [m for m in raw.log if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert len(invites) == 2
    assert sum(1 for m in invites if m.header("Proxy-Authorization")) == 1
    acks_for_2xx = raw.count(
        lambda m: isinstance(m, SipRequest) and m.method == "ACK" and m.to.tag == "uas2"
    )
    assert acks_for_2xx == 2

    await outbound.hangup()
    bye = await raw.request("BYE")
    assert bye.header("Proxy-Authorization") is not None  # trunks challenge BYE too


async def test_2xx_from_a_second_fork_is_acked_and_hung_up_while_the_first_goes_on(
    agent: MakeAgent, raw: Raw
) -> None:
    alice = await agent()
    outbound = await alice.ua.originate(
        target=f"sip:+15551230000@{HOST}:{raw.port}",
        peer=Peer("udp", HOST, raw.port),
        from_uri=f"sip:+15559870000@{HOST}",
        offer=offer(),
    )
    invite = await raw.request("INVITE")

    def ok(tag: str) -> SipResponse:
        built = build_response(
            invite,
            200,
            "OK",
            to_tag=tag,
            headers=[
                ("Contact", f"<sip:{tag}@{HOST}:{raw.port}>"),
                ("Content-Type", "application/sdp"),
            ],
        )
        return SipResponse.create(200, "OK", built.headers, bytes(answer_to(offer())))

    raw.send(ok("first"), alice.port)
    await asyncio.wait_for(outbound.answered, 2)
    raw.send(ok("second"), alice.port)
    bye = await raw.request("BYE")

    assert bye.to.tag == "second"
    assert str(bye.uri) == f"sip:second@{HOST}:{raw.port}"
    assert (
        raw.count(
            lambda m: isinstance(m, SipRequest) and m.method == "ACK" and m.to.tag == "second"
        )
        == 1
    )
    assert not outbound.ended.done()
    assert outbound.dialog is not None
    assert outbound.dialog.remote_tag == "first"
    await outbound.hangup()


async def test_second_challenge_for_the_same_realm_gives_up_with_the_status(
    agent: MakeAgent, raw: Raw
) -> None:
    alice = await agent()
    issuer = NonceIssuer(b"a trunk secret of 32 bytes......", clock=time.time)
    outbound = await alice.ua.originate(
        target=f"sip:+15551230000@{HOST}:{raw.port}",
        peer=Peer("udp", HOST, raw.port),
        from_uri=f"sip:+15559870000@{HOST}",
        offer=offer(),
        username="acme",
        password="wrong",
    )
    for tag in ("u1", "u2"):
        invite = await raw.request("INVITE")
        challenge = build_response(
            invite,
            401,
            "Unauthorized",
            to_tag=tag,
            headers=[("WWW-Authenticate", v) for v in issuer.challenge("r")],
        )
        raw.send(challenge, alice.port)

    end = await ended(outbound)

    assert (end.cause, end.sip_status) == ("rejected", 401)
    assert raw.count(lambda m: isinstance(m, SipRequest) and m.method == "INVITE") == 2


# Session timers (RFC 4028)


async def test_call_is_hung_up_when_the_caller_never_refreshes_the_session(
    agent: MakeAgent, raw: Raw
) -> None:
    bob = await agent(min_se=1)
    invite = raw_invite(
        raw, bob, extra=(("Session-Expires", "1;refresher=uac"), ("Supported", "timer"))
    )
    raw.send(invite, bob.port)
    inbound = await bob.next_call()
    assert inbound.offer is not None
    answering = asyncio.ensure_future(inbound.answer(answer_to(inbound.offer)))
    ok = await raw.response(200)
    assert ok.header("Session-Expires") == "1;refresher=uac"
    assert ok.header("Require") == "timer"
    raw.send(raw_ack(raw, invite, ok), bob.port)
    await answering

    bye = await raw.request("BYE", timeout=3)

    assert bye.call_id == invite.call_id
    assert (await ended(inbound)).cause == "session_expired"


async def test_session_refreshed_by_the_caller_outlives_its_interval(agent: MakeAgent) -> None:
    alice = await agent(min_se=1, session_expires=1)
    bob = await agent(min_se=1)
    outbound, inbound = await answered_call(alice, bob)

    await asyncio.sleep(1.6)  # past the interval: only refreshes keep the call up

    assert not inbound.ended.done()
    assert not outbound.ended.done()


async def test_too_short_session_interval_is_raised_to_the_callee_minimum(
    agent: MakeAgent,
) -> None:
    alice = await agent(min_se=1, session_expires=1)
    bob = await agent(min_se=2)

    outbound = await alice.call(bob)
    inbound = await bob.next_call()

    # Alice asked for 1 s, got 422 with Min-SE: 2, and asked again for 2 s.
    assert inbound.request.header("Session-Expires") == "2"
    inbound.reject(603)
    await ended(outbound)


# Shutdown


async def test_shutdown_hangs_up_answered_calls_and_refuses_ringing_ones(
    agent: MakeAgent,
) -> None:
    alice, bob = await agent(), await agent()
    answered_out, answered_in = await answered_call(alice, bob)
    ringing_out = await alice.call(bob)
    ringing_in = await bob.next_call()
    ringing_in.ringing()
    await asyncio.wait_for(ringing_out.ringing.wait(), 2)

    await asyncio.wait_for(bob.ua.shutdown("maintenance"), 5)

    assert (await ended(answered_out)).cause == "remote_bye"
    refused = await ended(ringing_out)
    assert (refused.cause, refused.sip_status) == ("rejected", 480)
    for call in (answered_in, ringing_in):
        end = await ended(call)
        assert (end.cause, end.reason) == ("shutdown", "maintenance")
    assert bob.ua.calls() == []

    late = await alice.call(bob)
    assert (await ended(late)).sip_status == 503

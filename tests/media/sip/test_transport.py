"""Stream framing, per-source rate limiting and scanner detection, on bytes and a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.sip.message import Keepalive, SipRequest, build_response, parse_message
from media.sip.transport import (
    PING,
    FramingError,
    Peer,
    ScannerFilter,
    SourceLimits,
    SourceRateLimiter,
    StreamFramer,
    response_address,
    stamp_received,
)


def message(call_id: str, body: bytes = b"", *, length_header: str = "Content-Length") -> bytes:
    head = (
        "MESSAGE sip:queue@198.51.100.5 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 203.0.113.10:5060;branch=z9hG4bK-" + call_id + "\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:caller@203.0.113.10>;tag=1\r\n"
        "To: <sip:queue@198.51.100.5>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: text/plain\r\n"
        f"{length_header}: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def test_two_messages_in_one_segment_come_out_as_two() -> None:
    first, second = message("a", b"hello"), message("b", b"\r\n\r\nbinary\x00body")
    framer = StreamFramer()

    assert framer.feed(first + second) == [first, second]
    assert framer.pending == 0


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_a_message_cut_anywhere_is_reassembled_whole(cuts: list[int]) -> None:
    whole = message("split", b"v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\n\r\nafter a blank line")
    framer = StreamFramer()
    out: list[object] = []
    position = 0
    for size in cuts:
        out += framer.feed(whole[position : position + size])
        position += size
    out += framer.feed(whole[position:])

    assert out == [whole]


def test_the_body_is_exactly_content_length_octets_even_when_it_looks_like_headers() -> None:
    body = b"CSeq: 2 MESSAGE\r\n\r\n"
    framer = StreamFramer()
    framed, following = framer.feed(message("body", body) + message("next"))
    assert isinstance(framed, bytes)
    parsed = parse_message(framed)

    assert isinstance(parsed, SipRequest)
    assert parsed.body == body
    assert following == message("next")
    assert framer.pending == 0


def test_a_missing_content_length_on_a_stream_means_no_body() -> None:
    without = message("nolength").replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()

    assert framer.feed(without + message("next")) == [without, message("next")]


def test_the_compact_content_length_header_frames_the_body() -> None:
    compact = message("compact", b"12345", length_header="l")
    framer = StreamFramer()

    assert framer.feed(compact + b"OPTIONS") == [compact]
    assert framer.pending == len(b"OPTIONS")


def test_a_ping_is_reported_and_a_lone_crlf_pong_is_skipped() -> None:
    framer = StreamFramer()

    assert framer.feed(b"\r\n\r\n") == [PING]
    assert framer.feed(b"\r\n") == []  # might still become a ping
    assert framer.feed(message("after-pong")) == [message("after-pong")]
    assert framer.feed(b"\r\n\r\n" + message("after-ping")) == [PING, message("after-ping")]


@pytest.mark.parametrize(
    "data",
    [
        message("negative").replace(b"Content-Length: 0", b"Content-Length: -999"),
        message("word").replace(b"Content-Length: 0", b"Content-Length: ten"),
        message("twice").replace(b"Content-Length: 0", b"Content-Length: 13\r\nl: 5"),
        message("huge").replace(b"Content-Length: 0", b"Content-Length: 70000"),
        b"X" * (64 * 1024 + 1),
    ],
    ids=["negative", "not-a-number", "conflicting", "too-large", "no-end-of-headers"],
)
def test_a_stream_that_cannot_be_framed_is_refused(data: bytes) -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(data)


def test_repeating_the_same_content_length_is_not_a_conflict() -> None:
    doubled = message("same", b"abc").replace(
        b"Content-Length: 3\r\n", b"Content-Length: 3\r\nContent-Length: 3\r\n"
    )

    assert StreamFramer().feed(doubled) == [doubled]


def test_a_source_gets_its_burst_then_its_rate() -> None:
    limiter = SourceRateLimiter(rate=10.0, burst=3)

    assert [limiter.allow("203.0.113.7", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("203.0.113.7", 0.05) is False  # half a token
    assert limiter.allow("203.0.113.7", 0.1) is True
    assert limiter.allow("203.0.113.7", 0.1) is False
    assert [limiter.allow("203.0.113.7", 10.0) for _ in range(4)] == [True, True, True, False]


def test_sources_are_limited_independently_and_exempt_hosts_never() -> None:
    limiter = SourceRateLimiter(rate=1.0, burst=1, exempt_hosts=frozenset({"198.51.100.1"}))

    assert limiter.allow("203.0.113.7", 0.0) is True
    assert limiter.allow("203.0.113.7", 0.0) is False
    assert limiter.allow("203.0.113.8", 0.0) is True
    assert all(limiter.allow("198.51.100.1", 0.0) for _ in range(100))


def test_an_unlimited_rate_allows_everything() -> None:
    limiter = SourceRateLimiter(rate=float("inf"), burst=1)

    assert all(limiter.allow("203.0.113.7", 0.0) for _ in range(1000))


def test_a_flood_from_many_sources_keeps_only_busy_buckets() -> None:
    limiter = SourceRateLimiter(rate=100.0, burst=2)
    for n in range(SourceRateLimiter.PRUNE_SIZE - 1):
        limiter.allow(f"10.0.{n // 256}.{n % 256}", 0.0)
    limiter.allow("203.0.113.7", 0.999)
    limiter.allow("203.0.113.7", 0.999)

    # By now every bucket but the last one has refilled, so the next new source prunes them.
    limiter.allow("203.0.113.8", 1.0)

    assert limiter.sources == 2
    assert limiter.allow("203.0.113.7", 1.0) is False  # still empty, not forgotten


def test_scanner_user_agents_are_recognised_in_any_case() -> None:
    scanner = ScannerFilter(SourceLimits().drop_user_agents)
    options = message("scan").replace(b"Content-Type", b"User-Agent: friendly-scanner\r\nX")

    assert scanner(options)
    assert scanner(options.replace(b"User-Agent: friendly-scanner", b"user-agent:IWAR 1.0"))
    assert scanner(options.replace(b"friendly-scanner", b"Mozilla (sipvicious 0.3)"))
    assert not scanner(options.replace(b"friendly-scanner", b"Switchboard 1.0"))


def test_a_scanner_name_outside_the_user_agent_header_is_not_a_scanner() -> None:
    scanner = ScannerFilter(SourceLimits().drop_user_agents)
    named = message("scan", b"friendly-scanner").replace(
        b"To: <sip:queue", b"To: <sip:friendly-scanner"
    )

    assert not scanner(named)
    assert not ScannerFilter(())(named)


def test_a_scanner_user_agent_is_caught_on_the_first_line_and_not_in_the_middle_of_one() -> None:
    scanner = ScannerFilter(SourceLimits().drop_user_agents)

    assert scanner(b"User-Agent: sipcli/v1.8\r\n\r\n")
    assert scanner(b"OPTIONS sip:a@b SIP/2.0\nUSER-AGENT\t: sipsak 0.9\n\n")
    assert not scanner(b"OPTIONS sip:a@b SIP/2.0\r\nX-User-Agent: sipsak\r\n\r\n")
    assert not scanner(b"OPTIONS sip:a@b SIP/2.0\r\nUser-Agent: ok\r\nSubject: sipsak\r\n\r\n")


def carrier_options(top_via: str) -> SipRequest:
    parsed = parse_message(
        message("via").replace(
            b"Via: SIP/2.0/TCP 203.0.113.10:5060;branch=z9hG4bK-via",
            f"Via: {top_via}\r\nVia: SIP/2.0/UDP edge.example.com;branch=z9hG4bKedge".encode(),
        )
    )
    assert isinstance(parsed, SipRequest)
    return parsed


def test_a_via_that_names_its_source_and_asks_no_rport_is_left_alone() -> None:
    request = carrier_options("SIP/2.0/UDP 203.0.113.10:5070;branch=z9hG4bKa")

    assert stamp_received(request, Peer("udp", "203.0.113.10", 40000)) is request
    assert response_address(request, Peer("udp", "203.0.113.10", 40000)) == (
        "203.0.113.10",
        5070,
    )


def test_rport_gets_the_source_port_and_the_answer_goes_back_to_it() -> None:
    request = carrier_options("SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKb;rport")
    source = Peer("udp", "198.51.100.20", 40000)

    stamped = stamp_received(request, source)

    assert stamped.via.received == "198.51.100.20"
    assert stamped.via.rport == 40000
    assert stamped.header_values("Via")[0] == (
        "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKb;received=198.51.100.20;rport=40000"
    )
    assert stamped.vias[1] == request.vias[1]
    assert (stamped.call_id, stamped.from_, stamped.body) == (
        request.call_id,
        request.from_,
        request.body,
    )
    answer = build_response(stamped, 200, "OK")
    assert response_address(answer, source) == ("198.51.100.20", 40000)
    # A new connection for a stream goes to the sent-by port, not the source port.
    assert response_address(answer, Peer("tcp", "198.51.100.20", 40000), stream=True) == (
        "198.51.100.20",
        5060,
    )


def test_a_hostname_sent_by_gets_received_and_keeps_its_port() -> None:
    request = carrier_options("SIP/2.0/UDP sbc.example.com;branch=z9hG4bKc")
    source = Peer("udp", "198.51.100.20", 40000)

    stamped = stamp_received(request, source)

    assert stamped.via.received == "198.51.100.20"
    assert stamped.via.rport is None
    assert response_address(stamped, source) == ("198.51.100.20", 5060)
    assert response_address(stamped, Peer("tls", "198.51.100.20", 40000), stream=True) == (
        "198.51.100.20",
        5061,
    )


def test_an_ipv6_source_is_stamped_in_brackets_so_the_via_still_parses() -> None:
    request = carrier_options("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bKd;rport")
    source = Peer("udp", "2001:db8::9", 40000)

    stamped = stamp_received(request, source)
    reparsed = parse_message(bytes(build_response(stamped, 200, "OK")))

    assert not isinstance(reparsed, Keepalive)
    assert reparsed.via.received == "[2001:db8::9]"
    assert response_address(reparsed, source) == ("2001:db8::9", 40000)

"""parse_message against the RFC 4475 torture corpus, golden messages and arbitrary bytes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipmessage import URI, Parameters
from sipmessage import grammar as g
from sipmessage.via import VIA_PATTERN

from media.sip.message import (
    Keepalive,
    SipParseError,
    SipRequest,
    SipResponse,
    Uri,
    build_response,
    parse_message,
)

CORPUS = (Path(__file__).parents[3] / ".." / "shared" / "testdata" / "rfc4475").resolve()


# Valid per RFC 4475 §3.1.1, §3.2 and §3.3 (application-level cases parse; the layer above
# answers 416/420/415/...). Value: (method or status, Call-ID, CSeq number, CSeq method).
# Choices beyond the RFC: badbranch (§3.2.1) parses and the transaction layer treats the bare
# "z9hG4bK" as a non-3261 branch; baddate (§3.1.2.12) parses because we never interpret Date;
# inv2543 (§3.4.1) parses for backward compatibility.
PARSES: dict[str, tuple[str | int, str, int, str]] = {
    "wsinv": ("INVITE", "wsinv.ndaksdj@192.0.2.1", 9, "INVITE"),
    "intmeth": (
        "!interesting-Method0123456789_*+`.%indeed'~",
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        139122385,
        "!interesting-Method0123456789_*+`.%indeed'~",
    ),
    "esc01": ("INVITE", "esc01.239409asdfakjkn23onasd0-3234", 234234, "INVITE"),
    "escnull": ("REGISTER", "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd", 14398234, "REGISTER"),
    "esc02": ("RE%47IST%45R", "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf", 29344, "RE%47IST%45R"),
    "lwsdisp": ("OPTIONS", "lwsdisp.1234abcd@funky.example.com", 60, "OPTIONS"),
    "longreq": (
        "INVITE",
        "longreq.one" + "really" * 20 + "longcallid",
        3882340,
        "INVITE",
    ),
    "dblreq": ("REGISTER", "dblreq.0ha0isndaksdj99sdfafnl3lk233412", 8, "REGISTER"),
    "semiuri": ("OPTIONS", "semiuri.0ha0isndaksdj", 8, "OPTIONS"),
    "transports": ("OPTIONS", "transports.kijh4akdnaqjkwendsasfdj", 60, "OPTIONS"),
    "mpart01": ("MESSAGE", "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..", 1, "MESSAGE"),
    "unreason": (200, "unreason.1234ksdfak3j2erwedfsASdf", 35, "INVITE"),
    "noreason": (100, "noreason.asndj203insdf99223ndf", 35, "INVITE"),
    "badbranch": ("OPTIONS", "badbranch.sadonfo23i420jv0as0derf3j3n", 8, "OPTIONS"),
    "baddate": ("INVITE", "baddate.239423mnsadf3j23lj42--sedfnm234", 1392934, "INVITE"),
    "unkscm": ("OPTIONS", "unkscm.nasdfasser0q239nwsdfasdkl34", 3923423, "OPTIONS"),
    "novelsc": ("OPTIONS", "novelsc.asdfasser0q239nwsdfasdkl34", 3923423, "OPTIONS"),
    "unksm2": ("REGISTER", "unksm2.daksdj@hyphenated-host.example.com", 234902, "REGISTER"),
    "bext01": ("OPTIONS", "bext01.0ha0isndaksdj", 8, "OPTIONS"),
    "invut": ("INVITE", "invut.0ha0isndaksdjadsfij34n23d", 235448, "INVITE"),
    "regaut01": ("REGISTER", "regaut01.0ha0isndaksdj", 9338, "REGISTER"),
    "bcast": (200, "bcast.0384840201234ksdfak3j2erwedfsASdf", 35, "INVITE"),
    "zeromf": ("OPTIONS", "zeromf.jfasdlfnm2o2l43r5u0asdfas", 39234321, "OPTIONS"),
    "cparam01": ("REGISTER", "cparam01.70710@saturn.example.com", 2, "REGISTER"),
    "cparam02": ("REGISTER", "cparam02.70710@saturn.example.com", 3, "REGISTER"),
    "regescrt": ("REGISTER", "regescrt.k345asrl3fdbv@192.0.2.1", 14398234, "REGISTER"),
    "sdp01": ("INVITE", "sdp01.ndaksdj9342dasdd", 8, "INVITE"),
    "inv2543": ("INVITE", "inv2543.1717@ift.client.example.com", 56, "INVITE"),
}

# Rejected. Value: the status the transport answers with, or None for a silent drop.
# | file       | RFC 4475   | answer | why                                                     |
# |------------|------------|--------|---------------------------------------------------------|
# | badinv01   | 3.1.2.1    | 400    | empty Via/Contact params; top Via sent-by still readable |
# | clerr      | 3.1.2.2    | 400    | Content-Length past the end of the datagram             |
# | ncl        | 3.1.2.3    | 400    | negative Content-Length; rest of the datagram dropped    |
# | scalar02   | 3.1.2.4    | 400    | CSeq > 2**32-1                                          |
# | scalarlg   | 3.1.2.5    | drop   | a response: never answered                              |
# | quotbal    | 3.1.2.6    | 400    | unterminated quote; no liberal inference                |
# | ltgtruri   | 3.1.2.7    | 400    | Request-URI in <>                                       |
# | lwsruri    | 3.1.2.8    | 400    | LWS in the Request-URI                                  |
# | lwsstart   | 3.1.2.9    | 400    | extra SPs in the request line; not liberal              |
# | trws       | 3.1.2.10   | 400    | trailing SPs in the request line; not liberal           |
# | escruri    | 3.1.2.11   | 400    | headers in the Request-URI                              |
# | regbadct   | 3.1.2.13   | 400    | addr-spec Contact with '?'                              |
# | badaspec   | 3.1.2.14   | 400    | spaces inside <>                                        |
# | baddn      | 3.1.2.15   | 400    | unquoted comma in display names (and no empty line)     |
# | badvers    | 3.1.2.16   | 505    | SIP/7.0                                                 |
# | mismatch01 | 3.1.2.17   | 400    | CSeq method differs                                     |
# | mismatch02 | 3.1.2.18   | 400    | the parser does not know methods; 400 is acceptable     |
# | bigcode    | 3.1.2.19   | drop   | a response                                              |
# | insuf      | 3.3.1      | drop   | no Call-ID/From/To: a 400 without them would itself be  |
# |            |            |        | malformed and discarded by the client, so we drop       |
# | multi01    | 3.3.8      | 400    | repeated Call-ID/From/To/CSeq; the first ones answer    |
# | mcl01      | 3.3.9      | 400    | conflicting Content-Length; rest of datagram dropped    |
# | test       | (none)     | drop   | no SIP version, no Via, a header without a colon        |
REJECTS: dict[str, int | None] = {
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": None,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": None,
    "insuf": None,
    "multi01": 400,
    "mcl01": 400,
    "test": None,
}


def corpus(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def test_every_corpus_file_has_an_expected_outcome() -> None:
    on_disk = {p.stem for p in CORPUS.glob("*.dat")}
    assert len(on_disk) == 50
    assert on_disk == set(PARSES) | set(REJECTS)
    assert not set(PARSES) & set(REJECTS)


@pytest.mark.parametrize("name", sorted(PARSES))
def test_valid_torture_message_parses_with_its_method_call_id_and_cseq(name: str) -> None:
    kind, call_id, number, method = PARSES[name]
    message = parse_message(corpus(name))
    if isinstance(kind, int):
        assert isinstance(message, SipResponse)
        assert message.status == kind
    else:
        assert isinstance(message, SipRequest)
        assert message.method == kind
    assert message.call_id == call_id
    assert (message.cseq.sequence, message.cseq.method) == (number, method)


@pytest.mark.parametrize("name", sorted(REJECTS))
def test_invalid_torture_message_is_rejected_with_the_chosen_answer(name: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(corpus(name))
    error = caught.value
    expected = REJECTS[name]
    assert error.respond_400 is (expected is not None)
    if expected is not None:
        assert error.status == expected
        assert error.request is not None
        response = bytes(build_response(error.request, error.status, "Bad Request"))
        assert response.startswith(f"SIP/2.0 {expected} Bad Request\r\n".encode())
        assert error.call_id is not None
        assert f"Call-ID: {error.call_id}\r\n".encode() in response


def test_wsinv_folding_short_names_and_odd_spacing_are_understood() -> None:
    message = parse_message(corpus("wsinv"))
    assert isinstance(message, SipRequest)
    assert message.max_forwards == 68
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.to.tag == "1918181833n"
    assert [v.branch for v in message.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert message.contacts[0].display_name == 'Quoted string ""'
    assert message.contacts[0].param("q") == "0.33"
    assert message.routes[0].uri.param("lr") is None
    assert message.routes[0].uri.host == "services.example.com"
    assert message.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.header("Subject") == ""
    assert len(message.body) == 150


def test_escapes_are_decoded_only_inside_uris() -> None:
    escnull = parse_message(corpus("escnull"))
    esc02 = parse_message(corpus("esc02"))
    semiuri = parse_message(corpus("semiuri"))
    intmeth = parse_message(corpus("intmeth"))
    assert isinstance(semiuri, SipRequest)
    assert [c.uri.user for c in escnull.contacts] == ["\x00", "\x00\x00"]
    assert [c.uri.host for c in esc02.contacts] == ["host1.example.com", "host3.example.com"]
    assert semiuri.uri.user == "user;par=u@example.net"
    assert intmeth.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"


def test_unknown_schemes_are_kept_opaque() -> None:
    unkscm = parse_message(corpus("unkscm"))
    unksm2 = parse_message(corpus("unksm2"))
    assert isinstance(unkscm, SipRequest)
    assert (unkscm.uri.scheme, unkscm.uri.host) == ("nobodyknowsthisscheme", None)
    assert str(unksm2.to.uri) == "isbn:2983792873"
    assert str(unksm2.contacts[0].uri) == "name:John_Smith"


def test_escaped_route_in_a_bracketed_contact_is_kept_as_uri_headers() -> None:
    message = parse_message(corpus("regescrt"))
    assert message.contacts[0].uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_trailing_octets_in_a_datagram_are_ignored_and_binary_bodies_survive() -> None:
    dblreq = parse_message(corpus("dblreq"))
    mpart = parse_message(corpus("mpart01"))
    assert isinstance(dblreq, SipRequest)
    assert dblreq.body == b""
    assert mpart.content_type == "multipart/mixed"
    assert len(mpart.body) == 553
    assert b"\x00" in mpart.body


CARRIER_SDP = (
    b"v=0\r\n"
    b"o=- 4858 4858 IN IP4 203.0.113.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 203.0.113.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 18000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)
CARRIER_INVITE = (
    b"INVITE sip:+15551230000@198.51.100.5:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK7f3a;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKinner;received=192.0.2.7\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:203.0.113.10;lr>\r\n"
    b'From: "ACME Caller" <sip:+15557654321@203.0.113.10>;tag=abc123\r\n'
    b"To: <sip:+15551230000@198.51.100.5>\r\n"
    b"Call-ID: 7a1f@203.0.113.10\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+15557654321@203.0.113.10:5060>\r\n"
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(CARRIER_SDP)).encode() + b"\r\n"
    b"\r\n" + CARRIER_SDP
)


def test_carrier_invite_with_sdp_parses_and_serialises_back_to_the_same_bytes() -> None:
    message = parse_message(CARRIER_INVITE)
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    assert message.uri.user == "+15551230000"
    assert message.uri.port == 5060
    assert message.uri.param("transport") == "udp"
    assert message.via.sent_by == "203.0.113.10:5060"
    assert message.via.branch == "z9hG4bK7f3a"
    assert message.via.has_rport
    assert message.via.rport is None
    assert message.vias[1].received == "192.0.2.7"
    assert message.from_.display_name == "ACME Caller"
    assert message.from_.tag == "abc123"
    assert message.to.tag is None
    assert str(message.record_routes[0].uri) == "sip:203.0.113.10;lr"
    assert message.contacts[0].uri.port == 5060
    assert message.content_type == "application/sdp"
    assert message.body == CARRIER_SDP
    assert bytes(message) == CARRIER_INVITE


def test_ringing_and_ok_responses_from_build_response_carry_the_dialog_identifiers() -> None:
    invite = parse_message(CARRIER_INVITE)
    assert isinstance(invite, SipRequest)
    ringing = build_response(invite, 180, "Ringing", to_tag="as9f")
    ok = build_response(
        invite,
        200,
        "OK",
        to_tag="as9f",
        headers=[("Contact", "<sip:agent@198.51.100.5>"), ("Content-Type", "application/sdp")],
    )
    assert bytes(ringing) == (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK7f3a;rport\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKinner;received=192.0.2.7\r\n"
        b'From: "ACME Caller" <sip:+15557654321@203.0.113.10>;tag=abc123\r\n'
        b"To: <sip:+15551230000@198.51.100.5>;tag=as9f\r\n"
        b"Call-ID: 7a1f@203.0.113.10\r\n"
        b"CSeq: 102 INVITE\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    reparsed = parse_message(bytes(ok))
    assert isinstance(reparsed, SipResponse)
    assert (reparsed.status, reparsed.reason) == (200, "OK")
    assert reparsed.to.tag == "as9f"
    assert reparsed.contacts[0].uri.user == "agent"
    assert reparsed.cseq.sequence == 102


def test_build_response_keeps_an_existing_to_tag() -> None:
    invite = parse_message(CARRIER_INVITE.replace(b"98.51.100.5>\r\n", b"98.51.100.5>;tag=x1\r\n"))
    assert isinstance(invite, SipRequest)
    response = build_response(invite, 200, "OK", to_tag="other")
    assert response.to.tag == "x1"


def test_compact_headers_are_expanded_to_their_full_names() -> None:
    data = (
        b"OPTIONS sip:agent@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\n"
        b"t: <sip:agent@example.com>\r\n"
        b"i: compact-1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"m: <sip:a@192.0.2.1>\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"e: gzip\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n"
        b"\r\nhi"
    )
    message = parse_message(data)
    assert [name for name, _ in message.headers] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Subject",
        "Content-Encoding",
        "Content-Type",
        "Content-Length",
    ]
    assert message.call_id == "compact-1"
    assert message.body == b"hi"
    assert bytes(message).endswith(b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")


def test_created_request_gets_a_correct_content_length() -> None:
    request = SipRequest.create(
        "MESSAGE",
        "sip:agent@example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKm1"),
            ("From", "<sip:a@example.com>;tag=1"),
            ("To", "<sip:agent@example.com>"),
            ("Call-ID", "m-1"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Length", "999"),
        ],
        b"hello",
    )
    assert bytes(request).endswith(b"\r\nContent-Length: 5\r\n\r\nhello")
    assert request.cseq.method == "MESSAGE"


def test_created_request_with_a_mismatched_cseq_is_refused() -> None:
    with pytest.raises(SipParseError):
        SipRequest.create(
            "BYE",
            "sip:agent@example.com",
            [
                ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKm1"),
                ("From", "<sip:a@example.com>;tag=1"),
                ("To", "<sip:agent@example.com>"),
                ("Call-ID", "m-1"),
                ("CSeq", "1 INVITE"),
            ],
        )


@pytest.mark.parametrize("data", [b"\r\n\r\n", b"\r\n"])
def test_crlf_keepalive_is_reported_as_a_keepalive(data: bytes) -> None:
    assert parse_message(data) == Keepalive()


def test_missing_content_length_over_udp_means_the_rest_of_the_datagram() -> None:
    message = parse_message(corpus("inv2543"))
    assert message.body.startswith(b"v=0\r\n")
    assert message.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")


def test_content_length_beyond_the_datagram_is_answered_with_400() -> None:
    too_long = f"Content-Length: {len(CARRIER_SDP) + 1}\r\n".encode()
    data = CARRIER_INVITE.replace(f"Content-Length: {len(CARRIER_SDP)}\r\n".encode(), too_long)
    assert too_long in data
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.respond_400
    assert caught.value.call_id == "7a1f@203.0.113.10"


def test_leading_crlfs_before_a_message_are_ignored() -> None:
    message = parse_message(b"\r\n\r\n" + CARRIER_INVITE)
    assert isinstance(message, SipRequest)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_nothing_but_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


CORPUS_MESSAGES = [corpus(name) for name in (*PARSES, *REJECTS)] + [CARRIER_INVITE]


@given(
    st.sampled_from(CORPUS_MESSAGES),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=2000),
    st.binary(max_size=8),
)
def test_mutated_messages_raise_nothing_but_sip_parse_error(
    message: bytes, start: int, length: int, replacement: bytes
) -> None:
    data = message[:start] + replacement + message[start + length % 40 :]
    with contextlib.suppress(SipParseError):
        parse_message(data)


@pytest.mark.parametrize(
    ("original", "replacement"),
    [
        (b"Max-Forwards: 69", "Max-Forwards: \u0666\u0669".encode()),
        (b"Max-Forwards: 69", b"Max-Forwards: 256"),
        (b"203.0.113.10:5060;branch", b"203.0.113.10:65536;branch"),
        (b"Call-ID: 7a1f@203.0.113.10\r\n", b"Call-ID: 7a1f@203.0.113.10\r\nCall-ID: x\r\n"),
    ],
)
def test_out_of_range_or_non_ascii_numbers_are_answered_with_400(
    original: bytes, replacement: bytes
) -> None:
    assert original in CARRIER_INVITE
    with pytest.raises(SipParseError) as caught:
        parse_message(CARRIER_INVITE.replace(original, replacement))
    assert caught.value.respond_400
    assert caught.value.status == 400


def test_a_cseq_in_non_ascii_digits_is_unreadable_so_the_request_is_dropped() -> None:
    data = CARRIER_INVITE.replace(b"CSeq: 102", "CSeq: \u0661\u0660\u0662".encode())
    assert data != CARRIER_INVITE
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert not caught.value.respond_400


def test_rport_and_received_filled_in_by_a_proxy_are_readable() -> None:
    message = parse_message(
        CARRIER_INVITE.replace(b"z9hG4bK7f3a;rport", b"z9hG4bK7f3a;rport=5071;received=192.0.2.9")
    )
    assert message.via.rport == 5071
    assert message.via.received == "192.0.2.9"


def test_a_response_that_fails_to_parse_is_never_answered() -> None:
    ok = b"SIP/2.0 200 OK\r\n" + CARRIER_INVITE.split(b"\r\n", 1)[1]
    assert isinstance(parse_message(ok), SipResponse)
    with pytest.raises(SipParseError) as caught:
        parse_message(ok.replace(b"CSeq: 102 INVITE", b"CSeq: 4294967296 INVITE"))
    assert not caught.value.respond_400
    assert caught.value.request is None


# The quick readings of URIs and parameters against sipmessage's own, which they stand in for


def sipmessage_uri(text: str, *, allow_headers: bool) -> Uri:
    """Uri.parse as it was before its shortcut: everything through sipmessage's URI."""
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*$", scheme):
        raise ValueError(text)
    if re.search(r"[\s<>]", rest):
        raise ValueError(text)
    scheme = scheme.lower()
    if scheme not in ("sip", "sips", "tel"):
        return Uri(text=text, scheme=scheme)
    base, headers = rest, ""
    if scheme != "tel":
        mark = rest.find("?", rest.rfind("@") + 1)
        if mark >= 0:
            base, headers = rest[:mark], rest[mark + 1 :]
            if not allow_headers or not headers:
                raise ValueError(text)
    parsed = URI.parse(f"{scheme}:{base}")
    if parsed.port is not None and parsed.port > 65535:
        raise ValueError(text)
    return Uri(
        text=text,
        scheme=scheme,
        user=parsed.user,
        host=parsed.host or None,
        port=parsed.port,
        params=tuple(parsed.parameters.items()),
        headers=headers,
    )


def outcome(read: Callable[[], object]) -> object:
    try:
        return read()
    except ValueError:
        return ValueError


URI_TEXTS = st.builds(
    lambda scheme, user, host, port, params, headers: (
        f"{scheme}:{user}{host}{port}{''.join(params)}{headers}"
    ),
    st.sampled_from(["sip", "sips", "SIP", "tel", "urn", "1x"]),
    st.sampled_from(["", "alice@", "+15551230000@", "a%41b@", "user;par=u@", "a?b@", "%zz@"]),
    st.sampled_from(["example.com", "192.0.2.1", "[2001:db8::1]", "x.", "1.2.3", "a..b"]),
    st.sampled_from(["", ":5060", ":65535", ":65536", ":", ":\u0663"]),
    st.lists(
        st.sampled_from([";lr", ";transport=udp", ";x%41=1", ";maddr=[::1]", ";lr", ";", ";=v"]),
        max_size=3,
    ),
    st.sampled_from(["", "?", "?Route=%3Csip:a%3E", "?a=b&c=d"]),
)


@settings(max_examples=300)
@given(st.one_of(URI_TEXTS, URI_TEXTS, st.text(max_size=30).map(lambda rest: "sip:" + rest)))
def test_uris_are_read_exactly_as_sipmessage_reads_them(text: str) -> None:
    for headers in (True, False):
        expected = outcome(lambda h=headers: sipmessage_uri(text, allow_headers=h))
        assert outcome(lambda h=headers: Uri.parse(text, allow_headers=h)) == expected


PARAMETER_TEXTS = st.lists(
    st.sampled_from(
        [
            ";branch=z9hG4bK1",
            ";rport",
            ";received=192.0.2.1",
            " ; ttl = 16",
            ';x="a b"',
            ";%41=%42",
            ";tag=1;tag=2",
            ";",
            ";=",
            ";maddr=[2001:db8::1]",
        ]
    ),
    max_size=4,
).map("".join)
NAME_ADDR = re.compile(f"^<[^<>\\s]+>{g.SWS}(?P<parameters>(?:{g.SEMI}{g.GENERIC_PARAM})*)")


def sipmessage_params(value: str, pattern: re.Pattern[str]) -> object:
    """The parameters as sipmessage's Parameters reads them, or ValueError."""
    simplified = re.sub(r"\s+", " ", value).strip()
    m = pattern.match(simplified)
    if m is None or simplified[m.end() :].strip():
        return ValueError
    return outcome(lambda: tuple(Parameters.parse(m.group("parameters")).items()))


@given(PARAMETER_TEXTS)
def test_via_and_address_parameters_are_read_as_sipmessage_reads_them(params: str) -> None:
    via = f"SIP/2.0/UDP 192.0.2.1:5060{params}"
    from_ = f"<sip:alice@example.com>{params}"
    data = CARRIER_INVITE.replace(
        b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK7f3a;rport", f"Via: {via}".encode()
    ).replace(
        b'From: "ACME Caller" <sip:+15557654321@203.0.113.10>;tag=abc123',
        f"From: {from_}".encode(),
    )
    expected_via = sipmessage_params(via, VIA_PATTERN)
    expected_from = sipmessage_params(from_, NAME_ADDR)

    try:
        message = parse_message(data)
    except SipParseError:
        assert ValueError in (expected_via, expected_from)
        return
    assert message.via.params == expected_via
    assert message.from_.params == expected_from


# Messages we build are checked directly instead of being serialised and parsed back


def the_long_way(method: str, uri: str, headers: list[tuple[str, str]], body: bytes) -> object:
    """What SipRequest.create returned when it serialised its draft and parsed it back."""
    try:
        draft = SipRequest(headers=tuple(headers), body=body, method=method, uri=Uri.parse(uri))
        return parse_message(bytes(draft))
    except (ValueError, UnicodeError) as exc:
        return type(exc)


OUR_HEADERS = [
    ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours1;rport"),
    ("Max-Forwards", "70"),
    ("From", '"Queue" <sip:queue@switchboard.example.com>;tag=sb1'),
    ("To", "<sip:+15557654321@carrier.example.com>"),
    ("Call-ID", "ours-1@switchboard"),
    ("CSeq", "7 OPTIONS"),
    ("Contact", "<sip:queue@192.0.2.1:5060>"),
]
ODD_HEADERS = st.sampled_from(
    [
        ("l", "0"),
        ("content-length", "12"),
        ("Content-Type", "application/sdp"),
        ("Content-Type", "not a type"),
        ("f", "<sip:a@example.com>;tag=2"),
        ("Via ", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx"),
        ("X Bad", "1"),
        ("X:Y", "1"),
        ("Subject", " \tpadded\t "),
        ("Subject", "folded\r\n on"),
        ("Subject", "broken\r\nInjected: 1"),
        ("Subject", "\ud800"),
        ("Route", "<sip:edge.example.com;lr>"),
        ("Record-Route", "nonsense <"),
        ("CSeq", "8 OPTIONS"),
        ("Max-Forwards", "256"),
    ]
)


@settings(max_examples=400)
@given(
    st.sampled_from(["OPTIONS", "OPTIONS", "BYE", "bad method", "OPT\r\nIONS"]),
    st.sampled_from(
        ["sip:+15557654321@192.0.2.7:5060", "tel:+1555", "sip:a@example.com", "sip:a@b?x=y"]
    ),
    st.lists(st.tuples(st.integers(0, len(OUR_HEADERS)), ODD_HEADERS), max_size=2),
    st.sampled_from([b"", b"v=0\r\n"]),
)
def test_a_request_we_create_is_what_parsing_it_back_would_give(
    method: str,
    uri: str,
    insertions: list[tuple[int, tuple[str, str]]],
    body: bytes,
) -> None:
    headers = list(OUR_HEADERS)
    if method != "OPTIONS":
        headers[5] = ("CSeq", f"7 {method}")
    for at, header in insertions:
        headers.insert(at, header)
    expected = the_long_way(method, uri, headers, body)
    try:
        created: object = SipRequest.create(method, uri, headers, body)
    except (ValueError, UnicodeError) as exc:
        created = type(exc)
    assert created == expected
    if isinstance(created, SipRequest):
        assert bytes(created) == bytes(parse_message(bytes(created)))


@given(
    st.sampled_from([200, 99, 700, 486]),
    st.sampled_from(["OK", "", "Busy\r\nHere"]),
    st.lists(st.tuples(st.integers(0, len(OUR_HEADERS)), ODD_HEADERS), max_size=3),
)
def test_a_response_we_create_is_what_parsing_it_back_would_give(
    status: int, reason: str, insertions: list[tuple[int, tuple[str, str]]]
) -> None:
    headers = list(OUR_HEADERS)
    for at, header in insertions:
        headers.insert(at, header)
    try:
        draft = SipResponse(headers=tuple(headers), body=b"", status=status, reason=reason)
        expected: object = parse_message(bytes(draft))
    except (ValueError, UnicodeError) as exc:
        expected = type(exc)
    try:
        created: object = SipResponse.create(status, reason, headers)
    except (ValueError, UnicodeError) as exc:
        created = type(exc)
    assert created == expected


@pytest.mark.parametrize(
    ("extra", "to_tag"),
    [
        ([("Contact", "<sip:agent@198.51.100.5")], None),
        ([("Content-Type", "application")], None),
        ([("CSeq", "103 INVITE")], None),
        ([], "two words"),
    ],
)
def test_a_response_to_a_parsed_request_still_refuses_a_malformed_addition(
    extra: list[tuple[str, str]], to_tag: str | None
) -> None:
    invite = parse_message(CARRIER_INVITE)
    assert isinstance(invite, SipRequest)
    with pytest.raises(ValueError):  # noqa: PT011 - each case fails in its own header
        build_response(invite, 200, "OK", to_tag=to_tag, headers=extra)


def test_header_values_come_in_order_whatever_the_case_of_the_name() -> None:
    invite = parse_message(CARRIER_INVITE)
    assert (
        invite.header_values("via")
        == invite.header_values("VIA")
        == (
            "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK7f3a;rport",
            "SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKinner;received=192.0.2.7",
        )
    )
    assert invite.header("cseq") == "102 INVITE"
    assert invite.header_values("X-Absent") == ()
    assert invite.header("X-Absent") is None


def test_a_value_that_failed_to_parse_fails_again_rather_than_being_remembered() -> None:
    bad = CARRIER_INVITE.replace(b"<sip:+15557654321@203.0.113.10:5060>", b"<sip:a@b:99999>")
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_message(bad)

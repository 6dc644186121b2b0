"""RFC 3261 §12 dialogs, UAC digest answers and RFC 4028 headers: messages in, messages out."""

from __future__ import annotations

import pytest

from media.sip.dialog import (
    Authenticator,
    Dialog,
    DialogError,
    DialogId,
    DialogState,
    Login,
    Refusal,
    SessionExpires,
    allowed_methods,
    expiry_margin,
    format_address,
    has_option,
    min_se_of,
    session_expires_of,
    session_timer_for_uas,
    session_timer_headers,
)
from media.sip.digest import (
    Algorithm,
    Challenge,
    NonceIssuer,
    Verdict,
    format_challenge,
    parse_credentials,
)
from media.sip.message import Address, SipRequest, SipResponse, Uri, build_response, parse_message

VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnew1;rport"
CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"


def invite(
    *,
    record_route: tuple[str, ...] = (),
    cseq: int = 314159,
    contact: str = "<sip:alice@pc33.atlanta.example.com>",
) -> SipRequest:
    return SipRequest.create(
        "INVITE",
        "sip:bob@biloxi.example.com",
        [
            ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"),
            ("Max-Forwards", "70"),
            ("To", "Bob <sip:bob@biloxi.example.com>"),
            ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
            ("Call-ID", CALL_ID),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", contact),
            *(("Record-Route", rr) for rr in record_route),
        ],
    )


def answered(
    request: SipRequest,
    *,
    status: int = 200,
    record_route: tuple[str, ...] = (),
    contact: str | None = "<sip:bob@192.0.2.4>",
) -> SipResponse:
    headers = [("Record-Route", rr) for rr in record_route]
    if contact is not None:
        headers.append(("Contact", contact))
    built = build_response(request, status, "OK", to_tag="a6c85cf", headers=headers)
    message = parse_message(bytes(built))
    assert isinstance(message, SipResponse)
    return message


def in_dialog(method: str, cseq: int, *, contact: str | None = None) -> SipRequest:
    """A request the caller sends in the dialog the callee built from `invite()`."""
    headers = [
        ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK" + method + str(cseq)),
        ("Max-Forwards", "70"),
        ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
        ("To", "Bob <sip:bob@biloxi.example.com>;tag=ourtag"),
        ("Call-ID", CALL_ID),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is not None:
        headers.append(("Contact", contact))
    return SipRequest.create(method, "sip:bob@192.0.2.4", headers)


def callee_dialog(record_route: tuple[str, ...] = ()) -> Dialog:
    return Dialog.as_uas(
        invite(record_route=record_route),
        local_tag="ourtag",
        local_contact="<sip:bob@192.0.2.4:5060>",
        local_cseq=100,
    )


# Dialog creation


def test_callee_dialog_keeps_record_route_in_order_and_targets_the_caller_contact() -> None:
    dialog = callee_dialog(
        record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>, <sip:p3.example.com;lr>")
    )

    assert dialog.id == DialogId(CALL_ID, "ourtag", "1928301774")
    assert [str(a.uri) for a in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    assert dialog.remote_cseq == 314159
    assert dialog.state is DialogState.EARLY
    assert str(dialog.next_hop()) == "sip:p1.example.com;lr"


def test_caller_dialog_reverses_record_route_and_starts_from_the_invite_cseq() -> None:
    request = invite()
    response = answered(
        request, record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    )

    dialog = Dialog.as_uac(request, response, local_contact="<sip:alice@192.0.2.10>")

    assert dialog.id == DialogId(CALL_ID, "1928301774", "a6c85cf")
    assert [str(a.uri) for a in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    assert dialog.local_cseq == 314159
    assert dialog.remote_cseq is None
    assert dialog.state is DialogState.CONFIRMED


def test_ringing_without_contact_makes_an_early_dialog_but_a_2xx_without_contact_is_refused() -> (
    None
):
    request = invite()

    early = Dialog.as_uac(
        request, answered(request, status=180, contact=None), local_contact="<sip:a@192.0.2.10>"
    )
    assert early.state is DialogState.EARLY
    with pytest.raises(DialogError):
        Dialog.as_uac(request, answered(request, contact=None), local_contact="<sip:a@192.0.2.10>")


def test_sips_request_uri_makes_the_dialog_secure() -> None:
    request = SipRequest.create(
        "INVITE",
        "sips:bob@biloxi.example.com",
        [(n, v) for n, v in invite().headers if n != "Content-Length"],
    )

    dialog = Dialog.as_uas(request, local_tag="t", local_contact="<sips:bob@192.0.2.4>")

    assert dialog.secure


# Requests we send in the dialog


def test_bye_from_the_callee_goes_to_the_caller_through_loose_routes() -> None:
    dialog = callee_dialog(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))

    bye = dialog.request("BYE", via=VIA)

    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:alice@pc33.atlanta.example.com"
    assert bye.header_values("Route") == ("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
    assert bye.header("From") == "Bob <sip:bob@biloxi.example.com>;tag=ourtag"
    assert bye.header("To") == "Alice <sip:alice@atlanta.example.com>;tag=1928301774"
    assert bye.call_id == CALL_ID
    assert (bye.cseq.sequence, bye.cseq.method) == (101, "BYE")
    assert bye.header("Contact") is None
    assert bye.via.branch == "z9hG4bKnew1"


def test_every_new_request_takes_the_next_local_cseq_and_reinvite_carries_our_contact() -> None:
    dialog = callee_dialog()

    reinvite = dialog.request("INVITE", via=VIA, body=b"v=0\r\n")
    update = dialog.request("UPDATE", via=VIA)

    assert reinvite.cseq.sequence == 101
    assert update.cseq.sequence == 102
    assert reinvite.header("Contact") == "<sip:bob@192.0.2.4:5060>"
    assert update.header("Contact") == "<sip:bob@192.0.2.4:5060>"
    assert reinvite.header("Content-Type") == "application/sdp"
    assert reinvite.body == b"v=0\r\n"


def test_strict_router_takes_the_request_uri_and_the_target_goes_last_in_route() -> None:
    dialog = callee_dialog(record_route=("<sip:strict.example.com>", "<sip:p2.example.com;lr>"))

    bye = dialog.request("BYE", via=VIA)

    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.header_values("Route") == (
        "<sip:p2.example.com;lr>",
        "<sip:alice@pc33.atlanta.example.com>",
    )


def test_ack_for_a_2xx_reuses_the_invite_cseq_and_leaves_the_counter_alone() -> None:
    request = invite()
    dialog = Dialog.as_uac(
        request,
        answered(request, record_route=("<sip:p1.example.com;lr>",)),
        local_contact="<sip:alice@192.0.2.10>",
    )

    ack = dialog.ack(314159, via=VIA)

    assert (ack.cseq.sequence, ack.cseq.method) == (314159, "ACK")
    assert str(ack.uri) == "sip:bob@192.0.2.4"
    assert ack.header_values("Route") == ("<sip:p1.example.com;lr>",)
    assert ack.to.tag == "a6c85cf"
    assert dialog.local_cseq == 314159
    assert dialog.request("BYE", via=VIA).cseq.sequence == 314160


def test_ack_and_cancel_cannot_be_built_as_new_requests() -> None:
    dialog = callee_dialog()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(ValueError, match="reuses"):
            dialog.request(method, via=VIA)


# Requests the far end sends in the dialog


def test_request_with_a_lower_cseq_is_refused_with_500_and_changes_nothing() -> None:
    dialog = callee_dialog()

    assert dialog.receive(in_dialog("INVITE", 314160, contact="<sip:alice@192.0.2.99>")) is None
    assert dialog.receive(in_dialog("BYE", 314150)) == 500
    assert dialog.remote_cseq == 314160
    assert str(dialog.remote_target) == "sip:alice@192.0.2.99"


def test_ack_is_not_checked_against_the_remote_cseq() -> None:
    dialog = callee_dialog()
    dialog.receive(in_dialog("UPDATE", 314170))

    assert dialog.receive(in_dialog("ACK", 314159)) is None
    assert dialog.remote_cseq == 314170


def test_first_request_from_the_callee_sets_the_caller_remote_cseq() -> None:
    request = invite()
    dialog = Dialog.as_uac(request, answered(request), local_contact="<sip:alice@192.0.2.10>")
    bye = SipRequest.create(
        "BYE",
        "sip:alice@192.0.2.10",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKbye"),
            ("From", "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf"),
            ("To", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
            ("Call-ID", CALL_ID),
            ("CSeq", "7 BYE"),
        ],
    )

    assert DialogId.of_request(bye) == dialog.id
    assert dialog.receive(bye) is None
    assert dialog.remote_cseq == 7


def test_out_of_dialog_request_has_no_dialog_id() -> None:
    assert DialogId.of_request(invite()) is None
    assert DialogId.of_request(in_dialog("BYE", 1)) == DialogId(CALL_ID, "ourtag", "1928301774")


def test_2xx_to_our_reinvite_moves_the_remote_target() -> None:
    dialog = callee_dialog()
    reinvite = dialog.request("INVITE", via=VIA)
    response = parse_message(
        bytes(build_response(reinvite, 200, "OK", headers=[("Contact", "<sip:alice@192.0.2.77>")]))
    )
    assert isinstance(response, SipResponse)

    dialog.refresh_target(response)

    assert str(dialog.remote_target) == "sip:alice@192.0.2.77"
    assert DialogId.of_response(response) == dialog.id


def test_display_names_with_specials_are_quoted() -> None:
    address = Address(
        uri=Uri.parse("sip:a@example.com"), display_name='Smith, "J"', params=(("tag", "x"),)
    )

    assert format_address(address) == '"Smith, \\"J\\"" <sip:a@example.com>;tag=x'
    plain = Address(uri=Uri.parse("sip:a@example.com;lr"), display_name="Alice")
    assert format_address(plain) == "Alice <sip:a@example.com;lr>"


# Digest answers as a UAC

LOGIN = Login("trunk7", "s3cret-pass")
REALM = "carrier.example.net"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def challenge_response(
    request: SipRequest, status: int, values: list[str], *, header: str | None = None
) -> SipResponse:
    name = header or ("WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
    built = build_response(
        request, status, "Unauthorized", to_tag="x1", headers=[(name, v) for v in values]
    )
    message = parse_message(bytes(built))
    assert isinstance(message, SipResponse)
    return message


def verify(issuer: NonceIssuer, value: str, method: str = "INVITE") -> Verdict:
    return issuer.verify(
        parse_credentials(value),
        method=method,
        realm=REALM,
        password_lookup=lambda user: "s3cret-pass" if user == "trunk7" else None,
    )


def test_401_is_answered_with_sha256_when_offered_with_md5_and_the_registrar_accepts_it() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(LOGIN)
    auth.begin()

    assert auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))
    headers = auth.headers("INVITE", "sip:bob@biloxi.example.com")

    assert [name for name, _ in headers] == ["Authorization"]
    credentials = parse_credentials(headers[0][1])
    assert credentials.algorithm is Algorithm.SHA256
    assert credentials.qop == "auth"
    assert credentials.uri == "sip:bob@biloxi.example.com"
    assert verify(issuer, headers[0][1]) is Verdict.OK


def test_407_with_md5_only_is_answered_in_proxy_authorization() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(LOGIN)
    auth.begin()

    values = issuer.challenge(REALM, algorithm=Algorithm.MD5)
    assert auth.challenged(challenge_response(invite(), 407, values))
    headers = auth.headers("INVITE", "sip:bob@biloxi.example.com")

    assert [name for name, _ in headers] == ["Proxy-Authorization"]
    assert parse_credentials(headers[0][1]).algorithm is Algorithm.MD5
    assert verify(issuer, headers[0][1]) is Verdict.OK


def test_wrong_password_is_tried_once_then_a_fresh_non_stale_challenge_gives_up() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(Login("trunk7", "wrong"))
    auth.begin()

    assert auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))
    assert verify(issuer, auth.headers("INVITE", "sip:b@x")[0][1]) is Verdict.BAD
    assert not auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))


def test_stale_challenge_is_answered_again_with_the_new_nonce() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(LOGIN)
    auth.begin()
    auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))
    first = parse_credentials(auth.headers("INVITE", "sip:b@x")[0][1])

    stale = issuer.challenge(REALM, stale=True)
    assert auth.challenged(challenge_response(invite(), 401, stale))
    second = parse_credentials(auth.headers("INVITE", "sip:b@x")[0][1])

    assert second.nonce != first.nonce
    assert second.nc == 1


def test_a_new_request_may_answer_the_same_realm_again() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(LOGIN)
    auth.begin()
    auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))

    auth.begin()

    assert auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))


def test_remembered_challenge_is_reused_with_a_growing_nonce_count() -> None:
    issuer = NonceIssuer(b"sixteen byte key!!", clock=Clock())
    auth = Authenticator(LOGIN)
    auth.challenged(challenge_response(invite(), 401, issuer.challenge(REALM)))

    counts = [parse_credentials(auth.headers("REGISTER", "sip:x")[0][1]).nc for _ in range(3)]

    assert counts == [1, 2, 3]
    assert verify(issuer, auth.headers("REGISTER", "sip:x")[0][1], "REGISTER") is Verdict.OK


def test_proxy_and_registrar_realms_are_both_answered_on_the_next_try() -> None:
    auth = Authenticator(LOGIN)
    auth.begin()
    proxy = format_challenge(Challenge(realm="proxy.example.net", nonce="n1", qop=("auth",)))
    home = format_challenge(Challenge(realm="home.example.net", nonce="n2", qop=("auth",)))

    assert auth.challenged(challenge_response(invite(), 407, [proxy]))
    assert auth.challenged(challenge_response(invite(), 401, [home]))
    headers = dict(auth.headers("INVITE", "sip:b@x"))

    assert parse_credentials(headers["Proxy-Authorization"]).realm == "proxy.example.net"
    assert parse_credentials(headers["Authorization"]).realm == "home.example.net"


def test_challenges_we_cannot_answer_give_up() -> None:
    auth = Authenticator(LOGIN)
    auth.begin()

    assert not auth.challenged(challenge_response(invite(), 401, ['Basic realm="x"']))
    assert not auth.challenged(challenge_response(invite(), 401, []))
    assert not auth.challenged(answered(invite()))
    unknown_qop = format_challenge(Challenge(realm=REALM, nonce="n", qop=("auth-conf",)))
    assert not auth.challenged(challenge_response(invite(), 401, [unknown_qop]))
    assert auth.headers("INVITE", "sip:b@x") == []


# Session timers


def test_session_expires_reads_interval_and_refresher_and_writes_them_back() -> None:
    assert SessionExpires.parse("1800;refresher=UAC") == SessionExpires(1800, "uac")
    assert SessionExpires.parse(" 90 ") == SessionExpires(90, None)
    assert str(SessionExpires(1800, "uas")) == "1800;refresher=uas"
    assert str(SessionExpires(600)) == "600"


@pytest.mark.parametrize("value", ["", "abc", "-5", "1800;refresher=proxy", "١٢"])
def test_malformed_session_expires_is_an_error(value: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        SessionExpires.parse(value)


def test_session_timer_headers_are_read_from_a_message_in_compact_form_too() -> None:
    request = SipRequest.create(
        "INVITE",
        "sip:bob@biloxi.example.com",
        [
            *[(n, v) for n, v in invite().headers if n != "Content-Length"],
            ("x", "300;refresher=uas"),
            ("Min-SE", "120"),
            ("k", "100rel, Timer"),
        ],
    )

    assert session_expires_of(request) == SessionExpires(300, "uas")
    assert min_se_of(request) == 120
    assert has_option(request, "Supported", "timer")
    assert not has_option(request, "Require", "timer")
    assert session_expires_of(invite()) is None


def test_the_side_that_does_not_refresh_waits_a_third_of_short_intervals_and_32s_of_long() -> None:
    assert expiry_margin(90) == 30
    assert expiry_margin(1800) == 32


def with_headers(*extra: tuple[str, str]) -> SipRequest:
    base = [(n, v) for n, v in invite().headers if n != "Content-Length"]
    return SipRequest.create("INVITE", "sip:bob@biloxi.example.com", [*base, *extra])


def test_uas_lets_a_timer_capable_caller_refresh_and_refreshes_for_one_that_is_not() -> None:
    capable = with_headers(("Session-Expires", "1800"), ("Supported", "timer"))
    incapable = with_headers(("Session-Expires", "1800"))
    chosen = with_headers(("Session-Expires", "1800;refresher=uas"), ("Supported", "timer"))

    assert session_timer_for_uas(capable, 90) == SessionExpires(1800, "uac")
    assert session_timer_for_uas(incapable, 90) == SessionExpires(1800, "uas")
    assert session_timer_for_uas(chosen, 90) == SessionExpires(1800, "uas")
    assert session_timer_for_uas(invite(), 90) is None
    assert session_timer_headers(capable, SessionExpires(1800, "uac")) == [
        ("Session-Expires", "1800;refresher=uac"),
        ("Require", "timer"),
    ]
    assert session_timer_headers(incapable, SessionExpires(1800, "uas")) == [
        ("Session-Expires", "1800;refresher=uas")
    ]
    assert session_timer_headers(invite(), None) == []


def test_interval_below_our_minimum_is_refused_with_422_naming_the_minimum() -> None:
    with pytest.raises(Refusal) as raised:
        session_timer_for_uas(with_headers(("Session-Expires", "60")), 90)

    assert (raised.value.status, raised.value.headers) == (422, [("Min-SE", "90")])
    with pytest.raises(Refusal) as malformed:
        session_timer_for_uas(with_headers(("Session-Expires", "soon")), 90)
    assert malformed.value.status == 400


def test_allow_lists_are_read_across_headers_in_any_case() -> None:
    request = with_headers(("Allow", "INVITE, ack,BYE"), ("Allow", "update"))

    assert allowed_methods(request) == {"INVITE", "ACK", "BYE", "UPDATE"}
    assert allowed_methods(invite()) == set()

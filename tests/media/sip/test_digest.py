"""SIP digest authentication: the published RFC examples, header values in and back out, a phone
answering our challenges for every algorithm, and nonces that expire or are forged."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.sip.digest import (
    Algorithm,
    Challenge,
    ClientAuthState,
    Credentials,
    DigestError,
    NonceIssuer,
    Verdict,
    answer_challenge,
    format_challenge,
    format_credentials,
    ha1,
    parse_challenge,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "acme.switchboard.test"
PASSWORD = "correct horse"
USERS = {"alice": PASSWORD}

RFC7616_CHALLENGE = dict(
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    qop=("auth", "auth-int"),
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> NonceIssuer:
    return NonceIssuer(SECRET, lifetime_s=300, clock=clock)


def phone_answers(header: str, *, password: str = PASSWORD, user: str = "alice") -> str:
    """What a phone sends back to one of our challenge header values."""
    credentials = answer_challenge(
        parse_challenge(header),
        method="INVITE",
        uri="sip:queue@acme",
        username=user,
        password=password,
    )
    return format_credentials(credentials)


def verify(issuer: NonceIssuer, authorization: str, method: str = "INVITE") -> Verdict:
    return issuer.verify(
        parse_credentials(authorization), method=method, realm=REALM, password_lookup=USERS.get
    )


# --- published examples ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_example_gives_the_published_response(algorithm: Algorithm, response: str) -> None:
    challenge = Challenge(algorithm=algorithm, **RFC7616_CHALLENGE)  # type: ignore[arg-type]
    credentials = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    assert credentials.response == response
    assert credentials.qop == "auth"
    assert credentials.opaque == RFC7616_CHALLENGE["opaque"]
    assert "nc=00000001" in format_credentials(credentials)


def test_rfc7616_challenge_header_parses_as_published() -> None:
    header = (
        'Digest\n realm="http-auth@example.org",\n qop="auth, auth-int",\n algorithm=SHA-256,\n'
        ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\n'
        ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    ).replace("\n", "")
    assert parse_challenge(header) == Challenge(algorithm=Algorithm.SHA256, **RFC7616_CHALLENGE)  # type: ignore[arg-type]


def test_rfc2617_example_authorization_is_accepted_as_published() -> None:
    header = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    sent = parse_credentials(header)
    challenge = Challenge(realm=sent.realm, nonce=sent.nonce, qop=("auth",), opaque=sent.opaque)
    recomputed = answer_challenge(
        challenge,
        method="GET",
        uri=sent.uri,
        username="Mufasa",
        password="Circle Of Life",
        cnonce=sent.cnonce,
        nc=1,
    )
    assert recomputed == sent


def test_server_without_qop_gets_an_rfc2069_answer_without_cnonce_or_nc() -> None:
    challenge = Challenge(realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093")
    credentials = answer_challenge(
        challenge, method="GET", uri="/dir/index.html", username="Mufasa", password="CircleOfLife"
    )
    # H(H(A1):nonce:H(A2)) written out independently of the module.
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731, S324
    ha1_ = md5("Mufasa:testrealm@host.com:CircleOfLife")
    expected = md5(f"{ha1_}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{md5('GET:/dir/index.html')}")
    assert credentials.response == expected
    header = format_credentials(credentials)
    assert "qop" not in header
    assert "cnonce" not in header
    assert "nc=" not in header


@pytest.mark.parametrize(
    ("algorithm", "h"),
    [(Algorithm.SHA256_SESS, hashlib.sha256), (Algorithm.MD5_SESS, hashlib.md5)],
)
def test_session_algorithms_hash_nonce_and_cnonce_into_ha1(algorithm: Algorithm, h: Any) -> None:
    challenge = Challenge(algorithm=algorithm, **RFC7616_CHALLENGE)  # type: ignore[arg-type]
    credentials = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )

    # RFC 7616 §3.4.2 written out independently of the module.
    def hx(text: str) -> str:
        return str(h(text.encode()).hexdigest())

    nonce = RFC7616_CHALLENGE["nonce"]
    ha1_ = hx(f"{hx('Mufasa:http-auth@example.org:Circle of Life')}:{nonce}:{RFC7616_CNONCE}")
    ha2 = hx("GET:/dir/index.html")
    assert credentials.response == hx(f"{ha1_}:{nonce}:00000001:{RFC7616_CNONCE}:auth:{ha2}")


def test_auth_is_chosen_over_auth_int_and_auth_int_only_when_alone() -> None:
    base = dict(realm="r", nonce="n", algorithm=Algorithm.SHA256)
    both = answer_challenge(
        Challenge(qop=("auth-int", "auth"), **base),  # type: ignore[arg-type]
        method="MESSAGE",
        uri="sip:a@b",
        username="u",
        password="p",
        body=b"hi",
    )
    only_int = answer_challenge(
        Challenge(qop=("auth-int",), **base),  # type: ignore[arg-type]
        method="MESSAGE",
        uri="sip:a@b",
        username="u",
        password="p",
        body=b"hi",
    )
    assert both.qop == "auth"
    assert only_int.qop == "auth-int"


def test_challenge_offering_only_unknown_qop_cannot_be_answered() -> None:
    with pytest.raises(DigestError):
        answer_challenge(
            Challenge(realm="r", nonce="n", qop=("auth-conf",)),
            method="REGISTER",
            uri="sip:r",
            username="u",
            password="p",
        )


# --- header values in and out ----------------------------------------------------------------


def test_challenge_parses_despite_odd_spacing_case_quoting_and_empty_list_elements() -> None:
    header = (
        '  dIgEsT   ,REALM = "a \\"quoted\\" realm" ,, nonce=abc123 ,\tQop="AUTH , auth-int",'
        ' algorithm=sha-256-SESS , stale=true , opaque = "o\\\\x",  '
    )
    assert parse_challenge(header) == Challenge(
        realm='a "quoted" realm',
        nonce="abc123",
        algorithm=Algorithm.SHA256_SESS,
        qop=("auth", "auth-int"),
        opaque="o\\x",
        stale=True,
    )


def test_challenge_formats_and_parses_back_to_the_same_value() -> None:
    challenge = Challenge(
        realm='we "quote" \\ things',
        nonce="n0nce/+=",
        algorithm=Algorithm.MD5_SESS,
        qop=("auth", "auth-int"),
        opaque="op",
        stale=True,
        domain="sip:acme sip:acme2",
    )
    header = format_challenge(challenge)
    assert header.startswith("Digest ")
    assert "stale=TRUE" in header
    assert parse_challenge(header) == challenge


def test_credentials_parse_with_unquoted_tokens_and_odd_spacing() -> None:
    header = (
        'Digest username = "bob",realm="acme",nonce="n",uri="sip:acme",response="ABCDEF",'
        "ALGORITHM=md5 , QOP=Auth,NC=0000000a,cnonce=c1"
    )
    assert parse_credentials(header) == Credentials(
        username="bob",
        realm="acme",
        nonce="n",
        uri="sip:acme",
        response="ABCDEF",
        algorithm=Algorithm.MD5,
        qop="auth",
        nc=10,
        cnonce="c1",
    )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Digest",
        'Basic realm="x"',
        'Digest realm="x"',  # no nonce
        'Digest realm="x", nonce="unterminated',
        'Digest realm="x", nonce="n", realm="y"',
        'Digest realm="x" nonce="n"',
        'Digest realm="x", nonce="n", algorithm=SHA-512',
        'Digest realm=, nonce="n"',
        'Digest realm="x\r\nVia: evil", nonce="n"',
        'Digest realm="x", nonce="n", =1',
        "Digest abcdef==",
    ],
)
def test_garbage_challenges_raise_digest_error(header: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(header)


@pytest.mark.parametrize(
    "header",
    [
        'Digest username="u", realm="r", nonce="n", uri="sip:r"',  # no response
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, '
        'cnonce="c"',  # qop without nc
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, '
        'cnonce="c", nc=1',
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth, '
        "nc=00000001",  # qop without cnonce
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="x", qop=auth-conf, '
        'cnonce="c", nc=00000001',
    ],
)
def test_incomplete_or_malformed_credentials_raise_digest_error(header: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(header)


def test_formatting_refuses_a_value_that_would_break_out_of_the_header() -> None:
    with pytest.raises(DigestError):
        format_challenge(Challenge(realm="x\r\nContact: <sip:evil>", nonce="n"))


_header_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(['"', "\\", " ", "\t"])
)


@given(
    username=_header_text,
    realm=_header_text,
    nonce=_header_text,
    uri=_header_text,
    response=_header_text,
    cnonce=_header_text,
    opaque=st.none() | _header_text,
    algorithm=st.sampled_from(Algorithm),
    qop=st.sampled_from(["auth", "auth-int"]),
    nc=st.integers(0, 0xFFFFFFFF),
)
def test_any_credentials_format_and_parse_back_unchanged(
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    cnonce: str,
    opaque: str | None,
    algorithm: Algorithm,
    qop: str,
    nc: int,
) -> None:
    credentials = Credentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        qop=qop,
        cnonce=cnonce,
        nc=nc,
        opaque=opaque,
    )
    assert parse_credentials(format_credentials(credentials)) == credentials


_digestish = st.lists(
    st.sampled_from(
        [
            "Digest",
            "digest",
            " ",
            "\t",
            ",",
            "=",
            '"',
            "\\",
            "realm",
            "nonce",
            "qop",
            "nc",
            "algorithm",
            "MD5",
            "SHA-256-sess",
            "auth",
            "stale",
            "TRUE",
            "username",
            "uri",
            "response",
            "cnonce",
            "00000001",
            "x",
            "\r\n",
            "\x00",
            "é",
            "\ud800",
        ]
    )
).map("".join)


@given(st.text() | _digestish)
def test_arbitrary_header_text_raises_nothing_but_digest_error(header: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        with contextlib.suppress(DigestError):
            parse(header)


# --- UAC and UAS together --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm))
@pytest.mark.parametrize("qop", [("auth",), ("auth-int",)])
def test_phone_answering_our_challenge_is_accepted_for_every_algorithm(
    issuer: NonceIssuer, algorithm: Algorithm, qop: tuple[str, ...]
) -> None:
    [header] = issuer.challenge(REALM, algorithm=algorithm, also_md5=False, qop=qop)
    challenge = parse_challenge(header)
    assert challenge.algorithm is algorithm
    credentials = answer_challenge(
        challenge,
        method="MESSAGE",
        uri="sip:queue@acme",
        username="alice",
        password="correct horse",
        body=b"hello",
    )
    received = parse_credentials(format_credentials(credentials))
    check = dict(method="MESSAGE", realm=REALM, password_lookup=USERS.get, qop=qop)
    assert issuer.verify(received, body=b"hello", **check) is Verdict.OK  # type: ignore[arg-type]
    if qop == ("auth-int",):
        # The body is covered: a different one fails.
        assert issuer.verify(received, body=b"HELLO", **check) is Verdict.BAD  # type: ignore[arg-type]


def test_stored_ha1_verifies_like_the_password(issuer: NonceIssuer) -> None:
    stored = {
        (user, a): ha1(a, user, REALM, password)
        for user, password in USERS.items()
        for a in (Algorithm.MD5, Algorithm.SHA256)
    }
    for header in issuer.challenge(REALM):
        credentials = parse_credentials(phone_answers(header))
        verdict = issuer.verify(
            credentials,
            method="INVITE",
            realm=REALM,
            ha1_lookup=lambda user, a: stored.get((user, a)),
        )
        assert verdict is Verdict.OK


def test_challenge_offers_sha256_first_then_md5_with_the_same_nonce(issuer: NonceIssuer) -> None:
    first, second = (parse_challenge(h) for h in issuer.challenge(REALM))
    assert (first.algorithm, second.algorithm) == (Algorithm.SHA256, Algorithm.MD5)
    assert first.nonce == second.nonce
    assert first.qop == second.qop == ("auth",)


def test_expired_nonce_with_the_right_password_is_stale(issuer: NonceIssuer, clock: Clock) -> None:
    [header, _] = issuer.challenge(REALM)
    authorization = phone_answers(header)
    clock.now += 299
    assert verify(issuer, authorization) is Verdict.OK
    clock.now += 2
    assert verify(issuer, authorization) is Verdict.STALE
    assert "stale=TRUE" in issuer.challenge(REALM, stale=True)[0]


def test_expired_nonce_with_a_wrong_password_is_bad_not_stale(
    issuer: NonceIssuer, clock: Clock
) -> None:
    [header, _] = issuer.challenge(REALM)
    authorization = phone_answers(header, password="guess")
    clock.now += 301
    assert verify(issuer, authorization) is Verdict.BAD


def test_tampered_nonce_is_bad(issuer: NonceIssuer) -> None:
    [header, _] = issuer.challenge(REALM)
    nonce = parse_challenge(header).nonce
    flipped = nonce[:3] + ("A" if nonce[3] != "A" else "B") + nonce[4:]
    for forged in (flipped, nonce + "!", nonce[:-1], "", "not base64 at all ~~~"):
        challenge = dataclasses.replace(parse_challenge(header), nonce=forged)
        authorization = format_credentials(
            answer_challenge(
                challenge, method="INVITE", uri="sip:q", username="alice", password="correct horse"
            )
        )
        assert verify(issuer, authorization) is Verdict.BAD, forged


def test_nonce_from_another_secret_or_realm_is_bad(clock: Clock) -> None:
    ours = NonceIssuer(SECRET, clock=clock)
    theirs = NonceIssuer(b"another secret of sixteen bytes", clock=clock)
    assert verify(ours, phone_answers(theirs.challenge(REALM)[0])) is Verdict.BAD
    other_realm = phone_answers(ours.challenge("other.switchboard.test")[0])
    assert verify(ours, other_realm) is Verdict.BAD


def test_wrong_method_is_bad(issuer: NonceIssuer) -> None:
    authorization = phone_answers(issuer.challenge(REALM)[0])
    assert verify(issuer, authorization, method="INVITE") is Verdict.OK
    assert verify(issuer, authorization, method="BYE") is Verdict.BAD


def test_answer_without_qop_is_refused_when_we_asked_for_auth(issuer: NonceIssuer) -> None:
    challenge = dataclasses.replace(parse_challenge(issuer.challenge(REALM)[0]), qop=())
    authorization = format_credentials(
        answer_challenge(
            challenge, method="INVITE", uri="sip:q", username="alice", password="correct horse"
        )
    )
    assert verify(issuer, authorization) is Verdict.BAD


def test_unknown_user_and_wrong_password_get_the_same_answer(issuer: NonceIssuer) -> None:
    lookups: list[str] = []

    def lookup(user: str) -> str | None:
        lookups.append(user)
        return USERS.get(user)

    header = issuer.challenge(REALM)[0]
    results = [
        issuer.verify(
            parse_credentials(phone_answers(header, user=user, password=password)),
            method="INVITE",
            realm=REALM,
            password_lookup=lookup,
        )
        for user, password in [("alice", "wrong"), ("mallory", "wrong"), ("mallory", "")]
    ]
    assert lookups == ["alice", "mallory", "mallory"]
    assert results[0] is results[1] is results[2] is Verdict.BAD


def test_client_state_reuses_the_challenge_with_a_rising_nonce_count(issuer: NonceIssuer) -> None:
    cnonces = (f"c{i}" for i in itertools.count())
    state = ClientAuthState(cnonce_factory=lambda: next(cnonces))
    assert state.authorize(REALM, method="INVITE", uri="sip:q", username="a", password="b") is None

    state.remember(parse_challenge(h) for h in reversed(issuer.challenge(REALM)))
    sent = [
        state.authorize(
            REALM, method="INVITE", uri="sip:q", username="alice", password="correct horse"
        )
        for _ in range(3)
    ]
    assert [c.nc for c in sent if c] == [1, 2, 3]
    assert {c.cnonce for c in sent if c} == {"c0"}
    assert {c.algorithm for c in sent if c} == {Algorithm.SHA256}
    for credentials in sent:
        assert credentials is not None
        assert (
            issuer.verify(credentials, method="INVITE", realm=REALM, password_lookup=USERS.get)
            is Verdict.OK
        )

    state.remember([parse_challenge(issuer.challenge(REALM, stale=True)[0])])
    again = state.authorize(REALM, method="INVITE", uri="sip:q", username="u", password="p")
    assert again is not None
    assert (again.nc, again.cnonce) == (1, "c1")

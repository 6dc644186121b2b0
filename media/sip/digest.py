"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): header values in and out,
the answer a UAC sends, and stateless nonces a UAS issues and checks. No I/O.

MD5 is what RFC 3261 and RFC 2617 mandate and what most SIP phones still speak; it appears here
only as the RFC's hash, never as a general-purpose digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum


class DigestError(ValueError):
    """A header value that is not a usable Digest challenge or credentials."""


class Algorithm(StrEnum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @property
    def is_session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> Algorithm:
        return Algorithm.SHA256 if self.value.startswith("SHA-256") else Algorithm.MD5

    @classmethod
    def from_header(cls, value: str) -> Algorithm:
        for algorithm in cls:
            if algorithm.value.lower() == value.lower():
                return algorithm
        raise DigestError(f"unsupported digest algorithm {value!r}")


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"
    """Right password, expired nonce: challenge again with ``stale=True``."""
    BAD = "bad"


QOP_AUTH = "auth"
QOP_AUTH_INT = "auth-int"
_QOPS = frozenset({QOP_AUTH, QOP_AUTH_INT})
# Strongest first (RFC 8760: SHA-256 is preferred over MD5).
_PREFERENCE = (Algorithm.SHA256_SESS, Algorithm.SHA256, Algorithm.MD5_SESS, Algorithm.MD5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ()
    """Lower-cased; may hold values we do not support, which we never choose."""
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None
    cnonce: str | None = None
    nc: int | None = None
    opaque: str | None = None


# --- auth-param syntax (RFC 7235 §2.1, RFC 9110 §5.6) -------------------------------------------

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters)
_WS = " \t"


def _is_ctl(ch: str) -> bool:
    return (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F


def _scan_token(s: str, i: int) -> int:
    while i < len(s) and s[i] in _TOKEN_CHARS:
        i += 1
    return i


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``s[i] == '"'``; return its value and the next index."""
    out: list[str] = []
    i += 1
    while i < len(s):
        ch = s[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            i += 1
            if i == len(s):
                break
            ch = s[i]
        if _is_ctl(ch):
            raise DigestError("control character in quoted-string")
        out.append(ch)
        i += 1
    raise DigestError("unterminated quoted-string")


def _parse_params(value: str) -> dict[str, str]:
    """Split ``Digest name=value, name="value"`` into lower-cased names and unquoted values."""
    s = value.strip(_WS)
    end = _scan_token(s, 0)
    if s[:end].lower() != "digest":
        raise DigestError("not a Digest header value")
    if end == len(s) or s[end] not in _WS:
        raise DigestError("Digest without parameters")
    params: dict[str, str] = {}
    i = end
    while True:
        # An empty list element (",,") is allowed by the #rule.
        while i < len(s) and (s[i] in _WS or s[i] == ","):
            i += 1
        if i == len(s):
            break
        name_end = _scan_token(s, i)
        if name_end == i:
            raise DigestError(f"expected a parameter name at offset {i}")
        name = s[i:name_end].lower()
        i = _skip_ws(s, name_end)
        if i == len(s) or s[i] != "=":
            raise DigestError(f"expected '=' after {name!r}")
        i = _skip_ws(s, i + 1)
        if i < len(s) and s[i] == '"':
            param, i = _scan_quoted(s, i)
        else:
            value_end = _scan_token(s, i)
            if value_end == i:
                raise DigestError(f"expected a value for {name!r}")
            param, i = s[i:value_end], value_end
        if name in params:
            raise DigestError(f"duplicate parameter {name!r}")
        params[name] = param
        i = _skip_ws(s, i)
        if i < len(s) and s[i] != ",":
            raise DigestError(f"expected ',' at offset {i}")
    return params


def _required(params: dict[str, str], name: str) -> str:
    try:
        return params[name]
    except KeyError:
        raise DigestError(f"missing {name!r}") from None


def _quote(value: str) -> str:
    if any(_is_ctl(ch) for ch in value):
        raise DigestError("control character in a header value")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(value: str) -> str:
    if not value or any(ch not in _TOKEN_CHARS for ch in value):
        raise DigestError(f"{value!r} is not a token")
    return value


# --- header values ---------------------------------------------------------------------------


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` or ``Proxy-Authenticate`` value."""
    params = _parse_params(value)
    qop = tuple(q.strip(_WS).lower() for q in params["qop"].split(",")) if "qop" in params else ()
    return Challenge(
        realm=_required(params, "realm"),
        nonce=_required(params, "nonce"),
        algorithm=Algorithm.from_header(params.get("algorithm", "MD5")),
        qop=tuple(q for q in qop if q),
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
    )


def format_challenge(challenge: Challenge) -> str:
    parts = [f"realm={_quote(challenge.realm)}"]
    if challenge.domain is not None:
        parts.append(f"domain={_quote(challenge.domain)}")
    parts.append(f"nonce={_quote(challenge.nonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if challenge.stale:
        parts.append("stale=TRUE")
    parts.append(f"algorithm={challenge.algorithm.value}")
    if challenge.qop:
        parts.append(f"qop={_quote(','.join(_token(q) for q in challenge.qop))}")
    return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` or ``Proxy-Authorization`` value."""
    params = _parse_params(value)
    qop = params.get("qop")
    nc: int | None = None
    if qop is not None:
        qop = qop.lower()
        if qop not in _QOPS:
            raise DigestError(f"unsupported qop {qop!r}")
        raw_nc = _required(params, "nc")
        if len(raw_nc) != 8 or any(ch not in string.hexdigits for ch in raw_nc):
            raise DigestError("nc must be 8 hex digits")
        nc = int(raw_nc, 16)
        _required(params, "cnonce")
    return Credentials(
        username=_required(params, "username"),
        realm=_required(params, "realm"),
        nonce=_required(params, "nonce"),
        uri=_required(params, "uri"),
        response=_required(params, "response"),
        algorithm=Algorithm.from_header(params.get("algorithm", "MD5")),
        qop=qop,
        cnonce=params.get("cnonce"),
        nc=nc,
        opaque=params.get("opaque"),
    )


def format_credentials(credentials: Credentials) -> str:
    c = credentials
    parts = [
        f"username={_quote(c.username)}",
        f"realm={_quote(c.realm)}",
        f"nonce={_quote(c.nonce)}",
        f"uri={_quote(c.uri)}",
        f"response={_quote(c.response)}",
        f"algorithm={c.algorithm.value}",
    ]
    if c.cnonce is not None:
        parts.append(f"cnonce={_quote(c.cnonce)}")
    if c.opaque is not None:
        parts.append(f"opaque={_quote(c.opaque)}")
    if c.qop is not None:
        if c.nc is None or not 0 <= c.nc <= 0xFFFFFFFF:
            raise DigestError("qop needs an nc between 0 and ffffffff")
        parts.append(f"qop={_token(c.qop)}")
        parts.append(f"nc={c.nc:08x}")
    return "Digest " + ", ".join(parts)


# --- the digest itself (RFC 7616 §3.4.1 to 3.4.3) ----------------------------------------------


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a hostile header must not raise mid-verification.
    return text.encode("utf-8", "surrogatepass")


def _h(algorithm: Algorithm, data: str | bytes) -> str:
    raw = _utf8(data) if isinstance(data, str) else data
    if algorithm.base is Algorithm.SHA256:
        return hashlib.sha256(raw).hexdigest()
    # MD5 is the hash RFC 3261/2617 specify; it is not chosen here for its strength.
    return hashlib.md5(raw).hexdigest()  # noqa: S324


def ha1(algorithm: Algorithm, username: str, realm: str, password: str) -> str:
    """The H(A1) a UAS may store instead of the password (for the non-session algorithm)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def _response(
    algorithm: Algorithm,
    *,
    base_ha1: str,
    nonce: str,
    cnonce: str | None,
    nc: int | None,
    qop: str | None,
    method: str,
    uri: str,
    body: bytes,
) -> str:
    h1 = base_ha1
    if algorithm.is_session:
        h1 = _h(algorithm, f"{h1}:{nonce}:{cnonce or ''}")
    a2 = f"{method}:{uri}"
    if qop == QOP_AUTH_INT:
        a2 += ":" + _h(algorithm, body)
    h2 = _h(algorithm, a2)
    if qop is None:
        return _h(algorithm, f"{h1}:{nonce}:{h2}")
    return _h(algorithm, f"{h1}:{nonce}:{nc or 0:08x}:{cnonce or ''}:{qop}:{h2}")


def _new_cnonce() -> str:
    return secrets.token_urlsafe(18)


def answer_challenge(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    cnonce: str | None = None,
    nc: int = 1,
) -> Credentials:
    """The credentials a UAC sends back; qop=auth is preferred whenever the server offers it."""
    if not challenge.qop:
        qop = None
    elif QOP_AUTH in challenge.qop:
        qop = QOP_AUTH
    elif QOP_AUTH_INT in challenge.qop:
        qop = QOP_AUTH_INT
    else:
        raise DigestError(f"no supported qop among {challenge.qop!r}")
    if qop is not None or challenge.algorithm.is_session:
        cnonce = cnonce if cnonce is not None else _new_cnonce()
    else:
        cnonce = None
    response = _response(
        challenge.algorithm,
        base_ha1=ha1(challenge.algorithm, username, challenge.realm, password),
        nonce=challenge.nonce,
        cnonce=cnonce,
        nc=nc if qop is not None else None,
        qop=qop,
        method=method,
        uri=uri,
        body=body,
    )
    return Credentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=challenge.algorithm,
        qop=qop,
        cnonce=cnonce,
        nc=nc if qop is not None else None,
        opaque=challenge.opaque,
    )


def preferred(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer among several for one realm: the strongest algorithm wins."""
    ranked = sorted(challenges, key=lambda c: _PREFERENCE.index(c.algorithm))
    return ranked[0] if ranked else None


@dataclass(slots=True)
class _Remembered:
    challenge: Challenge
    cnonce: str
    nc: int = 0


@dataclass(slots=True)
class ClientAuthState:
    """What a UAC keeps between requests: the last challenge per realm and its nonce count."""

    cnonce_factory: Callable[[], str] = _new_cnonce
    _realms: dict[str, _Remembered] = field(default_factory=dict)

    def remember(self, challenges: Iterable[Challenge]) -> None:
        """Take the challenges of one 401/407; each realm restarts its nonce count."""
        by_realm: dict[str, list[Challenge]] = {}
        for challenge in challenges:
            by_realm.setdefault(challenge.realm, []).append(challenge)
        for realm, offered in by_realm.items():
            best = preferred(offered)
            assert best is not None
            self._realms[realm] = _Remembered(best, self.cnonce_factory())

    def forget(self, realm: str) -> None:
        self._realms.pop(realm, None)

    def realms(self) -> list[str]:
        return list(self._realms)

    def authorize(
        self,
        realm: str,
        *,
        method: str,
        uri: str,
        username: str,
        password: str,
        body: bytes = b"",
    ) -> Credentials | None:
        """Credentials for the next request to ``realm``, or None when it never challenged us."""
        remembered = self._realms.get(realm)
        if remembered is None:
            return None
        remembered.nc += 1
        return answer_challenge(
            remembered.challenge,
            method=method,
            uri=uri,
            username=username,
            password=password,
            body=body,
            cnonce=remembered.cnonce,
            nc=remembered.nc,
        )


# --- UAS -------------------------------------------------------------------------------------

_STAMP = struct.Struct(">Q8s")
_MAC_BYTES = 32
_NONCE_BYTES = _STAMP.size + _MAC_BYTES


class NonceIssuer:
    """Stateless nonces: issue time and salt signed with HMAC-SHA-256 over the realm."""

    def __init__(self, secret: bytes, lifetime_s: int = 300, *, clock: Callable[[], float]) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self._lifetime_s = lifetime_s
        self._clock = clock
        # Unknown users are checked against these so they cost the same as known ones.
        self._decoy_password = secrets.token_hex(16)
        self._decoy_ha1 = {
            a: _h(a, secrets.token_hex(16)) for a in (Algorithm.MD5, Algorithm.SHA256)
        }

    def nonce(self, realm: str) -> str:
        stamp = _STAMP.pack(int(self._clock()), secrets.token_bytes(8))
        raw = stamp + self._mac(stamp, realm)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def challenge(
        self,
        realm: str,
        *,
        algorithm: Algorithm | str = Algorithm.SHA256,
        also_md5: bool = True,
        stale: bool = False,
        qop: Sequence[str] = (QOP_AUTH,),
    ) -> list[str]:
        """Header values for a 401/407: the chosen algorithm first, then MD5 (RFC 8760 §2.4)."""
        first = Algorithm.from_header(algorithm)
        algorithms = [first]
        if also_md5 and first.base is not Algorithm.MD5:
            algorithms.append(Algorithm.MD5)
        nonce = self.nonce(realm)
        return [
            format_challenge(
                Challenge(realm=realm, nonce=nonce, algorithm=a, qop=tuple(qop), stale=stale)
            )
            for a in algorithms
        ]

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        realm: str,
        password_lookup: Callable[[str], str | None] | None = None,
        ha1_lookup: Callable[[str, Algorithm], str | None] | None = None,
        body: bytes = b"",
        qop: Sequence[str] = (QOP_AUTH,),
    ) -> Verdict:
        """Check credentials against the realm we challenged for.

        Give ``password_lookup(username)`` or ``ha1_lookup(username, base_algorithm)``. The
        caller still checks ``credentials.uri`` against the Request-URI (RFC 3261 §22.4).
        """
        if (password_lookup is None) == (ha1_lookup is None):
            raise TypeError("give exactly one of password_lookup and ha1_lookup")
        c = credentials
        issued_at = self._issued_at(c.nonce, c.realm)
        if issued_at is None or c.realm != realm or c.qop not in qop:
            return Verdict.BAD
        known = True
        algorithm = c.algorithm
        if password_lookup is not None:
            password = password_lookup(c.username)
            if password is None:
                known, password = False, self._decoy_password
            base_ha1 = ha1(algorithm.base, c.username, c.realm, password)
        else:
            assert ha1_lookup is not None
            stored = ha1_lookup(c.username, algorithm.base)
            if stored is None:
                known, stored = False, self._decoy_ha1[algorithm.base]
            base_ha1 = stored.lower()
        expected = _response(
            algorithm,
            base_ha1=base_ha1,
            nonce=c.nonce,
            cnonce=c.cnonce,
            nc=c.nc,
            qop=c.qop,
            method=method,
            uri=c.uri,
            body=body,
        )
        matches = hmac.compare_digest(expected.encode(), _utf8(c.response.lower()))
        if not (matches and known):
            return Verdict.BAD
        # Only a right answer earns STALE: otherwise stale=TRUE would tell a guesser to retry.
        if self._clock() - issued_at > self._lifetime_s:
            return Verdict.STALE
        return Verdict.OK

    def _mac(self, stamp: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, stamp + _utf8(realm), hashlib.sha256).digest()

    def _issued_at(self, nonce: str, realm: str) -> int | None:
        """When we issued ``nonce`` for ``realm``, or None when we did not issue it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        # The decoder skips characters outside the alphabet; only our exact spelling counts.
        if len(raw) != _NONCE_BYTES or base64.urlsafe_b64encode(raw).decode().rstrip("=") != nonce:
            return None
        stamp, mac = raw[: _STAMP.size], raw[_STAMP.size :]
        if not hmac.compare_digest(mac, self._mac(stamp, realm)):
            return None
        issued_at, _salt = _STAMP.unpack(stamp)
        return int(issued_at)

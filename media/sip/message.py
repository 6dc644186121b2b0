"""SIP messages as values: parse one UDP datagram, build and serialise requests and responses.

`sipmessage` supplies the grammar (its URI, Via, CSeq, media-type and parameter rules and its
compact-form table). Its own `Message.parse` is not used: it does not unfold continuation lines,
does not frame the body by Content-Length, groups repeated headers out of order, rejects URIs
with other schemes (RFC 3261 allows any absoluteURI) and mis-parses a quoted display name followed
by another address. Those gaps are closed here.

Framing is for datagrams: the body is Content-Length octets, or the rest of the datagram when
Content-Length is absent; octets after the body are ignored (RFC 3261 §18.3).

Parsing is on every call's path several times over, so it is built for the common case: header
values are indexed by lower-cased name once per message, and the values that recur across a
call's messages and across calls (From, To, Via, Contact, CSeq, Content-Type, URIs) are parsed
once and kept in small bounded caches; everything they yield is frozen, so sharing is safe.
sip/sips URIs and parameter lists without escapes or whitespace skip sipmessage's general path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload
from urllib.parse import unquote

from sipmessage import URI, CSeq, MediaType, Parameters
from sipmessage import grammar as g
from sipmessage.message import COMPACT_FORMS
from sipmessage.uri import SIP_URI_PATTERN
from sipmessage.via import VIA_PATTERN

Params = tuple[tuple[str, str | None], ...]
HeaderList = tuple[tuple[str, str], ...]

_T = TypeVar("_T")

MAX_CSEQ = 2**32 - 1
MAX_FORWARDS = 255

_CANONICAL_NAMES = {
    name.lower(): name
    for name in (
        *COMPACT_FORMS.values(),
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "Call-Info",
        "Content-Disposition",
        "Content-Language",
        "CSeq",
        "Date",
        "Error-Info",
        "Expires",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Timestamp",
        "Unsupported",
        "User-Agent",
        "Warning",
        "WWW-Authenticate",
    )
}
# Headers that RFC 3261 §7.3.1 allows only once; a second copy makes the message ambiguous.
_SINGLE = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type")

_TOKEN_RE = re.compile(f"^{g.TOKEN}$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_VERSION_RE = re.compile(r"^SIP/[0-9]+\.[0-9]+$", re.IGNORECASE)
_STATUS_RE = re.compile(r"^[1-6][0-9][0-9]$")
# sipmessage matches digits with \d, which also accepts non-ASCII digits.
_DIGITS_RE = re.compile(r"^[0-9]+$")
_CSEQ_NUMBER_RE = re.compile(r"^[0-9]+\s")
MAX_PORT = 65535
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NAME_ADDR_RE = re.compile(
    f"^(?P<name>{_QUOTED}|{g.cset(g.C_TOKEN + ' ')}*)"
    f"{g.SWS}<(?P<uri>[^<>\\s]+)>{g.SWS}"
    f"(?P<parameters>(?:{g.SEMI}{g.GENERIC_PARAM})*)",
    re.DOTALL,
)
# In addr-spec form a comma, semicolon or question mark ends the URI (RFC 3261 §20.10).
_ADDR_SPEC_RE = re.compile(f'^(?P<uri>[^\\s;,?<>"]+)(?P<parameters>(?:{g.SEMI}{g.GENERIC_PARAM})*)')
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_LOOSE_VIA_RE = re.compile(r"^SIP\s*/\s*[0-9.]+\s*/\s*[^\s/;,]+\s+[^\s;,]+", re.IGNORECASE)
_LOOSE_CSEQ_RE = re.compile(r"^[0-9]+\s+\S+$")
_WHITESPACE_RE = re.compile(r"\s+")
_ANY_WHITESPACE_RE = re.compile(r"\s")
_NOT_IN_URI_RE = re.compile(r"[\s<>]")
_TO_TAG_RE = re.compile(r";\s*tag\s*=", re.IGNORECASE)

# Bounds for the parse caches: a few seconds of calls at full rate. A full cache is emptied
# rather than trimmed, which costs one re-parse per value and keeps a lookup a plain dict get.
_MEMO_SIZE = 4096
_HEADER_NAME_MEMO_SIZE = 512
# Raw header name as received -> canonical name (only names that are valid tokens get here).
_header_names: dict[str, str] = {}

# What `_Message._validate` reads; an extra header under one of these names in a response we
# build could make it invalid, any other cannot.
_VALIDATED_NAMES = frozenset(
    {
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "contact",
        "route",
        "record-route",
        "content-type",
    }
)


def _memo(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """Cache a pure parse of one header value; failures are not cached and raise every time."""
    cache: dict[str, _T] = {}

    def cached(value: str) -> _T:
        result = cache.get(value)
        if result is None:
            result = parse(value)
            if len(cache) >= _MEMO_SIZE:
                cache.clear()
            cache[value] = result
        return result

    return cached


class _cached(Generic[_T]):
    """`functools.cached_property` without its per-instance lock, which 3.11 takes on every
    first access: messages are built and read on one thread."""

    __slots__ = ("_compute", "_name")

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self._compute = compute
        self._name = compute.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _cached[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> _T | _cached[_T]:
        if instance is None:
            return self
        value = self._compute(instance)
        # A non-data descriptor: once the value is in the instance dict, lookups find it there.
        instance.__dict__[self._name] = value
        return value


class SipParseError(ValueError):
    """A datagram that is not a usable SIP message.

    `respond_400` is True when the datagram is a request whose Via, CSeq, Call-ID, From and To
    can be copied into an error response (`request`); the transport then answers with
    `build_response(error.request, error.status, error.reason)`, where `status` is 400, or 505
    for an unsupported SIP version. Otherwise the datagram is dropped silently.
    """

    def __init__(
        self,
        message: str,
        *,
        respond_400: bool,
        call_id: str | None,
        status: int = 400,
        request: PartialRequest | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = message
        self.respond_400 = respond_400
        self.call_id = call_id
        self.status = status
        self.request = request


@dataclass(frozen=True)
class Keepalive:
    """A datagram of bare CRLFs (RFC 5626 keepalive); there is nothing to answer."""


@dataclass(frozen=True)
class Uri:
    """A URI as the message carries it; `user`/`host`/`port` are filled for sip, sips and tel."""

    text: str
    scheme: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    params: Params = ()
    headers: str = ""

    @classmethod
    def parse(cls, text: str, *, allow_headers: bool = True) -> Uri:
        if cls is not Uri:
            return _parse_uri(cls, text, allow_headers=allow_headers)
        return _uri(text) if allow_headers else _uri_without_headers(text)

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Address:
    """A From, To, Contact, Route or Record-Route value."""

    uri: Uri
    display_name: str = ""
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _param(self.params, name)


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def has_rport(self) -> bool:
        return _has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        value = _param(self.params, "rport")
        return int(value) if value is not None and _DIGITS_RE.match(value) else None


@dataclass(frozen=True)
class PartialRequest:
    """What an unparseable request still offers for an error response (raw header values)."""

    vias: tuple[str, ...]
    from_: str
    to: str
    call_id: str
    cseq: str


@dataclass(frozen=True)
class _Message:
    headers: HeaderList
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of a header (full name, case-insensitive)."""
        values = self._index.get(name.lower())
        return values[0] if values else None

    def header_values(self, name: str) -> tuple[str, ...]:
        return self._index.get(name.lower(), ())

    @_cached
    def _index(self) -> dict[str, tuple[str, ...]]:
        """Values by lower-cased name, in order: one pass instead of a scan per lookup."""
        index: dict[str, tuple[str, ...]] = {}
        for name, value in self.headers:
            key = name.lower()
            found = index.get(key)
            index[key] = (value,) if found is None else (*found, value)
        return index

    @_cached
    def vias(self) -> tuple[Via, ...]:
        values = self.header_values("Via")
        if len(values) == 1:
            return _vias_of(values[0])
        return tuple(v for value in values for v in _vias_of(value))

    @property
    def via(self) -> Via:
        """The top Via, where the response goes."""
        return self.vias[0]

    @_cached
    def from_(self) -> Address:
        return _address(self._single("From"))

    @_cached
    def to(self) -> Address:
        return _address(self._single("To"))

    @_cached
    def call_id(self) -> str:
        value = self._single("Call-ID")
        if not value or _ANY_WHITESPACE_RE.search(value):
            raise ValueError("invalid Call-ID")
        return value

    @_cached
    def cseq(self) -> CSeq:
        return _cseq_of(self._single("CSeq"))

    @_cached
    def max_forwards(self) -> int | None:
        value = self._optional("Max-Forwards")
        if value is None:
            return None
        if not _DIGITS_RE.match(value) or int(value) > MAX_FORWARDS:
            raise ValueError("Max-Forwards out of range")
        return int(value)

    @_cached
    def contact_is_wildcard(self) -> bool:
        """`Contact: *`, used by REGISTER to remove all bindings."""
        values = self.header_values("Contact")
        return len(values) == 1 and values[0].strip() == "*"

    @_cached
    def contacts(self) -> tuple[Address, ...]:
        if self.contact_is_wildcard:
            return ()
        return self._addresses("Contact")

    @_cached
    def routes(self) -> tuple[Address, ...]:
        return self._addresses("Route")

    @_cached
    def record_routes(self) -> tuple[Address, ...]:
        return self._addresses("Record-Route")

    @_cached
    def content_type(self) -> str | None:
        """The MIME type of the body, lower-cased (parameters stay in `headers`)."""
        value = self._optional("Content-Type")
        return None if value is None else _mime_type_of(value)

    def _addresses(self, name: str) -> tuple[Address, ...]:
        values = self.header_values(name)
        if not values:
            return ()
        if len(values) == 1:
            return _addresses_of(values[0])
        return tuple(a for value in values for a in _addresses_of(value))

    def _single(self, name: str) -> str:
        value = self._optional(name)
        if value is None:
            raise ValueError(f"missing {name}")
        return value

    def _optional(self, name: str) -> str | None:
        values = self.header_values(name)
        if len(values) > 1:
            raise ValueError(f"more than one {name}")
        return values[0] if values else None

    def _validate(self) -> None:
        if not self.vias:
            raise ValueError("missing Via")
        # Each read parses (and caches) its header, raising ValueError when it is malformed.
        self.from_  # noqa: B018
        self.to  # noqa: B018
        self.call_id  # noqa: B018
        self.cseq  # noqa: B018
        self.max_forwards  # noqa: B018
        self.contacts  # noqa: B018
        self.routes  # noqa: B018
        self.record_routes  # noqa: B018
        self.content_type  # noqa: B018

    def _serialise(self, start_line: str) -> bytes:
        wire: bytes | None = self.__dict__.get("_wire")
        if wire is None:
            lines = [start_line]
            lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length"]
            lines.append(f"Content-Length: {len(self.body)}")
            wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body
            # Sent once, resent by timers: serialise once.
            self.__dict__["_wire"] = wire
        return wire


@dataclass(frozen=True)
class SipRequest(_Message):
    method: str
    uri: Uri

    @classmethod
    def create(
        cls, method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> SipRequest:
        """A request we send; validated like a received one."""
        headers = tuple(headers)
        created = _created_headers(headers, body)
        if created is not None and _TOKEN_RE.match(method):
            try:
                request = cls(
                    headers=created,
                    body=body,
                    method=method,
                    uri=Uri.parse(uri, allow_headers=False),
                )
                request._validate()
            except ValueError:
                pass
            else:
                if request.cseq.method == method:
                    bytes(request)  # what we could not encode we must not send
                    return request
        # Anything unusual takes the long way, which raises what a receiver would.
        draft = cls(headers=headers, body=body, method=method, uri=Uri.parse(uri))
        message = parse_message(bytes(draft))
        assert isinstance(message, SipRequest)
        return message

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} SIP/2.0")


@dataclass(frozen=True)
class SipResponse(_Message):
    status: int
    reason: str

    @classmethod
    def create(
        cls, status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> SipResponse:
        """A response we send; validated like a received one."""
        headers = tuple(headers)
        created = _created_headers(headers, body)
        if (
            created is not None
            and _STATUS_RE.match(str(status))
            and "\r" not in reason
            and "\n" not in reason
        ):
            response = cls(headers=created, body=body, status=status, reason=reason)
            try:
                response._validate()
            except ValueError:
                pass
            else:
                bytes(response)
                return response
        draft = cls(headers=headers, body=body, status=status, reason=reason)
        message = parse_message(bytes(draft))
        assert isinstance(message, SipResponse)
        return message

    def __bytes__(self) -> bytes:
        return self._serialise(f"SIP/2.0 {self.status} {self.reason}")


def _created_headers(headers: HeaderList, body: bytes) -> HeaderList | None:
    """The headers a message we build would have once serialised and parsed back, or None when
    that round trip could change more than names and spacing (so it must really be made)."""
    created: list[tuple[str, str]] = []
    for name, value in headers:
        canonical = _known_header_name(name)
        if canonical is None or "\r" in value or "\n" in value:
            return None
        if canonical == "Content-Length":
            if name.lower() != "content-length":
                return None  # a compact `l` is serialised as it is
            continue
        created.append((canonical, value.strip(" \t")))
    created.append(("Content-Length", str(len(body))))
    return tuple(created)


def build_response(
    request: SipRequest | PartialRequest,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response per RFC 3261 §8.2.6.2: Vias, From, To (plus our tag), Call-ID and CSeq copied.

    For a PartialRequest the copied values are raw and may not parse, so the result is only fit
    for serialising; its typed accessors may raise ValueError.
    """
    extra = tuple(headers)
    if isinstance(request, SipRequest):
        vias = request.header_values("Via")
        from_, call_id, cseq = request.header("From"), request.call_id, request.header("Cseq")
        to = request.header("To")
        has_tag = request.to.tag is not None
    else:
        vias, from_, to, call_id, cseq = (
            request.vias,
            request.from_,
            request.to,
            request.call_id,
            request.cseq,
        )
        has_tag = _TO_TAG_RE.search(to) is not None
    assert from_ is not None
    assert to is not None
    assert cseq is not None
    if to_tag is not None and not has_tag:
        to = f"{to};tag={to_tag}"
    copied = [("Via", v) for v in vias]
    copied += [("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", cseq)]
    response = SipResponse(headers=(*copied, *extra), body=body, status=status, reason=reason)
    if isinstance(request, SipRequest):
        if any(name.lower() in _VALIDATED_NAMES for name, _ in extra):
            response._validate()
        else:
            # Only the copied values are read, and the request's own parse of each is cached:
            # what is checked is that the copy (and our To tag) still parses.
            if not vias:
                raise ValueError("missing Via")
            for value in vias:
                _vias_of(value)
            _address(from_)
            _address(to)
            _cseq_of(cseq)
    return response


def parse_message(data: bytes) -> SipRequest | SipResponse | Keepalive:
    """Parse one datagram; raises SipParseError, and nothing else, for anything unusable."""
    try:
        return _parse(data)
    except SipParseError:
        raise
    except (ValueError, IndexError, RecursionError) as exc:  # defensive: grammar corner cases
        raise SipParseError(str(exc), respond_400=False, call_id=None) from exc


def _parse(data: bytes) -> SipRequest | SipResponse | Keepalive:
    stripped = data.lstrip(b"\r\n")
    if not stripped:
        if data:
            return Keepalive()
        raise SipParseError("empty datagram", respond_400=False, call_id=None)
    head, blank, rest = stripped.partition(b"\r\n\r\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not UTF-8", respond_400=False, call_id=None) from None
    lines = text.split("\r\n")
    if "\n " in text or "\n\t" in text:
        lines = _unfold(lines)
    start_line = lines[0]
    is_request = not start_line.upper().startswith("SIP/")
    headers: list[tuple[str, str]] = []
    bad_header: str | None = None
    for line in lines[1:]:
        if not line:  # only when the empty line after the headers is missing
            continue
        name, colon, value = line.partition(":")
        canonical = _known_header_name(name) if colon else None
        if canonical is None:
            bad_header = line
            continue
        headers.append((canonical, value.strip(" \t")))

    def fail(reason: str, status: int = 400) -> SipParseError:
        call_id = next((v for n, v in headers if n == "Call-ID"), None)
        # What an error response could copy is worked out only when there is an error.
        partial = _partial(headers) if is_request else None
        return SipParseError(
            reason,
            respond_400=partial is not None,
            call_id=call_id,
            status=status,
            request=partial,
        )

    if bad_header is not None:
        raise fail(f"malformed header line {bad_header[:40]!r}")
    if not blank:
        raise fail("no empty line after the headers")

    lengths = {v for n, v in headers if n == "Content-Length"}
    if len(lengths) > 1:
        raise fail("conflicting Content-Length")
    if lengths:
        length = lengths.pop()
        if not _DIGITS_RE.match(length):
            raise fail("invalid Content-Length")
        if int(length) > len(rest):
            raise fail("Content-Length exceeds the datagram")
        body = rest[: int(length)]
    else:
        body = rest

    message: SipRequest | SipResponse
    if is_request:
        parts = start_line.split(" ")
        if len(parts) != 3:
            raise fail("malformed request line")
        method, uri_text, version = parts
        if not _TOKEN_RE.match(method):
            raise fail("invalid method")
        if not _VERSION_RE.match(version):
            raise fail("malformed request line")
        if version.upper() != "SIP/2.0":
            raise fail("SIP version not supported", 505)
        try:
            uri = Uri.parse(uri_text, allow_headers=False)
        except ValueError as exc:
            raise fail(f"invalid Request-URI: {exc}") from None
        message = SipRequest(headers=tuple(headers), body=body, method=method, uri=uri)
    else:
        version, _, after = start_line.partition(" ")
        code, _, reason = after.partition(" ")
        if version.upper() != "SIP/2.0" or not _STATUS_RE.match(code):
            raise fail("malformed status line")
        message = SipResponse(headers=tuple(headers), body=body, status=int(code), reason=reason)
    try:
        message._validate()
    except ValueError as exc:
        raise fail(str(exc) or "malformed header") from None
    if isinstance(message, SipRequest) and message.cseq.method != message.method:
        raise fail("CSeq method does not match the request method")
    return message


def _unfold(lines: list[str]) -> list[str]:
    unfolded: list[str] = []
    for line in lines:
        if unfolded and line[:1] in (" ", "\t"):
            unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            unfolded.append(line)
    return unfolded


def _known_header_name(raw: str) -> str | None:
    """The canonical name for a header name as written before its colon, or None when it is
    not a token."""
    canonical = _header_names.get(raw)
    if canonical is None:
        name = raw.rstrip(" \t")
        if not _TOKEN_RE.match(name):
            return None
        canonical = _canonical_name(name)
        if len(_header_names) < _HEADER_NAME_MEMO_SIZE:
            _header_names[raw] = canonical
    return canonical


def _canonical_name(name: str) -> str:
    key = name.lower()
    key = COMPACT_FORMS.get(key, key).lower()
    return _CANONICAL_NAMES.get(key, name)


def _partial(headers: list[tuple[str, str]]) -> PartialRequest | None:
    def first(name: str) -> str | None:
        return next((v for n, v in headers if n == name and v), None)

    vias = tuple(v for n, v in headers if n == "Via")
    from_, to, call_id, cseq = first("From"), first("To"), first("Call-ID"), first("CSeq")
    if not vias or not _LOOSE_VIA_RE.match(vias[0]):
        return None
    if from_ is None or to is None or call_id is None or cseq is None:
        return None
    if not _LOOSE_CSEQ_RE.match(cseq):
        return None
    return PartialRequest(vias=vias, from_=from_, to=to, call_id=call_id, cseq=cseq)


def _param(params: Params, name: str) -> str | None:
    key = name.lower()
    for k, v in params:
        if k.lower() == key:
            return v
    return None


def _has_param(params: Params, name: str) -> bool:
    key = name.lower()
    return any(k.lower() == key for k, _ in params)


def _parse_list(parse_one: Callable[[str], tuple[_T, str]], value: str) -> list[_T]:
    """Comma-separated values; sipmessage's own splitter rejects LWS before the comma."""
    rest = _WHITESPACE_RE.sub(" ", value).strip()
    if not rest:
        raise ValueError("empty header value")
    items: list[_T] = []
    while True:
        item, rest = parse_one(rest)
        items.append(item)
        rest = rest.lstrip(" ")
        if not rest:
            return items
        if not rest.startswith(","):
            raise ValueError(f"unexpected {rest[:20]!r}")
        rest = rest[1:].lstrip(" ")


@_memo
def _addresses_of(value: str) -> tuple[Address, ...]:
    return tuple(_parse_list(_addr, value))


@_memo
def _vias_of(value: str) -> tuple[Via, ...]:
    return tuple(_parse_list(_via, value))


@_memo
def _cseq_of(value: str) -> CSeq:
    cseq = CSeq.parse(value)
    if not _CSEQ_NUMBER_RE.match(value) or cseq.sequence > MAX_CSEQ:
        raise ValueError("CSeq number out of range")
    return cseq


@_memo
def _mime_type_of(value: str) -> str:
    return MediaType.parse(value).mime_type.lower()


def _address(value: str) -> Address:
    items = _addresses_of(value)
    if len(items) != 1:
        raise ValueError("expected a single address")
    return items[0]


def _addr(value: str) -> tuple[Address, str]:
    if m := _NAME_ADDR_RE.match(value):
        raw_name = m.group("name").strip()
        quoted = raw_name.startswith('"')
        name = _QUOTED_PAIR_RE.sub(r"\1", raw_name[1:-1]) if quoted else raw_name
        uri = Uri.parse(m.group("uri"))
    elif m := _ADDR_SPEC_RE.match(value):
        name = ""
        uri = Uri.parse(m.group("uri"), allow_headers=False)
    else:
        raise ValueError(f"invalid address {value[:40]!r}")
    params = _params(m.group("parameters"))
    return Address(uri=uri, display_name=name, params=params), value[m.end() :]


def _via(value: str) -> tuple[Via, str]:
    m = VIA_PATTERN.match(value)
    if m is None:
        raise ValueError(f"invalid Via {value[:40]!r}")
    port = m.group("port")
    if port and (not _DIGITS_RE.match(port) or int(port) > MAX_PORT):
        raise ValueError(f"invalid Via port {port!r}")
    params = _params(m.group("parameters"))
    via = Via(
        transport=m.group("transport").upper(),
        host=m.group("host"),
        port=int(port) if port else None,
        params=params,
    )
    return via, value[m.end() :]


def _parse_uri(cls: type[Uri], text: str, *, allow_headers: bool) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or not _SCHEME_RE.match(scheme) or _NOT_IN_URI_RE.search(rest):
        raise ValueError(f"invalid URI {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips", "tel"):
        return cls(text=text, scheme=scheme)
    base, headers = rest, ""
    if scheme != "tel":
        # '?' may occur in the user part, so the headers start after the host.
        at = rest.rfind("@")
        mark = rest.find("?", at + 1)
        if mark >= 0:
            base, headers = rest[:mark], rest[mark + 1 :]
            if not allow_headers or not headers:
                raise ValueError(f"URI headers not allowed here: {text!r}")
        # sipmessage's own first step, without building its Parameters when nothing in them
        # is escaped (the URI holds no whitespace, checked above).
        m = SIP_URI_PATTERN.match(f"{scheme}:{base}")
        if m is not None and "%" not in (raw_params := m.group("parameters")):
            port_text, user = m.group("port"), m.group("user")
            port = int(port_text) if port_text else None
            if port is not None and port > MAX_PORT:
                raise ValueError(f"port out of range in {text!r}")
            return cls(
                text=text,
                scheme=scheme,
                user=unquote(user) if user else None,
                host=m.group("host") or None,
                port=port,
                params=_plain_params(raw_params),
                headers=headers,
            )
    parsed = URI.parse(f"{scheme}:{base}")
    if parsed.port is not None and parsed.port > MAX_PORT:
        raise ValueError(f"port out of range in {text!r}")
    return cls(
        text=text,
        scheme=scheme,
        user=parsed.user,
        host=parsed.host or None,
        port=parsed.port,
        params=tuple(parsed.parameters.items()),
        headers=headers,
    )


@_memo
def _uri(text: str) -> Uri:
    return _parse_uri(Uri, text, allow_headers=True)


@_memo
def _uri_without_headers(text: str) -> Uri:
    return _parse_uri(Uri, text, allow_headers=False)


def _params(text: str) -> Params:
    """`Parameters.parse(text).items()`, directly when nothing is quoted, escaped or spaced."""
    if '"' in text or "%" in text or _ANY_WHITESPACE_RE.search(text):
        return tuple(Parameters.parse(text).items())
    return _plain_params(text)


def _plain_params(text: str) -> Params:
    """';name=value;flag' with no escapes or whitespace, read as sipmessage's Parameters does:
    a repeated name keeps its first place and its last value."""
    if not text:
        return ()
    first, *bits = text.split(";")
    if first:
        raise ValueError("Parameters are not valid")
    found: dict[str, str | None] = {}
    for bit in bits:
        if not bit:
            raise ValueError("Parameters are not valid")
        name, equal, value = bit.partition("=")
        found[name] = value if equal else None
    return tuple(found.items())

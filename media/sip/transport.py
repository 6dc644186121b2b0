"""SIP transports: UDP datagrams and TCP/TLS streams, plus the edge checks applied to raw bytes.

The pure parts come first and hold no sockets: `StreamFramer` cuts a byte stream into messages by
Content-Length (RFC 3261 §18.3), `SourceRateLimiter` is a token bucket per source IP,
`ScannerFilter` spots the User-Agent of SIP scanners without parsing the message, and
`stamp_received`/`response_address` are the Via rules of RFC 3261 §18.2 and RFC 3581. The
asyncio protocols below them only move bytes between a socket and a callback; all SIP decisions
are made by the endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any, Literal, cast

from media.sip.message import SipRequest, SipResponse, Via

logger = logging.getLogger(__name__)

TransportName = Literal["udp", "tcp", "tls"]

MAX_STREAM_MESSAGE = 64 * 1024
# A peer that stops reading while we keep answering would grow our write buffer without bound.
MAX_WRITE_BUFFER = 1024 * 1024
DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"
_CONTENT_LENGTH_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M
)
_DIGITS_RE = re.compile(rb"^[0-9]{1,9}$")


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of a message: the transport and the IP literal and port it used."""

    transport: TransportName
    host: str
    port: int


class TransportError(Exception):
    """A message could not be sent: the connection was refused, lost or never opened."""


@dataclass
class SourceLimits:
    """Edge protection applied to every message before it is parsed."""

    requests_per_second: float = 50.0
    burst: int = 100
    drop_user_agents: tuple[str, ...] = (
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "sip-scan",
        "sundayddr",
        "iWar",
        "sipsak",
        "VaxSIPUserAgent",
        "pplsip",
    )
    # Sources never limited, such as a carrier trunk whose traffic exceeds any per-source bucket.
    exempt_hosts: Container[str] = frozenset()
    """Sources never limited (a carrier's trunk); any container, so it may change live."""


# Stream framing


class FramingError(ValueError):
    """The stream cannot be cut into messages any more; the connection must be closed."""


class Ping:
    """A CRLFCRLF keepalive on a stream (RFC 5626 §3.5.1), answered with a single CRLF."""


PING = Ping()


class StreamFramer:
    """Cut a TCP/TLS byte stream into whole SIP messages.

    The body is Content-Length octets, and a message without Content-Length has no body: on a
    stream there is no datagram end to fall back on (RFC 3261 §18.3). Stray CRLFs between messages
    are keepalive pongs and are skipped; CRLFCRLF is a ping.
    """

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message: int = MAX_STREAM_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    @property
    def pending(self) -> int:
        """Octets of a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Ping]:
        """Add received octets; return the messages (and pings) they complete, in order."""
        buffer = self._buffer
        buffer += data
        out: list[bytes | Ping] = []
        while buffer:
            if buffer[:2] == _CRLF:
                if buffer[:4] == _PING:
                    out.append(PING)
                    del buffer[:4]
                elif len(buffer) < 4 and _PING.startswith(buffer):
                    break  # may still become a ping
                else:
                    del buffer[:2]
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max:
                    raise FramingError("header section too long")
                break
            body_start = end + 4
            length = _content_length(bytes(buffer[:end]))
            total = body_start + length
            if total > self._max:
                raise FramingError(f"message of {total} octets is too large")
            if len(buffer) < total:
                break
            out.append(bytes(buffer[:total]))
            del buffer[:total]
        return out


def _content_length(head: bytes) -> int:
    values = {m.group(1) for m in _CONTENT_LENGTH_RE.finditer(head)}
    if not values:
        return 0
    if len(values) > 1:
        raise FramingError("conflicting Content-Length")
    value = values.pop()
    if not _DIGITS_RE.match(value):
        raise FramingError(f"invalid Content-Length {value[:20]!r}")
    return int(value)


# Edge checks on raw bytes


class SourceRateLimiter:
    """A token bucket per source IP (not per port: one host can use many ports)."""

    __slots__ = ("_buckets", "_burst", "_exempt", "_next_prune", "_rate")

    PRUNE_SIZE = 4096

    def __init__(self, rate: float, burst: int, exempt_hosts: Container[str] = frozenset()) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._exempt = exempt_hosts
        self._buckets: dict[str, list[float]] = {}
        self._next_prune = self.PRUNE_SIZE

    @property
    def sources(self) -> int:
        """How many source IPs have a bucket that is not yet full."""
        return len(self._buckets)

    def allow(self, host: str, now: float) -> bool:
        if self._rate == float("inf") or host in self._exempt:
            return True
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self._next_prune:
                self._prune(now)
            self._buckets[host] = [self._burst - 1.0, now]
            return self._burst >= 1.0
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        """Forget sources whose bucket has refilled: they are indistinguishable from new ones."""
        burst, rate = self._burst, self._rate
        self._buckets = {
            host: bucket
            for host, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * rate < burst
        }
        # Spoofed floods keep every bucket busy; grow the threshold so pruning stays amortised.
        self._next_prune = max(self.PRUNE_SIZE, 2 * len(self._buckets))


class ScannerFilter:
    """Recognise scanner User-Agents in the raw message, before any parsing cost."""

    __slots__ = ("_at_start", "_pattern")

    def __init__(self, user_agents: tuple[str, ...]) -> None:
        self._pattern: re.Pattern[bytes] | None = None
        self._at_start: re.Pattern[bytes] | None = None
        if user_agents:
            names = b"|".join(re.escape(name.encode()) for name in user_agents)
            header = rb"user-agent[ \t]*:[^\r\n]*?(?:" + names + rb")"
            # A header starts a line. The leading newline is a literal the regex engine can
            # scan for, which a multi-line `^` under IGNORECASE is not: this runs on every
            # datagram.
            self._pattern = re.compile(rb"\n" + header, re.I)
            self._at_start = re.compile(header, re.I)

    def __call__(self, data: bytes) -> bool:
        if self._pattern is None or self._at_start is None:
            return False
        return self._pattern.search(data) is not None or self._at_start.match(data) is not None


# Via rules

_NOT_COPIED = frozenset(
    (*(f.name for f in dataclasses.fields(SipRequest)), "_index", "_wire", "vias")
)


def stamp_received(request: SipRequest, peer: Peer) -> SipRequest:
    """Add received (and rport when asked) to the top Via, RFC 3261 §18.2.1 and RFC 3581 §4.

    Done once on receipt, so every response built from the request carries them and routes by
    its own top Via. Only when needed: most carriers put their address in sent-by and no rport.
    """
    via = request.via
    wants_rport = via.has_rport
    if not wants_rport and _bare(via.host) == peer.host.lower():
        return request
    received = f"[{peer.host}]" if ":" in peer.host else peer.host
    params = tuple(p for p in via.params if p[0].lower() not in ("received", "rport"))
    params += (("received", received),)
    if wants_rport:
        params += (("rport", str(peer.port)),)
    stamped = dataclasses.replace(via, params=params)
    vias = (stamped, *request.vias[1:])
    headers: list[tuple[str, str]] = []
    placed = False
    for name, value in request.headers:
        if name != "Via":
            headers.append((name, value))
        elif not placed:
            headers += [("Via", _format_via(v)) for v in vias]
            placed = True
    copy = SipRequest(
        headers=tuple(headers), body=request.body, method=request.method, uri=request.uri
    )
    # Parse once: what the parser already worked out stays valid, only the Vias changed (and
    # with them the header index and the serialised form, which are left to be made again).
    cache = vars(copy)
    for name, value in vars(request).items():
        if name not in _NOT_COPIED:
            cache[name] = value
    cache["vias"] = vias
    return copy


def _format_via(via: Via) -> str:
    params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in via.params)
    return f"SIP/2.0/{via.transport} {via.sent_by}{params}"


def _bare(host: str) -> str:
    return host.strip("[]").lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(_bare(host))
    except ValueError:
        return False
    return True


def response_address(
    message: SipRequest | SipResponse, peer: Peer, *, stream: bool = False
) -> tuple[str, int]:
    """Where a response to `message`'s top Via goes (RFC 3261 §18.2.2, RFC 3581 §4).

    With `stream`, the address to open a new connection to when the request's own connection
    is gone: received (or sent-by) and the sent-by port, never rport.
    """
    try:
        via = message.via
    except (ValueError, IndexError):
        return peer.host, peer.port
    received = via.received
    if received is not None:
        host = _bare(received)
    elif _bare(via.host) == peer.host or not _is_ip(via.host):
        host = peer.host
    else:
        host = _bare(via.host)
    port = via.rport if not stream else None
    return host, port or via.port or DEFAULT_PORTS[peer.transport]


# asyncio protocols

DatagramCallback = Callable[[bytes, tuple[Any, ...], "UdpListener"], None]
StreamCallback = Callable[[bytes, "StreamConnection"], None]
ConnectionCallback = Callable[["StreamConnection"], None]


class UdpListener(asyncio.DatagramProtocol):
    """One bound UDP socket; every datagram goes to the endpoint's callback."""

    def __init__(self, on_datagram: DatagramCallback) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.family = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.port = sockname[1]
        sock = transport.get_extra_info("socket")
        self.family = sock.family if sock is not None else 0

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._on_datagram(data, addr, self)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send; the transaction's timers handle the loss.
        logger.debug("udp error on port %s: %s", self.port, exc)

    def sendto(self, data: bytes, host: str, port: int) -> None:
        if self.transport is None or self.transport.is_closing():
            raise TransportError("udp listener is closed")
        self.transport.sendto(data, (host, port))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or opened, framed into messages."""

    def __init__(
        self,
        transport_name: TransportName,
        on_message: StreamCallback,
        on_open: ConnectionCallback,
        on_lost: ConnectionCallback,
        peer: Peer | None = None,
    ) -> None:
        self.transport_name = transport_name
        self._on_message = on_message
        self._on_open = on_open
        self._on_lost = on_lost
        self._framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        # A connection we open is known by the address we dialled, one we accept by its source.
        self.peer = peer if peer is not None else Peer(transport_name, "", 0)
        self._dialled = peer is not None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self._dialled:
            peername = transport.get_extra_info("peername")
            self.peer = Peer(self.transport_name, peername[0], peername[1])
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        try:
            items = self._framer.feed(data)
        except FramingError as exc:
            logger.info("closing %s connection from %s: %s", self.transport_name, self.peer, exc)
            self.close()
            return
        for item in items:
            if self.closed:
                return
            if isinstance(item, Ping):
                self.write(_CRLF)
            else:
                self._on_message(item, self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise TransportError(f"{self.transport_name} connection to {self.peer} is closed")
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            logger.warning("closing %s: the peer stopped reading", self.peer)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()

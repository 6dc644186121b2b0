"""The SIP endpoint: listeners, transaction matching and retransmission timers.

This is the thin asyncio layer around the pure cores. Each datagram or framed stream message is
checked at the edge (rate limit, scanner User-Agent), parsed once, and matched with one dict
lookup to a server or client transaction from `media.sip.transaction`; the actions the state
machine returns are carried out here. Each transaction owns one `loop.call_at` handle, re-armed
from `next_deadline()` after every event.

Two behaviours go beyond the transaction module, both for the UA's sake:

* After an INVITE server transaction sends a 2xx it lingers for 64*T1 as in RFC 6026's
  "Accepted" state: retransmitted INVITEs are absorbed instead of reaching the UA as new calls,
  and a late CANCEL still matches (answered 200, `on_cancel` is told while the UA still holds
  the transaction; the UA does nothing more).
* Every new request has its top Via stamped with `received` (and `rport` when asked, RFC 3581)
  before the UA sees it, so any response built from it with `build_response` carries them and
  `send(response, tx.peer)` routes like the transaction does (RFC 3261 §18.2.2).

A transaction that only waits out a timer keeps no state machine: Timer J (a non-INVITE
answered over UDP), Timer K (a non-INVITE of ours answered over UDP) and the Accepted state are
small records of what a retransmission needs (the response's octets and where they go, or the To
tag for a late CANCEL) in a `FinishedTransactions` table, and one sweep timer forgets them in
expiry order, at most T1 late. At many calls a second these are most of the transactions alive
at any time; as full objects, each with its parsed messages, they made every collection slow.

A handler may also offer `take_request(tx) -> bool` (see `ImmediateRequestHandler`): requests it
takes are handled within the datagram's own callback, with no task per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from media.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    build_response,
    parse_message,
)
from media.sip.transaction import (
    Action,
    ClientKey,
    Deliver,
    FinishedTransactions,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    ServerKey,
    State,
    Terminated,
    TimedOut,
    TransactionStateError,
    cancel_target_key,
    client_key,
    server_key,
)
from media.sip.transport import (
    Peer,
    ScannerFilter,
    SourceLimits,
    SourceRateLimiter,
    StreamConnection,
    TransportError,
    TransportName,
    UdpListener,
    response_address,
    stamp_received,
)

__all__ = [
    "EndpointStats",
    "ImmediateRequestHandler",
    "Peer",
    "RequestHandler",
    "ServerTransaction",
    "SipEndpoint",
    "SipTimeout",
    "SourceLimits",
    "TransactionStateError",
    "TransportError",
    "TransportName",
    "reason_phrase",
]

logger = logging.getLogger(__name__)

_REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Request Failure", 5: "Server Failure"}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for a status code (RFC 3261 §21 and the common extensions)."""
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Global Failure")


class SipTimeout(Exception):
    """No final response arrived before Timer B (INVITE) or Timer F (other requests) fired."""


class RequestHandler(Protocol):
    async def on_request(self, tx: ServerTransaction) -> None:
        """A new request (never a retransmission, never the ACK of a non-2xx final).

        An ACK for a 2xx arrives here too, with a tx whose respond() raises. CANCEL does not:
        the endpoint answers it and calls on_cancel.
        """

    async def on_cancel(self, invite_tx: ServerTransaction, cancel: SipRequest) -> None:
        """A CANCEL matched this INVITE and was answered 200; 487 the INVITE if still unanswered."""

    def on_stray_response(self, response: SipResponse, peer: Peer) -> None:
        """A response matching no client transaction, chiefly a retransmitted 2xx to an INVITE."""


class ImmediateRequestHandler(RequestHandler, Protocol):
    def take_request(self, tx: ServerTransaction) -> bool:
        """Handle a request now, in the datagram's callback, if that needs no waiting.

        False leaves it to `on_request`, which then runs in a task of its own. An exception is
        treated as one from `on_request`: logged, and the request answered 500 if unanswered.
        """


@dataclass
class EndpointStats:
    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    rate_limited: int = 0
    scanners_dropped: int = 0
    retransmissions_absorbed: int = 0
    stray_responses: int = 0
    handler_errors: int = 0
    timeouts: int = 0
    send_errors: int = 0


_ServerFsm = InviteServerTransaction | NonInviteServerTransaction
_ClientFsm = InviteClientTransaction | NonInviteClientTransaction
_Origin = UdpListener | StreamConnection


class ServerTransaction:
    """A request received and the means to answer it; its retransmissions never reach the UA."""

    __slots__ = (
        "__weakref__",
        "_accepted",
        "_answered",
        "_dest",
        "_endpoint",
        "_fsm",
        "_key",
        "_origin",
        "_timer",
        "_timer_at",
        "_wire",
        "peer",
        "request",
    )

    def __init__(
        self,
        endpoint: SipEndpoint,
        request: SipRequest,
        peer: Peer,
        fsm: _ServerFsm | None,
        key: ServerKey | None,
        origin: _Origin | None,
    ) -> None:
        self.request = request
        self.peer = peer
        self._endpoint = endpoint
        self._fsm = fsm
        self._key = key
        self._origin = origin
        self._dest = (peer.host, peer.port)
        self._answered = False
        self._accepted = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wire: tuple[SipResponse, bytes] | None = None

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.request.call_id} from {self.peer}>"

    @property
    def answered(self) -> bool:
        """A final response was sent."""
        return self._answered

    def respond(self, response: SipResponse) -> None:
        """Send a response; the transaction retransmits it as RFC 3261 §17.2 requires."""
        self._endpoint._respond(self, response)

    def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> SipResponse:
        """Build a response to this request (RFC 3261 §8.2.6), send it and return it."""
        extra = list(headers)
        if not any(name.lower() == "server" for name, _ in extra):
            extra.append(("Server", self._endpoint.user_agent))
        if content_type is not None:
            extra.append(("Content-Type", content_type))
        response = build_response(
            self.request,
            status,
            reason or reason_phrase(status),
            to_tag=to_tag,
            headers=extra,
            body=body,
        )
        self.respond(response)
        return response


class _Completed:
    """A non-INVITE server transaction in its Completed state over UDP: a retransmitted request
    gets the final response again until Timer J."""

    __slots__ = ("data", "dest", "listener")

    def __init__(self, data: bytes, listener: UdpListener, dest: tuple[str, int]) -> None:
        self.data = data
        self.listener = listener
        self.dest = dest


class _Accepted:
    """An INVITE server transaction after its 2xx (RFC 6026 Accepted): retransmitted INVITEs are
    absorbed, a late CANCEL is answered with the 2xx's To tag. The transaction itself is held
    only as long as the UA holds it."""

    __slots__ = ("to_tag", "transaction")

    def __init__(self, transaction: ServerTransaction, to_tag: str | None) -> None:
        self.transaction = weakref.ref(transaction)
        self.to_tag = to_tag


_Finished = _Completed | _Accepted


class _ClientTransaction:
    __slots__ = ("_timer", "_timer_at", "conn", "fsm", "future", "on_provisional", "peer")

    def __init__(
        self,
        fsm: _ClientFsm,
        peer: Peer,
        future: asyncio.Future[SipResponse],
        on_provisional: Callable[[SipResponse], None] | None,
        conn: StreamConnection | None,
    ) -> None:
        self.fsm = fsm
        self.peer = peer
        self.future = future
        self.on_provisional = on_provisional
        self.conn = conn
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None


class SipEndpoint:
    """UDP, TCP and TLS listeners plus the transaction layer for one SIP identity."""

    def __init__(
        self,
        handler: RequestHandler,
        *,
        public_host: str,
        user_agent: str = "Switchboard",
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        limits: SourceLimits | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.public_host = public_host
        self.user_agent = user_agent
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.limits = limits if limits is not None else SourceLimits()
        self.stats = EndpointStats()
        self._client_ssl = client_ssl
        self._limiter = SourceRateLimiter(
            self.limits.requests_per_second, self.limits.burst, self.limits.exempt_hosts
        )
        self._is_scanner = ScannerFilter(self.limits.drop_user_agents)
        self._server: dict[ServerKey, ServerTransaction] = {}
        # Timer J and RFC 6026 §8.7 both run 64*T1; Timer K is T4.
        self._finished = FinishedTransactions[ServerKey, _Finished](64 * t1)
        self._client: dict[ClientKey, _ClientTransaction] = {}
        self._client_finished = FinishedTransactions[ClientKey, bool](t4)
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._udp: list[UdpListener] = []
        self._stream_servers: list[asyncio.Server] = []
        self._ports: dict[str, int] = {}
        self._connections: dict[Peer, StreamConnection] = {}
        self._connecting: dict[Peer, asyncio.Future[StreamConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._immediate_for: object = None
        self._immediate: Callable[[ServerTransaction], bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # Listeners and identity

    async def listen(
        self, transport: TransportName, host: str, port: int, ssl: ssl.SSLContext | None = None
    ) -> int:
        """Start a listener and return its bound port (port 0 picks a free one)."""
        loop = self._running_loop()
        if transport == "udp":
            if ssl is not None:
                raise ValueError("a udp listener takes no ssl context")
            _, listener = await loop.create_datagram_endpoint(
                lambda: UdpListener(self._on_datagram), local_addr=(host, port)
            )
            self._udp.append(listener)
            bound = listener.port
        else:
            if (transport == "tls") != (ssl is not None):
                raise ValueError("a tls listener needs an ssl context and a tcp listener none")
            server = await loop.create_server(
                lambda: self._new_connection(transport), host, port, ssl=ssl
            )
            self._stream_servers.append(server)
            bound = server.sockets[0].getsockname()[1]
        self._ports.setdefault(transport, bound)
        return bound

    def contact(self, transport: TransportName, user: str | None = None) -> str:
        """A Contact value that routes back to this endpoint's listener for `transport`."""
        userinfo = f"{user}@" if user else ""
        params = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:{userinfo}{self._host_port(transport)}{params}>"

    def new_branch(self) -> str:
        return "z9hG4bK" + secrets.token_hex(8)

    def via(self, transport: TransportName) -> str:
        """A top Via for a request we send, with a fresh branch and rport (RFC 3581)."""
        host_port = self._host_port(transport)
        return f"SIP/2.0/{transport.upper()} {host_port};branch={self.new_branch()};rport"

    def _host_port(self, transport: TransportName) -> str:
        port = self._ports.get(transport)
        if port is None:
            raise ValueError(f"no {transport} listener")
        host = self.public_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{port}"

    # Sending

    async def request(
        self,
        request: SipRequest,
        peer: Peer,
        *,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Run a client transaction and return the first final response.

        The ACK for a non-2xx final to an INVITE is sent here; the ACK for a 2xx is the UA's.
        """
        loop = self._running_loop()
        if self._closed:
            raise TransportError("the endpoint is closed")
        if request.method == "ACK":
            raise ValueError("an ACK is not a transaction: send it with send()")
        reliable = peer.transport != "udp"
        if reliable:
            conn: StreamConnection | None = await self._connection(peer)
        else:
            conn = None
            self._udp_for(peer.host)
        fsm: _ClientFsm
        if request.method == "INVITE":
            fsm = InviteClientTransaction(
                request, reliable=reliable, t1=self.t1, t2=self.t2, t4=self.t4
            )
        else:
            fsm = NonInviteClientTransaction(
                request, reliable=reliable, t1=self.t1, t2=self.t2, t4=self.t4
            )
        if fsm.key in self._client or fsm.key in self._client_finished:
            raise ValueError(f"a client transaction with branch {fsm.key[0]} is already running")
        tx = _ClientTransaction(fsm, peer, loop.create_future(), on_provisional, conn)
        self._client[fsm.key] = tx
        self._run_client(tx, fsm.start(loop.time()))
        try:
            return await tx.future
        finally:
            if tx.future.cancelled():
                self._forget_client(tx)

    def send(self, message: SipRequest | SipResponse, peer: Peer) -> None:
        """Send without a transaction: the ACK for a 2xx, 2xx retransmissions, stateless replies.

        A response over UDP goes where its top Via says (received/rport, RFC 3261 §18.2.2), which
        for a response built from `tx.request` is where the transaction would send it.
        """
        data = bytes(message)
        if peer.transport == "udp":
            host, port = peer.host, peer.port
            if isinstance(message, SipResponse):
                host, port = response_address(message, peer)
            self._udp_for(host).sendto(data, host, port)
            self.stats.sent += 1
            return
        conn = self._connections.get(peer)
        if conn is not None and not conn.closed:
            conn.write(data)
            self.stats.sent += 1
            return
        target = peer
        if isinstance(message, SipResponse):
            host, port = response_address(message, peer, stream=True)
            target = Peer(peer.transport, host, port)
        self._spawn(self._connect_and_write(target, data))

    async def close(self) -> None:
        """Stop listening, stop every timer, close connections and fail pending requests."""
        self._closed = True
        for listener in self._udp:
            listener.close()
        for server in self._stream_servers:
            server.close()
        for conn in list(self._connections.values()):
            conn.close()
        for stx in self._server.values():
            _cancel_timer(stx)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._finished.clear()
        self._client_finished.clear()
        for ctx in list(self._client.values()):
            _cancel_timer(ctx)
            if not ctx.future.done():
                ctx.future.set_exception(TransportError("the endpoint is closed"))
        self._server.clear()
        self._client.clear()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._stream_servers:
            await server.wait_closed()
        self._udp.clear()
        self._stream_servers.clear()

    # Receiving

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...], listener: UdpListener) -> None:
        if self._closed:
            return
        stats = self.stats
        stats.received += 1
        host = addr[0]
        if not self._limiter.allow(host, self._now()):
            stats.rate_limited += 1
            return
        if self._is_scanner(data):
            stats.scanners_dropped += 1
            return
        try:
            self._receive(data, Peer("udp", host, addr[1]), listener)
        except Exception:
            logger.exception("failed to handle a datagram from %s:%s", host, addr[1])

    def _on_stream_message(self, data: bytes, conn: StreamConnection) -> None:
        if self._closed:
            return
        stats = self.stats
        stats.received += 1
        peer = conn.peer
        if not self._limiter.allow(peer.host, self._now()):
            stats.rate_limited += 1
            conn.close()
            return
        if self._is_scanner(data):
            stats.scanners_dropped += 1
            conn.close()
            return
        try:
            self._receive(data, peer, conn)
        except Exception:
            logger.exception("failed to handle a message from %s", peer)

    def _receive(self, data: bytes, peer: Peer, origin: _Origin) -> None:
        try:
            message = parse_message(data)
        except SipParseError as error:
            self.stats.parse_errors += 1
            logger.debug("unparseable message from %s: %s", peer, error.reason)
            if error.respond_400 and error.request is not None:
                status = error.status
                response = build_response(
                    error.request, status, reason_phrase(status), headers=self._server_header()
                )
                # The Via of a broken message is not trusted: answer the address it came from.
                self._send_to_origin(origin, bytes(response), peer)
            return
        if type(message) is SipRequest:
            self._receive_request(message, peer, origin)
        elif type(message) is SipResponse:
            self._receive_response(message, peer)

    def _receive_request(self, request: SipRequest, peer: Peer, origin: _Origin) -> None:
        key = server_key(request)
        tx = self._server.get(key)
        if tx is not None:
            self._absorb(tx, request)
            return
        finished = self._finished.get(key)
        if finished is not None:
            self._absorb_finished(finished, request, peer)
            return
        method = request.method
        if method == "ACK":
            self._deliver(ServerTransaction(self, request, peer, None, None, None))
            return
        request = stamp_received(request, peer)
        fsm: _ServerFsm
        if method == "INVITE":
            fsm = InviteServerTransaction(
                request, reliable=peer.transport != "udp", t1=self.t1, t2=self.t2, t4=self.t4
            )
        else:
            fsm = NonInviteServerTransaction(
                request, reliable=peer.transport != "udp", t1=self.t1, t2=self.t2, t4=self.t4
            )
        tx = ServerTransaction(self, request, peer, fsm, key, origin)
        if type(origin) is UdpListener:
            tx._dest = response_address(request, peer)
        self._server[key] = tx
        fsm.start(self._now())  # its only action delivers the request, done below
        if method == "CANCEL":
            self._answer_cancel(tx)
        elif request.max_forwards == 0 and method != "OPTIONS":
            # A UAS may answer OPTIONS itself at Max-Forwards 0 (RFC 3261 §11); anything else
            # reaching us with no hops left is looping.
            tx.reply(483)
        else:
            self._deliver(tx)

    def _absorb(self, tx: ServerTransaction, request: SipRequest) -> None:
        assert tx._fsm is not None
        self.stats.retransmissions_absorbed += 1
        self._run_server(tx, tx._fsm.on_request(request, self._now()))

    def _absorb_finished(self, finished: _Finished, request: SipRequest, peer: Peer) -> None:
        if type(finished) is _Completed:
            self.stats.retransmissions_absorbed += 1
            try:
                finished.listener.sendto(finished.data, *finished.dest)
            except TransportError as exc:
                self.stats.send_errors += 1
                logger.info("could not answer %s again: %s", peer, exc)
                return
            self.stats.sent += 1
        elif request.method == "ACK":
            # Only an RFC 2543 ACK (no magic cookie) shares the INVITE's key: it acknowledges
            # the 2xx and belongs to the UA.
            self._deliver(ServerTransaction(self, request, peer, None, None, None))
        else:
            self.stats.retransmissions_absorbed += 1

    def _answer_cancel(self, cancel_tx: ServerTransaction) -> None:
        cancel = cancel_tx.request
        target = cancel_target_key(cancel)
        invite_tx = self._server.get(target)
        if invite_tx is None:
            accepted = self._finished.get(target)
            if type(accepted) is not _Accepted:
                cancel_tx.reply(481)
                return
            cancel_tx.reply(200, to_tag=accepted.to_tag)
            invite_tx = accepted.transaction()
            if invite_tx is not None:
                self._spawn(self._cancelled(invite_tx, cancel))
            return
        # §9.2: the CANCEL's response carries the To tag of the INVITE's responses, if any.
        last = invite_tx._fsm.last_response if invite_tx._fsm is not None else None
        cancel_tx.reply(200, to_tag=last.to.tag if last is not None else None)
        self._spawn(self._cancelled(invite_tx, cancel))

    def _receive_response(self, response: SipResponse, peer: Peer) -> None:
        key = client_key(response)
        tx = self._client.get(key)
        if tx is None:
            if key in self._client_finished:
                return  # a retransmitted final while Timer K runs
            self.stats.stray_responses += 1
            try:
                self.handler.on_stray_response(response, peer)
            except Exception:
                logger.exception("on_stray_response failed for %s", response.call_id)
            return
        self._run_client(tx, tx.fsm.on_response(response, self._now()))

    # The handler

    def _deliver(self, tx: ServerTransaction) -> None:
        """Hand a request to the handler: at once when it takes it, else in a task."""
        handler = self.handler
        if handler is not self._immediate_for:
            self._immediate_for = handler
            self._immediate = getattr(handler, "take_request", None)
        take = self._immediate
        if take is not None:
            try:
                if take(tx):
                    return
            except Exception:
                self._handler_failed(tx)
                return
        self._spawn(self._dispatch(tx))

    async def _dispatch(self, tx: ServerTransaction) -> None:
        try:
            await self.handler.on_request(tx)
        except Exception:
            self._handler_failed(tx)

    def _handler_failed(self, tx: ServerTransaction) -> None:
        self.stats.handler_errors += 1
        logger.exception("request handler failed on %r", tx)
        if tx._fsm is not None and not tx._answered:
            with contextlib.suppress(TransactionStateError):
                tx.reply(500)

    async def _cancelled(self, invite_tx: ServerTransaction, cancel: SipRequest) -> None:
        try:
            await self.handler.on_cancel(invite_tx, cancel)
        except Exception:
            self.stats.handler_errors += 1
            logger.exception("cancel handler failed on %r", invite_tx)
            if not invite_tx._answered and not invite_tx._accepted:
                with contextlib.suppress(TransactionStateError):
                    invite_tx.reply(487)

    # Server transactions

    def _respond(self, tx: ServerTransaction, response: SipResponse) -> None:
        fsm = tx._fsm
        if fsm is None:
            raise TransactionStateError("an ACK gets no response")
        if tx._accepted:
            if 200 <= response.status < 300:
                # RFC 6026 §7.1: the UA's 2xx retransmissions pass through the Accepted state.
                self._send_response(tx, response)
                return
            raise TransactionStateError(f"cannot send {response.status} after a 2xx")
        actions = fsm.send_response(response, self._now())
        if response.status >= 200:
            tx._answered = True
        self._run_server(tx, actions)

    def _run_server(self, tx: ServerTransaction, actions: list[Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                assert isinstance(action.message, SipResponse)
                self._send_response(tx, action.message)
            elif kind is Terminated:
                self._server_terminated(tx)
                return
            elif kind is TimedOut:
                self.stats.timeouts += 1
                logger.debug("no ACK for the final response to %r", tx)
        fsm = tx._fsm
        if (
            type(fsm) is NonInviteServerTransaction
            and fsm.state is State.COMPLETED
            and type(tx._origin) is UdpListener
            and tx._wire is not None
            and tx._wire[0] is fsm.last_response
        ):
            # All that is left until Timer J is answering retransmissions with these octets.
            self._forget_server(tx)
            if tx._key is not None:
                record = _Completed(tx._wire[1], tx._origin, tx._dest)
                self._linger(self._finished.add(tx._key, record, self._now()))
            return
        self._arm(tx, self._fire_server)

    def _server_terminated(self, tx: ServerTransaction) -> None:
        self._forget_server(tx)
        fsm = tx._fsm
        last = fsm.last_response if fsm is not None else None
        if type(fsm) is InviteServerTransaction and last is not None and last.status < 300:
            tx._accepted = True
            if tx._key is not None:
                record = _Accepted(tx, last.to.tag)
                self._linger(self._finished.add(tx._key, record, self._now()))

    def _forget_server(self, tx: ServerTransaction) -> None:
        _cancel_timer(tx)
        if tx._key is not None and self._server.get(tx._key) is tx:
            del self._server[tx._key]

    def _linger(self, expires: float) -> None:
        """Have the sweep run by `expires`, when a record just added is due."""
        if self._closed or (self._sweeper is not None and self._sweep_at <= expires):
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = expires
        self._sweeper = self._running_loop().call_at(expires, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._now()
        due = [self._finished.expire(now), self._client_finished.expire(now)]
        following = min((at for at in due if at is not None), default=None)
        if following is not None:
            # Batched: a record may outlive its expiry by up to T1, which only lengthens a
            # wait whose RFC duration is a minimum.
            self._linger(max(following, now + self.t1))

    def _fire_server(self, tx: ServerTransaction) -> None:
        now = self._fired(tx)
        try:
            assert tx._fsm is not None
            self._run_server(tx, tx._fsm.on_timer(now))
        except Exception:
            logger.exception("timer failed for %r", tx)

    def _send_response(self, tx: ServerTransaction, response: SipResponse) -> None:
        wire = tx._wire
        if wire is not None and wire[0] is response:
            data = wire[1]
        else:
            data = bytes(response)
            tx._wire = (response, data)
        origin = tx._origin
        try:
            if type(origin) is UdpListener:
                origin.sendto(data, *tx._dest)
            elif type(origin) is StreamConnection and not origin.closed:
                origin.write(data)
            else:
                # §18.2.2: the connection is gone, so open one to the Via's received/sent-by.
                host, port = response_address(response, tx.peer, stream=True)
                self._spawn(self._connect_and_write(Peer(tx.peer.transport, host, port), data))
                return
        except TransportError as exc:
            self.stats.send_errors += 1
            logger.info("could not answer %r: %s", tx, exc)
            return
        self.stats.sent += 1

    # Client transactions

    def _run_client(self, tx: _ClientTransaction, actions: list[Action]) -> None:
        future = tx.future
        for action in actions:
            kind = type(action)
            if kind is Send:
                assert isinstance(action, Send)
                try:
                    self._send_request(tx, action.message)
                except TransportError as exc:
                    self.stats.send_errors += 1
                    self._fail_client(tx, exc)
                    return
            elif kind is Deliver:
                assert isinstance(action, Deliver)
                response = action.message
                assert isinstance(response, SipResponse)
                if response.status < 200:
                    if tx.on_provisional is not None and not future.done():
                        try:
                            tx.on_provisional(response)
                        except Exception:
                            logger.exception("on_provisional failed for %s", response.call_id)
                elif not future.done():
                    future.set_result(response)
            elif kind is TimedOut:
                assert isinstance(action, TimedOut)
                self.stats.timeouts += 1
                if not future.done():
                    method = tx.fsm.request.method
                    future.set_exception(
                        SipTimeout(f"no final response to {method} from {tx.peer}")
                    )
            elif kind is Terminated:
                self._forget_client(tx)
                return
        fsm = tx.fsm
        if type(fsm) is NonInviteClientTransaction and fsm.state is State.COMPLETED:
            # Until Timer K, retransmitted finals are only to be absorbed.
            self._forget_client(tx)
            self._linger(self._client_finished.add(fsm.key, True, self._now()))
            return
        self._arm(tx, self._fire_client)

    def _send_request(self, tx: _ClientTransaction, message: SipRequest | SipResponse) -> None:
        data = bytes(message)
        if tx.conn is not None:
            tx.conn.write(data)
        else:
            peer = tx.peer
            self._udp_for(peer.host).sendto(data, peer.host, peer.port)
        self.stats.sent += 1

    def _fail_client(self, tx: _ClientTransaction, exc: Exception) -> None:
        self._forget_client(tx)
        if not tx.future.done():
            tx.future.set_exception(exc)

    def _forget_client(self, tx: _ClientTransaction) -> None:
        _cancel_timer(tx)
        key = tx.fsm.key
        if self._client.get(key) is tx:
            del self._client[key]

    def _fire_client(self, tx: _ClientTransaction) -> None:
        now = self._fired(tx)
        try:
            self._run_client(tx, tx.fsm.on_timer(now))
        except Exception:
            logger.exception("timer failed for client transaction %s", tx.fsm.key)

    # Timers

    def _arm(self, tx: ServerTransaction | _ClientTransaction, fire: Callable[[Any], None]) -> None:
        fsm = tx._fsm if isinstance(tx, ServerTransaction) else tx.fsm
        deadline = fsm.next_deadline() if fsm is not None else None
        if deadline == tx._timer_at:
            return
        if tx._timer is not None:
            tx._timer.cancel()
        if deadline is None:
            tx._timer = tx._timer_at = None
            return
        tx._timer_at = deadline
        tx._timer = self._running_loop().call_at(deadline, fire, tx)

    def _fired(self, tx: ServerTransaction | _ClientTransaction) -> float:
        """The time to hand the state machine when its timer handle runs.

        Loops may run a handle a little before its deadline (uvloop rounds to milliseconds);
        the deadline itself is then the time, so the due timer fires instead of being lost.
        """
        at = tx._timer_at
        tx._timer = tx._timer_at = None
        now = self._now()
        return now if at is None or now > at else at

    # Connections

    def _new_connection(
        self, transport: TransportName, peer: Peer | None = None
    ) -> StreamConnection:
        return StreamConnection(
            transport,
            self._on_stream_message,
            self._on_connection_open,
            self._on_connection_lost,
            peer,
        )

    def _on_connection_open(self, conn: StreamConnection) -> None:
        self._connections[conn.peer] = conn

    def _on_connection_lost(self, conn: StreamConnection) -> None:
        if self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]
        lost = TransportError(f"connection to {conn.peer} lost")
        for tx in [tx for tx in self._client.values() if tx.conn is conn]:
            if not tx.future.done():
                self._fail_client(tx, lost)

    async def _connection(self, peer: Peer) -> StreamConnection:
        conn = self._connections.get(peer)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(peer)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StreamConnection] = self._running_loop().create_future()
        self._connecting[peer] = future
        try:
            conn = await self._open(peer)
        except TransportError as exc:
            future.set_exception(exc)
            future.exception()  # waiters may be none; do not log it as unretrieved
            raise
        else:
            future.set_result(conn)
            return conn
        finally:
            if not future.done():
                future.cancel()
            del self._connecting[peer]

    async def _open(self, peer: Peer) -> StreamConnection:
        loop = self._running_loop()
        context: ssl.SSLContext | None = None
        if peer.transport == "tls":
            if self._client_ssl is None:
                self._client_ssl = ssl.create_default_context()
            context = self._client_ssl
        elif peer.transport != "tcp":
            raise TransportError(f"{peer.transport} is not a stream transport")
        try:
            async with asyncio.timeout(64 * self.t1):
                _, conn = await loop.create_connection(
                    lambda: self._new_connection(peer.transport, peer),
                    peer.host,
                    peer.port,
                    ssl=context,
                    server_hostname=peer.host if context is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {peer}: {exc}") from exc
        if self._closed:
            conn.close()
            raise TransportError("the endpoint is closed")
        return conn

    async def _connect_and_write(self, peer: Peer, data: bytes) -> None:
        try:
            conn = await self._connection(peer)
            conn.write(data)
        except TransportError as exc:
            self.stats.send_errors += 1
            logger.info("could not send to %s: %s", peer, exc)
            return
        self.stats.sent += 1

    # Plumbing

    def _send_to_origin(self, origin: _Origin, data: bytes, peer: Peer) -> None:
        try:
            if isinstance(origin, UdpListener):
                origin.sendto(data, peer.host, peer.port)
            else:
                origin.write(data)
        except TransportError as exc:
            self.stats.send_errors += 1
            logger.info("could not answer %s: %s", peer, exc)
            return
        self.stats.sent += 1

    def _udp_for(self, host: str) -> UdpListener:
        if not self._udp:
            raise TransportError("no udp listener")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return next((u for u in self._udp if u.family == family), self._udp[0])

    def _server_header(self) -> list[tuple[str, str]]:
        return [("Server", self.user_agent)]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._running_loop().time()


def _cancel_timer(tx: ServerTransaction | _ClientTransaction) -> None:
    if tx._timer is not None:
        tx._timer.cancel()
    tx._timer = tx._timer_at = None

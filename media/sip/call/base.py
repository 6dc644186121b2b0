"""What inbound and outbound calls share once a dialog exists: the in-dialog requests from the
far end, re-INVITE and UPDATE (§14, RFC 3311), BYE (§15), retransmitting our 2xx until its ACK
(§13.3.1.4) and session timers (RFC 4028)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from media.sdp import SdpError, SessionDescription
from media.sip.dialog import (
    Authenticator,
    Dialog,
    DialogState,
    Refusal,
    SessionExpires,
    expiry_margin,
    session_expires_of,
    session_timer_for_uas,
    session_timer_headers,
)
from media.sip.endpoint import ServerTransaction, SipTimeout
from media.sip.message import SipRequest, SipResponse, Uri
from media.sip.transaction import TransactionStateError
from media.sip.transport import DEFAULT_PORTS, Peer, TransportError, TransportName

if TYPE_CHECKING:
    from media.sip.call.user_agent import UserAgent

log = logging.getLogger("media.sip.call")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE"
ACCEPT = "application/sdp"
SUPPORTED = "timer"
_UNDERSTOOD = frozenset({"timer"})
_SDP = "application/sdp"
# Session-Expires we ask for on calls we place (RFC 4028 recommends 1800 s).
DEFAULT_SESSION_EXPIRES = 1800
_TRANSPORTS: dict[str, TransportName] = {"udp": "udp", "tcp": "tcp", "tls": "tls"}

ReofferHandler = Callable[[SessionDescription], SessionDescription]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnd:
    """Why a call ended.

    `cause` is one of "remote_bye", "local_hangup", "cancelled", "ack_timeout",
    "session_expired", "rejected", "failed" or "shutdown". `sip_status` is the final status
    that ended it, when one did (the 486 that rejected an outbound call, the 487 that
    answered a CANCEL)."""

    cause: str
    sip_status: int | None = None
    reason: str | None = None


class CallEnded(Exception):
    """The call is over, so what was asked of it cannot happen."""

    def __init__(self, end: CallEnd) -> None:
        super().__init__(f"the call has ended ({end.cause})")
        self.end = end


class ReofferFailed(Exception):
    """The far end refused our re-INVITE; the call goes on with the media it had."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"re-INVITE refused: {status} {reason}")
        self.status = status
        self.reason = reason


async def resolve_peer(uri: Uri, default_transport: TransportName) -> Peer:
    """Where to send a request for `uri`: its transport parameter, else the transport the
    dialog already uses (a peer that reached us over TCP listens on TCP); A/AAAA lookup only,
    no NAPTR or SRV (RFC 3263)."""
    if uri.scheme == "sips":
        transport: TransportName = "tls"
    else:
        transport = _TRANSPORTS.get((uri.param("transport") or "").lower(), default_transport)
    host = (uri.host or "").strip("[]")
    if not host:
        raise TransportError(f"no host in {uri}")
    port = uri.port or DEFAULT_PORTS[transport]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host}: {exc}") from exc
        host = str(infos[0][4][0])
    return Peer(transport, host, port)


def _quiet(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: no one is obliged to await `answered`."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


class _Retransmission:
    """A 2xx of ours resent at T1, 2*T1, ... (at most T2 apart) until its ACK arrives, for
    64*T1 at most (§13.3.1.4); then the call is hung up. Timer handles, not a task: a call
    that is ACKed at once costs one handle."""

    __slots__ = ("_call", "_deadline", "_handle", "_interval", "_response", "_tx", "acked")

    def __init__(
        self, call: _Call, tx: ServerTransaction, response: SipResponse, cseq: int
    ) -> None:
        loop = asyncio.get_running_loop()
        self._call = call
        self._tx = tx
        self._response = response
        self._interval = call._ua.t1
        now = loop.time()
        self._deadline = now + 64 * call._ua.t1
        self.acked: asyncio.Future[bool] = loop.create_future()
        self._handle = loop.call_at(min(now + self._interval, self._deadline), self._fire, cseq)
        self.acked.add_done_callback(self._stop)

    def _stop(self, _acked: asyncio.Future[bool]) -> None:
        self._handle.cancel()

    def _fire(self, cseq: int) -> None:
        call = self._call
        if self.acked.done() or call.ended.done():
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._deadline:
            call._unacked.pop(cseq, None)
            self.acked.set_result(False)
            call._ua._spawn(call._bye(CallEnd(cause="ack_timeout")))
            return
        try:
            # Through the transaction: it answers from the socket or connection the INVITE
            # came in on.
            self._tx.respond(self._response)
        except (TransportError, TransactionStateError) as exc:
            log.info("call %s: 2xx retransmission failed: %s", call.call_id, exc)
        self._interval = min(2 * self._interval, call._ua.t2)
        at = min(now + self._interval, self._deadline)
        self._handle = loop.call_at(at, self._fire, cseq)


class _Call(ABC):
    """What inbound and outbound calls share once a dialog exists."""

    def __init__(self, ua: UserAgent, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        self._ua = ua
        self.peer = peer
        self.dialog: Dialog | None = None
        self.on_reoffer: ReofferHandler | None = None
        self.ended: asyncio.Future[CallEnd] = loop.create_future()
        self.local_sdp: SessionDescription | None = None
        self.remote_sdp: SessionDescription | None = None
        self._authenticator: Authenticator | None = None
        self._hop: tuple[Uri, Peer] | None = None
        self._unacked: dict[int, asyncio.Future[bool]] = {}
        self._late_offer_cseq: int | None = None
        self._offering = False
        self._remote_allows_update = False
        self._session_interval: int | None = None
        self._we_refresh = False
        self._expiry: asyncio.TimerHandle | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    @abstractmethod
    def call_id(self) -> str:
        """The SIP Call-ID: taken from the INVITE inbound, chosen by us outbound."""

    @property
    def is_over(self) -> bool:
        return self.ended.done()

    async def reoffer(self, offer: SessionDescription) -> SessionDescription:
        """Send a re-INVITE with a new offer (hold, resume) and return the far end's answer.

        Raises ReofferFailed when it is refused (491 means both ends offered at once: try again
        later) and CallEnded when the call is gone."""
        self._check_live()
        dialog = self.dialog
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            raise RuntimeError("a re-INVITE needs an answered call")
        if self._offering or self._unacked:
            raise ReofferFailed(491, "Request Pending")
        self._offering = True
        try:
            request, response = await self._send_in_dialog(
                "INVITE", body=bytes(offer), headers=self._timer_headers()
            )
        except (SipTimeout, TransportError) as exc:
            await self._bye(CallEnd(cause="failed", sip_status=408, reason=str(exc)))
            raise CallEnded(self.ended.result()) from exc
        finally:
            self._offering = False
        if 200 <= response.status < 300:
            await self._ack_2xx(request, response)
            try:
                answer = SessionDescription.parse(response.body)
            except SdpError as exc:
                await self._bye(CallEnd(cause="failed", reason=f"bad SDP answer: {exc}"))
                raise CallEnded(self.ended.result()) from exc
            self.local_sdp, self.remote_sdp = offer, answer
            self._apply_timer_from_response(response)
            return answer
        if response.status in (408, 481):
            # §14.1: the dialog is gone on the far side.
            self._end(CallEnd(cause="failed", sip_status=response.status, reason=response.reason))
            raise CallEnded(self.ended.result())
        raise ReofferFailed(response.status, response.reason)

    # --- in-dialog requests from the far end ---------------------------------------------------

    def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        dialog = self.dialog
        assert dialog is not None
        status = dialog.receive(request)
        if status is not None:
            tx.reply(status, "CSeq Out of Order")
            return
        method = request.method
        if method == "BYE":
            tx.reply(200, "OK")
            self._on_bye(request)
        elif method in ("INVITE", "UPDATE"):
            self._on_offer_or_refresh(tx)
        elif method == "OPTIONS":
            tx.reply(200, "OK", headers=self._ua._capabilities())
        else:
            tx.reply(405, "Method Not Allowed", headers=[("Allow", ALLOW)])

    def _on_bye(self, request: SipRequest) -> None:
        self._end(CallEnd(cause="remote_bye", reason=request.header("Reason")))

    def _on_offer_or_refresh(self, tx: ServerTransaction) -> None:
        """A re-INVITE or UPDATE: new media (hold, resume), a session refresh, or both."""
        request = tx.request
        dialog = self.dialog
        assert dialog is not None
        try:
            timer, offer, answer = self._take_offer(request)
        except Refusal as refusal:
            tx.reply(refusal.status, refusal.reason, headers=refusal.headers)
            return
        headers = [("Contact", dialog.local_contact), ("Allow", ALLOW), ("Supported", SUPPORTED)]
        headers += session_timer_headers(request, timer)
        body = b"" if answer is None else bytes(answer)
        response = tx.reply(
            200, "OK", headers=headers, body=body, content_type=_SDP if body else None
        )
        if offer is not None:
            self.remote_sdp = offer
        if answer is not None:
            self.local_sdp = answer
        if request.method == "INVITE":
            if offer is None:
                self._late_offer_cseq = request.cseq.sequence
            self._retransmit_until_acked(tx, response, request.cseq.sequence)
        self._apply_timer_as_uas(timer)

    def _take_offer(
        self, request: SipRequest
    ) -> tuple[SessionExpires | None, SessionDescription | None, SessionDescription | None]:
        """Check a re-INVITE or UPDATE: its session timer, its offer and our answer to it.
        Raises Refusal with the status to refuse it with."""
        assert self.dialog is not None
        is_invite = request.method == "INVITE"
        if self.dialog.state is not DialogState.CONFIRMED or (
            (is_invite or request.body) and self._offering
        ):
            # §14.2 / RFC 3311 §5.2: our own offer is in flight (glare), or no answer yet.
            raise Refusal(491, "Request Pending")
        if is_invite and self._unacked:
            # §14.2: the previous INVITE is not finished (its ACK has not come).
            retry_after = random.randint(0, 10)  # noqa: S311 - back-off jitter, not a secret
            raise Refusal(500, "Server Internal Error", [("Retry-After", str(retry_after))])
        timer = session_timer_for_uas(request, self._ua.min_se)
        if not request.body:
            # A re-INVITE without SDP asks us to offer (§14.2); an UPDATE without it refreshes.
            return timer, None, self.local_sdp if is_invite else None
        if request.content_type != _SDP:
            raise Refusal(415, "Unsupported Media Type", [("Accept", ACCEPT)])
        try:
            offer = SessionDescription.parse(request.body)
        except SdpError as exc:
            raise Refusal(400, f"Bad SDP ({exc.message})"[:100]) from exc
        previous = self.remote_sdp
        if (
            previous is not None
            and self.local_sdp is not None
            and offer.origin.session_id == previous.origin.session_id
            and offer.origin.version == previous.origin.version
        ):
            # The same description again (RFC 3264 §8): a refresh, so the same answer.
            return timer, offer, self.local_sdp
        if self.on_reoffer is None:
            raise Refusal(488, "Not Acceptable Here")
        try:
            return timer, offer, self.on_reoffer(offer)
        except SdpError as exc:
            raise Refusal(488, "Not Acceptable Here") from exc
        except Exception as exc:
            log.exception("call %s: the re-offer handler failed", self.call_id)
            raise Refusal(500, "Server Internal Error") from exc

    def _on_ack(self, request: SipRequest) -> None:
        sequence = request.cseq.sequence
        acked = self._unacked.pop(sequence, None)
        if acked is not None and not acked.done():
            acked.set_result(True)
        if self._late_offer_cseq == sequence and request.body:
            self._late_offer_cseq = None
            try:
                self.remote_sdp = SessionDescription.parse(request.body)
            except SdpError:
                log.info("call %s: unusable SDP answer in the ACK", self.call_id)

    # --- sending -------------------------------------------------------------------------------

    async def _next_hop(self) -> Peer:
        assert self.dialog is not None
        uri = self.dialog.next_hop()
        if self._hop is None or self._hop[0] != uri:
            self._hop = (uri, await resolve_peer(uri, self.peer.transport))
        return self._hop[1]

    async def _send_in_dialog(
        self,
        method: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[SipRequest, SipResponse]:
        """Send one request in the dialog, answering a digest challenge once per realm."""
        dialog = self.dialog
        assert dialog is not None
        peer = await self._next_hop()
        endpoint = self._ua.endpoint
        auth = self._authenticator
        uri = str(dialog.remote_target)
        extra: list[tuple[str, str]] = []
        if auth is not None:
            auth.begin()
            # Trunks that challenged the INVITE usually challenge BYE too: answer in advance.
            extra = auth.headers(method, uri, body)
        while True:
            request = dialog.request(
                method, via=endpoint.via(peer.transport), headers=[*headers, *extra], body=body
            )
            response = await endpoint.request(request, peer)
            if auth is not None and response.status in (401, 407) and auth.challenged(response):
                extra = auth.headers(method, str(request.uri), body)
                continue
            return request, response

    async def _ack_2xx(self, request: SipRequest, response: SipResponse) -> None:
        """ACK a 2xx to our INVITE, and keep the ACK to repeat for the 2xx's retransmissions."""
        assert self.dialog is not None
        self.dialog.refresh_target(response)
        peer = await self._next_hop()
        ack = self.dialog.ack(request.cseq.sequence, via=self._ua.endpoint.via(peer.transport))
        self._ua._send_ack(ack, peer)

    async def _bye(self, end: CallEnd) -> None:
        """End the call with `end` and send BYE; returns when the BYE is answered or lost."""
        if self.dialog is None or self.ended.done():
            return
        try:
            await self._next_hop()
        except TransportError as exc:
            log.info("call %s: no route for BYE: %s", self.call_id, exc)
            self._end(end)
            return
        if not self._end(end):
            return
        try:
            _, response = await self._send_in_dialog("BYE")
        except (SipTimeout, TransportError) as exc:
            log.info("call %s: BYE got no answer: %s", self.call_id, exc)
            return
        if response.status >= 300:
            log.info("call %s: BYE answered %s", self.call_id, response.status)

    async def _bye_after_ack(self, end: CallEnd) -> None:
        """§15: the callee waits for the ACK of its 2xx (or gives up on it) before a BYE."""
        pending = [f for f in self._unacked.values() if not f.done()]
        if pending:
            waiters: list[asyncio.Future[Any]] = [*pending, self.ended]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        await self._bye(end)

    # --- 2xx retransmission (§13.3.1.4) --------------------------------------------------------

    def _retransmit_until_acked(
        self, tx: ServerTransaction, response: SipResponse, cseq: int
    ) -> asyncio.Future[bool]:
        """Resend our 2xx until its ACK; the future says whether the ACK came. It is settled
        (False) whenever the call ends, so waiting on it alone is enough."""
        retransmission = _Retransmission(self, tx, response, cseq)
        self._unacked[cseq] = retransmission.acked
        return retransmission.acked

    # --- session timers (RFC 4028) -------------------------------------------------------------

    def _apply_timer_as_uas(self, timer: SessionExpires | None) -> None:
        """After our 2xx to a request carrying `timer` (refresher already decided)."""
        if timer is None:
            self._stop_session_timer()
        else:
            self._start_session_timer(timer.interval, we_refresh=timer.refresher == "uas")

    def _apply_timer_from_response(self, response: SipResponse) -> None:
        """After a 2xx to our INVITE, re-INVITE or UPDATE."""
        try:
            timer = session_expires_of(response)
        except ValueError:
            timer = None
        if timer is None:
            self._stop_session_timer()
        else:
            self._start_session_timer(timer.interval, we_refresh=timer.refresher != "uas")

    def _start_session_timer(self, interval: int, *, we_refresh: bool) -> None:
        self._stop_session_timer()
        self._session_interval = interval
        self._we_refresh = we_refresh
        if we_refresh:
            self._refresher = self._ua._spawn(self._refresh_later(interval))
        else:
            delay = interval - expiry_margin(interval)
            self._expiry = asyncio.get_running_loop().call_later(delay, self._session_expired)

    def _stop_session_timer(self) -> None:
        self._session_interval = None
        self._we_refresh = False
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        # The refresher restarts the timer from inside itself once its refresh succeeds.
        if self._refresher is not None and self._refresher is not asyncio.current_task():
            self._refresher.cancel()
        self._refresher = None

    def _session_expired(self) -> None:
        self._expiry = None
        if not self.ended.done():
            log.info("call %s: the session timer expired without a refresh", self.call_id)
            self._ua._spawn(self._bye(CallEnd(cause="session_expired")))

    def _timer_headers(self) -> list[tuple[str, str]]:
        """Session-timer headers for a re-INVITE or UPDATE we send, keeping who refreshes."""
        headers = [("Supported", SUPPORTED)]
        if self._session_interval is not None:
            refresher = "uac" if self._we_refresh else "uas"
            headers += [
                ("Session-Expires", str(SessionExpires(self._session_interval, refresher))),
                ("Min-SE", str(self._ua.min_se)),
            ]
        return headers

    async def _refresh_later(self, interval: int) -> None:
        """We are the refresher: refresh at half the interval, retrying on glare, and hang up
        if the session would expire before a refresh gets through."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + interval - expiry_margin(interval)
        await asyncio.sleep(interval / 2)
        while not self.ended.done() and loop.time() < give_up_at:
            if not self._remote_allows_update and (self._offering or self._unacked):
                await asyncio.sleep(min(1.0, interval / 10))
                continue
            try:
                request, response = await self._send_refresh()
            except (SipTimeout, TransportError) as exc:
                log.info("call %s: session refresh got no answer: %s", self.call_id, exc)
                break
            if 200 <= response.status < 300:
                if request.method == "INVITE":
                    await self._ack_2xx(request, response)
                self._apply_timer_from_response(response)
                return
            if response.status in (408, 481):
                self._end(CallEnd(cause="session_expired", sip_status=response.status))
                return
            if response.status != 491:
                # Refused: the session lives on until it would have expired.
                await asyncio.sleep(max(0.0, give_up_at - loop.time()))
                break
            await asyncio.sleep(random.uniform(0, min(2.0, interval / 10)))  # noqa: S311
        await self._bye(CallEnd(cause="session_expired"))

    async def _send_refresh(self) -> tuple[SipRequest, SipResponse]:
        if self._remote_allows_update:
            return await self._send_in_dialog("UPDATE", headers=self._timer_headers())
        assert self.local_sdp is not None
        self._offering = True
        try:
            return await self._send_in_dialog(
                "INVITE", body=bytes(self.local_sdp), headers=self._timer_headers()
            )
        finally:
            self._offering = False

    # --- ending --------------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self.ended.done():
            raise CallEnded(self.ended.result())

    def _end(self, end: CallEnd) -> bool:
        if self.ended.done():
            return False
        self.ended.set_result(end)
        if self.dialog is not None:
            self.dialog.terminate()
        self._stop_session_timer()
        for acked in self._unacked.values():
            if not acked.done():
                acked.set_result(False)
        self._unacked.clear()
        self._ua._forget(self)
        self._ended(end)
        return True

    def _ended(self, end: CallEnd) -> None:  # noqa: B027 - optional: inbound has nothing more
        """Subclass hook: settle what callers of this kind of call wait on."""

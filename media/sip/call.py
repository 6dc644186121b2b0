"""Call control over a `SipEndpoint`: the user agent that owns every dialog on it, calls that come
in (`InboundCall`) and calls we place (`OutboundCall`).

The dialog arithmetic is in `media.sip.dialog`; transactions, sockets and retransmission of
requests are the endpoint's. What lives here is the part of RFC 3261 that spans transactions:
retransmitting our 2xx until its ACK arrives (§13.3.1.4), ACKing every 2xx we receive,
CANCEL (§9), re-INVITE and UPDATE with their glare rules (§14, RFC 3311), BYE (§15), digest
retries (§22.2), and session timers (RFC 4028).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from media.sdp import SdpError, SessionDescription
from media.sip.dialog import (
    MIN_SE_FLOOR,
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
    first_cseq,
    min_se_of,
    new_call_id,
    new_tag,
    session_expires_of,
    session_timer_for_uas,
    session_timer_headers,
)
from media.sip.endpoint import ServerTransaction, SipEndpoint, SipTimeout
from media.sip.message import SipRequest, SipResponse, Uri
from media.sip.transaction import TransactionStateError
from media.sip.transport import DEFAULT_PORTS, Peer, TransportError, TransportName

log = logging.getLogger(__name__)

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


class _Call:
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
    def call_id(self) -> str:
        raise NotImplementedError

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

    async def _on_request(self, tx: ServerTransaction) -> None:
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
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._unacked[cseq] = acked
        self._ua._spawn(self._retransmit(tx, response, cseq, acked))
        return acked

    async def _retransmit(
        self, tx: ServerTransaction, response: SipResponse, cseq: int, acked: asyncio.Future[bool]
    ) -> None:
        ua = self._ua
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 64 * ua.t1
        interval = ua.t1
        while not acked.done() and not self.ended.done():
            wait = min(interval, deadline - loop.time())
            if wait <= 0:
                break
            waiters: list[asyncio.Future[Any]] = [acked, self.ended]
            await asyncio.wait(waiters, timeout=wait)
            if acked.done() or self.ended.done():
                return
            if loop.time() >= deadline:
                break
            try:
                # Through the transaction: it answers from the socket or connection the
                # INVITE came in on.
                tx.respond(response)
            except (TransportError, TransactionStateError) as exc:
                log.info("call %s: 2xx retransmission failed: %s", self.call_id, exc)
            interval = min(2 * interval, ua.t2)
        if acked.done() or self.ended.done():
            return
        self._unacked.pop(cseq, None)
        acked.set_result(False)
        await self._bye(CallEnd(cause="ack_timeout"))

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

    def _ended(self, end: CallEnd) -> None:
        """Subclass hook: settle what callers of this kind of call wait on."""


class InboundCall(_Call):
    """A call offered to us by an INVITE. Answer, reject or let it ring; `ended` says how it
    ended. A CANCEL before the answer ends it (cause "cancelled") and no 200 follows."""

    def __init__(
        self,
        ua: UserAgent,
        tx: ServerTransaction,
        offer: SessionDescription | None,
        timer: SessionExpires | None,
    ) -> None:
        super().__init__(ua, tx.peer)
        self.request = tx.request
        self.offer = offer
        self.remote_sdp = offer
        self._tx = tx
        self._timer = timer
        self._final_sent = False
        self._remote_allows_update = "UPDATE" in allowed_methods(tx.request)
        self.dialog = Dialog.as_uas(
            tx.request,
            local_tag=new_tag(),
            local_contact=ua.endpoint.contact(tx.peer.transport),
            secure=tx.peer.transport == "tls",
        )

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def ringing(self) -> None:
        """Send 180 Ringing. Ringing a call that has ended or been answered does nothing."""
        if self.ended.done() or self._final_sent:
            return
        self._tx.reply(180, "Ringing", headers=self._dialog_headers(), to_tag=self._local_tag)

    def reject(
        self, status: int, reason: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Refuse the call with a final status from 300 to 699."""
        if not 300 <= status < 700:
            raise ValueError(f"{status} is not a final refusal")
        self._check_live()
        if self._final_sent:
            raise RuntimeError("the call is answered; hang up instead")
        self._final_sent = True
        sent = self._tx.reply(status, reason, headers=headers, to_tag=self._local_tag)
        self._end(CallEnd(cause="rejected", sip_status=status, reason=sent.reason))

    async def answer(self, answer_sdp: SessionDescription) -> None:
        """Send 200 OK with `answer_sdp` (our offer, when the INVITE had none) and return once the
        caller's ACK arrives. Raises CallEnded if the call ends first (CANCEL, BYE, no ACK)."""
        self._check_live()
        if self._final_sent:
            raise RuntimeError("the call has already had its final response")
        headers = self._dialog_headers()
        headers += session_timer_headers(self.request, self._timer)
        self._final_sent = True
        response = self._tx.reply(
            200,
            "OK",
            headers=headers,
            body=bytes(answer_sdp),
            content_type=_SDP,
            to_tag=self._local_tag,
        )
        self.local_sdp = answer_sdp
        assert self.dialog is not None
        self.dialog.confirm()
        cseq = self.request.cseq.sequence
        if self.offer is None:
            self._late_offer_cseq = cseq
        acked = self._retransmit_until_acked(self._tx, response, cseq)
        self._apply_timer_as_uas(self._timer)
        waiters: list[asyncio.Future[Any]] = [acked, self.ended]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not (acked.done() and acked.result()):
            await asyncio.shield(self.ended)
            raise CallEnded(self.ended.result())

    async def hangup(self, reason: str = "normal") -> None:
        """BYE once answered (after the ACK, §15); 480 before. Raises CallEnded if already over."""
        await self._terminate(CallEnd(cause="local_hangup", reason=reason), 480)

    async def _terminate(self, end: CallEnd, early_status: int) -> None:
        self._check_live()
        if not self._final_sent:
            self._final_sent = True
            self._tx.reply(early_status, None, to_tag=self._local_tag)
            self._end(end)
            return
        await self._bye_after_ack(end)

    def _on_cancel(self) -> None:
        if self._final_sent or self.ended.done():
            return  # the 200 went first: the call goes on, and the CANCEL's 200 was enough
        self._final_sent = True
        self._tx.reply(487, "Request Terminated", to_tag=self._local_tag)
        self._end(CallEnd(cause="cancelled", sip_status=487))

    def _on_bye(self, request: SipRequest) -> None:
        if not self._final_sent:
            # RFC 3261 §15.1.2: a BYE in the early dialog terminates the INVITE too.
            self._final_sent = True
            self._tx.reply(487, "Request Terminated", to_tag=self._local_tag)
        super()._on_bye(request)

    @property
    def _local_tag(self) -> str:
        assert self.dialog is not None
        return self.dialog.local_tag

    def _dialog_headers(self) -> list[tuple[str, str]]:
        """What a dialog-creating response carries (§12.1.1): Record-Route copied, Contact."""
        assert self.dialog is not None
        return [
            ("Contact", self.dialog.local_contact),
            *(("Record-Route", value) for value in self.request.header_values("Record-Route")),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
        ]


class OutboundCall(_Call):
    """A call we place. `ringing` is set on 180/183, `answered` gives the far end's SDP answer
    (or raises CallEnded), `ended` says how it ended."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        target: str,
        peer: Peer,
        from_uri: str,
        to_uri: str,
        offer: SessionDescription,
        from_name: str | None,
        login: Login | None,
        headers: Sequence[tuple[str, str]],
        route: Sequence[str],
    ) -> None:
        super().__init__(ua, peer)
        loop = asyncio.get_running_loop()
        self.target = target
        self.offer = offer
        self.local_sdp = offer
        self.login = login
        self._authenticator = Authenticator(login) if login is not None else None
        self.ringing = asyncio.Event()
        self.answered: asyncio.Future[SessionDescription] = loop.create_future()
        _quiet(self.answered)
        self.early_media: SessionDescription | None = None
        self._call_id = new_call_id()
        self._local_tag = new_tag()
        name = f'"{from_name}" ' if from_name else ""
        self._from = f"{name}<{from_uri}>;tag={self._local_tag}"
        self._to = f"<{to_uri}>"
        self._contact = ua.endpoint.contact(peer.transport)
        self._headers = list(headers)
        self._route = list(route)
        self._cseq = first_cseq()
        self.invite: SipRequest | None = None
        """The INVITE last sent (after a digest challenge, the authenticated one)."""
        self._provisional = False
        self._cancelling = False
        self._cancel_end = CallEnd(cause="cancelled")
        self._cancel_sent = False
        self._run: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self._call_id

    @property
    def local_tag(self) -> str:
        return self._local_tag

    def _start(self) -> None:
        self._run = self._ua._spawn(self._place())

    async def cancel(self) -> None:
        """CANCEL while unanswered (sent once a provisional response has come, §9.1); on an
        answered call this is `hangup()`. Returns when the call has ended."""
        if self.answered.done() and not self.ended.done():
            await self.hangup()
            return
        await self._terminate(CallEnd(cause="cancelled"))

    async def hangup(self, reason: str = "normal") -> None:
        """BYE once answered, CANCEL before. Raises CallEnded if the call is already over."""
        await self._terminate(CallEnd(cause="local_hangup", reason=reason))

    async def _terminate(self, end: CallEnd) -> None:
        self._check_live()
        if self.dialog is not None and self.dialog.state is DialogState.CONFIRMED:
            await self._bye(end)
            return
        self._cancelling = True
        self._cancel_end = end
        if self._provisional and not self._cancel_sent:
            await self._send_cancel()
        await asyncio.shield(self.ended)

    # --- placing the call ----------------------------------------------------------------------

    def _build_invite(self, extra: Sequence[tuple[str, str]], interval: int) -> SipRequest:
        endpoint = self._ua.endpoint
        body = bytes(self.offer)
        headers = [
            ("Via", endpoint.via(self.peer.transport)),
            ("Max-Forwards", "70"),
            ("From", self._from),
            ("To", self._to),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} INVITE"),
            ("Contact", self._contact),
            *(("Route", value) for value in self._route),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("Session-Expires", str(interval)),
            ("Min-SE", str(self._ua.min_se)),
            *self._headers,
            *extra,
            ("Content-Type", _SDP),
        ]
        return SipRequest.create("INVITE", self.target, headers, body)

    async def _place(self) -> None:
        interval = self._ua.session_expires
        extra: list[tuple[str, str]] = []
        auth = self._authenticator
        if auth is not None:
            auth.begin()
        retried_interval = False
        while True:
            invite = self._build_invite(extra, interval)
            self.invite = invite
            try:
                response = await self._ua.endpoint.request(
                    invite, self.peer, on_provisional=self._on_provisional
                )
            except SipTimeout:
                self._fail(408, "Request Timeout")
                return
            except TransportError as exc:
                self._fail(503, f"Service Unavailable ({exc})")
                return
            if self._cancelling and response.status >= 300:
                self._end(self._cancelled_end(response.status, response.reason))
                return
            retry = False
            if auth is not None and response.status in (401, 407) and auth.challenged(response):
                extra = auth.headers("INVITE", self.target, invite.body)
                retry = True
            elif response.status == 422 and not retried_interval:
                with contextlib.suppress(ValueError):
                    minimum = min_se_of(response)
                    if minimum is not None and minimum > interval:
                        interval, retried_interval, retry = minimum, True, True
            if retry and not self._cancelling:
                self._cseq += 1
                continue
            break
        if 200 <= response.status < 300:
            await self._answered(invite, response)
        else:
            self._end(CallEnd(cause="rejected", sip_status=response.status, reason=response.reason))

    def _fail(self, status: int, reason: str) -> None:
        if self._cancelling:
            self._end(self._cancelled_end(status, reason))
        else:
            self._end(CallEnd(cause="failed", sip_status=status, reason=reason))

    def _cancelled_end(self, status: int | None, reason: str | None) -> CallEnd:
        end = self._cancel_end
        return CallEnd(cause=end.cause, sip_status=status, reason=end.reason or reason)

    def _on_provisional(self, response: SipResponse) -> None:
        self._provisional = True
        if response.status in (180, 183):
            self.ringing.set()
        if response.body and response.content_type == _SDP:
            with contextlib.suppress(SdpError):
                self.early_media = SessionDescription.parse(response.body)
        if self._cancelling and not self._cancel_sent:
            self._ua._spawn(self._send_cancel())

    async def _send_cancel(self) -> None:
        """§9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route and top Via."""
        invite = self.invite
        if self._cancel_sent or invite is None or self.ended.done():
            return
        self._cancel_sent = True
        via = invite.header_values("Via")[0]
        headers = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", self._from),
            ("To", self._to),
            ("Call-ID", self._call_id),
            ("CSeq", f"{invite.cseq.sequence} CANCEL"),
            *(("Route", value) for value in self._route),
        ]
        cancel = SipRequest.create("CANCEL", str(invite.uri), headers)
        with contextlib.suppress(SipTimeout, TransportError):
            await self._ua.endpoint.request(cancel, self.peer)
        # The 487 should follow; a UAS that never sends it must not hold the call open (§9.1).
        # Should its 2xx come later after all, it is a stray response: ACKed and hung up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), 64 * self._ua.t1)
            return
        self._end(self._cancelled_end(None, "no final response to CANCEL"))
        if self._run is not None:
            self._run.cancel()

    async def _answered(self, invite: SipRequest, response: SipResponse) -> None:
        try:
            dialog = Dialog.as_uac(
                invite, response, local_contact=self._contact, secure=self.peer.transport == "tls"
            )
        except DialogError as exc:
            log.warning("call %s: unusable 2xx: %s", self.call_id, exc)
            self._fail(502, f"Bad Gateway ({exc})")
            return
        self.dialog = dialog
        self._remote_allows_update = "UPDATE" in allowed_methods(response)
        if not self.ended.done():
            self._ua._register(self)
        await self._ack_2xx(invite, response)
        if self._cancelling:
            # Cancelled while the 200 was on its way: it still gets its ACK, then a BYE.
            await self._bye(self._cancelled_end(None, None))
            return
        try:
            answer = SessionDescription.parse(response.body)
        except SdpError as exc:
            await self._bye(CallEnd(cause="failed", reason=f"no usable SDP answer: {exc}"))
            return
        self.remote_sdp = answer
        self.answered.set_result(answer)
        self._apply_timer_from_response(response)

    def _on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx to our INVITE whose ACK we no longer hold: ACK it again if it is this call's
        dialog; if it comes from another branch of a forked INVITE, or after we gave up on the
        call, ACK it and hang that leg up."""
        if self.invite is None:
            return
        dialog = self.dialog
        if dialog is not None and not self.ended.done() and response.to.tag == dialog.remote_tag:
            self._ua._spawn(self._ack_2xx(self.invite, response))
            return
        try:
            fork = Dialog.as_uac(self.invite, response, local_contact=self._contact)
        except DialogError:
            return
        leg = _Fork(self._ua, self.peer, fork, self._authenticator)
        self._ua._spawn(leg.ack_and_bye(self.invite, response))

    def _ended(self, end: CallEnd) -> None:
        if not self.answered.done():
            self.answered.set_exception(CallEnded(end))


class _Fork(_Call):
    """A dialog from a forked 2xx that lost the race; it exists only to be ACKed and ended."""

    def __init__(
        self, ua: UserAgent, peer: Peer, dialog: Dialog, authenticator: Authenticator | None
    ) -> None:
        super().__init__(ua, peer)
        self.dialog = dialog
        self._authenticator = authenticator

    @property
    def call_id(self) -> str:
        assert self.dialog is not None
        return self.dialog.call_id

    async def ack_and_bye(self, invite: SipRequest, response: SipResponse) -> None:
        try:
            await self._ack_2xx(invite, response)
        except TransportError as exc:
            log.info("call %s: cannot ACK a forked 2xx: %s", self.call_id, exc)
            return
        await self._bye(CallEnd(cause="local_hangup", reason="forked answer"))


class UserAgent:
    """The request handler of a `SipEndpoint`: every dialog on it, and the calls they carry.

    Create it, give it to the endpoint, then `bind(endpoint)`. `on_invite` runs for each new
    call, after 100 Trying has gone out, in a task of its own."""

    def __init__(
        self,
        *,
        on_invite: Callable[[InboundCall], Awaitable[None]],
        min_se: int = MIN_SE_FLOOR,
        session_expires: int = DEFAULT_SESSION_EXPIRES,
    ) -> None:
        self._on_invite = on_invite
        self.min_se = min_se
        """The shortest session interval we accept (RFC 4028: 90 s unless a test lowers it)."""
        self.session_expires = max(session_expires, min_se)
        self._endpoint: SipEndpoint | None = None
        self._dialogs: dict[DialogId, _Call] = {}
        self._inbound: dict[int, InboundCall] = {}
        self._pending_invites: dict[tuple[str, str, int], InboundCall] = {}
        self._outbound: dict[tuple[str, str], OutboundCall] = {}
        self._live: set[_Call] = set()
        self._acks: dict[tuple[str, str, str, int], tuple[SipRequest, Peer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def bind(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint

    @property
    def endpoint(self) -> SipEndpoint:
        if self._endpoint is None:
            raise RuntimeError("the user agent has no endpoint yet: call bind()")
        return self._endpoint

    @property
    def t1(self) -> float:
        return self.endpoint.t1

    @property
    def t2(self) -> float:
        return self.endpoint.t2

    def calls(self) -> list[InboundCall | OutboundCall]:
        return [c for c in self._live if isinstance(c, InboundCall | OutboundCall)]

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED)]

    async def originate(
        self,
        *,
        target: str,
        peer: Peer,
        from_uri: str,
        offer: SessionDescription,
        to_uri: str | None = None,
        from_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        route: Sequence[str] = (),
    ) -> OutboundCall:
        """Send an INVITE for `target` (the Request-URI) to `peer` and return the call at once;
        it answers digest challenges with `username`/`password`."""
        if self._closing:
            raise RuntimeError("the user agent is shutting down")
        login = Login(username, password or "") if username else None
        call = OutboundCall(
            self,
            target=target,
            peer=peer,
            from_uri=from_uri,
            to_uri=to_uri or target,
            offer=offer,
            from_name=from_name,
            login=login,
            headers=headers,
            route=route,
        )
        self._live.add(call)
        self._outbound[(call.call_id, call.local_tag)] = call
        call._start()
        return call

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Refuse new calls with 503 and end every call: BYE when answered, CANCEL or 480 before.
        Returns when each BYE is answered (or has timed out)."""
        self._closing = True
        end = CallEnd(cause="shutdown", reason=reason)
        ending = []
        for call in list(self._live):
            if isinstance(call, InboundCall):
                ending.append(call._terminate(end, 480))
            elif isinstance(call, OutboundCall):
                ending.append(call._terminate(end))
        results = await asyncio.gather(*ending, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, CallEnded):
                log.warning("ending a call at shutdown failed: %r", result)

    # --- RequestHandler ------------------------------------------------------------------------

    async def on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        dialog_id = DialogId.of_request(request)
        if request.method == "ACK":
            call = self._dialogs.get(dialog_id) if dialog_id is not None else None
            if call is not None:
                call._on_ack(request)
            return
        if dialog_id is not None:
            call = self._dialogs.get(dialog_id)
            if call is None:
                tx.reply(481, "Call/Transaction Does Not Exist")
                return
            await call._on_request(tx)
            return
        method = request.method
        if method == "INVITE":
            self._on_new_invite(tx)
        elif method == "OPTIONS":
            tx.reply(200, "OK", headers=self._capabilities())
        elif method in ("BYE", "UPDATE", "PRACK", "INFO"):
            tx.reply(481, "Call/Transaction Does Not Exist")
        else:
            tx.reply(405, "Method Not Allowed", headers=[("Allow", ALLOW)])

    async def on_cancel(self, invite_tx: ServerTransaction, cancel: SipRequest) -> None:
        call = self._inbound.get(id(invite_tx))
        if call is not None and call._tx is invite_tx:
            call._on_cancel()
        elif not invite_tx.answered:
            # The CANCEL overtook the INVITE's own handling; it still gets its final.
            invite_tx.reply(487, "Request Terminated", to_tag=new_tag())

    def on_stray_response(self, response: SipResponse, peer: Peer) -> None:
        if response.cseq.method != "INVITE" or not 200 <= response.status < 300:
            return
        local, remote = response.from_.tag, response.to.tag
        if not local or not remote:
            return
        sent = self._acks.get((response.call_id, local, remote, response.cseq.sequence))
        if sent is not None:
            ack, ack_peer = sent
            try:
                self.endpoint.send(ack, ack_peer)
            except TransportError as exc:
                log.info("re-ACK of %s failed: %s", response.call_id, exc)
            return
        call = self._outbound.get((response.call_id, local))
        if call is not None:
            call._on_stray_2xx(response)

    # --- bookkeeping for calls -----------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("call task failed", exc_info=exc)

    def _register(self, call: _Call) -> None:
        assert call.dialog is not None
        self._dialogs[call.dialog.id] = call

    def _forget(self, call: _Call) -> None:
        self._live.discard(call)
        if call.dialog is not None and self._dialogs.get(call.dialog.id) is call:
            del self._dialogs[call.dialog.id]
        if isinstance(call, InboundCall):
            self._inbound.pop(id(call._tx), None)
            key = _merge_key(call.request)
            if self._pending_invites.get(key) is call:
                del self._pending_invites[key]
        elif isinstance(call, OutboundCall):
            # Kept a while: a 2xx that comes after we gave up still gets its ACK and a BYE.
            placed = (call.call_id, call.local_tag)
            asyncio.get_running_loop().call_later(64 * self.t1, self._outbound.pop, placed, None)

    def _send_ack(self, ack: SipRequest, peer: Peer) -> None:
        """Send an ACK for a 2xx and keep it for 64*T1, to answer the 2xx's retransmissions."""
        key = (ack.call_id, ack.from_.tag or "", ack.to.tag or "", ack.cseq.sequence)
        self._acks[key] = (ack, peer)
        asyncio.get_running_loop().call_later(64 * self.t1, self._acks.pop, key, None)
        try:
            self.endpoint.send(ack, peer)
        except TransportError as exc:
            log.info("ACK for %s failed: %s", ack.call_id, exc)

    def _on_new_invite(self, tx: ServerTransaction) -> None:
        request = tx.request
        if tx.answered:
            return  # cancelled before we got to it
        if self._closing:
            tx.reply(503, "Service Unavailable", headers=[("Retry-After", "30")])
            return
        key = _merge_key(request)
        known = self._pending_invites.get(key)
        if known is not None:
            if known.request.via.branch == request.via.branch:
                # A retransmission after our 2xx ended the transaction: the 2xx is being
                # retransmitted already (§13.3.1.4).
                return
            # §8.2.2.2: the same request by another path (a fork that came back to us).
            tx.reply(482, "Loop Detected")
            return
        tx.reply(100, "Trying")
        try:
            offer, timer = self._check_invite(request)
        except Refusal as refusal:
            tx.reply(refusal.status, refusal.reason, headers=refusal.headers, to_tag=new_tag())
            return
        try:
            call = InboundCall(self, tx, offer, timer)
        except DialogError as exc:
            tx.reply(400, f"Bad Request ({exc})", to_tag=new_tag())
            return
        self._live.add(call)
        self._inbound[id(tx)] = call
        self._pending_invites[key] = call
        self._register(call)
        self._spawn(self._run_on_invite(call))

    def _check_invite(
        self, request: SipRequest
    ) -> tuple[SessionDescription | None, SessionExpires | None]:
        required = [
            item.strip()
            for value in request.header_values("Require")
            for item in value.split(",")
            if item.strip() and item.strip().lower() not in _UNDERSTOOD
        ]
        if required:
            raise Refusal(420, "Bad Extension", [("Unsupported", ", ".join(required))])
        if len(request.contacts) != 1:
            raise Refusal(400, "Bad Request (one Contact needed)")
        offer = None
        if request.body:
            if request.content_type != _SDP:
                raise Refusal(415, "Unsupported Media Type", [("Accept", ACCEPT)])
            try:
                offer = SessionDescription.parse(request.body)
            except SdpError as exc:
                raise Refusal(400, f"Bad SDP ({exc.message})"[:100]) from exc
        return offer, session_timer_for_uas(request, self.min_se)

    async def _run_on_invite(self, call: InboundCall) -> None:
        try:
            await self._on_invite(call)
        except CallEnded:
            return
        except Exception:
            log.exception("call %s: the INVITE handler failed", call.call_id)
            if not call._final_sent and not call.ended.done():
                call.reject(500, "Server Internal Error")


def _merge_key(request: SipRequest) -> tuple[str, str, int]:
    return (request.call_id, request.from_.tag or "", request.cseq.sequence)

"""A call we place, and the legs of a forked answer that lost the race."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from media.sdp import SdpError, SessionDescription
from media.sip.call.base import (
    _SDP,
    ALLOW,
    SUPPORTED,
    CallEnd,
    CallEnded,
    _Call,
    _quiet,
)
from media.sip.dialog import (
    Authenticator,
    Dialog,
    DialogError,
    DialogState,
    Login,
    allowed_methods,
    first_cseq,
    min_se_of,
    new_call_id,
    new_tag,
)
from media.sip.endpoint import SipTimeout
from media.sip.message import SipRequest, SipResponse
from media.sip.transport import Peer, TransportError

if TYPE_CHECKING:
    from media.sip.call.user_agent import UserAgent

log = logging.getLogger("media.sip.call")


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

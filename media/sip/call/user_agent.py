"""The user agent that owns every dialog on a `SipEndpoint` and the calls they carry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from media.sdp import SdpError, SessionDescription
from media.sip.call.base import (
    _SDP,
    _UNDERSTOOD,
    ACCEPT,
    ALLOW,
    DEFAULT_SESSION_EXPIRES,
    SUPPORTED,
    CallEnd,
    CallEnded,
    _Call,
)
from media.sip.call.inbound import InboundCall
from media.sip.call.outbound import OutboundCall
from media.sip.dialog import (
    MIN_SE_FLOOR,
    DialogError,
    DialogId,
    Login,
    Refusal,
    SessionExpires,
    new_tag,
    session_timer_for_uas,
)
from media.sip.endpoint import ServerTransaction, SipEndpoint
from media.sip.message import SipRequest, SipResponse
from media.sip.transport import Peer, TransportError

log = logging.getLogger("media.sip.call")


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
        self.take_request(tx)

    def take_request(self, tx: ServerTransaction) -> bool:
        """Every request is handled without waiting (what waits, `on_invite`, gets its own
        task), so the endpoint need not start a task for each one."""
        request = tx.request
        dialog_id = DialogId.of_request(request)
        if request.method == "ACK":
            call = self._dialogs.get(dialog_id) if dialog_id is not None else None
            if call is not None:
                call._on_ack(request)
            return True
        if dialog_id is not None:
            call = self._dialogs.get(dialog_id)
            if call is None:
                tx.reply(481, "Call/Transaction Does Not Exist")
                return True
            call._on_request(tx)
            return True
        method = request.method
        if method == "INVITE":
            self._on_new_invite(tx)
        elif method == "OPTIONS":
            tx.reply(200, "OK", headers=self._capabilities())
        elif method in ("BYE", "UPDATE", "PRACK", "INFO"):
            tx.reply(481, "Call/Transaction Does Not Exist")
        else:
            tx.reply(405, "Method Not Allowed", headers=[("Allow", ALLOW)])
        return True

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

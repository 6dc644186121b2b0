"""A call offered to us by an INVITE."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from media.sdp import SessionDescription
from media.sip.call.base import _SDP, ALLOW, SUPPORTED, CallEnd, CallEnded, _Call
from media.sip.dialog import (
    Dialog,
    SessionExpires,
    allowed_methods,
    new_tag,
    session_timer_headers,
)
from media.sip.endpoint import ServerTransaction
from media.sip.message import SipRequest

if TYPE_CHECKING:
    from media.sip.call.user_agent import UserAgent


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
        if not await asyncio.shield(acked):
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

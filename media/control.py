"""What a call's script (its IVR flow) may do with the caller: the media primitives, per call.

Every operation raises `CallEnded` once the caller has hung up, so a script stops at its next
step without checking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from media import events as ev
from media.audio import PcmAudio
from media.collect import collect_digits, flush_digits
from media.sip.call import CallEnded

if TYPE_CHECKING:
    from media.node import Call, MediaNode


@dataclass(frozen=True, slots=True)
class Voicemail:
    """A message the caller left: sealed for the tenant at `path` (see `record_message`)."""

    path: Path
    duration_ms: int
    voicemail_id: UUID


class CallControl:
    def __init__(self, node: MediaNode, call: Call) -> None:
        self._node = node
        self._call = call
        self.variables: dict[str, Any] = {}
        """What the script learned (gathered digits, lookups), kept for the call's lifetime."""

    @property
    def call_id(self) -> UUID:
        return self._call.id

    @property
    def tenant_id(self) -> UUID:
        return self._call.tenant_id

    @property
    def caller(self) -> str:
        return self._call.from_number

    @property
    def dialed(self) -> str:
        return self._call.to_number

    @property
    def ended(self) -> bool:
        return self._call.is_over

    def _check(self) -> None:
        if self._call.is_over:
            raise CallEnded(self._call.end_or_hangup())

    async def answer(self) -> None:
        self._check()
        await self._node.answer(self._call)

    async def play(self, audio: PcmAudio) -> None:
        """Play `audio` to the end (answering first if the script did not)."""
        await self.answer()
        await self._until_over(self._node.player.play(self._call.stream, audio))

    async def prompt(self, prompt_id: UUID) -> PcmAudio:
        return await self._node.directory.prompt(self.tenant_id, prompt_id)

    async def speech(self, text: str, voice: str) -> PcmAudio:
        return await self._node.directory.speech(text, voice)

    async def collect(
        self,
        *,
        max_digits: int,
        between_digits: float,
        first_digit_within: float | None = None,
        terminator: str | None = "#",
        announcement: PcmAudio | None = None,
    ) -> str:
        """Digits the caller presses, while `announcement` plays; the first key stops it
        (barge-in). Returns what was collected, possibly ''."""
        await self.answer()
        stream = self._call.stream
        flush_digits(stream)
        first = ""
        if announcement is not None:
            playing = asyncio.ensure_future(self._node.player.play(stream, announcement))
            key = asyncio.ensure_future(stream.digits.get())
            try:
                await self._until_over(
                    asyncio.wait({playing, key}, return_when=asyncio.FIRST_COMPLETED)
                )
            finally:
                if not playing.done():
                    playing.cancel()
                if key.done() and not key.cancelled():
                    first = key.result()
                else:
                    key.cancel()
        if first:
            if terminator is not None and first == terminator:
                return ""
            if max_digits == 1:
                return first
            rest: str = await self._until_over(
                collect_digits(
                    stream,
                    max_digits=max_digits - 1,
                    timeout=between_digits,
                    first_timeout=between_digits,
                    terminator=terminator,
                )
            )
            return first + rest
        digits: str = await self._until_over(
            collect_digits(
                stream,
                max_digits=max_digits,
                timeout=between_digits,
                first_timeout=(
                    first_digit_within if first_digit_within is not None else between_digits
                ),
                terminator=terminator,
            )
        )
        return digits

    async def hangup(self, reason: str = "normal") -> None:
        await self._node.hangup(self._call, reason)

    def step(
        self,
        node: str,
        node_type: str,
        outcome: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """Report one node of the flow as run (call.flow_step), so the caller's path shows."""
        self._node._emit(
            ev.CallFlowStep(
                tenant_id=self.tenant_id,
                call_id=self.call_id,
                node_id=self._node.config.node_id,
                node=node,
                node_type=node_type,
                outcome=outcome,
                detail=dict(detail or {}),
            )
        )

    async def enqueue(
        self,
        queue_id: UUID,
        *,
        priority: int,
        skills: dict[str, int],
        attributes: dict[str, str],
        context: dict[str, Any] | None = None,
    ) -> None:
        """Put the caller in a queue: hold music, call.queued, and the call stays up when the
        script returns (the router drives it from then on). Returns at once. `context` (the
        contact record, lookup answers) travels with the call for the agent's screen pop."""
        await self.answer()
        await self._node.queues.enqueue(
            self._call,
            queue_id,
            priority=priority,
            skills=skills,
            attributes=attributes,
            context=context,
        )

    async def record_message(
        self, *, max_seconds: int = 120, beep: bool = True
    ) -> Voicemail | None:
        """Record the caller after a beep until '#', `max_seconds` or hang-up; the message is
        kept if the caller hangs up. None when nothing audible was said. The file is sealed
        for the tenant with aad `recording_aad(tenant_id, voicemail_id)`."""
        await self.answer()
        self._call.keep_script = True
        try:
            return await self._node.queues.record_message(
                self._call, max_seconds=max_seconds, beep=beep
            )
        finally:
            self._call.keep_script = False

    async def leave_voicemail(
        self, voicemail: Voicemail, *, mailbox: str | None, queue_id: UUID | None = None
    ) -> None:
        """Store a recorded message (directory.store_voicemail) and emit call.voicemail; works
        after the caller hung up too."""
        await self._node.queues.leave_voicemail(
            self._call, voicemail, mailbox=mailbox, queue_id=queue_id
        )

    async def transfer(self, number: str, *, caller_id: str, timeout_seconds: float = 30) -> str:
        """Call `number` (the `originate` checks apply) while the caller hears ringback, and
        bridge them on answer. "answered" (the bridge owns the call now), or "busy",
        "no_answer", "failed", "refused:<code>" with the caller still here. Emits
        call.transferred."""
        self._check()
        return await self._node.queues.transfer(
            self._call, number, caller_id=caller_id, timeout_seconds=timeout_seconds
        )

    async def _until_over(self, awaitable: Any) -> Any:
        """Await `awaitable` unless the call ends first (then raise CallEnded)."""
        self._check()
        work = asyncio.ensure_future(awaitable)
        over = self._call.over
        waiter = asyncio.ensure_future(over.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not work.done():
            work.cancel()
            raise CallEnded(self._call.end_or_hangup())
        return work.result()

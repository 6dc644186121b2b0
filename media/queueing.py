"""Callers waiting in queues on this node, and the agents their calls are offered to.

The router decides; the node carries it out. A queued caller hears the queue's hold music. An
`offer` rings an agent's device (several at once for ring-all: the first to answer wins, the
others are cancelled), and the caller is bridged to the agent who answers. `announce` speaks the
caller's place in line over the hold; `overflow` sends the caller to voicemail, offers a
callback, or says goodbye; `dial_back` rings an agent, then the customer who asked to be called.

Agent legs are not calls of their own: they are not billed and emit only offer events, but they
hold RTP ports and dialogs like any leg and give them back when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import sys
import time
from array import array
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

import msgspec

from bus.events import Event
from media import events as ev
from media import sdp
from media.audio import SAMPLE_RATE, PcmAudio
from media.bridge import Bridge
from media.collect import flush_digits
from media.control import CallControl, Voicemail
from media.directory import VoicemailRecord
from media.g711 import alaw_decode, ulaw_decode
from media.node import Call, CommandRefused, MediaNode, Originate, _Command, recording_aad
from media.policy import E164_RE
from media.recorder import Recorder
from media.rtp import RtpPacket
from media.sip.call import CallEnd, CallEnded, OutboundCall, resolve_peer
from media.sip.endpoint import Peer
from media.sip.message import Uri
from media.sip.transport import TransportError
from media.stream import RtpStream
from runtime.ids import new_id

__all__ = [
    "AgentLeg",
    "AgentLine",
    "AgentLines",
    "QueuedCall",
    "Queues",
    "RingInfo",
    "announcement_text",
]

log = logging.getLogger(__name__)

AUDIBLE_PEAK = 1000
"""A 20 ms frame whose loudest sample passes this (about -30 dBFS) counts as heard."""
MIN_MESSAGE_MS = 500
"""A message with less audible audio than this is not kept."""
VOICEMAIL_SECONDS = 120
CALLBACK_REPEAT_SECONDS = 15.0
"""Hold music between two offers of a callback."""
CLOSE_WAIT_SECONDS = 2.0
_NO_CAP = sys.maxsize
VOICE = "en-us"
VOICEMAIL_GREETING = (
    "Nobody can take your call right now. Please leave a message after the tone, "
    "and press pound when you are done."
)
VOICEMAIL_THANKS = "Thank you. Goodbye."
CALLBACK_OFFER = "Press 1 to be called back. You keep your place in the queue."
CALLBACK_THANKS = "Thank you. We will call you back. Goodbye."
_DECODERS: dict[str, Callable[[bytes], bytes]] = {"PCMU": ulaw_decode, "PCMA": alaw_decode}

Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]
OfferFailure = ev.OfferFailure
TransferKind = Literal["agent", "queue", "number"]
TRANSFER_RING_SECONDS = 30.0


class OfferCommand(_Command, kw_only=True):
    call_id: UUID
    agent_id: UUID
    device: str
    """`sip:user@host[:port]` inside the node's agent networks, or an E.164 number."""
    timeout_seconds: Seconds = 20.0
    record: bool = False
    trunk_id: UUID | None = None
    """The tenant's trunk an E.164 device is dialed through (default: the number's trunk)."""


class AnnounceCommand(_Command, kw_only=True):
    call_id: UUID
    position: Annotated[int, msgspec.Meta(ge=1)]
    ewt_seconds: Annotated[int, msgspec.Meta(ge=0)] | None = None
    voice: str = VOICE


class OverflowCommand(_Command, kw_only=True):
    call_id: UUID
    action: Literal["voicemail", "callback", "hangup"]
    queue_id: UUID
    mailbox: str | None = None
    message: str | None = None
    """Said before hanging up, or as the voicemail greeting."""
    voice: str = VOICE


class DialBackCommand(_Command, kw_only=True):
    call_id: UUID
    agent_id: UUID
    device: str
    number: str
    caller_id: str
    timeout_seconds: Seconds = 20.0
    customer_timeout_seconds: Seconds = 30.0
    record: bool = False
    trunk_id: UUID | None = None
    queue_id: UUID | None = None
    max_concurrent_calls: int | None = None
    """The tenant's cap on concurrent calls, checked before the customer is dialed."""


class AgentLine(Protocol):
    """What an offer rings: a SIP call to the agent's device, or the agent's browser leg.

    `answered` resolves with the device's SDP answer (None for a browser leg, whose media is
    already up) or fails with CallEnded when the device refuses; `ended` resolves when the line
    is over; `hangup` cancels before the answer and hangs up after it."""

    ringing: asyncio.Event
    answered: asyncio.Future[Any]
    ended: asyncio.Future[CallEnd]

    async def hangup(self, reason: str = "normal") -> None: ...


@dataclass(frozen=True, slots=True)
class RingInfo:
    """What an agent is shown when a call is offered: the screen pop."""

    call_id: UUID
    queue_id: UUID | None
    from_number: str
    to_number: str
    waited_seconds: float
    timeout_seconds: float
    context: dict[str, Any]


class AgentLines(Protocol):
    """The browser agents whose media legs live on this node (the webrtc package)."""

    def ring(self, tenant_id: UUID, agent_id: UUID, info: RingInfo) -> tuple[AgentLine, RtpStream]:
        """Ring the agent's browser; raises CommandRefused when the agent has no leg here."""
        ...

    def bridged(self, tenant_id: UUID, agent_id: UUID, call: Call, bridge: Bridge) -> None:
        """The agent's line now carries `call` through `bridge` (for hold, mute, DTMF)."""
        ...


@dataclass(eq=False)
class AgentLeg:
    """An agent's device being rung for (or talking on) a customer's call."""

    agent_id: UUID
    tenant_id: UUID
    call_id: UUID
    sip: AgentLine
    stream: RtpStream
    offer: sdp.SessionDescription | None
    """Our SDP offer to a SIP device; None for a browser leg, negotiated once per shift."""
    outcome: OfferFailure | None = None
    """Why the node is ending the leg before it was answered; None while it may still win."""
    over: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    handed_on: bool = False
    """The agent transferred the call: their leg ends, the caller's call goes on."""

    def __post_init__(self) -> None:
        self.sip.ended.add_done_callback(lambda _ended: self.over.set())

    def stop(self, outcome: OfferFailure) -> None:
        """Give up on this offer (its task cancels the INVITE and reports `outcome`)."""
        if self.outcome is None:
            self.outcome = outcome
        self.stopped.set()


@dataclass(eq=False)
class QueuedCall:
    """A caller waiting in a queue on this node."""

    queue_id: UUID
    hold: PcmAudio
    offers: dict[UUID, AgentLeg] = field(default_factory=dict)
    """Agents being rung for the call, by agent."""
    context: dict[str, Any] = field(default_factory=dict)
    """The flow's screen pop for the agent (contact, lookups, path)."""
    priority: int = 5
    skills: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    """As the flow enqueued the call: kept for a transfer to another queue."""
    since: float = field(default_factory=time.monotonic)
    agent: AgentLeg | None = None
    """The agent who answered."""
    activity: asyncio.Task[None] | None = None
    """An announcement or an overflow in progress."""
    overflow: str | None = None


class Queues:
    """The node's side of queueing, for every call on it."""

    verbs = frozenset({"offer", "announce", "overflow", "dial_back"})

    def __init__(self, node: MediaNode) -> None:
        self._node = node
        self.legs: set[AgentLeg] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def counts(self) -> dict[str, int]:
        waiting = sum(
            1 for c in self._node.calls.values() if c.queued is not None and c.queued.agent is None
        )
        return {"queued": waiting, "agent_legs": len(self.legs)}

    async def close(self) -> None:
        """At shutdown, once every SIP call has ended: let the legs' tasks tidy up, briefly."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for leg in list(self.legs):
            await self._release(leg)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _emit(self, event: Event) -> None:
        self._node._emit(event)

    # --- commands ------------------------------------------------------------------------------

    async def command(self, verb: str, payload: bytes) -> dict[str, Any]:
        if verb == "offer":
            return await self.offer(msgspec.json.decode(payload, type=OfferCommand))
        if verb == "announce":
            return self.announce(msgspec.json.decode(payload, type=AnnounceCommand))
        if verb == "overflow":
            return self.overflow(msgspec.json.decode(payload, type=OverflowCommand))
        if verb == "dial_back":
            return await self.dial_back(msgspec.json.decode(payload, type=DialBackCommand))
        raise CommandRefused("unknown_command", f"no command named {verb!r}")

    def _waiting(self, tenant_id: UUID, call_id: UUID) -> tuple[Call, QueuedCall]:
        call = self._node._call(tenant_id, call_id)
        queued = call.queued
        if queued is None:
            raise CommandRefused("not_queued", "the call is not waiting in a queue")
        if queued.agent is not None:
            raise CommandRefused("already_answered", "an agent has taken the call")
        return call, queued

    # --- enqueue (from the call's flow) -------------------------------------------------------

    async def enqueue(
        self,
        call: Call,
        queue_id: UUID,
        *,
        priority: int,
        skills: dict[str, int],
        attributes: dict[str, str],
        context: dict[str, Any] | None = None,
    ) -> None:
        if not 0 <= priority <= 10:
            raise ValueError(f"a call's priority is 0-10, not {priority}")
        if call.queued is not None and call.queued.agent is not None:
            raise RuntimeError("the call is already with an agent")
        hold = await self._node.directory.hold_music(call.tenant_id, queue_id)
        _check(call)
        previous = call.queued
        queued = QueuedCall(
            queue_id,
            hold,
            context=dict(context or {}),
            priority=priority,
            skills=dict(skills),
            attributes=dict(attributes),
        )
        if previous is not None:
            queued.offers = previous.offers
            queued.since = previous.since
            if previous.activity is not None:
                previous.activity.cancel()
        call.queued = queued
        call.queue_id = queue_id
        self.hold_music(call)
        self._emit(
            ev.CallQueued(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self._node.config.node_id,
                queue_id=queue_id,
                priority=priority,
                skills=dict(skills),
                attributes=dict(attributes),
                context=dict(context or {}),
                from_number=call.from_number,
                to_number=call.to_number,
            )
        )

    def hold_music(self, call: Call) -> None:
        """Hold music, looped, until something else plays."""
        assert call.queued is not None
        if call.playing is not None:
            call.playing.cancel()
        call.playing = asyncio.get_running_loop().create_task(
            self._node.player.play(call.stream, call.queued.hold, loop=True)
        )

    def silence(self, call: Call) -> None:
        if call.playing is not None:
            call.playing.cancel()
            call.playing = None
        self._node.player.stop(call.stream)

    # --- offer ---------------------------------------------------------------------------------

    async def offer(self, command: OfferCommand) -> dict[str, Any]:
        call, queued = self._waiting(command.tenant_id, command.call_id)
        if queued.overflow in ("voicemail", "hangup"):
            raise CommandRefused("overflowing", "the call is leaving the queue")
        if command.agent_id in queued.offers:
            raise CommandRefused("already_offered", "the call is already ringing this agent")
        try:
            leg = await self._ring(
                call.tenant_id,
                command.agent_id,
                command.device,
                codecs=_g711_first(call.stream.codec),
                trunk_id=command.trunk_id,
                info=RingInfo(
                    call_id=call.id,
                    queue_id=queued.queue_id,
                    from_number=call.from_number,
                    to_number=call.to_number,
                    waited_seconds=round(time.monotonic() - queued.since, 1),
                    timeout_seconds=command.timeout_seconds,
                    context=queued.context,
                ),
            )
        except CommandRefused:
            self._offer_failed(call.tenant_id, call.id, command.agent_id, "refused")
            raise
        queued.offers[command.agent_id] = leg
        self._spawn(
            self._follow_offer(call, queued, leg, command),
            name=f"offer-{call.id}-{command.agent_id}",
        )
        return {}

    async def _ring(
        self,
        tenant_id: UUID,
        agent_id: UUID,
        device: str,
        *,
        codecs: Sequence[str],
        trunk_id: UUID | None,
        info: RingInfo,
    ) -> AgentLeg:
        """INVITE the agent's device, or ring their browser; returns once it rings. The
        agent's device shows `info.from_number` calling; a number is dialed with
        `info.to_number` as caller ID."""
        node = self._node
        call_id, caller, caller_id = info.call_id, info.from_number, info.to_number
        line: AgentLine
        if device.startswith("webrtc:"):
            if node.agent_lines is None:
                raise CommandRefused("device_unreachable", "this node has no browser agents")
            line, stream = node.agent_lines.ring(tenant_id, agent_id, info)
            leg = AgentLeg(agent_id, tenant_id, call_id, line, stream, None)
            self.legs.add(leg)
            return leg
        try:
            if device.startswith(("sip:", "sips:")):
                peer = await self._device_peer(device)
                sip_call, stream, offer = await node.invite(
                    target=device,
                    peer=peer,
                    from_uri=f"sip:{caller if E164_RE.match(caller) else 'anonymous'}"
                    f"@{node.public_host}",
                    codecs=codecs,
                    # For the softphone's screen pop; never sent to a carrier.
                    headers=[("X-Switchboard-Call-Id", str(call_id))],
                )
            elif E164_RE.match(device):
                route = await node.outbound_route(tenant_id, device, caller_id, trunk_id)
                usable = [c for c in codecs if c in route.codecs] or list(route.codecs)
                sip_call, stream, offer = await node.invite_via(
                    route, device, caller_id, codecs=usable
                )
            else:
                raise CommandRefused("invalid_device", "a device is a sip: URI or an E.164 number")
        except (TransportError, socket.gaierror) as exc:
            raise CommandRefused("device_unreachable", f"cannot reach the device: {exc}") from exc
        leg = AgentLeg(agent_id, tenant_id, call_id, sip_call, stream, offer)
        self.legs.add(leg)
        return leg

    async def _device_peer(self, device: str) -> Peer:
        try:
            uri = Uri.parse(device)
        except ValueError as exc:
            raise CommandRefused("invalid_device", f"{device!r} is not a SIP URI") from exc
        peer = await resolve_peer(uri, "udp")
        address = ipaddress.ip_address(peer.host)
        if not any(address in network for network in self._node.config.agent_device_networks):
            raise CommandRefused(
                "device_not_allowed", "agents' devices may only be rung in the agent networks"
            )
        return peer

    async def _follow_offer(
        self, call: Call, queued: QueuedCall, leg: AgentLeg, command: OfferCommand
    ) -> None:
        try:
            try:
                answer = await self._await_answer(leg, command.timeout_seconds, gone=call.over)
            finally:
                if queued.offers.get(leg.agent_id) is leg:
                    del queued.offers[leg.agent_id]
            if answer is None:
                return
            if call.is_over or call.queued is not queued or queued.agent is not None:
                lost: OfferFailure = "caller_gone" if call.is_over else "answered_elsewhere"
                await self._fail_answered(leg, lost)
                return
            if not _connect(leg, answer.sdp):
                await self._fail_answered(leg, "unreachable")
                return
            # This agent takes the call: nothing may await between the checks above and here.
            queued.agent = leg
            for other in queued.offers.values():
                other.stop("answered_elsewhere")
            if queued.activity is not None:
                queued.activity.cancel()
            self.silence(call)
            bridge = Bridge(call.stream, leg.stream)
            bridge.start()
            call.bridge = bridge
            call.agent_id = leg.agent_id
            if leg.offer is None and self._node.agent_lines is not None:
                self._node.agent_lines.bridged(leg.tenant_id, leg.agent_id, call, bridge)
            if call.recorder is not None:
                call.recorder.attach(leg.stream)  # handed on by an agent who was recorded
            elif command.record:
                await self._record(call, leg.stream)
            self._offer_event(ev.CallOfferAnswered, leg)
            await self._talk(call, leg, bridge)
        finally:
            if leg in self.legs:
                await self._release(leg)

    async def _await_answer(
        self, leg: AgentLeg, ring_seconds: float, gone: asyncio.Event | None
    ) -> _Answer | None:
        """The device's answer; or None once the offer has failed (the leg ended, the failure
        reported). Reports ringing as it happens."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ring_seconds
        sip = leg.sip
        ringing = asyncio.ensure_future(sip.ringing.wait())
        stopped = asyncio.ensure_future(leg.stopped.wait())
        caller_gone = asyncio.ensure_future(gone.wait()) if gone is not None else None
        try:
            while not sip.answered.done() and leg.outcome is None:
                left = deadline - loop.time()
                if left <= 0:
                    leg.outcome = "no_answer"
                    break
                watched: set[asyncio.Future[Any]] = {sip.answered, stopped}
                if not ringing.done():
                    watched.add(ringing)
                if caller_gone is not None:
                    watched.add(caller_gone)
                done, _ = await asyncio.wait(
                    watched, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if ringing in done and leg.outcome is None:
                    self._offer_event(ev.CallOfferRinging, leg)
                if caller_gone is not None and caller_gone.done():
                    leg.stop("caller_gone")
        finally:
            for waiter in (ringing, stopped, caller_gone):
                if waiter is not None:
                    waiter.cancel()
        answered = sip.answered
        if answered.done() and answered.exception() is None and leg.outcome is None:
            return _Answer(answered.result())
        if leg.outcome is None:
            refusal = answered.exception()
            leg.outcome = _refusal(refusal.end if isinstance(refusal, CallEnded) else None)
        await self._end_leg(leg)
        self._offer_failed(leg.tenant_id, leg.call_id, leg.agent_id, leg.outcome)
        return None

    async def _fail_answered(self, leg: AgentLeg, outcome: OfferFailure) -> None:
        leg.outcome = outcome
        await self._end_leg(leg)
        self._offer_failed(leg.tenant_id, leg.call_id, leg.agent_id, outcome)

    async def _talk(self, call: Call, leg: AgentLeg, bridge: Bridge) -> None:
        """Until either side hangs up; then the other is hung up too (unless the agent handed
        the call on)."""
        await _first_set(call.over, leg.over)
        bridge.stop()
        if not call.is_over and not leg.handed_on:
            await self._node.hangup(call, "agent_hangup")
        await self._end_leg(leg)

    async def _end_leg(self, leg: AgentLeg, reason: str = "normal") -> None:
        """CANCEL before the answer, BYE after; then give the leg's ports back."""
        with contextlib.suppress(CallEnded):
            await leg.sip.hangup(reason)
        await self._release(leg)

    async def _release(self, leg: AgentLeg) -> None:
        self.legs.discard(leg)
        if leg.offer is not None:
            await leg.stream.close()
        # A browser leg's stream is the agent's for the whole shift.

    def _offer_event(
        self, kind: type[ev.CallOfferRinging] | type[ev.CallOfferAnswered], leg: AgentLeg
    ) -> None:
        self._emit(
            kind(
                tenant_id=leg.tenant_id,
                call_id=leg.call_id,
                node_id=self._node.config.node_id,
                agent_id=leg.agent_id,
            )
        )

    def _offer_failed(
        self, tenant_id: UUID, call_id: UUID, agent_id: UUID, reason: OfferFailure
    ) -> None:
        self._emit(
            ev.CallOfferFailed(
                tenant_id=tenant_id,
                call_id=call_id,
                node_id=self._node.config.node_id,
                agent_id=agent_id,
                reason=reason,
            )
        )

    async def _record(self, call: Call, other: RtpStream) -> None:
        """Record both sides of a bridged call (as the `record` command would), unless it is
        being recorded already. A node without recording keys talks on unrecorded."""
        if call.recorder is not None:
            return
        try:
            key = await self._node.recording_key(call.tenant_id)
        except CommandRefused:
            log.warning("call %s: not recorded, no recording key is configured", call.id)
            return
        if call.is_over:
            return
        folder = self._node.config.recordings_dir / str(call.tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{call.id}.sbrec"
        number = 1
        while path.exists():
            number += 1
            path = folder / f"{call.id}-{number}.sbrec"
        recorder = Recorder(path, key, aad=recording_aad(call.tenant_id, call.id))
        recorder.attach(call.stream)
        recorder.attach(other)
        call.recorder = recorder

    # --- announce ------------------------------------------------------------------------------

    def announce(self, command: AnnounceCommand) -> dict[str, Any]:
        call, queued = self._waiting(command.tenant_id, command.call_id)
        if queued.overflow is not None or (
            queued.activity is not None and not queued.activity.done()
        ):
            raise CommandRefused("busy", "the caller is hearing another announcement")
        text = announcement_text(command.position, command.ewt_seconds)
        queued.activity = self._spawn(
            self._announce(call, queued, text, command.voice), name=f"announce-{call.id}"
        )
        return {}

    async def _announce(self, call: Call, queued: QueuedCall, text: str, voice: str) -> None:
        speech = await self._node.directory.speech(text, voice)
        if queued.agent is not None or call.queued is not queued:
            return
        with contextlib.suppress(CallEnded):
            self.silence(call)
            await CallControl(self._node, call).play(speech)
            if queued.agent is None and call.queued is queued:
                self.hold_music(call)

    # --- overflow ------------------------------------------------------------------------------

    def overflow(self, command: OverflowCommand) -> dict[str, Any]:
        call, queued = self._waiting(command.tenant_id, command.call_id)
        if queued.overflow is not None:
            raise CommandRefused("already_overflowing", f"the call is in {queued.overflow}")
        if command.action == "callback" and not E164_RE.match(call.from_number):
            raise CommandRefused(
                "no_callback_number", "the caller's number is withheld or not a phone number"
            )
        queued.overflow = command.action
        if queued.activity is not None:
            queued.activity.cancel()
        if command.action != "callback":
            for leg in queued.offers.values():
                leg.stop("caller_gone")
        work = {
            "voicemail": self._overflow_to_voicemail,
            "callback": self._offer_callback,
            "hangup": self._overflow_hangup,
        }[command.action]
        queued.activity = self._spawn(
            work(call, command), name=f"overflow-{command.action}-{call.id}"
        )
        return {}

    async def _say(self, call: Call, text: str, voice: str) -> None:
        speech = await self._node.directory.speech(text, voice)
        self.silence(call)
        await CallControl(self._node, call).play(speech)

    async def _overflow_hangup(self, call: Call, command: OverflowCommand) -> None:
        try:
            self.silence(call)
            if command.message:
                await self._say(call, command.message, command.voice)
        except CallEnded:
            return
        finally:
            await self._node.hangup(call, "queue_overflow")

    async def _overflow_to_voicemail(self, call: Call, command: OverflowCommand) -> None:
        try:
            await self._say(call, command.message or VOICEMAIL_GREETING, command.voice)
            # A caller who hangs up while recording still leaves the message.
            voicemail = await self.record_message(call, max_seconds=VOICEMAIL_SECONDS, beep=True)
            if voicemail is not None:
                await self.leave_voicemail(
                    call, voicemail, mailbox=command.mailbox, queue_id=command.queue_id
                )
            await self._say(call, VOICEMAIL_THANKS, command.voice)
        except CallEnded:
            return
        finally:
            await self._node.hangup(call, "voicemail")

    async def _offer_callback(self, call: Call, command: OverflowCommand) -> None:
        with contextlib.suppress(CallEnded):
            prompt = await self._node.directory.speech(CALLBACK_OFFER, command.voice)
            while await self._key_after(call, prompt) != "1":
                pass
            self._emit(
                ev.CallCallbackRequested(
                    tenant_id=call.tenant_id,
                    call_id=call.id,
                    node_id=self._node.config.node_id,
                    queue_id=command.queue_id,
                    number=call.from_number,
                )
            )
            await self._say(call, CALLBACK_THANKS, command.voice)
            await self._node.hangup(call, "callback_requested")

    async def _key_after(self, call: Call, prompt: PcmAudio) -> str:
        """The next key the caller presses while `prompt` plays, repeated with hold music in
        between."""
        stream = call.stream
        flush_digits(stream)
        key = asyncio.ensure_future(stream.digits.get())
        try:
            while True:
                self.silence(call)
                playing = asyncio.ensure_future(self._node.player.play(stream, prompt))
                try:
                    await _wait(call, {playing, key})
                finally:
                    if not playing.done():
                        self._node.player.stop(stream)
                if key.done():
                    return key.result()
                self.hold_music(call)
                await _wait(call, {key}, CALLBACK_REPEAT_SECONDS)
                if key.done():
                    self.silence(call)
                    return key.result()
        finally:
            key.cancel()

    # --- voicemail -----------------------------------------------------------------------------

    async def record_message(
        self, call: Call, *, max_seconds: float, beep: bool
    ) -> Voicemail | None:
        """Record the caller (sealed for the tenant) until '#', `max_seconds` or hang-up."""
        node = self._node
        _check(call)
        await node.answer(call)
        if beep:
            await CallControl(node, call).play(_beep())
        key = await node.recording_key(call.tenant_id)
        _check(call)
        voicemail_id = new_id()
        folder = node.config.recordings_dir / str(call.tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"voicemail-{voicemail_id}.sbrec"
        stream = call.stream
        recorder = Recorder(path, key, aad=recording_aad(call.tenant_id, voicemail_id))
        meter = _Loudness(stream)
        recorder.attach(stream)
        stream.add_tap(meter.hear)
        flush_digits(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        try:
            while not call.is_over and (left := deadline - loop.time()) > 0:
                press = asyncio.ensure_future(stream.digits.get())
                try:
                    with contextlib.suppress(CallEnded):
                        await _wait(call, {press}, left)
                finally:
                    press.cancel()
                if press.done() and not press.cancelled() and press.result() == "#":
                    break
        finally:
            stream.remove_tap(meter.hear)
            info = await recorder.close()
        if meter.audible_ms < MIN_MESSAGE_MS:
            path.unlink(missing_ok=True)
            return None
        return Voicemail(path=path, duration_ms=info.duration_ms, voicemail_id=voicemail_id)

    async def leave_voicemail(
        self, call: Call, voicemail: Voicemail, *, mailbox: str | None, queue_id: UUID | None
    ) -> None:
        """Store the message for the tenant and tell everyone it is there."""
        await self._node.directory.store_voicemail(
            call.tenant_id,
            VoicemailRecord(
                voicemail_id=voicemail.voicemail_id,
                call_id=call.id,
                mailbox=mailbox,
                queue_id=queue_id,
                from_number=call.from_number,
                path=voicemail.path,
                duration_ms=voicemail.duration_ms,
                recorded_at=datetime.now(UTC),
            ),
        )
        self._emit(
            ev.CallVoicemail(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self._node.config.node_id,
                mailbox=mailbox,
                queue_id=queue_id,
                voicemail_id=voicemail.voicemail_id,
                duration_ms=voicemail.duration_ms,
                from_number=call.from_number,
            )
        )

    # --- transfer (by the agent talking on the call) -------------------------------------------

    async def hand_on(
        self,
        tenant_id: UUID,
        call_id: UUID,
        agent_id: UUID,
        *,
        to_kind: TransferKind,
        to: str,
        ring_seconds: float = TRANSFER_RING_SECONDS,
    ) -> None:
        """A blind transfer: the agent's leg ends and the caller, hearing hold music (ringback
        for a number), goes on to `to` — another agent (the router offers the call to them, or
        keeps it first in its queue until someone takes it), a queue (a new arrival there) or
        a number dialed with the tenant's number the caller called as caller ID; a number that
        does not answer sends the caller back to the queue they came from. Announced by a
        `call.transferred` carrying the agent, before anything else happens to the call."""
        call = self._node._call(tenant_id, call_id)
        queued = call.queued
        leg = queued.agent if queued is not None else None
        if queued is None or leg is None or leg.agent_id != agent_id or leg.handed_on:
            raise CommandRefused("not_your_call", "the call is not connected to this agent")
        if to_kind == "agent" and to == str(agent_id):
            raise CommandRefused("invalid_target", "an agent cannot transfer a call to themself")
        if to_kind == "number" and not E164_RE.match(to):
            raise CommandRefused("invalid_target", "a number is in E.164 form, like +14155550100")
        if to_kind in ("agent", "queue"):
            try:
                UUID(to)
            except ValueError as exc:
                raise CommandRefused("invalid_target", f"{to!r} is not an id") from exc
        _check(call)
        self._let_go(call, leg)
        call.agent_id = None
        queued.agent = None
        self._emit(
            ev.CallTransferred(
                tenant_id=tenant_id,
                call_id=call_id,
                node_id=self._node.config.node_id,
                to=to,
                to_kind=to_kind,
                agent_id=agent_id,
                outcome={"agent": "offered", "queue": "queued", "number": "dialing"}[to_kind],
            )
        )
        if to_kind == "queue":
            await self._requeue(call, queued, UUID(to))
        else:
            self.hold_music(call)
        with contextlib.suppress(CallEnded):
            await leg.sip.hangup("transferred")
        if to_kind == "number":
            self._spawn(
                self._dial_transfer(call, queued, to, ring_seconds), name=f"hand-on-{call.id}"
            )

    async def _requeue(self, call: Call, queued: QueuedCall, queue_id: UUID) -> None:
        """Queue the call again (in `queue_id`) as its flow first queued it."""
        await self.enqueue(
            call,
            queue_id,
            priority=queued.priority,
            skills=queued.skills,
            attributes=queued.attributes,
            context=queued.context,
        )

    def take_over(self, call: Call, leg: AgentLeg) -> None:
        """An attended transfer to another agent completes: their answered `leg` replaces the
        call's agent (whose leg is left to end without hanging up the caller), and talks to the
        caller until either hangs up."""
        queued = call.queued
        assert queued is not None
        assert queued.agent is not None
        self._let_go(call, queued.agent)
        if call.recorder is not None:
            call.recorder.attach(leg.stream)
        self.legs.add(leg)
        queued.agent = leg
        call.agent_id = leg.agent_id
        self.silence(call)
        bridge = Bridge(call.stream, leg.stream)
        bridge.start()
        call.bridge = bridge
        if leg.offer is None and self._node.agent_lines is not None:
            self._node.agent_lines.bridged(leg.tenant_id, leg.agent_id, call, bridge)
        self._spawn(self._talk_then_release(call, leg, bridge), name=f"take-over-{call.id}")

    def join_number(self, call: Call, target: Call) -> None:
        """An attended transfer to a number completes: the caller talks to the answered
        `target` until either hangs up; the agent's leg is left to end."""
        queued = call.queued
        assert queued is not None
        assert queued.agent is not None
        self._let_go(call, queued.agent)
        queued.agent = None
        call.queued = None
        call.agent_id = None
        if call.recorder is not None:
            call.recorder.attach(target.stream)
        self.silence(call)
        bridge = Bridge(call.stream, target.stream)
        bridge.start()
        call.bridge = target.bridge = bridge
        self._spawn(self._join(call, target, bridge), name=f"consult-join-{call.id}")

    def _let_go(self, call: Call, leg: AgentLeg) -> None:
        leg.handed_on = True
        if call.bridge is not None:
            call.bridge.stop()
            call.bridge = None
        if call.recorder is not None:
            call.recorder.detach(leg.stream)

    async def _talk_then_release(self, call: Call, leg: AgentLeg, bridge: Bridge) -> None:
        try:
            await self._talk(call, leg, bridge)
        finally:
            if leg in self.legs:
                await self._release(leg)

    async def _dial_transfer(
        self, call: Call, queued: QueuedCall, number: str, ring_seconds: float
    ) -> None:
        call.queued = None  # ringing the number: nobody's queue until it fails
        try:
            outcome = await self.transfer(
                call, number, caller_id=call.to_number, timeout_seconds=ring_seconds
            )
        except CallEnded:
            return
        if outcome != "answered" and not call.is_over:
            await self._requeue(call, queued, queued.queue_id)

    # --- transfer (from the call's flow) ------------------------------------------------------

    async def transfer(
        self, call: Call, number: str, *, caller_id: str, timeout_seconds: float
    ) -> str:
        node = self._node
        _check(call)
        await node.answer(call)
        request = Originate(
            tenant_id=call.tenant_id,
            to=number,
            caller_id=caller_id,
            max_concurrent_calls=call.max_concurrent_calls or _NO_CAP,
        )
        try:
            target = await node.originate(request)
        except CommandRefused as exc:
            return self._transferred(call, number, f"refused:{exc.code}")
        self.silence(call)
        call.playing = asyncio.get_running_loop().create_task(
            node.player.play(call.stream, _ringback(), loop=True)
        )
        try:
            outcome = await self._answered_within(
                target, timeout_seconds, call.over, gone_reason="caller_gone"
            )
        finally:
            self.silence(call)
        if outcome == "gone":
            raise CallEnded(call.end_or_hangup())
        if outcome == "answered":
            bridge = Bridge(call.stream, target.stream)
            bridge.start()
            call.bridge = target.bridge = bridge
            self._spawn(self._join(call, target, bridge), name=f"transfer-{call.id}")
        return self._transferred(call, number, outcome)

    def _transferred(self, call: Call, number: str, outcome: str) -> str:
        self._emit(
            ev.CallTransferred(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self._node.config.node_id,
                to=number,
                outcome=outcome,
            )
        )
        return outcome

    async def _join(self, a: Call, b: Call, bridge: Bridge) -> None:
        """Two calls bridged until either hangs up; then the other is hung up too."""
        await _first_set(a.over, b.over)
        bridge.stop()
        for call in (a, b):
            await self._node.hangup(call, "bridged_leg_ended")

    async def _answered_within(
        self, target: Call, ring_seconds: float, gone: asyncio.Event, *, gone_reason: str
    ) -> str:
        """Whether the outbound `target` answers in time: "answered"; else it is hung up and the
        reason is returned: "gone" (`gone` was set first: `gone_reason` is the hang-up's),
        "no_answer", "busy" or "failed"."""
        sip = target.sip
        assert isinstance(sip, OutboundCall)
        gone_waiter = asyncio.ensure_future(gone.wait())
        watched: set[asyncio.Future[Any]] = {sip.answered, gone_waiter}
        try:
            await asyncio.wait(
                watched,
                timeout=ring_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone_waiter.cancel()
        if gone.is_set():
            await self._node.hangup(target, gone_reason)
            return "gone"
        if not sip.answered.done():
            await self._node.hangup(target, "no_answer")
            return "no_answer"
        refusal = sip.answered.exception()
        if refusal is None:
            return "answered"
        status = refusal.end.sip_status if isinstance(refusal, CallEnded) else None
        if status in (486, 600, 603):
            return "busy"
        if status in (408, 480, 487):
            return "no_answer"
        return "failed"

    # --- dial back -----------------------------------------------------------------------------

    async def dial_back(self, command: DialBackCommand) -> dict[str, Any]:
        node = self._node
        if node.draining:
            raise CommandRefused("draining", "this node is draining")
        if command.call_id in node.calls or any(
            leg.call_id == command.call_id for leg in self.legs
        ):
            raise CommandRefused("call_exists", "that call is already on this node")
        try:
            await node.outbound_route(
                command.tenant_id, command.number, command.caller_id, command.trunk_id
            )
        except CommandRefused as exc:
            self._callback_failed(command, f"refused:{exc.code}")
            raise
        try:
            leg = await self._ring(
                command.tenant_id,
                command.agent_id,
                command.device,
                codecs=("PCMU", "PCMA"),
                info=RingInfo(
                    call_id=command.call_id,
                    queue_id=command.queue_id,
                    from_number=command.number,
                    to_number=command.caller_id,
                    waited_seconds=0.0,
                    timeout_seconds=command.timeout_seconds,
                    context={"callback": True},
                ),
                trunk_id=command.trunk_id,
            )
        except CommandRefused:
            self._offer_failed(command.tenant_id, command.call_id, command.agent_id, "refused")
            raise
        self._spawn(self._follow_dial_back(leg, command), name=f"dial-back-{command.call_id}")
        return {}

    async def _follow_dial_back(self, leg: AgentLeg, command: DialBackCommand) -> None:
        node = self._node
        try:
            answer = await self._await_answer(leg, command.timeout_seconds, gone=None)
            if answer is None:
                return
            if not _connect(leg, answer.sdp):
                await self._fail_answered(leg, "unreachable")
                return
            self._offer_event(ev.CallOfferAnswered, leg)
            # The agent hears ringback while the customer's phone rings.
            ringback = asyncio.ensure_future(node.player.play(leg.stream, _ringback(), loop=True))
            try:
                customer = await node.originate(
                    Originate(
                        tenant_id=command.tenant_id,
                        to=command.number,
                        caller_id=command.caller_id,
                        trunk_id=command.trunk_id,
                        max_concurrent_calls=command.max_concurrent_calls or _NO_CAP,
                    ),
                    call_id=command.call_id,
                )
            except CommandRefused as exc:
                ringback.cancel()
                await self._end_leg(leg)
                self._callback_failed(command, f"refused:{exc.code}")
                return
            customer.agent_id = command.agent_id
            customer.queue_id = command.queue_id
            try:
                outcome = await self._answered_within(
                    customer, command.customer_timeout_seconds, leg.over, gone_reason="agent_hangup"
                )
            finally:
                ringback.cancel()
                node.player.stop(leg.stream)
            if outcome != "answered":
                await self._end_leg(leg)
                self._callback_failed(command, "agent_gone" if outcome == "gone" else outcome)
                return
            bridge = Bridge(customer.stream, leg.stream)
            bridge.start()
            customer.bridge = bridge
            if command.record:
                await self._record(customer, leg.stream)
            await self._talk(customer, leg, bridge)
        finally:
            if leg in self.legs:
                await self._release(leg)

    def _callback_failed(self, command: DialBackCommand, reason: str) -> None:
        self._emit(
            ev.CallCallbackFailed(
                tenant_id=command.tenant_id,
                call_id=command.call_id,
                node_id=self._node.config.node_id,
                agent_id=command.agent_id,
                reason=reason,
            )
        )


def announcement_text(position: int, ewt_seconds: int | None) -> str:
    text = f"You are caller number {position}."
    if ewt_seconds is not None:
        minutes = max(1, round(ewt_seconds / 60))
        text += f" Your estimated wait is about {minutes} minute{'' if minutes == 1 else 's'}."
    return text


def _check(call: Call) -> None:
    if call.is_over:
        raise CallEnded(call.end_or_hangup())


async def _wait(call: Call, waiters: set[asyncio.Future[Any]], within: float | None = None) -> None:
    """Until one of `waiters` is done or `within` seconds pass; raises CallEnded if the call
    ends first."""
    over = asyncio.ensure_future(call.over.wait())
    try:
        await asyncio.wait({*waiters, over}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        over.cancel()
    _check(call)


async def _first_set(*events: asyncio.Event) -> None:
    """Until any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@dataclass(frozen=True, slots=True)
class _Answer:
    sdp: sdp.SessionDescription | None
    """The device's SDP answer; None from a browser leg."""


def _connect(leg: AgentLeg, answer: sdp.SessionDescription | None) -> bool:
    """Point the leg's media where the device's answer says; False when it is unusable. A
    browser leg's media is up already."""
    if leg.offer is None:
        return True
    if answer is None:
        return False
    try:
        negotiated = sdp.read_answer(leg.offer, answer)
    except sdp.SdpError:
        return False
    leg.stream.configure(negotiated, (negotiated.remote_address, negotiated.remote_port))
    return True


def _refusal(end: CallEnd | None) -> OfferFailure:
    status = None if end is None else end.sip_status
    if status in (486, 600):
        return "busy"
    if status == 603:
        return "rejected"
    return "unreachable"


def _g711_first(codec: str) -> tuple[str, ...]:
    """The caller's own codec first, so the bridge passes audio through untouched."""
    return ("PCMA", "PCMU") if codec == "PCMA" else ("PCMU", "PCMA")


class _Loudness:
    """How long a leg has been audible: 20 ms frames whose peak passes AUDIBLE_PEAK."""

    def __init__(self, stream: RtpStream) -> None:
        self._stream = stream
        self.audible_ms = 0

    def hear(self, packet: RtpPacket) -> None:
        decode = _DECODERS.get(self._stream.codec)
        if decode is None:
            return
        samples = array("h", decode(packet.payload))
        if sys.byteorder == "big":
            samples.byteswap()
        if samples and max(max(samples), -min(samples)) > AUDIBLE_PEAK:
            self.audible_ms += len(samples) * 1000 // SAMPLE_RATE


def _tone(freqs: tuple[float, ...], on_ms: int, off_ms: int, amplitude: float) -> PcmAudio:
    on = on_ms * SAMPLE_RATE // 1000
    level = amplitude * 32767 / len(freqs)
    samples = array(
        "h",
        (
            round(level * sum(math.sin(2 * math.pi * f * i / SAMPLE_RATE) for f in freqs))
            for i in range(on)
        ),
    )
    samples.extend([0] * (off_ms * SAMPLE_RATE // 1000))
    if sys.byteorder == "big":
        samples.byteswap()
    return PcmAudio(samples=samples.tobytes(), duration_ms=on_ms + off_ms)


@cache
def _beep() -> PcmAudio:
    """The tone before a message is recorded: 1 kHz for a quarter second."""
    return _tone((1000.0,), 250, 0, 0.3)


@cache
def _ringback() -> PcmAudio:
    """North American ringback: 440 + 480 Hz, two seconds on, four off."""
    return _tone((440.0, 480.0), 2000, 4000, 0.2)

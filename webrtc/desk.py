"""The browser agents whose media legs live on this media node.

An agent's softphone negotiates one peer connection when it comes online and keeps it for the
shift (`connect`); the stream behind it is the agent's line. When the router offers a call, the
queueing code rings the line (`ring`): the browser is told about the call with its screen pop,
and answering needs no negotiation at all, only the bridge between the caller's leg and the
line. The agent's commands during the call (hold, mute, keys, hang up) arrive here, and the
agent hears about the call's changes through `notify`.

If the browser's connection drops mid-call, the caller hears the queue's hold music until the
softphone reconnects (a new offer, attached to the same stream) and the conversation resumes;
after `reconnect_grace_seconds` without a connection the agent's side is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec

from media import events as ev
from media.bridge import Bridge, Mixer, MixMode
from media.node import Call, CommandRefused, MediaNode, Originate, _Command, _encode
from media.policy import E164_RE
from media.queueing import AgentLeg, RingInfo, TransferKind, _first_set
from media.sip.call import CallEnd, CallEnded
from media.stream import RtpStream
from webrtc.leg import AgentPeer, IceServer, NegotiationFailed, WebRtcStream

__all__ = [
    "CONNECT_SUBJECT",
    "AgentDesk",
    "AgentSession",
    "DeskLine",
    "agent_command_subject",
    "agent_notice_subject",
]

DIAL_RING_SECONDS = 45.0
CONSULT_RING_SECONDS = 30.0
"""How long an agent or number consulted for an attended transfer may ring."""
"""How long a number the agent dials may ring."""

CONNECT_SUBJECT = "media.agents.connect"
"""Where a softphone's first offer goes (a queue group: any media node takes it)."""


def agent_command_subject(tenant_id: UUID | str, agent_id: UUID | str, verb: str) -> str:
    """Commands for an agent's line, answered by the node holding it."""
    return f"media.agent.{tenant_id}.{agent_id}.{verb}"


def agent_notice_subject(tenant_id: UUID | str, agent_id: UUID | str) -> str:
    """What the agent's softphone is told (offers, call states, the leg's state)."""
    return f"agentdesk.{tenant_id}.{agent_id}"


log = logging.getLogger(__name__)

Notify = Callable[[UUID, UUID, dict[str, Any]], None]
"""(tenant, agent, message): tell the agent's softphone something."""
Serve = Callable[[UUID, UUID], Awaitable[Callable[[], Awaitable[None]]]]
"""Start taking the agent's commands here; returns how to stop."""

Digits = Annotated[str, msgspec.Meta(pattern=r"^[0-9*#A-D]{1,32}$")]


class _AgentCommand(_Command, kw_only=True):
    agent_id: UUID


class ConnectCommand(_AgentCommand, kw_only=True):
    sdp: Annotated[str, msgspec.Meta(min_length=10, max_length=20000)]


class CallCommand(_AgentCommand, kw_only=True):
    call_id: UUID


class MuteCommand(CallCommand, kw_only=True):
    muted: bool


class DtmfCommand(CallCommand, kw_only=True):
    digits: Digits


MonitorMode = Literal["listen", "whisper", "barge"]
"""Listen: hears both, heard by neither. Whisper: heard by the agent only. Barge: all three."""
_MIX_MODES: dict[str, MixMode] = {"listen": "listen", "whisper": "whisper", "barge": "full"}


class MonitorCommand(CallCommand, kw_only=True):
    mode: MonitorMode


class DialCommand(_AgentCommand, kw_only=True):
    number: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
    caller_id: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]


class TransferCommand(CallCommand, kw_only=True):
    to_kind: TransferKind
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ConsultCommand(CallCommand, kw_only=True):
    to_kind: Literal["agent", "number"]
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class DeskLine:
    """One call offered to (and perhaps answered by) a browser agent: the `AgentLine` the
    queueing code rings."""

    def __init__(self, session: AgentSession, info: RingInfo, direction: str = "inbound") -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.info = info
        self.direction = direction
        self.ringing = asyncio.Event()
        self.answered: asyncio.Future[Any] = loop.create_future()
        self.ended: asyncio.Future[CallEnd] = loop.create_future()
        self.call: Call | None = None
        self.bridge: Bridge | None = None
        self.held = False
        self.muted = False
        self.consult: Consult | None = None
        """An attended transfer this agent has under way."""

    @property
    def call_id(self) -> UUID:
        return self.info.call_id

    def notice(self, state: str, cause: str | None = None) -> dict[str, Any]:
        """What the softphone is told about this call."""
        message: dict[str, Any] = {
            "type": "call",
            "call_id": str(self.call_id),
            "state": state,
            "from_number": self.info.from_number,
            "to_number": self.info.to_number,
            "at": _now(),
            "direction": self.direction,
        }
        if cause is not None:
            message["cause"] = cause
        return message

    def end(self, end: CallEnd) -> None:
        if not self.answered.done():
            self.answered.set_exception(CallEnded(end))
            # Retrieved here so an unobserved refusal is not reported as an error.
            self.answered.exception()
        if not self.ended.done():
            self.ended.set_result(end)
            self.session.line_over(self, end)

    async def hangup(self, reason: str = "normal") -> None:
        if self.ended.done():
            raise CallEnded(self.ended.result())
        cause = "local_hangup" if self.answered.done() else "cancelled"
        self.end(CallEnd(cause=cause, reason=reason))


@dataclass(eq=False)
class AgentSession:
    desk: AgentDesk
    tenant_id: UUID
    agent_id: UUID
    stream: WebRtcStream
    peer: AgentPeer | None = None
    line: DeskLine | None = None
    stop_serving: Callable[[], Awaitable[None]] | None = None
    grace: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    monitor: Monitor | None = None
    """The call this user is supervising, if any."""

    def notify(self, message: dict[str, Any]) -> None:
        self.desk.notify(self.tenant_id, self.agent_id, message)

    def line_over(self, line: DeskLine, end: CallEnd) -> None:
        if self.line is line:
            self.line = None
        answered = line.answered.done() and line.answered.exception() is None
        state = "ended" if answered or line.direction == "outbound" else "offer_withdrawn"
        self.notify(line.notice(state, end.reason or end.cause))


@dataclass(eq=False)
class Consult:
    """An attended transfer: the caller on hold while the agent talks to `to` first."""

    line: DeskLine
    call: Call
    to_kind: str
    to: str
    target_line: DeskLine | None = None
    """The consulted agent's line (to an agent)."""
    target_call: Call | None = None
    """The call to the consulted number."""
    bridge: Bridge | None = None
    """The agent and the one consulted, once they answered."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Monitor:
    """A supervisor on a call: while it lasts the caller, the agent and the supervisor are
    joined by a mixer instead of the call's two-leg bridge."""

    supervisor: AgentSession
    call: Call
    agent_id: UUID
    agent_stream: RtpStream
    mixer: Mixer
    mode: MonitorMode
    watcher: asyncio.Task[None] | None = None
    told: str | None = None
    """What the agent was last told of the supervisor: "whisper", "barge" or nothing."""


class AgentDesk:
    """Every browser agent's line on one media node."""

    def __init__(
        self,
        node: MediaNode,
        notify: Notify,
        serve: Serve,
        *,
        ice_servers: Sequence[IceServer] = (),
        reconnect_grace_seconds: float = 60.0,
    ) -> None:
        self.node = node
        self.notify = notify
        self._serve = serve
        self.ice_servers = tuple(ice_servers)
        self.reconnect_grace_seconds = reconnect_grace_seconds
        self.sessions: dict[tuple[UUID, UUID], AgentSession] = {}
        self._opening: dict[tuple[UUID, UUID], asyncio.Lock] = {}
        self.monitors: dict[UUID, Monitor] = {}
        """By call id: the supervisor on each supervised call of this node."""

    def counts(self) -> dict[str, int]:
        return {
            "agents": len(self.sessions),
            "agents_connected": sum(1 for s in self.sessions.values() if s.stream.connected),
        }

    # --- the agent's leg ---------------------------------------------------------------------

    async def connect(self, tenant_id: UUID, agent_id: UUID, offer_sdp: str) -> str:
        """Answer the softphone's offer: the agent's line, or its renegotiation after a drop."""
        key = (tenant_id, agent_id)
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            session = self.sessions.get(key)
            if session is None:
                session = AgentSession(self, tenant_id, agent_id, WebRtcStream.create())
                self.sessions[key] = session
                try:
                    session.stop_serving = await self._serve(tenant_id, agent_id)
                except BaseException:
                    del self.sessions[key]
                    await session.stream.close()
                    raise
            try:
                peer, answer = await AgentPeer.answer(offer_sdp, session.stream, self.ice_servers)
            except NegotiationFailed as exc:
                if session.peer is None:  # nothing was ever connected: forget the agent
                    await self._drop(session)
                raise CommandRefused(exc.code, exc.message) from exc
            old, session.peer = session.peer, peer
            peer.on_state = lambda state: self._leg_state(session, peer, state)
            if old is not None:
                await old.close()
            return answer

    def _leg_state(self, session: AgentSession, peer: AgentPeer, state: str) -> None:
        if session.peer is not peer:
            return  # a connection already replaced
        session.notify({"type": "leg", "state": state})
        line = session.line
        if state == "connected":
            if session.grace is not None:
                session.grace.cancel()
                session.grace = None
            if line is not None and line.call is not None:
                self._arrange(line.call)
        elif state in ("failed", "closed", "disconnected"):
            if session.monitor is not None:
                self._end_monitor(session.monitor, "supervisor_unreachable")
            if line is not None and line.call is not None:
                self._arrange(line.call)
            if session.grace is None and line is not None:
                session.grace = asyncio.get_running_loop().call_later(
                    self.reconnect_grace_seconds, self._give_up, session
                )

    def _give_up(self, session: AgentSession) -> None:
        session.grace = None
        if session.stream.connected:
            return
        line = session.line
        if line is not None:
            line.end(CallEnd(cause="failed", reason="agent_unreachable"))

    async def close_session(self, tenant_id: UUID, agent_id: UUID) -> None:
        """The agent signed off: end any offer, close the connection and the line."""
        session = self.sessions.get((tenant_id, agent_id))
        if session is not None:
            await self._drop(session)

    async def _drop(self, session: AgentSession) -> None:
        key = (session.tenant_id, session.agent_id)
        if self.sessions.get(key) is session:
            del self.sessions[key]
            self._opening.pop(key, None)
        if session.monitor is not None:
            self._end_monitor(session.monitor, "supervisor_signed_off")
        if session.line is not None:
            session.line.end(CallEnd(cause="failed", reason="agent_signed_off"))
        if session.grace is not None:
            session.grace.cancel()
        if session.peer is not None:
            await session.peer.close()
        for task in list(session.tasks):
            task.cancel()
        await session.stream.close()
        if session.stop_serving is not None:
            await session.stop_serving()

    async def close(self) -> None:
        for tenant_id, agent_id in list(self.sessions):
            await self.close_session(tenant_id, agent_id)

    # --- AgentLines (what the queueing code rings) ----------------------------------------------

    def ring(self, tenant_id: UUID, agent_id: UUID, info: RingInfo) -> tuple[DeskLine, RtpStream]:
        session = self.sessions.get((tenant_id, agent_id))
        if session is None or not session.stream.connected:
            raise CommandRefused("device_unreachable", "the agent's softphone is not connected")
        if session.line is not None or session.monitor is not None:
            raise CommandRefused("agent_busy", "the agent's line is in use")
        line = DeskLine(session, info)
        session.line = line
        line.ringing.set()
        session.notify(
            {
                "type": "offered",
                "call_id": str(info.call_id),
                "queue_id": str(info.queue_id) if info.queue_id else None,
                "queue_name": info.context.get("queue_name"),
                "from_number": info.from_number,
                "to_number": info.to_number,
                "waited_seconds": info.waited_seconds,
                "timeout_seconds": info.timeout_seconds,
                "context": info.context,
            }
        )
        return line, session.stream

    def bridged(self, tenant_id: UUID, agent_id: UUID, call: Call, bridge: Bridge) -> None:
        session = self.sessions.get((tenant_id, agent_id))
        if session is None or session.line is None or session.line.call_id != call.id:
            return
        line = session.line
        line.call = call
        line.bridge = bridge
        self._state(line, "connected")

    def _state(self, line: DeskLine, state: str) -> None:
        line.session.notify(line.notice(state))

    # --- during the call ---------------------------------------------------------------------

    def _line(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> DeskLine:
        session = self.sessions.get((tenant_id, agent_id))
        line = session.line if session is not None else None
        if line is None or line.call_id != call_id:
            raise CommandRefused("call_not_found", "no such call on the agent's line")
        return line

    def _talking(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> DeskLine:
        line = self._line(tenant_id, agent_id, call_id)
        if line.call is None or line.bridge is None:
            raise CommandRefused("not_connected", "the call is not connected yet")
        return line

    def answer(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> None:
        line = self._line(tenant_id, agent_id, call_id)
        if line.answered.done():
            raise CommandRefused("already_answered", "the call was already answered")
        if not line.session.stream.connected:
            raise CommandRefused("no_media", "the softphone's audio is not connected")
        line.answered.set_result(None)

    def reject(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> None:
        line = self._line(tenant_id, agent_id, call_id)
        if line.answered.done():
            raise CommandRefused("already_answered", "hang up instead: the call is connected")
        line.end(CallEnd(cause="rejected", sip_status=603, reason="rejected"))

    def hangup(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> None:
        line = self._line(tenant_id, agent_id, call_id)
        consult = line.consult
        if consult is not None:
            if consult.bridge is not None and not consult.call.is_over:
                self._complete(line)  # hanging up while consulting hands the call over
                return
            self._finish_consult(consult, "cancelled")
        if not line.answered.done():
            line.end(CallEnd(cause="rejected", sip_status=603, reason="rejected"))
            return
        line.end(CallEnd(cause="remote_bye", reason="agent_hangup"))

    def hold(self, tenant_id: UUID, agent_id: UUID, call_id: UUID, held: bool) -> None:
        line = self._talking(tenant_id, agent_id, call_id)
        if line.held == held:
            return
        line.held = held
        call = line.call
        assert call is not None
        self._arrange(call)
        kind = ev.CallHeld if held else ev.CallResumed
        self.node._emit(
            kind(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.node.config.node_id,
                by="agent",
            )
        )
        self._state(line, "held" if held else "connected")

    def mute(self, tenant_id: UUID, agent_id: UUID, call_id: UUID, muted: bool) -> None:
        line = self._talking(tenant_id, agent_id, call_id)
        line.muted = muted
        assert line.call is not None
        self._arrange(line.call)

    def dtmf(self, tenant_id: UUID, agent_id: UUID, call_id: UUID, digits: str) -> None:
        line = self._talking(tenant_id, agent_id, call_id)
        call = line.call
        assert call is not None

        async def press() -> None:
            for digit in digits:
                with contextlib.suppress(CallEnded):
                    await call.stream.send_digit(digit)

        task = asyncio.get_running_loop().create_task(press())
        line.session.tasks.add(task)
        task.add_done_callback(line.session.tasks.discard)

    async def transfer(
        self, tenant_id: UUID, agent_id: UUID, call_id: UUID, to_kind: TransferKind, to: str
    ) -> None:
        """A blind transfer of the call on the agent's line (see `Queues.hand_on`); the line
        ends with the reason "transferred"."""
        self._talking(tenant_id, agent_id, call_id)
        monitor = self.monitors.get(call_id)
        if monitor is not None:
            self._end_monitor(monitor, "transferred")
        await self.node.queues.hand_on(tenant_id, call_id, agent_id, to_kind=to_kind, to=to)

    def _line_of(self, call: Call) -> DeskLine | None:
        """The browser line talking on `call`, if its agent is a browser agent of this node."""
        if call.agent_id is None:
            return None
        session = self.sessions.get((call.tenant_id, call.agent_id))
        line = session.line if session is not None else None
        return line if line is not None and line.call is call else None

    def _arrange(self, call: Call) -> None:
        """Join the call's legs as its state says: the caller hears hold music while the agent
        holds or their connection is down; a muted agent is not heard; a supervisor on the call
        (a mixer instead of the bridge) hears, whispers or talks as their mode says."""
        bridge = call.bridge
        line = self._line_of(call)
        leg = call.queued.agent if call.queued is not None else None
        if bridge is None or call.is_over or (leg is None and line is None):
            return  # over, or being handed on: nothing to join
        if leg is not None and leg.over.is_set():
            return
        agent_here = line is None or line.session.stream.connected
        caller_in = agent_here and (line is None or not line.held)
        muted = line is not None and line.muted
        monitor = self.monitors.get(call.id)
        queues = self.node.queues
        if monitor is None:
            if not caller_in:
                bridge.stop()
                if call.queued is not None:
                    queues.hold_music(call)
                return
            queues.silence(call)
            bridge.start()
            if line is not None:
                bridge.mute(line.session.stream, muted)
            return
        bridge.stop()
        mixer = monitor.mixer
        if caller_in:
            queues.silence(call)
            mixer.add(call.stream, "full")
        else:
            mixer.remove(call.stream)
            if call.queued is not None:
                queues.hold_music(call)
        if agent_here:
            mixer.add(monitor.agent_stream, "listen" if muted else "full")
        else:
            mixer.remove(monitor.agent_stream)
        supervisor = monitor.supervisor.stream
        if monitor.mode == "whisper" and monitor.agent_stream in mixer:
            mixer.add(supervisor, "whisper", whisper_to=monitor.agent_stream)
        else:
            mixer.add(
                supervisor, "listen" if monitor.mode == "whisper" else _MIX_MODES[monitor.mode]
            )

    # --- attended transfers ------------------------------------------------------------------

    async def consult(
        self, tenant_id: UUID, agent_id: UUID, call_id: UUID, to_kind: str, to: str
    ) -> None:
        """Put the caller on hold and ring `to` (an agent of this node, or a number with the
        tenant's number the caller called as caller ID) for the agent to talk to first; then
        `complete_consult` hands the call over, `cancel_consult` returns to the caller."""
        line = self._talking(tenant_id, agent_id, call_id)
        call = line.call
        assert call is not None
        queued = call.queued
        if queued is None or queued.agent is None or queued.agent.agent_id != agent_id:
            raise CommandRefused("not_supported", "only a call from a queue can be transferred")
        if line.consult is not None:
            raise CommandRefused("consulting", "a consultation is under way already")
        target_agent: UUID | None = None
        if to_kind == "agent":
            try:
                target_agent = UUID(to)
            except ValueError as exc:
                raise CommandRefused("invalid_target", f"{to!r} is not an id") from exc
            if target_agent == agent_id:
                raise CommandRefused("invalid_target", "pick another agent")
            target = self.sessions.get((tenant_id, target_agent))
            if (
                target is None
                or not target.stream.connected
                or target.line is not None
                or target.monitor is not None
            ):
                raise CommandRefused("agent_unavailable", "that agent cannot take a call now")
        elif not E164_RE.match(to):
            raise CommandRefused("invalid_target", "a number is in E.164 form")
        monitor = self.monitors.get(call_id)
        if monitor is not None:
            self._end_monitor(monitor, "transferred")
        if not line.held:
            self.hold(tenant_id, agent_id, call_id, True)
        consult = Consult(line, call, to_kind, to)
        line.consult = consult
        try:
            if target_agent is not None:
                info = RingInfo(
                    call_id=call.id,
                    queue_id=queued.queue_id,
                    from_number=call.from_number,
                    to_number=call.to_number,
                    waited_seconds=0.0,
                    timeout_seconds=CONSULT_RING_SECONDS,
                    context={**queued.context, "consult_from": str(agent_id)},
                )
                consult.target_line, _stream = self.ring(tenant_id, target_agent, info)
            else:
                consult.target_call = await self.node.originate(
                    Originate(
                        tenant_id=tenant_id,
                        to=to,
                        caller_id=call.to_number,
                        max_concurrent_calls=call.max_concurrent_calls or sys.maxsize,
                    )
                )
        except BaseException:
            line.consult = None
            raise
        self._consult_changed(consult, "ringing")
        consult.task = asyncio.get_running_loop().create_task(
            self._follow_consult(consult), name=f"consult-{call.id}"
        )
        line.session.tasks.add(consult.task)
        consult.task.add_done_callback(line.session.tasks.discard)

    async def _follow_consult(self, consult: Consult) -> None:
        line, call = consult.line, consult.call
        gone = asyncio.Event()  # the caller or the consulting agent left
        line.ended.add_done_callback(lambda _f: gone.set())
        call_over = asyncio.ensure_future(call.over.wait())
        call_over.add_done_callback(lambda _f: gone.set())
        try:
            answered = await self._consult_answered(consult, gone)
            if not answered:
                self._finish_consult(consult, "no_answer" if not gone.is_set() else "caller_gone")
                return
            bridge = Bridge(line.session.stream, self._consult_stream(consult))
            bridge.start()
            consult.bridge = bridge
            if consult.target_line is not None:
                self._state(consult.target_line, "connected")
            self._consult_changed(consult, "connected")
            target_gone = asyncio.Event()
            if consult.target_line is not None:
                consult.target_line.ended.add_done_callback(lambda _f: target_gone.set())
            elif consult.target_call is not None:
                target_gone = consult.target_call.over
            await _first_set(consult.finished, gone, target_gone)
            if consult.finished.is_set():
                return
            if call.is_over:
                self._finish_consult(consult, "caller_gone")
            else:
                self._finish_consult(consult, "agent_gone" if line.ended.done() else "hung_up")
        finally:
            call_over.cancel()

    async def _consult_answered(self, consult: Consult, gone: asyncio.Event) -> bool:
        if consult.target_call is not None:
            outcome = await self.node.queues._answered_within(
                consult.target_call, CONSULT_RING_SECONDS, gone, gone_reason="cancelled"
            )
            return outcome == "answered" and not consult.finished.is_set()
        target = consult.target_line
        assert target is not None
        waiters = [
            asyncio.ensure_future(asyncio.shield(target.answered)),
            asyncio.ensure_future(gone.wait()),
            asyncio.ensure_future(consult.finished.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=CONSULT_RING_SECONDS, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
        answered = target.answered.done() and target.answered.exception() is None
        return answered and not gone.is_set() and not consult.finished.is_set()

    def _consult_stream(self, consult: Consult) -> RtpStream:
        if consult.target_line is not None:
            return consult.target_line.session.stream
        assert consult.target_call is not None
        return consult.target_call.stream

    def complete_consult(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> None:
        """Hand the call to the one consulted: they talk to the caller, the agent's line ends."""
        self._complete(self._line(tenant_id, agent_id, call_id))

    def _complete(self, line: DeskLine) -> None:
        consult = line.consult
        if consult is None or consult.bridge is None:
            raise CommandRefused("not_connected", "nobody has answered the consultation yet")
        call = consult.call
        tenant_id, agent_id = call.tenant_id, line.session.agent_id
        if call.is_over:
            raise CommandRefused("call_not_found", "the caller has hung up")
        consult.bridge.stop()
        line.consult = None
        consult.finished.set()
        queues = self.node.queues
        if consult.target_line is not None:
            target = consult.target_line
            session = target.session
            leg = AgentLeg(session.agent_id, tenant_id, call.id, target, session.stream, None)
            queues.take_over(call, leg)
        else:
            assert consult.target_call is not None
            queues.join_number(call, consult.target_call)
        self._consult_changed(consult, "completed")
        self.node._emit(
            ev.CallTransferred(
                tenant_id=tenant_id,
                call_id=call.id,
                node_id=self.node.config.node_id,
                to=consult.to,
                to_kind=consult.to_kind,  # type: ignore[arg-type]
                agent_id=agent_id,
                attended=True,
                outcome="connected",
            )
        )
        line.end(CallEnd(cause="local_hangup", reason="transferred"))

    def cancel_consult(self, tenant_id: UUID, agent_id: UUID, call_id: UUID) -> None:
        """Give up the consultation and go back to the caller."""
        line = self._line(tenant_id, agent_id, call_id)
        consult = line.consult
        if consult is None:
            raise CommandRefused("not_consulting", "no consultation is under way")
        self._finish_consult(consult, "cancelled")
        if line.held and line.call is not None and not line.call.is_over:
            self.hold(tenant_id, agent_id, call_id, False)

    def _finish_consult(self, consult: Consult, reason: str) -> None:
        """The consultation ends without a hand-over; the caller stays on hold with the agent."""
        if consult.finished.is_set():
            return
        consult.finished.set()
        if consult.line.consult is consult:
            consult.line.consult = None
        if consult.bridge is not None:
            consult.bridge.stop()
        if consult.target_line is not None:
            consult.target_line.end(CallEnd(cause="local_hangup", reason="consult_ended"))
        if consult.target_call is not None and not consult.target_call.is_over:
            task = asyncio.get_running_loop().create_task(
                self.node.hangup(consult.target_call, "consult_ended")
            )
            consult.line.session.tasks.add(task)
            task.add_done_callback(consult.line.session.tasks.discard)
        self._consult_changed(consult, "ended", reason)

    def _consult_changed(self, consult: Consult, state: str, reason: str | None = None) -> None:
        call = consult.call
        agent_id = consult.line.session.agent_id
        self.node._emit(
            ev.CallConsulted(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.node.config.node_id,
                agent_id=agent_id,
                to_kind=consult.to_kind,  # type: ignore[arg-type]
                to=consult.to,
                state=state,  # type: ignore[arg-type]
                reason=reason,
            )
        )
        message: dict[str, Any] = {
            "type": "consult",
            "call_id": str(call.id),
            "to_kind": consult.to_kind,
            "to": consult.to,
            "state": state,
            "at": _now(),
        }
        if reason is not None:
            message["reason"] = reason
        consult.line.session.notify(message)

    # --- click-to-dial -------------------------------------------------------------------------

    async def dial(
        self, tenant_id: UUID, agent_id: UUID, number: str, caller_id: str
    ) -> dict[str, Any]:
        """Call `number` from the agent's line, showing `caller_id` (one of the tenant's
        numbers): the agent hears the call progress on their softphone and is bridged to the
        customer on answer. The router counts the agent busy from `call.dialed` on."""
        session = self.sessions.get((tenant_id, agent_id))
        if session is None or not session.stream.connected:
            raise CommandRefused("no_media", "the softphone's audio is not connected")
        if session.line is not None or session.monitor is not None:
            raise CommandRefused("busy", "the agent's line is in use")
        route = await self.node.directory.inbound_route(caller_id)
        if route is None or route.tenant_id != tenant_id:
            raise CommandRefused(
                "caller_id_not_owned", "the caller ID must be one of the tenant's numbers"
            )
        if not route.tenant_active:
            raise CommandRefused("tenant_inactive", "the tenant may not place calls now")
        if session.line is not None:  # taken while the number was looked up
            raise CommandRefused("busy", "the agent's line is in use")
        info = RingInfo(
            call_id=UUID(int=0),
            queue_id=None,
            from_number=caller_id,
            to_number=number,
            waited_seconds=0.0,
            timeout_seconds=DIAL_RING_SECONDS,
            context={},
        )
        line = DeskLine(session, info, direction="outbound")
        session.line = line  # held from here, so no offer rings the line meanwhile
        try:
            call = await self.node.originate(
                Originate(
                    tenant_id=tenant_id,
                    to=number,
                    caller_id=caller_id,
                    max_concurrent_calls=route.max_concurrent_calls,
                )
            )
        except BaseException:
            session.line = None
            raise
        call.agent_id = agent_id
        line.info = dataclasses.replace(info, call_id=call.id)
        line.call = call
        self.node._emit(
            ev.CallDialed(
                tenant_id=tenant_id,
                call_id=call.id,
                node_id=self.node.config.node_id,
                agent_id=agent_id,
                to_number=number,
            )
        )
        self._state(line, "dialing")
        task = asyncio.get_running_loop().create_task(
            self._follow_dial(line, call), name=f"dial-{call.id}"
        )
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        return {"call_id": str(call.id)}

    async def _follow_dial(self, line: DeskLine, call: Call) -> None:
        hung_up = asyncio.Event()
        line.ended.add_done_callback(lambda _end: hung_up.set())
        outcome = await self.node.queues._answered_within(
            call, DIAL_RING_SECONDS, hung_up, gone_reason="agent_hangup"
        )
        if outcome != "answered":
            line.end(CallEnd(cause="failed", reason=outcome if outcome != "gone" else "cancelled"))
            return
        bridge = Bridge(call.stream, line.session.stream)
        call.bridge = line.bridge = bridge
        line.answered.set_result(None)
        self._arrange(call)
        self._state(line, "connected")
        await _first_set(call.over, hung_up)
        bridge.stop()
        if not call.is_over:
            await self.node.hangup(call, "agent_hangup")
        line.end(CallEnd(cause="remote_bye", reason="customer_hangup"))

    # --- supervisors ---------------------------------------------------------------------------

    def monitor(
        self, tenant_id: UUID, supervisor_id: UUID, call_id: UUID, mode: MonitorMode
    ) -> dict[str, Any]:
        """Listen to, whisper to the agent on, or barge into a connected call of the tenant on
        this node, over the supervisor's own softphone line; or change how. One supervisor per
        call, one call per supervisor; the supervisor's line must be free."""
        session = self.sessions.get((tenant_id, supervisor_id))
        if session is None or not session.stream.connected:
            raise CommandRefused("no_media", "the supervisor's softphone is not connected")
        if session.line is not None:
            raise CommandRefused("busy", "the supervisor is on a call of their own")
        current = session.monitor
        if current is not None and current.call.id != call_id:
            raise CommandRefused("already_monitoring", "stop supervising the other call first")
        if current is None:
            call = self.node._call(tenant_id, call_id)
            talking = self._agent_on(call)
            if talking is None:
                raise CommandRefused("not_connected", "the call is not talking to an agent")
            agent_id, agent_stream, agent_gone = talking
            if agent_id == supervisor_id:
                raise CommandRefused("own_call", "supervisors cannot supervise their own call")
            if call_id in self.monitors:
                raise CommandRefused("monitored", "another supervisor is on this call")
            current = Monitor(session, call, agent_id, agent_stream, Mixer(self.node.ticker), mode)
            session.monitor = current
            self.monitors[call_id] = current
            current.watcher = asyncio.get_running_loop().create_task(
                self._watch(current, agent_gone), name=f"monitor-{call_id}"
            )
        current.mode = mode
        self._arrange(current.call)
        self._monitor_changed(current, mode)
        self._tell_agent(current)
        return {"call_id": str(call_id), "mode": mode, "agent_id": str(current.agent_id)}

    def _agent_on(self, call: Call) -> tuple[UUID, RtpStream, asyncio.Event] | None:
        """Who is talking to the caller on `call` (agent, their leg, set when they are gone):
        the agent who took it from a queue, or a browser agent who dialed it."""
        if call.is_over or call.bridge is None:
            return None
        leg = call.queued.agent if call.queued is not None else None
        if leg is not None:
            return leg.agent_id, leg.stream, leg.over
        line = self._line_of(call)
        if line is None:
            return None
        gone = asyncio.Event()
        line.ended.add_done_callback(lambda _end: gone.set())
        return line.session.agent_id, line.session.stream, gone

    def stop_monitor(self, tenant_id: UUID, supervisor_id: UUID, call_id: UUID) -> None:
        session = self.sessions.get((tenant_id, supervisor_id))
        monitor = session.monitor if session is not None else None
        if monitor is None or monitor.call.id != call_id:
            raise CommandRefused("not_monitoring", "the supervisor is not on that call")
        self._end_monitor(monitor, "stopped")

    async def _watch(self, monitor: Monitor, agent_gone: asyncio.Event) -> None:
        await _first_set(monitor.call.over, agent_gone)
        self._end_monitor(monitor, "call_ended")

    def _end_monitor(self, monitor: Monitor, cause: str) -> None:
        call = monitor.call
        if self.monitors.get(call.id) is not monitor:
            return
        del self.monitors[call.id]
        monitor.supervisor.monitor = None
        if monitor.watcher is not None and monitor.watcher is not asyncio.current_task():
            monitor.watcher.cancel()
        for stream in (monitor.supervisor.stream, monitor.agent_stream, call.stream):
            monitor.mixer.remove(stream)
        self._arrange(call)
        self._monitor_changed(monitor, "ended", cause)
        monitor.mode = "listen"
        self._tell_agent(monitor)

    def _monitor_changed(self, monitor: Monitor, mode: str, cause: str | None = None) -> None:
        call = monitor.call
        self.node._emit(
            ev.CallMonitored(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.node.config.node_id,
                supervisor_id=monitor.supervisor.agent_id,
                agent_id=monitor.agent_id,
                mode=mode,  # type: ignore[arg-type]
            )
        )
        message: dict[str, Any] = {
            "type": "monitor",
            "call_id": str(call.id),
            "agent_id": str(monitor.agent_id),
            "mode": mode,
            "from_number": call.from_number,
            "at": _now(),
        }
        if cause is not None:
            message["cause"] = cause
        monitor.supervisor.notify(message)

    def _tell_agent(self, monitor: Monitor) -> None:
        """An agent is told when a supervisor whispers or barges (and when that ends); a
        supervisor who only listens is never announced."""
        audible = monitor.mode if monitor.mode in ("whisper", "barge") else None
        if audible == monitor.told:
            return
        monitor.told = audible
        self.notify(
            monitor.call.tenant_id,
            monitor.agent_id,
            {
                "type": "supervisor",
                "call_id": str(monitor.call.id),
                "mode": audible,
                "supervisor_id": str(monitor.supervisor.agent_id) if audible else None,
            },
        )

    # --- commands from the API (media.agent.<tenant>.<agent>.<verb>) --------------------------

    async def reply(self, verb: str, payload: bytes) -> bytes:
        """A command's JSON reply, {"ok": true, ...} or {"ok": false, "error", "message"}."""
        try:
            result = await self.handle_command(verb, payload)
        except CommandRefused as exc:
            return _encode({"ok": False, "error": exc.code, "message": exc.message})
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _encode({"ok": False, "error": "invalid_command", "message": str(exc)})
        return _encode({"ok": True, **result})

    async def handle_command(self, verb: str, payload: bytes) -> dict[str, Any]:
        if verb == "connect":
            connect = msgspec.json.decode(payload, type=ConnectCommand)
            answer = await self.connect(connect.tenant_id, connect.agent_id, connect.sdp)
            return {"sdp": answer, "node_id": self.node.config.node_id}
        if verb == "close":
            close = msgspec.json.decode(payload, type=_AgentCommand)
            await self.close_session(close.tenant_id, close.agent_id)
            return {}
        if verb == "status":
            status = msgspec.json.decode(payload, type=_AgentCommand)
            session = self.sessions.get((status.tenant_id, status.agent_id))
            if session is None:
                raise CommandRefused("no_session", "the agent has no line on this node")
            return {
                "connected": session.stream.connected,
                "call_id": str(session.line.call_id) if session.line else None,
                "node_id": self.node.config.node_id,
            }
        simple: dict[str, Callable[[UUID, UUID, UUID], None]] = {
            "answer": self.answer,
            "reject": self.reject,
            "hangup": self.hangup,
        }
        if verb in simple:
            command = msgspec.json.decode(payload, type=CallCommand)
            simple[verb](command.tenant_id, command.agent_id, command.call_id)
            return {}
        if verb in ("hold", "resume"):
            command = msgspec.json.decode(payload, type=CallCommand)
            self.hold(command.tenant_id, command.agent_id, command.call_id, verb == "hold")
            return {}
        if verb == "mute":
            mute = msgspec.json.decode(payload, type=MuteCommand)
            self.mute(mute.tenant_id, mute.agent_id, mute.call_id, mute.muted)
            return {}
        if verb == "dtmf":
            dtmf = msgspec.json.decode(payload, type=DtmfCommand)
            self.dtmf(dtmf.tenant_id, dtmf.agent_id, dtmf.call_id, dtmf.digits)
            return {}
        if verb == "monitor":
            monitor = msgspec.json.decode(payload, type=MonitorCommand)
            return self.monitor(monitor.tenant_id, monitor.agent_id, monitor.call_id, monitor.mode)
        if verb == "stop_monitor":
            stop = msgspec.json.decode(payload, type=CallCommand)
            self.stop_monitor(stop.tenant_id, stop.agent_id, stop.call_id)
            return {}
        if verb == "dial":
            dial = msgspec.json.decode(payload, type=DialCommand)
            return await self.dial(dial.tenant_id, dial.agent_id, dial.number, dial.caller_id)
        if verb == "consult":
            consult = msgspec.json.decode(payload, type=ConsultCommand)
            await self.consult(
                consult.tenant_id, consult.agent_id, consult.call_id, consult.to_kind, consult.to
            )
            return {}
        if verb in ("consult_complete", "consult_cancel"):
            command = msgspec.json.decode(payload, type=CallCommand)
            finish = self.complete_consult if verb == "consult_complete" else self.cancel_consult
            finish(command.tenant_id, command.agent_id, command.call_id)
            return {}
        if verb == "transfer":
            transfer = msgspec.json.decode(payload, type=TransferCommand)
            await self.transfer(
                transfer.tenant_id,
                transfer.agent_id,
                transfer.call_id,
                transfer.to_kind,
                transfer.to,
            )
            return {}
        raise CommandRefused("unknown_command", f"no agent command named {verb!r}")

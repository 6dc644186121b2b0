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
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from media import events as ev
from media.bridge import Bridge
from media.node import Call, CommandRefused, MediaNode, _Command, _encode
from media.queueing import RingInfo, TransferKind
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


class TransferCommand(CallCommand, kw_only=True):
    to_kind: TransferKind
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class DeskLine:
    """One call offered to (and perhaps answered by) a browser agent: the `AgentLine` the
    queueing code rings."""

    def __init__(self, session: AgentSession, info: RingInfo) -> None:
        loop = asyncio.get_running_loop()
        self.session = session
        self.info = info
        self.ringing = asyncio.Event()
        self.answered: asyncio.Future[Any] = loop.create_future()
        self.ended: asyncio.Future[CallEnd] = loop.create_future()
        self.call: Call | None = None
        self.bridge: Bridge | None = None
        self.held = False
        self.muted = False

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
            "direction": "inbound",
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

    def notify(self, message: dict[str, Any]) -> None:
        self.desk.notify(self.tenant_id, self.agent_id, message)

    def line_over(self, line: DeskLine, end: CallEnd) -> None:
        if self.line is line:
            self.line = None
        answered = line.answered.done() and line.answered.exception() is None
        self.notify(
            line.notice("ended" if answered else "offer_withdrawn", end.reason or end.cause)
        )


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
            if line is not None and line.call is not None and not line.held:
                self._reconnect_audio(line)
        elif state in ("failed", "closed", "disconnected"):
            if line is not None and line.call is not None:
                self._hold_music(line)
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
        if session.line is not None:
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
        if held:
            self._hold_music(line)
        elif line.session.stream.connected:
            self._reconnect_audio(line)
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
        assert line.bridge is not None
        if line.bridge.running:
            line.bridge.mute(line.session.stream, muted)

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
        await self.node.queues.hand_on(tenant_id, call_id, agent_id, to_kind=to_kind, to=to)

    def _hold_music(self, line: DeskLine) -> None:
        """The caller hears the queue's hold music; the agent hears nothing."""
        call, bridge = line.call, line.bridge
        if call is None or bridge is None or call.is_over:
            return
        bridge.stop()
        if call.queued is not None:
            self.node.queues.hold_music(call)

    def _reconnect_audio(self, line: DeskLine) -> None:
        call, bridge = line.call, line.bridge
        if call is None or bridge is None or call.is_over:
            return
        self.node.queues.silence(call)
        bridge.start()
        if line.muted:
            bridge.mute(line.session.stream, True)

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

"""The softphone's connection: `/v1/agent/ws`, a WebSocket of typed JSON messages.

The agent authenticates with their access token in the first message. Their browser's media
leg is negotiated through this socket (the offer goes to a media node over NATS, the answer
comes back), and so are presence changes (to the router) and every call action (to the node
holding the agent's line). What the node and the router have to say about the agent (offers
with their screen pop, call states, the leg's state, presence) comes back as notices.

One softphone per agent: a newer connection replaces an older one, which is closed with 4409.
When the socket closes, the agent is left as they are for a grace period in which the page may
reconnect; after it, with no softphone back, the agent goes offline and their line is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from litestar import WebSocket, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from nats.aio.msg import Msg

from api.context import ApiDeps
from api.controllers.calls import MONITOR_PERMISSION
from bus.connection import Bus
from bus.requests import NoResponder, send_command
from media.policy import E164_RE
from routing.client import RouterClient, RouterRefused, RouterUnavailable
from tenancy.errors import Unauthenticated
from tenancy.models import Subject
from tenancy.wrapups import record_wrap_up
from webrtc.desk import CONNECT_SUBJECT, agent_command_subject, agent_notice_subject
from webrtc.ice import ice_servers_for

__all__ = ["agent_socket"]

log = logging.getLogger(__name__)

AUTH_SECONDS = 10.0
SIGN_OFF_GRACE_SECONDS = 30.0
AWAY_REASONS = ("break", "lunch", "meeting", "training", "admin")
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_REPLACED = 4409

Ref = Annotated[str, msgspec.Meta(max_length=64)]
Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]


class _Msg(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    ref: Ref | None = None


class Auth(_Msg, tag="auth"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class Presence(_Msg, tag="presence"):
    state: Literal["available", "away", "offline"]
    reason: Code | None = None


class SdpOffer(_Msg, tag="sdp_offer"):
    sdp: Annotated[str, msgspec.Meta(min_length=10, max_length=20000)]


class _OnCall(_Msg):
    call_id: UUID


class Answer(_OnCall, tag="answer"):
    pass


class Reject(_OnCall, tag="reject"):
    pass


class Hangup(_OnCall, tag="hangup"):
    pass


class Hold(_OnCall, tag="hold"):
    pass


class Resume(_OnCall, tag="resume"):
    pass


class Mute(_OnCall, tag="mute"):
    muted: bool


class Dtmf(_OnCall, tag="dtmf"):
    digits: Annotated[str, msgspec.Meta(pattern=r"^[0-9*#A-D]{1,32}$")]


class Transfer(_OnCall, tag="transfer"):
    to_kind: Literal["agent", "queue", "number"]
    to: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    attended: bool = False


class TransferComplete(_OnCall, tag="transfer_complete"):
    """Hand the call to the one consulted (an attended transfer)."""


class TransferCancel(_OnCall, tag="transfer_cancel"):
    """End the consultation and go back to the caller."""


class Monitor(_OnCall, tag="monitor"):
    mode: Literal["listen", "whisper", "barge"]


class StopMonitor(_OnCall, tag="stop_monitor"):
    pass


class Dial(_Msg, tag="dial"):
    number: E164
    caller_id: E164


class WrapUp(_OnCall, tag="wrap_up"):
    code: Code | None = None
    notes: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class Ping(_Msg, tag="ping"):
    id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


ClientMessage = (
    Auth
    | Presence
    | SdpOffer
    | Answer
    | Reject
    | Hangup
    | Hold
    | Resume
    | Mute
    | Dtmf
    | Transfer
    | TransferComplete
    | TransferCancel
    | Monitor
    | StopMonitor
    | Dial
    | WrapUp
    | Ping
)
_decoder = msgspec.json.Decoder(ClientMessage)
_CALL_VERBS: dict[type[_OnCall], str] = {
    Answer: "answer",
    Reject: "reject",
    Hangup: "hangup",
    Hold: "hold",
    Resume: "resume",
    TransferComplete: "consult_complete",
    TransferCancel: "consult_cancel",
}


class SocketError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _presence_view(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "presence",
        "state": raw.get("state"),
        "reason": raw.get("reason"),
        "since": raw.get("since"),
        "call_id": raw.get("call_id"),
        "wrap_up_until": raw.get("wrap_up_until"),
        "calls_handled": raw.get("calls_handled", 0),
    }


class AgentSocket:
    """One authenticated softphone connection."""

    def __init__(self, socket: WebSocket[Any, Any, State], deps: ApiDeps, bus: Bus) -> None:
        self.socket = socket
        self.deps = deps
        self.bus = bus
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subject: Subject | None = None
        self.node_id: str | None = None
        self.connection_id = secrets.token_hex(8)
        self.close_code: int | None = None

    @property
    def tenant_id(self) -> UUID:
        assert self.subject is not None
        return self.subject.tenant_id

    @property
    def agent_id(self) -> UUID:
        assert self.subject is not None
        return self.subject.actor_id

    @property
    def router(self) -> RouterClient:
        if self.deps.router is None:
            raise SocketError("router_unavailable", "Routing is not configured.")
        return self.deps.router

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(message)

    async def writer(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            await self.socket.send_text(msgspec.json.encode(message).decode())

    # --- authentication ----------------------------------------------------------------------

    async def authenticate(self) -> bool:
        try:
            raw = await asyncio.wait_for(self.socket.receive_text(), AUTH_SECONDS)
            message = _decoder.decode(raw)
        except (TimeoutError, msgspec.DecodeError, msgspec.ValidationError):
            await self.socket.close(CLOSE_UNAUTHENTICATED, "send auth with an access token first")
            return False
        if not isinstance(message, Auth):
            await self.socket.close(CLOSE_UNAUTHENTICATED, "send auth with an access token first")
            return False
        try:
            subject = await self.deps.auth.authenticate(message.token)
        except Unauthenticated:
            await self.socket.close(CLOSE_UNAUTHENTICATED, "the access token is not valid")
            return False
        if subject.actor_type != "user":
            await self.socket.close(CLOSE_FORBIDDEN, "only a signed-in user can be an agent")
            return False
        self.subject = subject
        return True

    async def hello(self) -> None:
        settings = self.deps.settings
        servers = ice_servers_for(
            self.agent_id,
            stun_urls=settings.stun_urls,
            turn_urls=settings.turn_urls,
            turn_secret=settings.turn_secret,
            ttl_seconds=settings.turn_ttl_seconds,
        )
        presence = None
        with contextlib.suppress(SocketError, RouterRefused, RouterUnavailable):
            agents = await self.router.agents(self.tenant_id)
            mine = [a for a in agents if a.get("agent_id") == str(self.agent_id)]
            if mine:
                presence = _presence_view(mine[0])
        self.send(
            {
                "type": "hello",
                "agent_id": str(self.agent_id),
                "tenant_id": str(self.tenant_id),
                "ice_servers": [s.as_dict() for s in servers],
                "presence": presence,
                "away_reasons": list(AWAY_REASONS),
            }
        )

    # --- notices from nodes and the router ---------------------------------------------------

    async def on_notice(self, msg: Msg) -> None:
        try:
            message = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            return
        if isinstance(message, dict):
            self.send(message)

    async def on_agent_state(self, msg: Msg) -> None:
        try:
            event = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            return
        if isinstance(event, dict) and event.get("agent_id") == str(self.agent_id):
            self.send(_presence_view(event))

    async def on_replaced(self, msg: Msg) -> None:
        if msg.data.decode() != self.connection_id:
            self.close_code = CLOSE_REPLACED
            self.outbox.put_nowait(None)

    async def on_alive(self, msg: Msg) -> None:
        if msg.reply:
            await msg.respond(self.connection_id.encode())

    # --- messages from the page --------------------------------------------------------------

    async def handle(self, message: ClientMessage) -> None:
        if isinstance(message, Auth):
            raise SocketError("already_authenticated", "This connection is signed in already.")
        if isinstance(message, Ping):
            self.send({"type": "pong", "id": message.id})
        elif isinstance(message, SdpOffer):
            await self.negotiate(message)
        elif isinstance(message, Presence):
            await self.presence(message)
        elif isinstance(message, _OnCall) and type(message) in _CALL_VERBS:
            await self.node(_CALL_VERBS[type(message)], {"call_id": str(message.call_id)})
        elif isinstance(message, Mute):
            await self.node("mute", {"call_id": str(message.call_id), "muted": message.muted})
        elif isinstance(message, Dtmf):
            await self.node("dtmf", {"call_id": str(message.call_id), "digits": message.digits})
        elif isinstance(message, WrapUp):
            if message.code is not None or message.notes.strip():
                await record_wrap_up(
                    self.deps.pool,
                    self.tenant_id,
                    message.call_id,
                    self.agent_id,
                    message.code,
                    message.notes.strip(),
                )
            raw = await self._router(self.router.end_wrap_up(self.tenant_id, self.agent_id))
            self.send(_presence_view(raw))
        elif isinstance(message, Transfer):
            await self.transfer(message)
        elif isinstance(message, Monitor | StopMonitor):
            if not self.subject or not self.subject.can(MONITOR_PERMISSION):
                raise SocketError("forbidden", "Supervising calls needs a supervisor's role.")
            if isinstance(message, Monitor):
                await self.node("monitor", {"call_id": str(message.call_id), "mode": message.mode})
            else:
                await self.node("stop_monitor", {"call_id": str(message.call_id)})
        elif isinstance(message, Dial):
            reply = await self.node(
                "dial", {"number": message.number, "caller_id": message.caller_id}
            )
            self.send({"type": "dialing", "call_id": reply["call_id"], "ref": message.ref})

    async def transfer(self, message: Transfer) -> None:
        """Checked here so the agent hears at once what is wrong with the target; the node
        checks again that the call is still theirs."""
        if message.attended and message.to_kind == "queue":
            raise SocketError(
                "not_supported", "An attended transfer goes to a person: an agent or a number."
            )
        target = message.to
        if message.to_kind == "number":
            if not E164_RE.match(target):
                raise SocketError("invalid_input", "A number is in E.164 form, like +14155550100.")
        else:
            try:
                target_id = UUID(target)
            except ValueError as exc:
                raise SocketError("invalid_input", f"{target!r} is not an id.") from exc
            if message.to_kind == "queue":
                await self._router(self.router.queue(self.tenant_id, target_id))
            else:
                if target_id == self.agent_id:
                    raise SocketError("invalid_input", "Pick another agent to transfer to.")
                agents = await self._router(self._agents())
                state = agents.get(str(target_id))
                if state is None:
                    raise SocketError("not_found", "There is no such agent.")
                if state in ("offline", "away"):
                    raise SocketError("agent_unavailable", "That agent is not taking calls now.")
        await self.node(
            "consult" if message.attended else "transfer",
            {"call_id": str(message.call_id), "to_kind": message.to_kind, "to": target},
        )

    async def _agents(self) -> dict[str, Any]:
        """Every agent of the tenant the router knows, by id: their state."""
        agents = await self.router.agents(self.tenant_id)
        return {str(agent["agent_id"]): agent.get("state") for agent in agents}

    def _ids(self, body: dict[str, Any]) -> bytes:
        return msgspec.json.encode(
            {"tenant_id": str(self.tenant_id), "agent_id": str(self.agent_id), **body}
        )

    async def _ask(self, subject: str, payload: bytes, wait: float = 10.0) -> dict[str, Any]:
        raw = await send_command(self.bus, subject, payload, wait=wait)
        reply: dict[str, Any] = msgspec.json.decode(raw)
        if not reply.get("ok"):
            raise SocketError(str(reply.get("error")), str(reply.get("message", "")))
        return reply

    async def node(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        subject = agent_command_subject(self.tenant_id, self.agent_id, verb)
        try:
            return await self._ask(subject, self._ids(body))
        except NoResponder as exc:
            raise SocketError("no_media", "The softphone's audio is not connected.") from exc

    async def negotiate(self, offer: SdpOffer) -> None:
        payload = self._ids({"sdp": offer.sdp})
        subject = agent_command_subject(self.tenant_id, self.agent_id, "connect")
        try:
            reply = await self._ask(subject, payload)
        except NoResponder:
            try:
                reply = await self._ask(CONNECT_SUBJECT, payload)
            except NoResponder as exc:
                raise SocketError("media_unavailable", "No media node is answering.") from exc
        self.node_id = str(reply["node_id"])
        self.send(
            {"type": "sdp_answer", "sdp": reply["sdp"], "node_id": self.node_id, "ref": offer.ref}
        )

    async def presence(self, message: Presence) -> None:
        if message.reason is not None and message.state != "away":
            raise SocketError("invalid_input", "A reason goes only with state 'away'.")
        device = None
        if message.state == "available":
            status = await self._media_status()
            if status is None or not status.get("connected"):
                raise SocketError(
                    "no_media", "Connect the softphone's audio before going available."
                )
            device = f"webrtc:{status['node_id']}"
        raw = await self._router(
            self.router.set_presence(
                self.tenant_id, self.agent_id, message.state, reason=message.reason, device=device
            )
        )
        self.send(_presence_view(raw))

    async def _media_status(self) -> dict[str, Any] | None:
        try:
            return await self.node("status", {})
        except SocketError:
            return None

    async def _router(self, call: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await call
        except RouterUnavailable as exc:
            raise SocketError("router_unavailable", "Routing is not answering; try again.") from exc
        except RouterRefused as exc:
            raise SocketError(exc.code, exc.message) from exc
        return result


async def _sign_off_later(
    bus: Bus, router: RouterClient | None, tenant_id: UUID, agent_id: UUID
) -> None:
    """After the grace period, with no softphone of the agent's connected anywhere, the agent
    goes offline and their media line is closed."""
    await asyncio.sleep(SIGN_OFF_GRACE_SECONDS)
    try:
        await send_command(bus, f"agentws.{tenant_id}.{agent_id}.alive", b"", wait=2.0)
        return  # a softphone is back
    except NoResponder:
        pass
    except Exception:  # the bus is closing with the process
        log.debug("sign-off check for agent %s skipped", agent_id, exc_info=True)
        return
    if router is not None:
        with contextlib.suppress(RouterRefused, RouterUnavailable):
            await router.set_presence(tenant_id, agent_id, "offline")
    with contextlib.suppress(NoResponder):
        await send_command(
            bus,
            agent_command_subject(tenant_id, agent_id, "close"),
            msgspec.json.encode({"tenant_id": str(tenant_id), "agent_id": str(agent_id)}),
        )


_sign_offs: set[asyncio.Task[None]] = set()


@websocket("/v1/agent/ws", include_in_schema=False)
async def agent_socket(socket: WebSocket[Any, Any, State]) -> None:
    deps: ApiDeps = socket.app.state.deps
    await socket.accept()
    if deps.bus is None:
        await socket.close(1011, "softphones are not available here")
        return
    conn = AgentSocket(socket, deps, deps.bus)
    if not await conn.authenticate():
        return
    bus = deps.bus
    tenant, agent = conn.tenant_id, conn.agent_id
    base = f"agentws.{tenant}.{agent}"
    subscriptions = [
        await bus.nc.subscribe(agent_notice_subject(tenant, agent), cb=conn.on_notice),
        await bus.nc.subscribe(f"tenant.{tenant}.agent.{agent}.state", cb=conn.on_agent_state),
        await bus.nc.subscribe(f"{base}.replaced", cb=conn.on_replaced),
        await bus.nc.subscribe(f"{base}.alive", cb=conn.on_alive),
    ]
    await bus.nc.publish(f"{base}.replaced", conn.connection_id.encode())
    writer = asyncio.create_task(conn.writer(), name="agent-ws-writer")
    try:
        await conn.hello()
        reader = asyncio.create_task(_read(conn), name="agent-ws-reader")
        done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reader, writer):
            if task not in done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if not writer.done():
            writer.cancel()
        if conn.close_code is not None:
            with contextlib.suppress(Exception):
                await socket.close(conn.close_code, "another softphone of this agent connected")
        else:
            task = asyncio.create_task(_sign_off_later(bus, deps.router, tenant, agent))
            _sign_offs.add(task)
            task.add_done_callback(_sign_offs.discard)


async def _read(conn: AgentSocket) -> None:
    while True:
        raw = await conn.socket.receive_text()
        try:
            message = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            conn.send(
                {"type": "error", "code": "invalid_message", "message": str(exc), "ref": None}
            )
            continue
        try:
            await conn.handle(message)
        except SocketError as exc:
            conn.send(
                {"type": "error", "code": exc.code, "message": exc.message, "ref": message.ref}
            )
        except Exception:
            log.exception("softphone message %s failed", type(message).__name__)
            conn.send(
                {
                    "type": "error",
                    "code": "internal_error",
                    "message": "That did not work.",
                    "ref": message.ref,
                }
            )

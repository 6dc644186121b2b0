"""The media node: SIP trunks in, a call's flow run locally, call events out, commands in.

Admission of an inbound INVITE, in order: drain (503 + Retry-After); the source, against every
trunk's allow-list, else digest credentials (an unlisted source always gets the same challenge,
whatever it dialed); the dialed number (404 when it is nobody's, or not reachable over the trunk
that sent it); the tenant's status (403); the tenant's concurrent-call cap (486); the offer
(488 when no codec is common). Only then is a call started and its script run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

import msgspec

from bus.events import Event
from media import events as ev
from media import sdp
from media.bridge import Bridge
from media.control import CallControl
from media.directory import CallDirectory, InboundRoute, Network, OutboundRoute, TrunkSource
from media.player import Player, Ticker
from media.policy import OutboundPolicy, PolicyRefused, check_destination, dialed_e164
from media.ports import PortRange
from media.recorder import Recorder
from media.sip.call import CallEnd, CallEnded, InboundCall, OutboundCall, UserAgent
from media.sip.dialog import Login
from media.sip.digest import DigestError, NonceIssuer, Verdict, parse_credentials
from media.sip.endpoint import Peer, SipEndpoint, SourceLimits, TransportName
from media.sip.message import Uri
from media.sip.registration import Registration, TrunkKeepalive
from media.stream import RtpStream
from runtime.ids import new_id

if TYPE_CHECKING:
    from media.queueing import AgentLines, QueuedCall, Queues

log = logging.getLogger(__name__)

_TOUCH_TONE = frozenset("0123456789*#ABCD")


class TrunkIndex:
    """Every trunk's recognisers, indexed for the per-INVITE questions: which trunks admit this
    source address, and which trunks authenticate as this digest user. Also a live container of
    trunk addresses, which the SIP edge exempts from per-source rate limits (a carrier sends
    hundreds of requests a second). Rebuilt only when the directory hands over a new list."""

    def __init__(self) -> None:
        self._sources: Sequence[TrunkSource] = ()
        self._networks: tuple[tuple[Network, TrunkSource], ...] = ()
        self._by_user: dict[str, list[TrunkSource]] = {}
        self._by_host: dict[str, list[TrunkSource]] = {}

    def update(self, sources: Sequence[TrunkSource]) -> None:
        if sources is self._sources:
            return
        self._sources = sources
        self._networks = tuple((n, t) for t in sources for n in t.networks)
        self._by_user = {}
        for trunk in sources:
            if trunk.digest_username is not None and trunk.digest_password is not None:
                self._by_user.setdefault(trunk.digest_username, []).append(trunk)
        self._by_host = {}

    def admitting(self, host: str) -> list[TrunkSource]:
        found = self._by_host.get(host)
        if found is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                found = []
            else:
                found = list({id(t): t for n, t in self._networks if address in n}.values())
            if len(self._by_host) > 10_000:
                self._by_host.clear()
            self._by_host[host] = found
        return found

    def with_user(self, username: str) -> list[TrunkSource]:
        return self._by_user.get(username, [])

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and bool(self.admitting(host))


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    transports: tuple[TransportName, ...] = ("udp", "tcp")
    public_host: str | None = None
    """The address carriers and SDP see (defaults to sip_host)."""
    rtp_host: str = "127.0.0.1"
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    realm: str = "switchboard"
    digest_algorithm: str = "SHA-256"
    """Offered first in challenges (MD5 follows, RFC 8760). Some carrier equipment reads only
    the first challenge and knows only MD5: "MD5" offers MD5 alone."""
    nonce_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    """Shared by every node behind one SIP edge, so a challenge from one is honoured by all."""
    drain_retry_after: int = 60
    trunk_check_seconds: float = 30.0
    """How often trunk registrations and OPTIONS keepalives are reconciled with the catalog."""
    trunk_keepalive_seconds: float = 30.0
    """OPTIONS ping interval per trunk; 0 turns keepalives off."""
    ring_seconds: float = 0.0
    """How long an inbound caller hears ringback before the flow answers."""
    source_rate: float = 50.0
    source_burst: int = 100
    t1: float = 0.5
    recordings_dir: Path = Path(".switchboard/recordings")
    outbound_policy: OutboundPolicy = field(default_factory=OutboundPolicy)
    agent_device_networks: tuple[Network, ...] = ()
    """Where agents' SIP devices may be rung (`sip:` devices elsewhere are refused)."""


@dataclass(eq=False)
class Call:
    """One call on this node: its SIP leg, its RTP stream and its timeline."""

    id: UUID
    tenant_id: UUID
    direction: Literal["inbound", "outbound"]
    sip: InboundCall | OutboundCall
    stream: RtpStream
    from_number: str
    to_number: str
    trunk: str
    number_id: UUID | None = None
    negotiated: sdp.Negotiated | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_mono: float = field(default_factory=time.monotonic)
    answered_at: datetime | None = None
    answered_mono: float | None = None
    over: asyncio.Event = field(default_factory=asyncio.Event)
    end: CallEnd | None = None
    held: bool = False
    script: asyncio.Task[None] | None = None
    sdp_version: int = 1
    bridge: Bridge | None = None
    recorder: Recorder | None = None
    playing: asyncio.Task[None] | None = None
    max_concurrent_calls: int | None = None
    """The tenant's cap, for the calls this one places (transfers)."""
    queued: QueuedCall | None = None
    """Set while the caller waits in a queue (and once an agent took the call)."""
    queue_id: UUID | None = None
    agent_id: UUID | None = None
    """The agent who talked to the caller, for call.ended."""
    keep_script: bool = False
    """Set while the script records a message: a hang-up then ends the recording, not the
    script, so the message can still be stored."""

    @property
    def is_over(self) -> bool:
        return self.over.is_set()

    def end_or_hangup(self) -> CallEnd:
        return self.end if self.end is not None else CallEnd(cause="local_hangup")


class MediaNode:
    def __init__(
        self,
        config: NodeConfig,
        directory: CallDirectory,
        events: EventSink,
        *,
        recording_key: RecordingKeys | None = None,
    ) -> None:
        from media.queueing import Queues  # it builds on this module

        self.config = config
        self.directory = directory
        self.events = events
        self._recording_key = recording_key
        self.ticker = Ticker()
        self.player = Player(self.ticker)
        self.ports = PortRange(config.rtp_port_min, config.rtp_port_max)
        self.nonces = NonceIssuer(config.nonce_secret, 300, clock=time.time)
        self.calls: dict[UUID, Call] = {}
        self._by_tenant: Counter[UUID] = Counter()
        self._draining = False
        self.ua: UserAgent | None = None
        self.endpoint: SipEndpoint | None = None
        self.sip_ports: dict[TransportName, int] = {}
        self.rejected: Counter[int] = Counter()
        self.trunks = TrunkIndex()
        self.keepalives: dict[Peer, TrunkKeepalive] = {}
        self.registrations: dict[tuple[str, Peer, str], Registration] = {}
        self._trunk_task: asyncio.Task[None] | None = None
        self.queues: Queues = Queues(self)
        self.agent_lines: AgentLines | None = None
        """Browser agents' legs on this node, when the webrtc package is plugged in."""

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.trunks.update(await self.directory.trunk_sources())
        limits = SourceLimits(
            requests_per_second=self.config.source_rate,
            burst=self.config.source_burst,
            exempt_hosts=self.trunks,
        )
        ua = UserAgent(on_invite=self._on_invite)
        endpoint = SipEndpoint(ua, public_host=self.public_host, limits=limits, t1=self.config.t1)
        ua.bind(endpoint)
        self.ua, self.endpoint = ua, endpoint
        port = self.config.sip_port
        if port == 0:
            port = _free_udp_and_tcp_port(self.config.sip_host)
        for transport in self.config.transports:
            # UDP and TCP share a port number, as carriers expect (5060 for both).
            self.sip_ports[transport] = await endpoint.listen(transport, self.config.sip_host, port)
        self.ticker.start()
        self._trunk_task = asyncio.create_task(self._maintain_trunks(), name="trunk-upkeep")
        log.info("media node %s: SIP %s", self.config.node_id, self.sip_ports)

    @property
    def public_host(self) -> str:
        return self.config.public_host or self.config.sip_host

    @property
    def draining(self) -> bool:
        return self._draining

    def drain(self) -> None:
        """New INVITEs get 503 with Retry-After from now on; calls in progress continue."""
        self._draining = True

    async def stop(self, reason: str = "shutdown") -> None:
        """Refuse new calls, hang up every call with `reason`, then close."""
        self._draining = True
        if self._trunk_task is not None:
            self._trunk_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trunk_task
        for keepalive in self.keepalives.values():
            await keepalive.stop()
        for registration in self.registrations.values():
            # Unregistering is a courtesy: a registrar that does not answer must not hold up
            # the shutdown for a whole transaction timeout.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(registration.stop(), 2.0)
        self.keepalives.clear()
        self.registrations.clear()
        if self.ua is not None:
            await self.ua.shutdown(reason)
        for call in list(self.calls.values()):
            await self._finish(call, CallEnd(cause=reason))
        await self.queues.close()
        if self.endpoint is not None:
            await self.endpoint.close()
        await self.ticker.stop()

    def heartbeat(self) -> dict[str, Any]:
        return {
            "node_id": self.config.node_id,
            "at": datetime.now(UTC).isoformat(),
            "calls": len(self.calls),
            **self.queues.counts(),
            "draining": self._draining,
            "sip": {t: f"{self.public_host}:{p}" for t, p in self.sip_ports.items()},
            "rtp_ports_in_use": self.ports.in_use,
            "rejected": {str(status): count for status, count in sorted(self.rejected.items())},
            "trunks": {
                f"{peer.transport}:{peer.host}:{peer.port}": keepalive.up
                for peer, keepalive in self.keepalives.items()
            },
            "registrations": {
                name: registration.registered
                for (name, _peer, _user), registration in self.registrations.items()
            },
        }

    # --- trunks: keepalive pings and registrations ----------------------------------------------

    async def _maintain_trunks(self) -> None:
        while True:
            try:
                await self.reconcile_trunks()
            except Exception:
                log.exception("trunk upkeep failed")
            await asyncio.sleep(self.config.trunk_check_seconds)

    async def reconcile_trunks(self) -> None:
        """Ping every trunk we can reach and keep registered to those that want it, matching
        the catalog: new trunks start, removed ones stop (unregistering first)."""
        assert self.endpoint is not None
        sources = await self.directory.trunk_sources()
        self.trunks.update(sources)
        pings: dict[Peer, TrunkSource] = {}
        registrations: dict[tuple[str, Peer, str], TrunkSource] = {}
        for trunk in sources:
            if trunk.host is None or trunk.transport not in self.sip_ports:
                continue
            try:
                host = await _resolve(trunk.host)
            except OSError as exc:
                log.warning("trunk %s: cannot resolve %s: %r", trunk.name, trunk.host, exc)
                continue
            peer = Peer(trunk.transport, host, trunk.port)
            pings[peer] = trunk
            if trunk.register and trunk.outbound_username and trunk.outbound_password:
                registrations[(trunk.name, peer, trunk.outbound_username)] = trunk
        if self.config.trunk_keepalive_seconds > 0:
            for peer in pings.keys() - self.keepalives.keys():
                keepalive = TrunkKeepalive(
                    self.endpoint, peer=peer, interval=self.config.trunk_keepalive_seconds
                )
                keepalive.start()
                self.keepalives[peer] = keepalive
        for peer in self.keepalives.keys() - pings.keys():
            await self.keepalives.pop(peer).stop()
        for key in registrations.keys() - self.registrations.keys():
            trunk = registrations[key]
            _name, peer, username = key
            assert trunk.host is not None
            assert trunk.outbound_password is not None
            registration = Registration(
                self.endpoint,
                registrar=peer,
                aor=f"sip:{username}@{trunk.host}",
                login=Login(username, trunk.outbound_password),
                expires=trunk.register_expires,
            )
            registration.start()
            self.registrations[key] = registration
        for key in self.registrations.keys() - registrations.keys():
            await self.registrations.pop(key).stop()

    # --- inbound -------------------------------------------------------------------------------

    def _reject(
        self, sip_call: InboundCall, status: int, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.rejected[status] += 1
        sip_call.reject(status, headers=headers)

    async def _on_invite(self, sip_call: InboundCall) -> None:
        if self._draining:
            self._reject(sip_call, 503, [("Retry-After", str(self.config.drain_retry_after))])
            return
        trunks = await self._trunks_for(sip_call)
        if not trunks:
            return
        e164 = dialed_e164(sip_call.request.uri.user)
        route = await self.directory.inbound_route(e164) if e164 is not None else None
        trunk = None if route is None else next((t for t in trunks if t.serves(route)), None)
        if route is None or trunk is None:
            self._reject(sip_call, 404)
            return
        if not route.tenant_active:
            self._reject(sip_call, 403)
            return
        if route.script is None:
            self._reject(sip_call, 480)
            return
        if self._by_tenant[route.tenant_id] >= route.max_concurrent_calls:
            self._reject(sip_call, 486)
            return
        offer = sip_call.offer
        if offer is None:
            self._reject(sip_call, 488)
            return
        await self._start_inbound(sip_call, route, trunk, offer)

    async def _trunks_for(self, sip_call: InboundCall) -> list[TrunkSource]:
        """The trunks this INVITE may have come over: by source address, else by digest. An
        unlisted source that has not authenticated gets a challenge (and nothing else)."""
        self.trunks.update(await self.directory.trunk_sources())
        by_address = self.trunks.admitting(sip_call.peer.host)
        if by_address:
            return by_address
        authorization = sip_call.request.header("Authorization")
        if authorization is None:
            self._challenge(sip_call)
            return []
        try:
            credentials = parse_credentials(authorization)
        except DigestError:
            self._reject(sip_call, 400)
            return []
        if not _digest_uri_fits(credentials.uri, sip_call.request.uri):
            self._reject(sip_call, 403)
            return []
        # Several tenants' trunks may share a digest user name: the password tells them apart.
        # An unknown user is still checked (against a decoy), so it costs what a known one does.
        candidates: list[TrunkSource | None] = [*self.trunks.with_user(credentials.username)]
        matched: list[TrunkSource] = []
        stale = False
        for trunk in candidates or [None]:
            verdict = self.nonces.verify(
                credentials,
                method="INVITE",
                realm=self.config.realm,
                password_lookup=_password_of(trunk),
            )
            if verdict is Verdict.OK and trunk is not None:
                matched.append(trunk)
            stale = stale or verdict is Verdict.STALE
        if matched:
            return matched
        if stale:
            self._challenge(sip_call, stale=True)
        else:
            self._reject(sip_call, 403)
        return []

    def _challenge(self, sip_call: InboundCall, *, stale: bool = False) -> None:
        values = self.nonces.challenge(
            self.config.realm, algorithm=self.config.digest_algorithm, stale=stale
        )
        self._reject(sip_call, 401, [("WWW-Authenticate", v) for v in values])

    async def _start_inbound(
        self,
        sip_call: InboundCall,
        route: InboundRoute,
        trunk: TrunkSource,
        offer: sdp.SessionDescription,
    ) -> None:
        try:
            stream = await RtpStream.open(
                self.config.rtp_host, self.ports, public_host=self.public_host
            )
        except Exception:
            log.exception("no RTP port for a call to %s", route.e164)
            self._reject(sip_call, 503, [("Retry-After", "5")])
            return
        try:
            negotiated = sdp.answer(
                offer,
                address=self.public_host,
                port=stream.local_port,
                session_id=secrets.randbits(31),
                version=1,
            )
        except sdp.SdpError:
            await stream.close()
            self._reject(sip_call, 488)
            return
        stream.configure(negotiated, (negotiated.remote_address, negotiated.remote_port))
        caller = sip_call.request.from_.uri
        call = Call(
            id=new_id(),
            tenant_id=route.tenant_id,
            direction="inbound",
            sip=sip_call,
            stream=stream,
            from_number=dialed_e164(caller.user) or (caller.user or "anonymous"),
            to_number=route.e164,
            trunk=trunk.name,
            number_id=route.number_id,
            negotiated=negotiated,
            max_concurrent_calls=route.max_concurrent_calls,
        )
        self._admit(call)
        self._emit(
            ev.CallStarted(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.config.node_id,
                direction="inbound",
                from_number=call.from_number,
                to_number=call.to_number,
                number_id=call.number_id,
                trunk=call.trunk,
                sip_call_id=sip_call.call_id,
            )
        )
        sip_call.on_reoffer = lambda offer, call=call: self._reoffer(call, offer)
        sip_call.ringing()
        self._emit(
            ev.CallRinging(tenant_id=call.tenant_id, call_id=call.id, node_id=self.config.node_id)
        )
        self._watch(call)
        assert route.script is not None
        call.script = asyncio.create_task(self._run_script(call, route), name=f"call-{call.id}")

    async def _run_script(self, call: Call, route: InboundRoute) -> None:
        assert route.script is not None
        control = CallControl(self, call)
        try:
            await route.script(control)
        except CallEnded:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: its flow failed", call.id)
            await self.hangup(call, "flow_error")
            return
        if not call.is_over and call.bridge is None and call.queued is None:
            await self.hangup(call, "flow_finished")

    # --- call control --------------------------------------------------------------------------

    async def answer(self, call: Call) -> None:
        if call.answered_at is not None:
            return
        if not isinstance(call.sip, InboundCall):
            raise CallEnded(call.end_or_hangup())
        assert call.negotiated is not None
        wait = self.config.ring_seconds - (time.monotonic() - call.started_mono)
        if wait > 0:
            await asyncio.sleep(wait)
        if call.is_over:
            raise CallEnded(call.end_or_hangup())
        await call.sip.answer(call.negotiated.answer)
        call.answered_at = datetime.now(UTC)
        call.answered_mono = time.monotonic()
        self._emit(
            ev.CallAnswered(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.config.node_id,
                codec=call.negotiated.codec,
            )
        )

    async def hangup(self, call: Call, reason: str = "normal") -> None:
        if call.is_over:
            return
        with contextlib.suppress(CallEnded):
            await call.sip.hangup(reason)
        await self._finish(call, CallEnd(cause="local_hangup", reason=reason))

    def _reoffer(self, call: Call, offer: sdp.SessionDescription) -> sdp.SessionDescription:
        """A re-INVITE from the far end: hold (sendonly/inactive) or resume, or new media."""
        call.sdp_version += 1
        negotiated = sdp.answer(
            offer,
            address=self.public_host,
            port=call.stream.local_port,
            session_id=(
                call.negotiated.answer.origin.session_id
                if call.negotiated is not None
                else secrets.randbits(31)
            ),
            version=call.sdp_version,
        )
        call.negotiated = negotiated
        call.stream.configure(negotiated, (negotiated.remote_address, negotiated.remote_port))
        hold = sdp.is_hold(offer)
        call.stream.held = not negotiated.direction.sends
        if hold and not call.held:
            call.held = True
            self._emit(
                ev.CallHeld(
                    tenant_id=call.tenant_id,
                    call_id=call.id,
                    node_id=self.config.node_id,
                    by="caller",
                )
            )
        elif not hold and call.held:
            call.held = False
            self._emit(
                ev.CallResumed(
                    tenant_id=call.tenant_id,
                    call_id=call.id,
                    node_id=self.config.node_id,
                    by="caller",
                )
            )
        return negotiated.answer

    # --- bookkeeping ---------------------------------------------------------------------------

    def _admit(self, call: Call) -> None:
        self.calls[call.id] = call
        self._by_tenant[call.tenant_id] += 1
        call.stream.on_digit = lambda digit, call=call: self._on_digit(call, digit)

    def _on_digit(self, call: Call, digit: str) -> None:
        if digit in _TOUCH_TONE:
            self._emit(
                ev.CallDtmf(
                    tenant_id=call.tenant_id,
                    call_id=call.id,
                    node_id=self.config.node_id,
                    digit=digit,
                )
            )

    def _watch(self, call: Call) -> None:
        def ended(future: asyncio.Future[CallEnd]) -> None:
            if future.cancelled():
                end = CallEnd(cause="shutdown")
            elif future.exception() is not None:
                end = CallEnd(cause="failed", reason=repr(future.exception()))
            else:
                end = future.result()
            if not call.is_over:
                asyncio.get_running_loop().create_task(self._finish(call, end))

        call.sip.ended.add_done_callback(ended)

    async def _finish(self, call: Call, end: CallEnd) -> None:
        if call.is_over:
            return
        call.end = end
        call.over.set()
        if (
            call.script is not None
            and asyncio.current_task() is not call.script
            and not call.keep_script
        ):
            call.script.cancel()
        if call.playing is not None:
            call.playing.cancel()
        if call.bridge is not None:
            call.bridge.stop()
            call.bridge = None
        if call.recorder is not None:
            with contextlib.suppress(Exception):
                await call.recorder.close()
        stats = call.stream.stats()
        await call.stream.close()
        self.calls.pop(call.id, None)
        self._by_tenant[call.tenant_id] -= 1
        if self._by_tenant[call.tenant_id] <= 0:
            del self._by_tenant[call.tenant_id]
        now = datetime.now(UTC)
        ended_mono = time.monotonic()
        self._emit(
            ev.CallEnded(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.config.node_id,
                direction=call.direction,
                cause=end.cause,
                sip_status=end.sip_status,
                reason=end.reason,
                started_at=call.started_at,
                answered_at=call.answered_at,
                ended_at=now,
                duration_ms=round((ended_mono - call.started_mono) * 1000),
                talk_ms=(
                    0
                    if call.answered_mono is None
                    else round((ended_mono - call.answered_mono) * 1000)
                ),
                packets_received=stats.packets_received,
                packets_lost=max(0, stats.packets_lost),
                jitter_ms=stats.jitter_ms,
                agent_id=call.agent_id,
                queue_id=call.queue_id,
            )
        )

    def _emit(self, event: Event) -> None:
        try:
            self.events.emit(event)
        except asyncio.QueueFull:
            log.error("event backlog full: %s for call dropped", event.subject())

    # --- outbound ------------------------------------------------------------------------------

    async def originate(self, request: Originate, *, call_id: UUID | None = None) -> Call:
        """Place a call through the tenant's trunk (or the platform's), after the policy and
        caller-ID checks. Returns once the INVITE is out; events tell the rest."""
        if self._draining:
            raise CommandRefused("draining", "this node is draining")
        route = await self.outbound_route(
            request.tenant_id, request.to, request.caller_id, request.trunk_id
        )
        if self._by_tenant[request.tenant_id] >= request.max_concurrent_calls:
            raise CommandRefused("concurrent_call_limit", "the tenant is at its call limit")
        sip_call, stream, offer = await self.invite_via(route, request.to, request.caller_id)
        call = Call(
            id=call_id or new_id(),
            tenant_id=request.tenant_id,
            direction="outbound",
            sip=sip_call,
            stream=stream,
            from_number=request.caller_id,
            to_number=request.to,
            trunk=route.trunk_name,
        )
        self._admit(call)
        self._emit(
            ev.CallStarted(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.config.node_id,
                direction="outbound",
                from_number=call.from_number,
                to_number=call.to_number,
                trunk=call.trunk,
                sip_call_id=sip_call.call_id,
            )
        )
        sip_call.on_reoffer = lambda o, call=call: self._reoffer(call, o)
        self._watch(call)
        asyncio.get_running_loop().create_task(self._follow_outbound(call, sip_call, offer))
        return call

    async def outbound_route(
        self, tenant_id: UUID, to: str, caller_id: str, trunk_id: UUID | None
    ) -> OutboundRoute:
        """The trunk a call from `caller_id` to `to` leaves by, once the caller ID is the
        tenant's own and the destination policy allows the call."""
        if not await self.directory.owns_number(tenant_id, caller_id):
            raise CommandRefused(
                "caller_id_not_owned", "the caller ID must be one of the tenant's numbers"
            )
        try:
            check_destination(to, caller_id, self.config.outbound_policy)
        except PolicyRefused as exc:
            raise CommandRefused(exc.code, exc.message) from exc
        route = await self.directory.outbound_route(tenant_id, caller_id, trunk_id)
        if route is None:
            raise CommandRefused("no_trunk", "no trunk can carry this call")
        return route

    async def invite_via(
        self,
        route: OutboundRoute,
        to: str,
        caller_id: str,
        *,
        codecs: Sequence[str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[OutboundCall, RtpStream, sdp.SessionDescription]:
        """INVITE `to` through `route`'s trunk (see `invite`)."""
        transport: TransportName = route.transport  # type: ignore[assignment]
        host = await _resolve(route.host)
        return await self.invite(
            target=f"sip:{to}@{route.host}:{route.port}",
            peer=Peer(transport, host, route.port),
            from_uri=f"sip:{caller_id}@{route.from_domain or self.public_host}",
            codecs=codecs or route.codecs,
            username=route.username,
            password=route.password,
            headers=headers,
        )

    async def invite(
        self,
        *,
        target: str,
        peer: Peer,
        from_uri: str,
        codecs: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> tuple[OutboundCall, RtpStream, sdp.SessionDescription]:
        """Open an RTP stream and send an INVITE offering it; returns once the INVITE is out."""
        assert self.ua is not None
        stream = await RtpStream.open(
            self.config.rtp_host, self.ports, public_host=self.public_host
        )
        try:
            offer = sdp.make_offer(
                address=self.public_host,
                port=stream.local_port,
                session_id=secrets.randbits(31),
                version=1,
                codecs=codecs,
            )
            sip_call = await self.ua.originate(
                target=target,
                peer=peer,
                from_uri=from_uri,
                offer=offer,
                username=username,
                password=password,
                headers=headers,
            )
        except BaseException:
            await stream.close()
            raise
        return sip_call, stream, offer

    async def _follow_outbound(
        self, call: Call, sip_call: OutboundCall, offer: sdp.SessionDescription
    ) -> None:
        ringing = asyncio.ensure_future(sip_call.ringing.wait())
        try:
            first: set[asyncio.Future[Any]] = {ringing, sip_call.answered}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if ringing.done() and not call.is_over:
                self._emit(
                    ev.CallRinging(
                        tenant_id=call.tenant_id, call_id=call.id, node_id=self.config.node_id
                    )
                )
            answer = await sip_call.answered
        except (CallEnded, asyncio.CancelledError):
            return
        finally:
            ringing.cancel()
        try:
            negotiated = sdp.read_answer(offer, answer)
        except sdp.SdpError:
            await self.hangup(call, "media_refused")
            return
        call.negotiated = negotiated
        call.stream.configure(negotiated, (negotiated.remote_address, negotiated.remote_port))
        call.answered_at = datetime.now(UTC)
        call.answered_mono = time.monotonic()
        self._emit(
            ev.CallAnswered(
                tenant_id=call.tenant_id,
                call_id=call.id,
                node_id=self.config.node_id,
                codec=negotiated.codec,
            )
        )

    # --- commands (media.<node_id>.<verb>) -------------------------------------------------------

    async def handle_command(self, verb: str, payload: bytes) -> bytes:
        """One command from the bus; the reply is JSON {"ok": true, ...} or {"ok": false, "error":
        code, "message": ...}. A call is only ever found within the tenant the command names."""
        try:
            result = await self._command(verb, payload)
        except CommandRefused as exc:
            return _encode({"ok": False, "error": exc.code, "message": exc.message})
        except msgspec.ValidationError as exc:
            return _encode({"ok": False, "error": "invalid_command", "message": str(exc)})
        except msgspec.DecodeError as exc:
            return _encode({"ok": False, "error": "invalid_command", "message": str(exc)})
        return _encode({"ok": True, **result})

    async def _command(self, verb: str, payload: bytes) -> dict[str, Any]:
        if verb == "drain":
            self.drain()
            return {"draining": True}
        if verb == "status":
            return self.heartbeat()
        if verb == "originate":
            request = msgspec.json.decode(payload, type=Originate)
            call = await self.originate(request)
            return {"call_id": str(call.id)}
        if verb == "hangup":
            hangup = msgspec.json.decode(payload, type=HangupCommand)
            await self.hangup(self._call(hangup.tenant_id, hangup.call_id), hangup.reason)
            return {}
        if verb == "play":
            play = msgspec.json.decode(payload, type=PlayCommand)
            call = self._call(play.tenant_id, play.call_id)
            await self._play(call, play)
            return {}
        if verb in self.queues.verbs:
            return await self.queues.command(verb, payload)
        if verb == "collect":
            collect = msgspec.json.decode(payload, type=CollectCommand)
            call = self._call(collect.tenant_id, collect.call_id)
            control = CallControl(self, call)
            try:
                digits = await control.collect(
                    max_digits=collect.max_digits,
                    between_digits=collect.timeout_seconds,
                    terminator=collect.terminator,
                )
            except CallEnded as exc:
                raise CommandRefused("call_ended", "the call ended") from exc
            return {"digits": digits}
        if verb == "bridge":
            bridge = msgspec.json.decode(payload, type=BridgeCommand)
            a = self._call(bridge.tenant_id, bridge.call_id)
            b = self._call(bridge.tenant_id, bridge.other_call_id)
            if a is b:
                raise CommandRefused("invalid_command", "a call cannot be bridged to itself")
            for leg in (a, b):
                if leg.playing is not None:
                    leg.playing.cancel()
                if leg.script is not None and not leg.script.done():
                    leg.script.cancel()
            joined = Bridge(a.stream, b.stream)
            joined.start()
            a.bridge = b.bridge = joined
            return {}
        if verb == "record":
            record = msgspec.json.decode(payload, type=RecordCommand)
            call = self._call(record.tenant_id, record.call_id)
            return await self._record(call, record)
        raise CommandRefused("unknown_command", f"no command named {verb!r}")

    def _call(self, tenant_id: UUID, call_id: UUID) -> Call:
        call = self.calls.get(call_id)
        if call is None or call.tenant_id != tenant_id:
            raise CommandRefused("call_not_found", "no such call on this node")
        return call

    async def _play(self, call: Call, play: PlayCommand) -> None:
        if play.prompt_id is not None:
            audio = await self.directory.prompt(call.tenant_id, play.prompt_id)
        elif play.text is not None:
            audio = await self.directory.speech(play.text, play.voice)
        else:
            raise CommandRefused("invalid_command", "give prompt_id or text")
        if call.direction == "inbound" and call.answered_at is None:
            with contextlib.suppress(CallEnded):
                await self.answer(call)
        if call.playing is not None:
            call.playing.cancel()
        call.playing = asyncio.create_task(self.player.play(call.stream, audio, loop=play.loop))

    async def recording_key(self, tenant_id: UUID) -> bytes:
        if self._recording_key is None:
            raise CommandRefused("recording_unavailable", "no recording key is configured")
        return await self._recording_key(tenant_id)

    async def _record(self, call: Call, record: RecordCommand) -> dict[str, Any]:
        if not record.start:
            if call.recorder is None:
                raise CommandRefused("not_recording", "the call is not being recorded")
            info = await call.recorder.close()
            call.recorder = None
            return {"path": str(info.path), "duration_ms": info.duration_ms}
        if call.recorder is not None:
            raise CommandRefused("already_recording", "the call is already being recorded")
        key = await self.recording_key(call.tenant_id)
        folder = self.config.recordings_dir / str(call.tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{call.id}.sbrec"
        recorder = Recorder(path, key, aad=recording_aad(call.tenant_id, call.id))
        recorder.attach(call.stream)
        call.recorder = recorder
        return {"path": str(path)}


class RecordingKeys(Protocol):
    async def __call__(self, tenant_id: UUID) -> bytes: ...


def recording_aad(tenant_id: UUID, call_id: UUID) -> bytes:
    """Binds a recording's ciphertext to its tenant and call, so a file moved to another
    tenant's folder does not decrypt."""
    return hashlib.sha256(f"recording:{tenant_id}:{call_id}".encode()).digest()


def _free_udp_and_tcp_port(host: str) -> int:
    """A port number free for both UDP and TCP on `host` (port 0 asks for any: a free UDP port
    may be some TCP connection's local port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


def _digest_uri_fits(digest_uri: str, request_uri: Uri) -> bool:
    """RFC 3261 §22.4 wants the digest-uri to be the Request-URI. Some carrier equipment (and
    SIPp) sign for the node's own address instead (`sip:host:port`, no user); that still names
    this node and nothing else, so it is accepted too."""
    if digest_uri == str(request_uri):
        return True
    try:
        signed = Uri.parse(digest_uri)
    except ValueError:
        return False
    return (
        signed.scheme == request_uri.scheme
        and signed.user is None
        and signed.host == request_uri.host
        and (signed.port or 5060) == (request_uri.port or 5060)
    )


def _password_of(trunk: TrunkSource | None) -> Callable[[str], str | None]:
    def lookup(_username: str) -> str | None:
        return None if trunk is None else trunk.digest_password

    return lookup


async def _resolve(host: str) -> str:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=2)  # SOCK_DGRAM: one entry per address
    return str(infos[0][4][0])


def _encode(value: dict[str, Any]) -> bytes:
    return msgspec.json.encode(value)


class CommandRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Command(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    tenant_id: UUID


class Originate(_Command, kw_only=True):
    to: str
    caller_id: str
    trunk_id: UUID | None = None
    max_concurrent_calls: int = 2


class HangupCommand(_Command, kw_only=True):
    call_id: UUID
    reason: str = "normal"


class PlayCommand(_Command, kw_only=True):
    call_id: UUID
    prompt_id: UUID | None = None
    text: str | None = None
    voice: str = "en-us"
    loop: bool = False


class CollectCommand(_Command, kw_only=True):
    call_id: UUID
    max_digits: int = 1
    timeout_seconds: float = 5.0
    terminator: str | None = "#"


class BridgeCommand(_Command, kw_only=True):
    call_id: UUID
    other_call_id: UUID


class RecordCommand(_Command, kw_only=True):
    call_id: UUID
    start: bool = True

"""Concurrent bridged WebRTC↔SIP calls per media-node process: the product's pass-through agent
leg against aiortc's stock decode/encode media path, measured in one run.

    .venv/bin/python loadtests/webrtc_bench.py [--seconds 4] [--quick]

Each call is what a browser agent answering a SIP caller is on the node: an agent leg and a
caller leg, both G.711 μ-law, joined for the length of the call.

- pass-through (the product): the agent leg is negotiated by `webrtc.leg.AgentPeer.answer` into
  a `WebRtcStream` and joined to the caller's `RtpStream` by `media.bridge.Bridge`; aiortc only
  negotiates ICE, DTLS and the SRTP keys, packets are relayed without decoding.
- stock (the baseline, only here): aiortc used as its documentation shows. The agent's
  `RTCPeerConnection` gets a sender track whose `recv()` awaits the next frame decoded from the
  caller's packets (PCMU → PCM → `av.AudioFrame`), and the frames of the remote track's
  `recv()` (aiortc's jitter buffer and decoder thread) are encoded to PCMU and sent to the
  caller's leg.

The node is a separate uvloop process pinned to CPU 0 holding N such calls. This process, pinned
to CPU 1, is both sides' far ends: the SIP callers (one UDP socket sending 20 ms-paced PCMU to
every caller leg, as loadtests/rtp_bench.py does) and lean browser agents: an aiortc
`RTCPeerConnection` per call makes the offer and completes ICE and DTLS, then its sender and
receiver are left unused and the generator protects and unprotects SRTP itself with the keys of
that connection's DTLS transport, on the ICE pair's socket (the same trick as `WebRtcStream`).
During a measurement the generator runs a plain epoll loop over those sockets (STUN consent
checks from the node are handed to aioice, so connections stay up).

Every packet carries its send time (CLOCK_MONOTONIC, shared by the processes), its call's index
and whether it was sent inside the measured window, so loss and one-way latency through the node
are exact per packet in each direction. The stamp is written as hex digits in 16 quiet μ-law
codes (0xF0-0xFF, at most 120 of 32767) that G.711 decoding and re-encoding leave unchanged,
both aiortc's (FFmpeg) coder and `media.g711`, and a 20 ms packet stays one 20 ms frame on
aiortc's path: so the stamps survive the stock path's decode and encode, and its latency is
measured the same way as the pass-through's, jitter buffer included. The rest of each payload is
μ-law silence, or, for "agent talking", a 440 Hz tone at about -10 dBFS in the browsers'
packets. The difference matters to the pass-through path: `WebRtcStream` negotiates no
telephone-event with browsers, so it searches the agent's audio for DTMF tones, which is cheap
for quiet frames and costly for loud ones.

Signaling (offer and answer) goes over a multiprocessing pipe, not SIP or the agent WebSocket:
this measures steady-state media, not call set-up. Calls are opened in batches before a step and
stay open across steps (a step adds or closes calls to reach its N); stock calls are opened
afresh after a failed step, since a call whose jitter buffer saw a loss keeps its extra delay.

A step passes with no packet lost in either direction and a p99 one-way latency of at most
20 ms above the path's built-in buffering: none for pass-through, and, towards the caller on
the stock path, the 80 ms aiortc's audio jitter buffer holds before releasing a frame (4 packets
of prefetch). Three ladders step up until a step fails (a failing step is tried again once),
then halve the gap down to the resolution: stock, pass-through, pass-through with the agents
talking. A failed try during which other programs took more than a quarter of a core does not
count: the step waits for a quiet machine and tries again (at most 3 times). At the largest
passing load, one more window each: stock with the agents talking; pass-through with the
in-band DTMF search turned off on the agent legs (`inband_detection = False`, an experiment:
not the product's setting), silent and talking.

Last, one call per mode with ONE packet from the browser dropped: the latency the caller side
sees before and after it (aiortc's jitter buffer is known to grow after a single loss).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import math
import multiprocessing
import os
import resource
import select
import socket
import struct
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import av
import pylibsrtp
import uvloop
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests.processes import cpu_seconds  # noqa: E402
from loadtests.rtp_bench import (  # noqa: E402
    HOST,
    NODE_PORTS,
    PACKET_INTERVAL,
    PAYLOAD,
    SLOTS,
    _machine_busy,
    ladder,
)
from media import g711  # noqa: E402
from media.bridge import Bridge  # noqa: E402
from media.ports import PortRange  # noqa: E402
from media.sdp import Negotiated, answer, make_offer  # noqa: E402
from media.stream import FRAME_SAMPLES, RtpStream  # noqa: E402
from webrtc.leg import AgentPeer, WebRtcStream  # noqa: E402

RELAY = "pass-through"
STOCK = "stock"
P99_LIMIT_MS = 20.0
STOCK_BUFFER_MS = 4 * 20.0
"""aiortc's audio `JitterBuffer(capacity=16, prefetch=4)` releases a frame once four more are
behind it: the stock path's built-in delay towards the caller."""
WARMUP = 1.0
DRAIN_SENDING = 0.6
"""After the window, unmeasured packets keep flowing so measured ones held in a jitter buffer
come out; a measured packet later than this counts as lost."""
DRAIN_LISTENING = 0.2
STOCK_LADDER = (5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300)
RELAY_LADDER = (25, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800)
STOCK_RESOLUTION = 2
RELAY_RESOLUTION = 10
LOUD_LADDER = (10, 20, 30, 40, 50, 75, 100, 150, 200, 300)
LOUD_RESOLUTION = 5
LOUD_HZ = 440.0
LOUD_LEVEL = 0.3
"""The agent talking: a tone at about -10 dBFS (not a DTMF frequency), above the in-band DTMF
detector's floor, in the rest of every browser packet (the stamp stays quiet)."""
OPEN_BATCH = 25
"""Calls negotiated at once: ICE checks and DTLS handshakes of more at a time only queue up."""
CONNECT_TIMEOUT = 60.0
BUSY_OTHERS = 0.25
"""Other programs' CPU (in cores) above which a failed try is put down to them."""
BUSY_RETRIES = 3
QUIET_SHARE = 0.2
QUIET_WAIT = 60.0
QUIET_BUDGET = 240.0
"""At most this long waiting for a quiet machine in one run, so that a run ends."""
CPUS = os.cpu_count() or 1
SAMPLE_RATE = 8000

_STAMP_CODES = 25
"""Send time (ns, 16 hex digits), call index (8), 1 if sent inside the measured window (1)."""
_STAMP_FLOOR = 0xF0
_HEX = b"0123456789abcdef"
_TO_CODES = bytes(_STAMP_FLOOR | _HEX.index(c) if c in _HEX else c for c in range(256))
_FROM_CODES = bytes(_HEX[c & 0x0F] if c >= _STAMP_FLOOR else 0 for c in range(256))
_SEQ_TS = struct.Struct("!HI")
_RTCP_TYPES = range(200, 205)


def _write_stamp(packet: bytearray, offset: int, sent_ns: int, index: int, flag: int) -> None:
    """Hex digits of the stamp, each written as one of 16 quiet μ-law codes."""
    digits = b"%016x%08x%x" % (sent_ns, index, flag)
    packet[offset : offset + _STAMP_CODES] = digits.translate(_TO_CODES)


def _read_stamp(data: bytes, offset: int) -> tuple[int, int, int] | None:
    codes = data[offset : offset + _STAMP_CODES]
    if len(codes) < _STAMP_CODES or min(codes) < _STAMP_FLOOR:
        return None
    digits = codes.translate(_FROM_CODES)
    return int(digits[:16], 16), int(digits[16:24], 16), digits[24] - 0x30


def _loud_audio() -> bytes:
    samples = array(
        "h",
        (
            int(LOUD_LEVEL * 32767 * math.sin(2 * math.pi * LOUD_HZ * i / SAMPLE_RATE))
            for i in range(PAYLOAD - _STAMP_CODES)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return g711.ulaw_encode(samples.tobytes())


def _payload_offset(data: bytes) -> int:
    """Where an RTP packet's payload starts (CSRCs and a header extension skipped)."""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    return offset


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _skip(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for aiortc's media pipeline where the benchmark does its own packets."""


# --- node process ---------------------------------------------------------------------------


def _node_main(conn: Connection, mode: str, sip_address: tuple[str, int], cpu: int) -> None:
    if cpu >= 0:
        # Threads started later (aiortc's decoders and encoder pool) inherit the pinning.
        os.sched_setaffinity(0, {cpu})
    _raise_fd_limit()
    logging.basicConfig(level=logging.ERROR)
    uvloop.run(_Node(conn, mode, sip_address).run())


class _PassCall:
    """The product's path: `AgentPeer` + `WebRtcStream`, bridged to the caller's leg."""

    def __init__(
        self, caller: RtpStream, stream: WebRtcStream, peer: AgentPeer, bridge: Bridge
    ) -> None:
        self.caller = caller
        self.stream = stream
        self.peer = peer
        self.bridge = bridge

    @classmethod
    async def open(cls, offer_sdp: str, caller: RtpStream) -> tuple[_PassCall, str]:
        stream = WebRtcStream.create()
        peer, answer_sdp = await AgentPeer.answer(offer_sdp, stream)
        bridge = Bridge(caller, stream)
        bridge.start()
        return cls(caller, stream, peer, bridge), answer_sdp

    @property
    def connected(self) -> bool:
        return self.stream.connected

    async def close(self) -> None:
        self.bridge.stop()
        await self.peer.close()
        await self.stream.close()
        await self.caller.close()


class _CallerAudio(MediaStreamTrack):
    """The stock path's sender track: frames decoded from the caller's packets, handed to
    aiortc's sender (which encodes them again) as they arrive."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
        self._pts = 0
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)

    def push(self, data: bytes) -> None:
        """The caller leg's `on_datagram`: one RTP packet of μ-law, decoded to a frame."""
        pcm = g711.ulaw_decode(data[_payload_offset(data) :])
        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += samples
        self.frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        return await self.frames.get()


async def _play_to_caller(track: MediaStreamTrack, caller: RtpStream) -> None:
    """The stock path's receive side: frames out of aiortc's jitter buffer and decoder, encoded
    to μ-law and sent on the caller's leg."""
    source = object()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, av.AudioFrame)
        # aiortc's G.711 decoder gives packed s16 mono; the plane may be padded.
        pcm = bytes(frame.planes[0])[: frame.samples * 2]
        caller.send_payload(g711.ulaw_encode(pcm), source=source, samples=frame.samples)


class _StockCall:
    """aiortc's own media path between the browser and the caller's leg."""

    def __init__(self, caller: RtpStream, pc: RTCPeerConnection, feed: _CallerAudio) -> None:
        self.caller = caller
        self.pc = pc
        self.feed = feed
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, offer_sdp: str, caller: RtpStream) -> tuple[_StockCall, str]:
        pc = RTCPeerConnection()
        feed = _CallerAudio()
        call = cls(caller, pc, feed)
        caller.on_datagram = feed.push

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            pc.addTrack(feed)
            call.task = asyncio.ensure_future(_play_to_caller(track, caller))

        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return call, pc.localDescription.sdp

    @property
    def connected(self) -> bool:
        return bool(self.pc.connectionState == "connected")

    async def close(self) -> None:
        self.caller.on_datagram = None
        await self.pc.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.caller.close()


class _Node:
    """The media process: opens and closes calls as the generator asks over the pipe."""

    def __init__(self, conn: Connection, mode: str, sip_address: tuple[str, int]) -> None:
        self.conn = conn
        self.mode = mode
        self.sip_address = sip_address
        self.calls: list[_PassCall | _StockCall] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.ports = PortRange(*NODE_PORTS)
        offer = make_offer(address=HOST, port=sip_address[1], session_id=1, version=1)
        # G.711 μ-law with telephone-event, as a SIP trunk offers: no in-band tone search.
        self.negotiated: Negotiated = answer(
            offer, address=HOST, port=NODE_PORTS[0], session_id=2, version=1
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.conn.fileno(), self._command)
        self.conn.send(("ready", os.getpid()))
        await self.done
        loop.remove_reader(self.conn.fileno())
        # Sockets close with the process; closing every call politely is not measured.

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _command(self) -> None:
        try:
            message = self.conn.recv()
        except EOFError:  # the generator is gone: so is the benchmark
            message = ("exit",)
        kind = message[0]
        if kind == "open":
            self._spawn(self._open(message[1]))
        elif kind == "close":
            self._spawn(self._close(message[1]))
        elif kind == "connected":
            self.conn.send(sum(1 for call in self.calls if call.connected))
        elif kind == "inband":
            # An experiment, not the product's setting: agent legs searching their audio for
            # DTMF tones or not (browsers send digits as commands).
            for call in self.calls:
                if isinstance(call, _PassCall):
                    call.stream.inband_detection = message[1]
            self.conn.send(len(self.calls))
        elif kind == "exit" and not self.done.done():
            self.done.set_result(None)

    async def _open_one(self, offer_sdp: str) -> tuple[_PassCall | _StockCall, str]:
        caller = await RtpStream.open(HOST, self.ports)
        caller.configure(self.negotiated, self.sip_address)
        try:
            if self.mode == RELAY:
                return await _PassCall.open(offer_sdp, caller)
            return await _StockCall.open(offer_sdp, caller)
        except BaseException:
            await caller.close()
            raise

    async def _open(self, offers: list[str]) -> None:
        results = await asyncio.gather(
            *(self._open_one(offer) for offer in offers), return_exceptions=True
        )
        reply: list[tuple[str, int] | str] = []
        for result in results:
            if isinstance(result, BaseException):
                reply.append(repr(result))
            else:
                call, answer_sdp = result
                self.calls.append(call)
                reply.append((answer_sdp, call.caller.local_port))
        self.conn.send(reply)

    async def _close(self, count: int) -> None:
        closing = self.calls[len(self.calls) - count :]
        del self.calls[len(self.calls) - count :]
        await asyncio.gather(*(call.close() for call in closing), return_exceptions=True)
        self.conn.send(len(self.calls))


# --- generator: the browsers and the SIP callers ---------------------------------------------


def _packet(ssrc: int) -> bytearray:
    """A PCMU packet of silence (12-byte header) that the send loop stamps and numbers."""
    packet = bytearray(12 + PAYLOAD)
    packet[0] = 0x80
    struct.pack_into("!I", packet, 8, ssrc)
    packet[12:] = b"\xff" * PAYLOAD
    return packet


@dataclass(eq=False)
class _Agent:
    """The generator's ends of one call: the browser's lean SRTP and the SIP caller's RTP."""

    index: int
    pc: RTCPeerConnection
    ssrc: int
    caller_port: int = 0
    sock: socket.socket | None = None
    remote: tuple[Any, ...] = ()
    tx: pylibsrtp.Session | None = None
    rx: pylibsrtp.Session | None = None
    listening: list[tuple[socket.socket, Any]] = field(default_factory=list)
    """Every ICE candidate's socket and aioice protocol: STUN arriving during a measurement (the
    node's consent checks) is handed to the protocol."""
    sequence: int = 0
    caller_packet: bytearray = field(default_factory=bytearray)
    browser_packet: bytearray = field(default_factory=bytearray)

    def take_transport(self) -> None:
        """Once connected: the SRTP sessions and the ICE sockets, for the epoll loop."""
        sender = self.pc.getTransceivers()[0].sender
        dtls: RTCDtlsTransport = sender.transport
        # Whatever arrives between measurements is dropped without aiortc's parsing.
        dtls._handle_rtp_data = _skip  # type: ignore[method-assign]
        dtls._handle_rtcp_data = _skip  # type: ignore[method-assign]
        connection = dtls.transport._connection
        pair = connection._nominated[1]
        # Controlling, aioice nominates every pair whose check succeeds, and each side keeps the
        # last one it completed: the node may send to another of our candidates than the one
        # we send from, so listen on all of them.
        for protocol in connection._protocols:
            fd = protocol.transport.get_extra_info("socket").fileno()
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            self.listening.append((sock, protocol))
            if protocol is pair.protocol:
                self.sock = sock
        self.remote = tuple(pair.remote_addr)
        self.tx = dtls._tx_srtp
        self.rx = dtls._rx_srtp
        self.caller_packet = _packet(0x20000 + self.index)
        self.browser_packet = _packet(self.ssrc)

    async def close(self) -> None:
        for sock, _ in self.listening:
            sock.close()
        self.listening.clear()
        self.sock = None
        await self.pc.close()


@dataclass
class Flow:
    """One direction of every call in a measured window."""

    sent: int = 0
    received: int = 0
    latencies: list[int] = field(default_factory=list)
    """One-way latency (ns) of each measured packet that arrived."""

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = self.latencies
        ordered.sort()  # in place: asked for several percentiles, sorted once
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] / 1e6


@dataclass
class Traffic:
    to_agent: Flow
    """SIP caller → node → browser."""
    to_caller: Flow
    """Browser → node → SIP caller."""
    node_cpu: float
    generator_cpu: float
    generator_lag_ms: float
    others_cpu: float
    garbled: int
    """Packets whose stamp did not survive (none expected)."""
    stun_errors: int
    """STUN datagrams aioice could not handle (none expected)."""
    loud: bool
    series: list[tuple[float, float]]
    """(seconds into the window, ms) of call 0's packets towards the caller, when asked."""
    dropped_at: float | None


class NodeRun:
    """One node process in one mode and the generator's side of its calls."""

    def __init__(self, mode: str, pin: bool) -> None:
        self.mode = mode
        self.pin = pin
        self.agents: list[_Agent] = []
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sip.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        self.sip.bind((HOST, 0))
        self.sip.setblocking(False)
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=_node_main,
            args=(theirs, mode, self.sip.getsockname(), 0 if pin else -1),
            daemon=True,
        )
        self.pid = 0
        self.opened = 0.0
        """Seconds spent opening calls (negotiation, ICE, DTLS), not measured otherwise."""

    async def start(self) -> None:
        self.process.start()
        ready = await self._reply()
        self.pid = ready[1]

    async def _reply(self, within: float = CONNECT_TIMEOUT) -> Any:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()

        def readable() -> None:
            if not reply.done():
                try:
                    reply.set_result(self.conn.recv())
                except EOFError as exc:
                    reply.set_exception(exc)

        loop.add_reader(self.conn.fileno(), readable)
        try:
            async with asyncio.timeout(within):
                return await reply
        except (TimeoutError, EOFError):
            raise SystemExit(
                f"the {self.mode} node did not answer (exit code {self.process.exitcode})"
            ) from None
        finally:
            loop.remove_reader(self.conn.fileno())

    async def ask(self, message: tuple[Any, ...]) -> Any:
        self.conn.send(message)
        return await self._reply()

    async def resize(self, calls: int) -> None:
        started = time.monotonic()
        while len(self.agents) < calls:
            await self._open(min(OPEN_BATCH, calls - len(self.agents)))
        if len(self.agents) > calls:
            await self._close(len(self.agents) - calls)
        # The node attaches its side when its own connection state says so.
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while True:
                if await self.ask(("connected",)) >= calls:
                    break
                await asyncio.sleep(0.05)
        self.opened += time.monotonic() - started

    async def reopen(self) -> None:
        """Fresh calls, as many as before: the stock path keeps a grown jitter buffer."""
        count = len(self.agents)
        await self.resize(0)
        await self.resize(count)

    async def _offer(self, index: int) -> _Agent:
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("audio", direction="sendrecv")
        capabilities = RTCRtpSender.getCapabilities("audio")
        transceiver.setCodecPreferences(
            [c for c in capabilities.codecs if c.mimeType.lower() == "audio/pcmu"]
        )
        # The browser's packets are made and read by the epoll loop, not by aiortc.
        transceiver.sender.send = _skip  # type: ignore[method-assign]
        transceiver.receiver.receive = _skip  # type: ignore[method-assign]
        await pc.setLocalDescription(await pc.createOffer())
        return _Agent(index=index, pc=pc, ssrc=transceiver.sender._ssrc)

    async def _open(self, count: int) -> None:
        first = len(self.agents)
        agents = await asyncio.gather(*(self._offer(first + i) for i in range(count)))
        replies = await self.ask(("open", [a.pc.localDescription.sdp for a in agents]))
        failures = [r for r in replies if isinstance(r, str)]
        if failures:
            raise SystemExit(f"the node could not answer: {failures[0]}")
        for agent, (answer_sdp, port) in zip(agents, replies, strict=True):
            agent.caller_port = port
            await agent.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
        async with asyncio.timeout(CONNECT_TIMEOUT):
            while any(a.pc.connectionState != "connected" for a in agents):
                failed = [a for a in agents if a.pc.connectionState in ("failed", "closed")]
                if failed:
                    raise SystemExit(f"call {failed[0].index}: the agent leg did not connect")
                await asyncio.sleep(0.02)
        for agent in agents:
            agent.take_transport()
        self.agents += agents

    async def _close(self, count: int) -> None:
        closing = self.agents[len(self.agents) - count :]
        del self.agents[len(self.agents) - count :]
        remaining = await self.ask(("close", count))
        assert remaining == len(self.agents), (remaining, len(self.agents))
        await asyncio.gather(*(agent.close() for agent in closing))

    async def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("exit",))
        await asyncio.gather(*(agent.close() for agent in self.agents), return_exceptions=True)
        self.agents.clear()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.sip.close()

    def traffic(
        self,
        seconds: float,
        *,
        drop_after: float | None = None,
        series: bool = False,
        loud: bool = False,
    ) -> Traffic:
        """Both directions of every call, 50 packets/s each, for `seconds` after a warm-up.

        Runs a blocking epoll loop: aiortc's tasks in this process pause meanwhile, except that
        STUN (the node's consent checks) is handed to aioice. With `drop_after`, the packet
        call 0's browser would send that many seconds into the window is not sent (its sequence
        number is skipped, as a lost packet's would be). With `loud`, the browsers' packets
        carry a tone instead of silence after the stamp."""
        sip = self.sip
        filler = _loud_audio() if loud else b"\xff" * (PAYLOAD - _STAMP_CODES)
        for agent in self.agents:
            agent.browser_packet[12 + _STAMP_CODES :] = filler
        sip_fd = sip.fileno()
        poller = select.epoll()
        poller.register(sip_fd, select.EPOLLIN)
        senders: list[tuple[_Agent, socket.socket, pylibsrtp.Session, tuple[Any, ...], Any]] = []
        receivers: dict[int, tuple[socket.socket, pylibsrtp.Session, Any]] = {}
        for agent in self.agents:
            if agent.sock is None or agent.tx is None or agent.rx is None:
                raise RuntimeError(f"call {agent.index} is not connected")
            senders.append((agent, agent.sock, agent.tx, agent.remote, (HOST, agent.caller_port)))
            for sock, protocol in agent.listening:
                receivers[sock.fileno()] = (sock, agent.rx, protocol)
                poller.register(sock.fileno(), select.EPOLLIN)
        slots = [senders[slot::SLOTS] for slot in range(SLOTS)]
        to_agent, to_caller = Flow(), Flow()
        recorded: list[tuple[float, float]] = []
        garbled = stun_errors = 0
        lag = 0.0
        slot_length = PACKET_INTERVAL / SLOTS
        start = time.monotonic() + 0.05
        measure_from = start + WARMUP
        measure_until = measure_from + seconds
        stop_sending = measure_until + DRAIN_SENDING
        end = stop_sending + DRAIN_LISTENING
        measure_from_ns = int(measure_from * 1e9)
        drop_time = measure_from + drop_after if drop_after is not None else float("inf")
        dropped_at: float | None = None
        next_slot = start
        slot = 0
        measuring = stopped = False
        cpu_start = wall_start = node_start = 0.0
        generator_cpu = node_cpu = busy = 0.0
        machine_start = (0, 0)
        buffer = bytearray(2048)

        def begin(now: float) -> None:
            nonlocal measuring, cpu_start, wall_start, node_start, machine_start
            measuring = True
            machine_start = _machine_busy()
            node_start = cpu_seconds(self.pid)
            cpu_start, wall_start = time.process_time(), now

        def finish(now: float) -> None:
            nonlocal measuring, stopped, generator_cpu, node_cpu, busy
            measuring, stopped = False, True
            wall = max(now - wall_start, 1e-9)
            node_cpu = (cpu_seconds(self.pid) - node_start) / wall
            generator_cpu = (time.process_time() - cpu_start) / wall
            machine = _machine_busy()
            busy = (machine[0] - machine_start[0]) / max(machine[1] - machine_start[1], 1)

        def arrived(data: bytes, offset: int, flow: Flow, arrival: int) -> None:
            nonlocal garbled
            stamp = _read_stamp(data, offset)
            if stamp is None:
                garbled += 1
                return
            sent_ns, index, flag = stamp
            if flag:
                flow.received += 1
                flow.latencies.append(arrival - sent_ns)
                if series and index == 0 and flow is to_caller:
                    recorded.append(((sent_ns - measure_from_ns) / 1e9, (arrival - sent_ns) / 1e6))

        now = time.monotonic()
        while now < end:
            if not measuring and not stopped and now >= measure_from:
                begin(now)
            if measuring and now >= measure_until:
                finish(now)
            while next_slot <= now and next_slot < stop_sending:
                if measuring:
                    lag = max(lag, now - next_slot)
                flag = 1 if measuring else 0
                for agent, sock, tx, remote, caller_address in slots[slot]:
                    seq = agent.sequence = (agent.sequence + 1) & 0xFFFF
                    timestamp = (seq * FRAME_SAMPLES) & 0xFFFFFFFF
                    packet = agent.caller_packet
                    _SEQ_TS.pack_into(packet, 2, seq, timestamp)
                    _write_stamp(packet, 12, time.monotonic_ns(), agent.index, flag)
                    with contextlib.suppress(BlockingIOError):
                        sip.sendto(packet, caller_address)
                        to_agent.sent += flag
                    if agent.index == 0 and dropped_at is None and next_slot >= drop_time:
                        dropped_at = next_slot - measure_from
                        continue
                    packet = agent.browser_packet
                    _SEQ_TS.pack_into(packet, 2, seq, timestamp)
                    _write_stamp(packet, 12, time.monotonic_ns(), agent.index, flag)
                    with contextlib.suppress(BlockingIOError):
                        sock.sendto(tx.protect(bytes(packet)), remote)
                        to_caller.sent += flag
                slot = (slot + 1) % SLOTS
                next_slot += slot_length
            wait = (next_slot if next_slot < stop_sending else end) - time.monotonic()
            for fd, _ in poller.poll(max(wait, 0)):
                if fd == sip_fd:
                    while True:
                        try:
                            size = sip.recv_into(buffer)
                        except BlockingIOError:
                            break
                        arrived(bytes(buffer[:size]), 12, to_caller, time.monotonic_ns())
                    continue
                sock, rx, stun = receivers[fd]
                try:
                    data, address = sock.recvfrom(2048)
                except BlockingIOError:
                    continue
                arrival = time.monotonic_ns()
                if not data:
                    continue
                if data[0] < 2:
                    try:
                        stun.datagram_received(data, address)  # the node's consent checks
                    except Exception:
                        stun_errors += 1
                elif 127 < data[0] < 192 and data[1] not in _RTCP_TYPES:
                    try:
                        plain = rx.unprotect(data)
                    except pylibsrtp.Error:
                        garbled += 1
                        continue
                    arrived(plain, _payload_offset(plain), to_agent, arrival)
            now = time.monotonic()
        # A generator that fell far behind can overshoot the whole window.
        if not stopped:
            if not measuring:
                begin(now)
            finish(now)
        poller.close()
        return Traffic(
            to_agent=to_agent,
            to_caller=to_caller,
            node_cpu=node_cpu,
            generator_cpu=generator_cpu,
            generator_lag_ms=lag * 1000,
            others_cpu=max(0.0, busy * CPUS - generator_cpu - node_cpu),
            garbled=garbled,
            stun_errors=stun_errors,
            loud=loud,
            series=recorded,
            dropped_at=dropped_at,
        )


# --- the ladder -------------------------------------------------------------------------------


@dataclass
class Step:
    mode: str
    calls: int
    traffic: Traffic
    attempt: int = 1
    inband: bool = True
    """Whether agent legs searched their audio for DTMF tones (the product's default)."""

    @property
    def path(self) -> str:
        return (
            self.mode
            + (", agent talking" if self.traffic.loud else "")
            + ("" if self.inband else ", in-band DTMF search off")
        )

    @property
    def kind(self) -> tuple[str, bool, bool]:
        return (self.mode, self.traffic.loud, self.inband)

    @property
    def caller_limit_ms(self) -> float:
        return P99_LIMIT_MS + (STOCK_BUFFER_MS if self.mode == STOCK else 0.0)

    @property
    def verdict(self) -> str:
        t = self.traffic
        reasons = []
        if t.to_agent.lost or t.to_caller.lost:
            reasons.append("loss")
        if (
            t.to_agent.percentile(0.99) > P99_LIMIT_MS
            or t.to_caller.percentile(0.99) > self.caller_limit_ms
        ):
            reasons.append("p99")
        if not t.to_agent.sent or not t.to_caller.sent:
            reasons.append("nothing sent")
        return "pass" if not reasons else "FAIL (" + ", ".join(reasons) + ")"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def caveat(self) -> str:
        if self.traffic.generator_cpu > 0.9:
            return " (generator-bound)"
        if self.traffic.others_cpu > BUSY_OTHERS:
            return " (machine busy)"
        return ""


def _print(step: Step) -> None:
    t = step.traffic
    print(
        f"{step.path}, {step.calls} calls (try {step.attempt}): "
        f"to agent lost {t.to_agent.lost}/{t.to_agent.sent} "
        f"p50 {t.to_agent.percentile(0.5):.2f} p99 {t.to_agent.percentile(0.99):.2f} ms; "
        f"to caller lost {t.to_caller.lost}/{t.to_caller.sent} "
        f"p50 {t.to_caller.percentile(0.5):.2f} p99 {t.to_caller.percentile(0.99):.2f} ms; "
        f"node CPU {t.node_cpu:.0%}, generator CPU {t.generator_cpu:.0%} "
        f"(at most {t.generator_lag_ms:.1f} ms late), "
        f"other programs {t.others_cpu:.0%} -> {step.verdict}",
        flush=True,
    )


class _Waited:
    seconds = 0.0
    """Spent by this run so far waiting for a quiet machine."""


async def _quiet(limit: float) -> bool:
    """Wait until other programs leave the machine alone (under 20% of a core over 2 s, while
    the benchmark's own processes idle); False if that did not happen within `limit` s or the
    run's whole allowance for waiting (QUIET_BUDGET) is spent."""
    deadline = time.monotonic() + min(limit, max(0.0, QUIET_BUDGET - _Waited.seconds))
    while True:
        started = time.monotonic()
        before = _machine_busy()
        await asyncio.sleep(2.0)
        after = _machine_busy()
        _Waited.seconds += time.monotonic() - started
        share = (after[0] - before[0]) / max(after[1] - before[1], 1) * CPUS
        if share < QUIET_SHARE:
            return True
        if time.monotonic() >= deadline:
            return False


async def _measure(run: NodeRun, calls: int, args: argparse.Namespace, loud: bool) -> list[Step]:
    """One step, tried again when it fails (`args.attempts` tries in all). A failed try during
    which other programs were busy does not count: the step waits for a quiet machine and tries
    again, up to BUSY_RETRIES times. Every try is kept; the last one decides."""
    tries: list[Step] = []
    attempt = busy_retries = 0
    while attempt < args.attempts:
        if tries and run.mode == STOCK:
            await run.reopen()
        await run.resize(calls)
        step = Step(run.mode, calls, run.traffic(args.seconds, loud=loud), len(tries) + 1)
        _print(step)
        tries.append(step)
        if step.passed:
            break
        busy = step.traffic.others_cpu > BUSY_OTHERS
        if busy and busy_retries < BUSY_RETRIES and _Waited.seconds < QUIET_BUDGET:
            busy_retries += 1
            print("  (other programs were busy: waiting for a quiet machine)", flush=True)
            await _quiet(QUIET_WAIT)
            continue
        attempt += 1
    return tries


async def climb(
    mode: str,
    steps: Sequence[int],
    resolution: int,
    args: argparse.Namespace,
    *,
    loud: bool = False,
    at_best: Sequence[tuple[bool, bool]] = (),
) -> list[Step]:
    """Step up until a step fails, then halve the gap between the last pass and that failure.
    Then, at the largest load that passed, one window for each (loud, in-band search) of
    `at_best`."""
    await _quiet(QUIET_WAIT)
    run = NodeRun(mode, not args.no_pin)
    await run.start()
    results: list[Step] = []
    try:
        passed = failed = 0
        for calls in steps:
            results += await _measure(run, calls, args, loud)
            if not results[-1].passed:
                failed = calls
                break
            passed = calls
        while failed and failed - passed > resolution:
            calls = (passed + failed) // 2 // resolution * resolution
            if calls <= passed:
                break
            if mode == STOCK and not results[-1].passed:
                await run.reopen()
            results += await _measure(run, calls, args, loud)
            if results[-1].passed:
                passed = calls
            else:
                failed = calls
        for variant_loud, inband in at_best if passed else ():
            if mode == STOCK and not results[-1].passed:
                await run.reopen()
            await run.resize(passed)
            await _quiet(QUIET_WAIT)
            await run.ask(("inband", inband))
            traffic = run.traffic(args.seconds, loud=variant_loud)
            results.append(Step(run.mode, passed, traffic, inband=inband))
            _print(results[-1])
        print(f"({mode}: {run.opened:.0f} s spent opening calls)", flush=True)
    finally:
        await run.stop()
    return results


@dataclass
class JitterResult:
    mode: str
    before_p50_ms: float
    before_max_ms: float
    after_p50_ms: float
    after_max_ms: float
    after_seconds: float
    missing: int
    """Packets towards the caller that never arrived, the dropped one included."""
    first_after_ms: list[float]
    """Latency of the first packets sent after the drop."""


async def jitter(mode: str, args: argparse.Namespace) -> JitterResult:
    """One call; ONE packet of the browser's is not sent, `args.drop_after` s into the window."""
    await _quiet(QUIET_WAIT)
    run = NodeRun(mode, not args.no_pin)
    await run.start()
    try:
        await run.resize(1)
        traffic = run.traffic(args.drop_after + args.after, drop_after=args.drop_after, series=True)
    finally:
        await run.stop()
    assert traffic.dropped_at is not None
    drop = traffic.dropped_at
    before = sorted(ms for at, ms in traffic.series if at < drop)
    after_all = [(at, ms) for at, ms in traffic.series if at > drop]
    after = sorted(ms for _, ms in after_all)

    def median(values: list[float]) -> float:
        return values[len(values) // 2] if values else float("nan")

    return JitterResult(
        mode=mode,
        before_p50_ms=median(before),
        before_max_ms=before[-1] if before else float("nan"),
        after_p50_ms=median(after),
        after_max_ms=after[-1] if after else float("nan"),
        after_seconds=after_all[-1][0] - drop if after_all else 0.0,
        missing=traffic.to_caller.lost + 1,
        first_after_ms=[ms for _, ms in after_all[:10]],
    )


# --- report -----------------------------------------------------------------------------------


def _best(results: list[Step], mode: str, loud: bool = False) -> Step | None:
    """The largest passing load of a ladder (the product's setting of the in-band search)."""
    passing = [s for s in results if s.kind == (mode, loud, True) and s.passed]
    return max(passing, key=lambda s: s.calls) if passing else None


def _first_pass(results: list[Step], mode: str, calls: int) -> Step | None:
    found = [s for s in results if s.kind == (mode, False, True) and s.calls == calls]
    return found[0] if found and found[0].passed else None


def report(results: list[Step], jitters: list[JitterResult], args: argparse.Namespace) -> str:
    lines = [
        "| path | calls | packets/s into the node | to agent: lost | p50 / p99 ms "
        "| to caller: lost | p50 / p99 ms | node CPU | node CPU ms per call-second "
        "| generator CPU | other programs | result | try |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(
        results, key=lambda s: (s.mode != STOCK, s.traffic.loud, not s.inband, s.calls, s.attempt)
    ):
        t = s.traffic
        inbound = (t.to_agent.sent + t.to_caller.sent) / args.seconds
        per_call = t.node_cpu * 1000 / s.calls
        lines.append(
            f"| {s.path} | {s.calls} | {inbound:,.0f} | {t.to_agent.lost:,}/{t.to_agent.sent:,} "
            f"| {t.to_agent.percentile(0.5):.2f} / {t.to_agent.percentile(0.99):.2f} "
            f"| {t.to_caller.lost:,}/{t.to_caller.sent:,} "
            f"| {t.to_caller.percentile(0.5):.2f} / {t.to_caller.percentile(0.99):.2f} "
            f"| {t.node_cpu:.0%} | {per_call:.2f} | {t.generator_cpu:.0%} | {t.others_cpu:.0%} "
            f"| {s.verdict}{s.caveat} | {s.attempt} |"
        )
    lines.append("")
    for mode, loud in ((STOCK, False), (RELAY, False), (RELAY, True)):
        step = _best(results, mode, loud)
        label = mode + (", agent talking" if loud else "")
        if step is None:
            if any(s.kind == (mode, loud, True) for s in results):
                lines.append(f"- {label}: no step passed.")
            continue
        node_cpu = step.traffic.node_cpu
        per_core = step.calls / node_cpu if node_cpu else float("nan")
        lines.append(
            f"- {label}: **{step.calls} calls** passed on one pinned core (node CPU "
            f"{node_cpu:.0%} there; {step.calls} / {node_cpu:.2f} = {per_core:.0f} calls per "
            "core by CPU share)."
        )
    best_stock, best_relay = _best(results, STOCK), _best(results, RELAY)
    if best_stock is not None:
        stock = best_stock
        relay = _first_pass(results, RELAY, stock.calls)
        if relay is not None:
            ratio = stock.traffic.node_cpu / max(relay.traffic.node_cpu, 1e-9)
            lines.append(
                f"- Equal load, {stock.calls} calls: stock node CPU {stock.traffic.node_cpu:.0%} "
                f"vs pass-through {relay.traffic.node_cpu:.0%}: stock takes {ratio:.1f}x the "
                "CPU per call."
            )
    if best_stock is not None and best_relay is not None:
        ratio = best_relay.calls / best_stock.calls
        lines.append(
            f"- Largest passing load: pass-through {best_relay.calls} / stock "
            f"{best_stock.calls} = {ratio:.1f}x."
        )
    for variant in (s for s in results if not s.inband):
        same_load = [
            s
            for s in results
            if s.kind == (RELAY, variant.traffic.loud, True) and s.calls == variant.calls
        ]
        compared = (
            f" (with it on: node CPU {same_load[-1].traffic.node_cpu:.0%}, {same_load[-1].verdict})"
            if same_load
            else ""
        )
        lines.append(
            f"- {variant.path}, {variant.calls} calls: node CPU "
            f"{variant.traffic.node_cpu:.0%}, {variant.verdict}{compared}."
        )
    garbled = sum(s.traffic.garbled for s in results)
    stun_errors = sum(s.traffic.stun_errors for s in results)
    if garbled or stun_errors:
        lines.append(
            f"- {garbled} packets arrived with an unreadable stamp or SRTP; "
            f"{stun_errors} STUN datagrams could not be handled."
        )
    if jitters:
        lines += [
            "",
            "| path (1 call, ONE browser packet dropped) | towards the caller before: "
            "p50 / max ms | after the drop: p50 / max ms | packets missing at the caller "
            "| first packets after the drop, ms |",
            "|---|---|---|---|---|",
        ]
        for j in jitters:
            first = ", ".join(f"{ms:.0f}" for ms in j.first_after_ms[:6])
            lines.append(
                f"| {j.mode} | {j.before_p50_ms:.1f} / {j.before_max_ms:.1f} "
                f"| {j.after_p50_ms:.1f} / {j.after_max_ms:.1f} (over {j.after_seconds:.0f} s) "
                f"| {j.missing} | {first} … |"
            )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    started = time.monotonic()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {CPUS} CPUs", flush=True)
    results: list[Step] = []
    stock_steps = ladder(STOCK_LADDER, args.stock_calls)
    results += await climb(STOCK, stock_steps, args.stock_resolution, args, at_best=[(True, True)])
    best_stock = _best(results, STOCK)
    relay_steps = ladder(RELAY_LADDER, args.calls)
    if best_stock is not None:
        # The same load on both paths, for CPU per call side by side.
        relay_steps = sorted({*relay_steps, best_stock.calls})
    variants = [(False, False), (True, False)] if not args.no_loud else []
    results += await climb(RELAY, relay_steps, args.resolution, args, at_best=variants)
    if not args.no_loud:
        loud_steps = ladder(LOUD_LADDER, args.calls)
        results += await climb(RELAY, loud_steps, args.loud_resolution, args, loud=True)
    jitters = [await jitter(mode, args) for mode in (STOCK, RELAY)] if not args.no_jitter else []
    print(
        f"\n(total {time.monotonic() - started:.0f} s, {args.seconds:g} s measured per step, "
        f"p99 bound {P99_LIMIT_MS:g} ms, +{STOCK_BUFFER_MS:g} ms towards the caller on stock)\n"
    )
    print(report(results, jitters, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per step")
    parser.add_argument("--calls", type=int, default=800, help="largest pass-through step")
    parser.add_argument("--stock-calls", type=int, default=300, help="largest stock step")
    parser.add_argument("--resolution", type=int, default=RELAY_RESOLUTION)
    parser.add_argument("--stock-resolution", type=int, default=STOCK_RESOLUTION)
    parser.add_argument("--loud-resolution", type=int, default=LOUD_RESOLUTION)
    parser.add_argument("--attempts", type=int, default=2, help="tries of a failing step")
    parser.add_argument("--drop-after", type=float, default=3.0, help="jitter test: s to drop")
    parser.add_argument("--after", type=float, default=5.0, help="jitter test: s after drop")
    parser.add_argument("--no-jitter", action="store_true", help="skip the jitter buffer test")
    parser.add_argument(
        "--no-loud", action="store_true", help="skip the pass-through ladder with agents talking"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin node and generator")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 s steps, one try, coarser search, shorter jitter test",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
        args.attempts = 1
        args.resolution = max(args.resolution, 25)
        args.stock_resolution = max(args.stock_resolution, 5)
        args.loud_resolution = max(args.loud_resolution, 10)
        args.drop_after = min(args.drop_after, 2.0)
        args.after = min(args.after, 3.0)
    if not args.no_pin:
        os.sched_setaffinity(0, {1})
    _raise_fd_limit()
    logging.basicConfig(level=logging.ERROR)
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()

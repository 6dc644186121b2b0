"""One call leg's RTP and RTCP sockets on the running event loop.

The receive path is the node's hottest code: every packet of every call passes through it, so it
reads only the header fields it needs and builds no packet object unless someone asked for one.
Forwarding to another leg (`relay`) rewrites sequence, timestamp and SSRC in place in a copy of
the datagram instead of going through `RtpPacket`; `HeaderRewriter` is the int-level twin of
`rtp.SequenceRewriter` that makes that possible, pure like it but for the clock it is given.
Measured on the project's machine, the Python work left per forwarded packet costs about as much
as the two system calls under it (loadtests/rtp_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import secrets
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media import g711
from media.dtmf import DtmfError, EventReceiver, EventSender, GoertzelDetector, dtmf_tone
from media.ports import NoFreePorts, PortRange
from media.rtp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    RtpError,
    RtpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from media.sdp import Negotiated

__all__ = [
    "ENCODERS",
    "FRAME_SAMPLES",
    "RTCP_INTERVAL",
    "HeaderRewriter",
    "RtpStream",
    "StreamStats",
]

log = logging.getLogger(__name__)

RTCP_INTERVAL = 5.0
"""Seconds between reports on average (RFC 3550 6.2's minimum), randomised by ±50%."""
SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
DIGIT_QUEUE_SIZE = 64
"""Digits nobody collects are dropped oldest first past this many."""

_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_PLAIN_FIRST_BYTE = 0x80
"""Version 2, no padding, no extension, no CSRCs: the header is exactly 12 bytes."""
_DSCP_EF = 46 << 2
_TONE_FLOOR = 520
"""Peak below which a frame cannot hold DTMF: the detector wants each tone at -36 dBFS or more."""
_RTCP_PT_LOW, _RTCP_PT_HIGH = 72, 76
"""RTCP packet types 200-204 seen through the RTP payload-type mask (RFC 5761 4)."""
_NTP_UNIX_OFFSET = 2208988800

_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": g711.ulaw_decode,
    "PCMA": g711.alaw_decode,
}
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": g711.ulaw_encode,
    "PCMA": g711.alaw_encode,
}
"""s16le PCM to the payload of each codec a stream can carry."""
_TRANSCODE_TO = {"PCMU": g711.ALAW_TO_ULAW, "PCMA": g711.ULAW_TO_ALAW}
"""Table turning the other G.711 law into the key's."""
_STATIC_CODEC = {0: "PCMU", 8: "PCMA"}


class _NoSource:
    """Stands for "no source yet": equal to nothing, so the next packet always starts a run."""


_NO_SOURCE = _NoSource()


class HeaderRewriter:
    """One leg's outgoing sequence, timestamp and SSRC, carrying on across changes of source.

    The rules of `rtp.SequenceRewriter`, on plain ints and in place in a datagram, so the
    forwarding path builds no packet objects: within a run of one source (compared by identity)
    and one incoming SSRC, numbers are shifted by a fixed offset; a new run continues one
    sequence number on, and its timestamp goes on by the time that passed on `clock` (8 kHz
    samples) since the previous run started, less what that run already covered, so a pause
    (hold, silence between prompts) shows as the gap it was. The clock is read only when a run
    starts, never per packet.
    """

    __slots__ = (
        "_clock",
        "_last_sequence",
        "_last_timestamp",
        "_run_clock",
        "_run_timestamp",
        "_seq_offset",
        "_source",
        "_source_ssrc",
        "_started",
        "_ts_offset",
        "ssrc",
    )

    def __init__(
        self,
        ssrc: int,
        clock: Callable[[], int],
        *,
        first_sequence: int = 0,
        first_timestamp: int = 0,
    ) -> None:
        self.ssrc = ssrc
        self._clock = clock
        self._source: object = _NO_SOURCE
        self._source_ssrc = -1
        self._started = False
        self._seq_offset = 0
        self._ts_offset = 0
        # As if a run had ended just before the first: the first packet gets these numbers.
        self._last_sequence = (first_sequence - 1) & 0xFFFF
        self._last_timestamp = (first_timestamp - 1) & 0xFFFFFFFF
        self._run_clock = 0
        self._run_timestamp = 0

    def rewrite(
        self, sequence: int, timestamp: int, source: object, source_ssrc: int
    ) -> tuple[int, int, bool]:
        """(sequence, timestamp, starts_run) to send for a packet of `source`."""
        if source is not self._source or source_ssrc != self._source_ssrc:
            self._start_run(sequence, timestamp, source, source_ssrc)
            return self._last_sequence, self._last_timestamp, True
        out_seq = (sequence + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        # A late packet of the current run must not pull the next run back in time.
        if 0 < (out_seq - self._last_sequence) & 0xFFFF < 0x8000:
            self._last_sequence = out_seq
            self._last_timestamp = out_ts
        return out_seq, out_ts, False

    def rewrite_datagram(self, packet: bytearray, source: object) -> bool:
        """Rewrite sequence, timestamp and SSRC of an RTP datagram in place; True when it starts
        a run (the caller sets the marker bit)."""
        sequence, timestamp, source_ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if source is not self._source or source_ssrc != self._source_ssrc:
            self._start_run(sequence, timestamp, source, source_ssrc)
            _SEQ_TS_SSRC.pack_into(packet, 2, self._last_sequence, self._last_timestamp, self.ssrc)
            return True
        out_seq = (sequence + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        if 0 < (out_seq - self._last_sequence) & 0xFFFF < 0x8000:
            self._last_sequence = out_seq
            self._last_timestamp = out_ts
        _SEQ_TS_SSRC.pack_into(packet, 2, out_seq, out_ts, self.ssrc)
        return False

    def _start_run(self, sequence: int, timestamp: int, source: object, source_ssrc: int) -> None:
        now = self._clock()
        out_seq = (self._last_sequence + 1) & 0xFFFF
        out_ts = (self._last_timestamp + 1) & 0xFFFFFFFF
        if self._started:
            by_clock = (self._run_timestamp + now - self._run_clock) & 0xFFFFFFFF
            # The later of the two, in serial-number terms: never back, at least one sample on.
            if 0 < (by_clock - out_ts) & 0xFFFFFFFF < 0x80000000:
                out_ts = by_clock
        self._started = True
        self._seq_offset = (out_seq - sequence) & 0xFFFF
        self._ts_offset = (out_ts - timestamp) & 0xFFFFFFFF
        self._source = source
        self._source_ssrc = source_ssrc
        self._last_sequence = out_seq
        self._last_timestamp = out_ts
        self._run_clock = now
        self._run_timestamp = out_ts

    def restart(self) -> None:
        """Make the next packet start a new run even from the same source (after a pause such
        as hold, whose length only the clock knows)."""
        self._source = _NO_SOURCE

    def timestamp_at(self, now_samples: int) -> int:
        """The RTP timestamp that corresponds to clock time `now_samples`, for a sender report."""
        if not self._started:
            return (self._last_timestamp + 1) & 0xFFFFFFFF
        return (self._run_timestamp + now_samples - self._run_clock) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class StreamStats:
    packets_sent: int
    octets_sent: int
    """Payload octets, as RFC 3550 counts them for sender reports."""
    packets_received: int
    octets_received: int
    packets_lost: int
    """Cumulative, as RFC 3550 A.3 counts it (duplicates can offset losses)."""
    jitter_ms: float
    remote: tuple[str, int] | None
    """Where audio is sent now: the SDP address, or the source latched onto."""
    latched: bool
    """Whether sending was re-targeted from the SDP address to where the far end's media comes
    from (symmetric RTP, usually a NAT)."""
    remote_packets_lost: int | None = None
    """The far end's view of our stream, from its last RTCP report about us."""
    remote_jitter_ms: float | None = None
    round_trip_ms: float | None = None
    rtcp_reports_received: int = 0
    bye_received: bool = False


def _ntp_now() -> int:
    now = time.time()
    seconds = int(now)
    return (seconds + _NTP_UNIX_OFFSET) << 32 | int((now - seconds) * (1 << 32))


def _ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP time, the unit of RTCP's LSR and DLSR fields."""
    return (ntp >> 16) & 0xFFFFFFFF


def _usable_address(remote: tuple[str, int] | None) -> tuple[str, int] | None:
    """An address we may send to: an IP literal (a name would need a blocking lookup) that is
    not the old `0.0.0.0` hold address, with a real port."""
    if remote is None:
        return None
    host, port = remote[0], remote[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or not 0 < port < 65535:
        return None
    return (host, port)


def _bind(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on (host, port), bound here rather than by the event loop so
    that "address in use" keeps its errno (uvloop's bind error does not)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # Mark voice as Expedited Forwarding (DSCP 46) so networks that honour it queue it first;
        # a platform that refuses the option still carries the call.
        with contextlib.suppress(OSError):
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _DSCP_EF)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, _DSCP_EF)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Endpoint(asyncio.DatagramProtocol):
    """A socket's protocol that hands datagrams straight to the stream's bound method."""

    def __init__(self, receive: Callable[[bytes, Any], None], closed: asyncio.Future[None]) -> None:
        # An instance attribute shadows the method, saving one Python call per packet.
        self.datagram_received = receive  # type: ignore[method-assign,assignment]
        self._closed = closed

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a far end that went away: RTP keeps going, RTCP times out.
        log.debug("RTP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


class RtpStream:
    """One RTP/RTCP socket pair for one call leg, on the running (uv)loop."""

    # Slots in the order the per-packet paths touch them: with thousands of legs on a node,
    # cache misses on scattered attributes cost more than the work itself (measured: 2x).
    __slots__ = (  # noqa: RUF023 - ordered for locality, see above
        "_source_addr",
        "_payload_type",
        "_remote_ssrc",
        "_reception",
        "_time",
        "_packets_received",
        "_octets_received",
        "on_datagram",
        "on_media",
        "_taps",
        "_detector",
        "_inband_wanted",
        "_tones_heard",
        "_may_send_audio",
        "codec",
        "_rewriter",
        "_rtp",
        "_remote",
        "_packets_sent",
        "_octets_sent",
        "_event_pt",
        "_bind_host",
        "_bye_received",
        "_closed",
        "_cname",
        "_digit_lock",
        "_direction_sends",
        "_events",
        "_failed_callback",
        "_held",
        "_last_sr",
        "_last_sr_at",
        "_latch_open",
        "_latched",
        "_loop",
        "_lost_before",
        "_may_send",
        "_own_sequence",
        "_own_timestamp",
        "_ports",
        "_remote_view",
        "_report_handle",
        "_round_trip_ms",
        "_rtcp",
        "_rtcp_closed",
        "_rtcp_interval",
        "_rtcp_latch_open",
        "_rtcp_remote",
        "_rtcp_reports_received",
        "_rtcp_source",
        "_rtp_closed",
        "_sending_digit",
        "_sent_at_last_report",
        "digits",
        "local_host",
        "local_port",
        "on_digit",
        "ssrc",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ports: PortRange,
        host: str,
        public_host: str | None,
        rtcp_interval: float,
    ) -> None:
        """Use `RtpStream.open`, which binds the sockets."""
        self._loop = loop
        self._time = loop.time
        self._ports = ports
        self._bind_host = host
        self.local_host = public_host or host
        self.local_port = 0
        self.ssrc = secrets.randbits(32)
        self._cname = f"{secrets.token_hex(8)}@switchboard"
        self._rewriter = HeaderRewriter(
            self.ssrc,
            self._now_samples,
            first_sequence=secrets.randbits(16),
            first_timestamp=secrets.randbits(32),
        )
        self._rtcp_interval = rtcp_interval
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._rtp_closed: asyncio.Future[None] = loop.create_future()
        self._rtcp_closed: asyncio.Future[None] = loop.create_future()
        self._report_handle: asyncio.TimerHandle | None = None

        self.codec = "PCMU"
        self._payload_type = -1
        """-1 until configured, so no received packet matches."""
        self._event_pt: int | None = None
        self._direction_sends = False
        self._held = False
        self._closed = False
        self._sending_digit = False
        self._may_send = False
        """Not closed, configured to send, not held, and somewhere to send to."""
        self._may_send_audio = False
        """As `_may_send`, and no key press is being sent (audio would garble it)."""

        self._remote: tuple[str, int] | None = None
        self._source_addr: Any = None
        """The address media is accepted from: None until the first packet after configure()."""
        self._latch_open = False
        self._latched = False
        self._rtcp_remote: tuple[str, int] | None = None
        self._rtcp_source: Any = None
        self._rtcp_latch_open = False

        self.on_media: Callable[[RtpPacket], None] | None = None
        """Called with every received audio packet (not telephone-events)."""
        self.on_datagram: Callable[[bytes], None] | None = None
        """Called with the raw bytes of every received audio packet, before `on_media`: the
        lean hook a bridge forwards with, building no packet object."""
        self._taps: list[Callable[[RtpPacket], None]] = []
        self.digits: asyncio.Queue[str] = asyncio.Queue(DIGIT_QUEUE_SIZE)
        self.on_digit: Callable[[str], None] | None = None
        """Also called with each digit as it is detected (for events), after it is queued."""
        self._events = EventReceiver()
        self._detector: GoertzelDetector | None = None
        self._inband_wanted = True
        self._tones_heard = False
        self._digit_lock = asyncio.Lock()

        self._remote_ssrc: int | None = None
        self._reception = ReceptionStats()
        self._lost_before = 0
        """Losses counted on the far end's earlier SSRCs."""
        self._packets_received = 0
        self._octets_received = 0
        self._packets_sent = 0
        self._octets_sent = 0
        self._own_sequence = 0
        self._own_timestamp = 0
        self._sent_at_last_report = 0
        self._last_sr = 0
        self._last_sr_at = 0.0
        self._remote_view: ReportBlock | None = None
        self._round_trip_ms: float | None = None
        self._rtcp_reports_received = 0
        self._bye_received = False
        self._failed_callback = False

    # --- life cycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        ports: PortRange,
        *,
        public_host: str | None = None,
        rtcp_interval: float = RTCP_INTERVAL,
    ) -> RtpStream:
        """Bind RTP on an even port of `ports` and RTCP on the next; a pair another program
        holds is skipped. `public_host` is the address to put in SDP when it differs from the
        bound one."""
        loop = asyncio.get_running_loop()
        stream = cls(loop, ports, host, public_host, rtcp_interval)
        # Another program may hold a whole block of the range: try every pair before giving up.
        for _ in range(ports.capacity):
            port = ports.allocate()
            try:
                rtp_socket = _bind(host, port)
                try:
                    rtcp_socket = _bind(host, port + 1)
                except BaseException:
                    rtp_socket.close()
                    raise
            except OSError as exc:
                ports.release(port)
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            except BaseException:
                ports.release(port)
                raise
            try:
                stream._rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(stream._receive_rtp, stream._rtp_closed), sock=rtp_socket
                )
                stream._rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(stream._receive_rtcp, stream._rtcp_closed), sock=rtcp_socket
                )
            except BaseException:
                # Cancelled while the transports were made: nothing may leak.
                if stream._rtp is not None:
                    stream._rtp.close()
                else:
                    rtp_socket.close()
                rtcp_socket.close()
                ports.release(port)
                raise
            stream.local_port = port
            stream._schedule_report()
            return stream
        raise NoFreePorts(f"no free RTP/RTCP port pair could be bound on {host}")

    async def close(self) -> None:
        """Say BYE over RTCP, close both sockets and give the ports back."""
        if self._closed:
            return
        self._closed = True
        self._refresh_sending()
        self.on_media = None
        self.on_datagram = None
        self.on_digit = None
        self._taps.clear()
        if self._report_handle is not None:
            self._report_handle.cancel()
        with contextlib.suppress(OSError):
            self._send_rtcp(self._report(bye=True))
        await self._close_transports()

    async def _close_transports(self) -> None:
        if self._rtp is not None and self._rtcp is not None:
            self._rtp.close()
            self._rtcp.close()
            await asyncio.wait((self._rtp_closed, self._rtcp_closed), timeout=1.0)
            self._ports.release(self.local_port)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- negotiation and hold -----------------------------------------------------------------

    def configure(self, negotiated: Negotiated, remote: tuple[str, int] | None) -> None:
        """Take what offer/answer decided; may be called again on a re-INVITE. Reopens latching:
        the first packet afterwards fixes where media is accepted from and sent to."""
        self._take(
            negotiated.codec,
            negotiated.payload_type,
            negotiated.telephone_event_pt,
            sends=negotiated.direction.sends,
        )
        address = _usable_address(remote)
        self._remote = address
        self._source_addr = None
        self._latch_open = True
        self._latched = False
        self._rtcp_remote = (address[0], address[1] + 1) if address else None
        self._rtcp_source = None
        self._rtcp_latch_open = True
        self._refresh_sending()

    def _take(self, codec: str, payload_type: int, event_pt: int | None, *, sends: bool) -> None:
        codec = codec.upper()
        if codec not in _DECODERS:
            raise ValueError(f"{codec} is not a codec an RTP stream carries (G.711)")
        self.codec = codec
        self._payload_type = payload_type
        self._event_pt = event_pt
        self._direction_sends = sends
        self._update_detector()

    @property
    def held(self) -> bool:
        """Set on hold (we sent a=sendonly/inactive): no audio is sent while it is True."""
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        if value != self._held:
            self._held = value
            # Whatever comes after the pause continues from the wall clock.
            self._rewriter.restart()
            self._refresh_sending()

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def telephone_event_pt(self) -> int | None:
        return self._event_pt

    def _now_samples(self) -> int:
        return int(self._time() * SAMPLE_RATE)

    def _refresh_sending(self) -> None:
        self._may_send = (
            not self._closed
            and not self._held
            and self._direction_sends
            and self._remote is not None
            and self._rtp is not None
        )
        self._may_send_audio = self._may_send and not self._sending_digit

    # --- receiving ----------------------------------------------------------------------------

    def add_tap(self, tap: Callable[[RtpPacket], None]) -> None:
        """Also give every received audio packet to `tap` (a recorder), leaving `on_media` be."""
        self._taps.append(tap)

    def remove_tap(self, tap: Callable[[RtpPacket], None]) -> None:
        with contextlib.suppress(ValueError):
            self._taps.remove(tap)

    def _receive_rtp(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        if addr != self._source_addr and not self._accept_source(addr, data[1] & 0x7F):
            return
        try:
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            pt = data[1] & 0x7F
            if pt == self._payload_type:
                if ssrc != self._remote_ssrc:
                    self._new_remote_source(ssrc)
                self._reception.update(seq, ts, int(self._time() * SAMPLE_RATE))
                self._packets_received += 1
                self._octets_received += len(data) - 12
                sink = self.on_datagram
                if sink is not None:
                    sink(data)
                if self.on_media is not None or self._taps:
                    self._deliver(data)
                if self._detector is not None:
                    self._detect_tones(data)
            elif pt == self._event_pt:
                if ssrc != self._remote_ssrc:
                    self._new_remote_source(ssrc)
                self._reception.update(seq, ts, int(self._time() * SAMPLE_RATE))
                self._packets_received += 1
                self._octets_received += len(data) - 12
                self._receive_event(data, ts)
            elif not _RTCP_PT_LOW <= pt <= _RTCP_PT_HIGH and ssrc == self._remote_ssrc:
                # Comfort noise and the like share the stream's sequence numbers.
                self._reception.update(seq, ts, int(self._time() * SAMPLE_RATE))
                self._packets_received += 1
                self._octets_received += len(data) - 12
        except Exception:
            # A failing consumer must not close the socket (asyncio does on an exception here).
            if not self._failed_callback:
                self._failed_callback = True
                log.exception("handling received RTP failed; later failures are not logged")

    def _accept_source(self, addr: Any, payload_type: int) -> bool:
        """Whether to take media from `addr`: the first packet of our audio or events after
        configure() fixes the source (a stray datagram of anything else does not)."""
        remote = self._remote
        if self._latch_open and payload_type in (self._payload_type, self._event_pt):
            self._latch_open = False
            self._source_addr = addr
            if remote is None or addr[:2] != remote[:2]:
                self._remote = (addr[0], addr[1])
                self._latched = True
                if self._rtcp_source is None:
                    # Our best guess until the far end's RTCP shows where it comes from.
                    self._rtcp_remote = (addr[0], addr[1] + 1)
                self._refresh_sending()
            return True
        return False

    def _new_remote_source(self, ssrc: int) -> None:
        if self._remote_ssrc is not None:
            self._lost_before += self._reception_lost()
        self._remote_ssrc = ssrc
        self._reception = ReceptionStats()

    def _reception_lost(self) -> int:
        reception = self._reception
        if not reception.started or reception.probation:
            return 0
        return reception.cumulative_lost

    def _deliver(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        if self.on_media is not None:
            self.on_media(packet)
        for tap in self._taps:
            tap(packet)

    def _payload_of(self, data: bytes) -> bytes | None:
        if data[0] == _PLAIN_FIRST_BYTE:
            return data[12:]
        try:
            return RtpPacket.parse(data).payload
        except RtpError:
            return None

    @property
    def inband_detection(self) -> bool:
        """Whether received audio is searched for DTMF tones when telephone-event was not
        negotiated (default True). The search costs about 0.3 ms of CPU per 20 ms of sound, so
        the node may turn it off where no digits are wanted, such as a bridged conversation."""
        return self._inband_wanted

    @inband_detection.setter
    def inband_detection(self, value: bool) -> None:
        self._inband_wanted = value
        self._update_detector()

    def _update_detector(self) -> None:
        # Without RFC 4733 the only digits are tones in the audio itself.
        if self._inband_wanted and self._event_pt is None and self._payload_type >= 0:
            if self._detector is None:
                self._detector = GoertzelDetector()
        else:
            self._detector = None

    def _detect_tones(self, data: bytes) -> None:
        payload = self._payload_of(data)
        if payload is None or self._detector is None:
            return
        pcm = _DECODERS[self.codec](payload)
        samples = array("h", pcm)
        if sys.byteorder == "big":
            samples.byteswap()
        if max(samples, default=0) < _TONE_FLOOR and -min(samples, default=0) < _TONE_FLOOR:
            # Too quiet to hold a key's tones: skip the costly search, and start it afresh
            # after the quiet so the same key pressed again is heard again.
            if self._tones_heard:
                self._detector = GoertzelDetector()
                self._tones_heard = False
            return
        self._tones_heard = True
        for digit in self._detector.feed(pcm):
            self._put_digit(digit)

    def _receive_event(self, data: bytes, timestamp: int) -> None:
        payload = self._payload_of(data)
        if payload is None:
            return
        try:
            pressed = self._events.feed(timestamp, payload)
        except DtmfError:
            return  # events 16+ (flash, tones) or a bad payload: not a key
        for press in pressed:
            self._put_digit(press.digit)

    def _put_digit(self, digit: str) -> None:
        if self.digits.full():
            self.digits.get_nowait()
        self.digits.put_nowait(digit)
        if self.on_digit is not None:
            self.on_digit(digit)

    # --- sending ------------------------------------------------------------------------------

    def send_payload(
        self, payload: bytes, *, source: object, samples: int = FRAME_SAMPLES, marker: bool = False
    ) -> None:
        """Send one audio packet of our codec. `source` (compared by identity) is what produced
        it: a change of source keeps sequence and timestamp continuous and sets the marker."""
        if not self._may_send_audio:
            return
        self._own_sequence = (self._own_sequence + 1) & 0xFFFF
        self._own_timestamp = (self._own_timestamp + samples) & 0xFFFFFFFF
        self._send(
            payload,
            self._own_sequence,
            self._own_timestamp,
            source,
            0,
            marker,
            self._payload_type,
        )

    def forward(self, packet: RtpPacket, *, source: object) -> None:
        """Send a packet received on another leg, translating μ-law/A-law if the legs differ."""
        if not self._may_send_audio:
            return
        payload = packet.payload
        codec = _STATIC_CODEC.get(packet.payload_type)
        if codec is not None and codec != self.codec:
            payload = payload.translate(_TRANSCODE_TO[self.codec])
        self._send(
            payload,
            packet.sequence,
            packet.timestamp,
            source,
            packet.ssrc,
            packet.marker,
            self._payload_type,
        )

    def relay(self, origin: RtpStream, data: bytes) -> None:
        """Send a datagram received on `origin` (in `origin`'s codec) on to this leg: the lean
        path for bridges, copying the bytes once and rewriting the header in place."""
        if not self._may_send_audio:
            return
        if data[0] != _PLAIN_FIRST_BYTE:
            try:
                packet = RtpPacket.parse(data)
            except RtpError:
                return
            payload = packet.payload
            if origin.codec != self.codec:
                payload = payload.translate(_TRANSCODE_TO[self.codec])
            self._send(
                payload,
                packet.sequence,
                packet.timestamp,
                origin,
                packet.ssrc,
                packet.marker,
                self._payload_type,
            )
            return
        out = bytearray(data)
        if origin.codec != self.codec:
            out[12:] = data[12:].translate(_TRANSCODE_TO[self.codec])
        if self._rewriter.rewrite_datagram(out, origin):
            out[1] = 0x80 | self._payload_type
        else:
            out[1] = (data[1] & 0x80) | self._payload_type
        self._rtp.sendto(out, self._remote)  # type: ignore[union-attr]
        self._packets_sent += 1
        self._octets_sent += len(data) - 12

    def _send(
        self,
        payload: bytes,
        sequence: int,
        timestamp: int,
        source: object,
        source_ssrc: int,
        marker: bool,
        payload_type: int,
    ) -> None:
        seq, ts, starts = self._rewriter.rewrite(sequence, timestamp, source, source_ssrc)
        second = (0x80 if marker or starts else 0) | payload_type
        header = _HEADER.pack(_PLAIN_FIRST_BYTE, second, seq, ts, self.ssrc)
        self._rtp.sendto(header + payload, self._remote)  # type: ignore[union-attr]
        self._packets_sent += 1
        self._octets_sent += len(payload)

    async def send_digit(self, digit: str, duration_ms: int = 100) -> None:
        """Press a key toward the far end: RFC 4733 events when negotiated, else the tones in
        the audio. Other audio is held back meanwhile; presses are sent one after another."""
        async with self._digit_lock:
            if self._event_pt is None:
                await self._send_tones(digit, duration_ms)
                return
            packets = list(EventSender(digit, duration_ms))  # DtmfError before anything is sent
            # One press is one source: all its packets carry the timestamp of its start.
            press = object()
            self._sending_digit = True
            self._refresh_sending()
            try:
                start = self._time()
                for index, event in enumerate(packets):
                    if index:
                        await asyncio.sleep(start + index * 0.020 - self._time())
                    event_pt = self._event_pt
                    if not self._may_send or event_pt is None:
                        continue
                    self._own_sequence = (self._own_sequence + 1) & 0xFFFF
                    self._send(
                        event.payload,
                        self._own_sequence,
                        event.timestamp_offset,
                        press,
                        0,
                        event.marker,
                        event_pt,
                    )
            finally:
                self._sending_digit = False
                self._refresh_sending()

    async def _send_tones(self, digit: str, duration_ms: int) -> None:
        pcm = dtmf_tone(digit, duration_ms)
        pcm += bytes(-len(pcm) % (2 * FRAME_SAMPLES))
        payload = ENCODERS[self.codec](pcm)
        tone = object()
        self._sending_digit = True
        self._refresh_sending()
        try:
            start = self._time()
            for index in range(0, len(payload), FRAME_SAMPLES):
                if index:
                    await asyncio.sleep(start + index / SAMPLE_RATE - self._time())
                if not self._may_send:
                    continue
                self._own_sequence = (self._own_sequence + 1) & 0xFFFF
                self._own_timestamp = (self._own_timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
                self._send(
                    payload[index : index + FRAME_SAMPLES],
                    self._own_sequence,
                    self._own_timestamp,
                    tone,
                    0,
                    False,
                    self._payload_type,
                )
        finally:
            self._sending_digit = False
            self._refresh_sending()

    # --- RTCP ---------------------------------------------------------------------------------

    def _schedule_report(self) -> None:
        # Randomised (RFC 3550 6.2) so that calls started together do not report together.
        delay = self._rtcp_interval * random.uniform(0.5, 1.5)  # noqa: S311 - timing, not secrecy
        self._report_handle = self._loop.call_later(delay, self._send_report)

    def _send_report(self) -> None:
        if self._closed:
            return
        try:
            self._send_rtcp(self._report())
        except OSError as exc:
            log.debug("RTCP report not sent: %s", exc)
        self._schedule_report()

    def _report(self, *, bye: bool = False) -> list[RtcpPacket]:
        blocks: tuple[ReportBlock, ...] = ()
        reception = self._reception
        if self._remote_ssrc is not None and reception.started and not reception.probation:
            last_sr = delay = 0
            if self._last_sr:
                last_sr = self._last_sr
                delay = int((self._time() - self._last_sr_at) * 65536) & 0xFFFFFFFF
            blocks = (
                reception.report_block(
                    self._remote_ssrc, last_sr=last_sr, delay_since_last_sr=delay
                ),
            )
        first: RtcpPacket
        if self._packets_sent > self._sent_at_last_report:
            first = SenderReport(
                ssrc=self.ssrc,
                ntp_timestamp=_ntp_now(),
                rtp_timestamp=self._rewriter.timestamp_at(int(self._time() * SAMPLE_RATE)),
                packet_count=self._packets_sent & 0xFFFFFFFF,
                octet_count=self._octets_sent & 0xFFFFFFFF,
                reports=blocks,
            )
        else:
            first = ReceiverReport(ssrc=self.ssrc, reports=blocks)
        self._sent_at_last_report = self._packets_sent
        packets: list[RtcpPacket] = [first, SourceDescription(((self.ssrc, self._cname),))]
        if bye:
            packets.append(Bye((self.ssrc,)))
        return packets

    def _send_rtcp(self, packets: list[RtcpPacket]) -> None:
        if self._rtcp is not None and self._rtcp_remote is not None:
            self._rtcp.sendto(serialize_rtcp(packets), self._rtcp_remote)

    def _receive_rtcp(self, data: bytes, addr: Any) -> None:
        if addr != self._rtcp_source:
            if not self._rtcp_latch_open:
                return
            self._rtcp_latch_open = False
            self._rtcp_source = addr
            self._rtcp_remote = (addr[0], addr[1])
        try:
            packets = parse_rtcp(data)
        except RtcpError:
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = _ntp_middle(packet.ntp_timestamp)
                self._last_sr_at = self._time()
                self._read_blocks(packet.reports)
            elif isinstance(packet, ReceiverReport):
                self._read_blocks(packet.reports)
            elif isinstance(packet, Bye):
                self._bye_received = True

    def _read_blocks(self, blocks: tuple[ReportBlock, ...]) -> None:
        self._rtcp_reports_received += 1
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue
            self._remote_view = block
            if block.last_sr:
                # RFC 3550 6.4.1: arrival minus our SR's time minus how long they held it.
                units = (_ntp_middle(_ntp_now()) - block.last_sr - block.delay_since_last_sr) & (
                    0xFFFFFFFF
                )
                if units < 0x80000000:
                    self._round_trip_ms = units * 1000 / 65536

    # --- statistics ---------------------------------------------------------------------------

    def stats(self) -> StreamStats:
        view = self._remote_view
        return StreamStats(
            packets_sent=self._packets_sent,
            octets_sent=self._octets_sent,
            packets_received=self._packets_received,
            octets_received=self._octets_received,
            packets_lost=self._lost_before + self._reception_lost(),
            jitter_ms=self._reception.jitter * 1000 / SAMPLE_RATE,
            remote=self._remote,
            latched=self._latched,
            remote_packets_lost=view.cumulative_lost if view else None,
            remote_jitter_ms=view.jitter * 1000 / SAMPLE_RATE if view else None,
            round_trip_ms=self._round_trip_ms,
            rtcp_reports_received=self._rtcp_reports_received,
            bye_received=self._bye_received,
        )

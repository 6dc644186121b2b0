"""One call leg's RTP and RTCP sockets on the running event loop.

The receive path is the node's hottest code: every packet of every call passes through it, so it
reads only the header fields it needs and builds no packet object unless someone asked for one.
Forwarding to another leg (`relay`) rewrites sequence, timestamp and SSRC in place in a copy of
the datagram instead of going through `RtpPacket`; `HeaderRewriter` is the int-level twin of
`rtp.SequenceRewriter` that makes that possible and is pure like it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import secrets
import struct
import time
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
_BIND_ATTEMPTS = 16

_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_PLAIN_FIRST_BYTE = 0x80
"""Version 2, no padding, no extension, no CSRCs: the header is exactly 12 bytes."""
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

    Same rules as `rtp.SequenceRewriter`, on plain ints so the forwarding path allocates nothing:
    within a run of one source (compared by identity) and one incoming SSRC, numbers are shifted
    by a fixed offset; a new run continues one sequence number and the elapsed time on from the
    last packet sent, and is flagged so the caller sets the marker bit.
    """

    __slots__ = (
        "_first_sequence",
        "_first_timestamp",
        "_last_now",
        "_last_sequence",
        "_last_timestamp",
        "_seq_offset",
        "_source",
        "_source_ssrc",
        "_started",
        "_ts_offset",
        "ssrc",
    )

    def __init__(self, ssrc: int, *, first_sequence: int = 0, first_timestamp: int = 0) -> None:
        self.ssrc = ssrc
        self._first_sequence = first_sequence & 0xFFFF
        self._first_timestamp = first_timestamp & 0xFFFFFFFF
        self._source: object = _NO_SOURCE
        self._source_ssrc = -1
        self._started = False
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_sequence = 0
        self._last_timestamp = 0
        self._last_now = 0

    def rewrite(
        self, sequence: int, timestamp: int, source: object, source_ssrc: int, now_samples: int
    ) -> tuple[int, int, bool]:
        """(sequence, timestamp, starts_run) to send; `now_samples` is the sending clock in
        8 kHz samples, of which only differences matter."""
        if source is self._source and source_ssrc == self._source_ssrc:
            out_seq = (sequence + self._seq_offset) & 0xFFFF
            out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
            # A late packet of the current run must not pull the next run back in time.
            if 0 < (out_seq - self._last_sequence) & 0xFFFF < 0x8000:
                self._last_sequence = out_seq
                self._last_timestamp = out_ts
                self._last_now = now_samples
            return out_seq, out_ts, False
        if self._started:
            out_seq = (self._last_sequence + 1) & 0xFFFF
            # At least one sample on, so the far end never sees a timestamp repeat.
            elapsed = max(1, now_samples - self._last_now)
            out_ts = (self._last_timestamp + elapsed) & 0xFFFFFFFF
        else:
            out_seq = self._first_sequence
            out_ts = self._first_timestamp
            self._started = True
        self._seq_offset = (out_seq - sequence) & 0xFFFF
        self._ts_offset = (out_ts - timestamp) & 0xFFFFFFFF
        self._source = source
        self._source_ssrc = source_ssrc
        self._last_sequence = out_seq
        self._last_timestamp = out_ts
        self._last_now = now_samples
        return out_seq, out_ts, True

    def restart(self) -> None:
        """Make the next packet start a new run even from the same source (after a pause such
        as hold, whose length only the clock knows)."""
        self._source = _NO_SOURCE

    def timestamp_at(self, now_samples: int) -> int:
        """The RTP timestamp that corresponds to `now_samples`, for a sender report."""
        if not self._started:
            return self._first_timestamp
        return (self._last_timestamp + now_samples - self._last_now) & 0xFFFFFFFF


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
            self.ssrc, first_sequence=secrets.randbits(16), first_timestamp=secrets.randbits(32)
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
        for _ in range(min(ports.capacity, _BIND_ATTEMPTS)):
            port = ports.allocate()
            try:
                rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(stream._receive_rtp, stream._rtp_closed),
                    local_addr=(host, port),
                )
            except OSError as exc:
                ports.release(port)
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(stream._receive_rtcp, stream._rtcp_closed),
                    local_addr=(host, port + 1),
                )
            except OSError as exc:
                rtp.close()
                await stream._rtp_closed
                stream._rtp_closed = loop.create_future()
                ports.release(port)
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            stream._rtp = rtp
            stream._rtcp = rtcp
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
        codec = negotiated.codec.upper()
        if codec not in _DECODERS:
            raise ValueError(f"{negotiated.codec} is not a codec an RTP stream carries (G.711)")
        self.codec = codec
        self._payload_type = negotiated.payload_type
        self._event_pt = negotiated.telephone_event_pt
        self._direction_sends = negotiated.direction.sends
        if self._event_pt is None:
            # Without RFC 4733 the only digits are tones in the audio itself.
            if self._detector is None:
                self._detector = GoertzelDetector()
        else:
            self._detector = None
        address = _usable_address(remote)
        self._remote = address
        self._source_addr = None
        self._latch_open = True
        self._latched = False
        self._rtcp_remote = (address[0], address[1] + 1) if address else None
        self._rtcp_source = None
        self._rtcp_latch_open = True
        self._refresh_sending()

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
        if addr != self._source_addr and not self._accept_source(addr):
            return
        if len(data) < 12 or data[0] >> 6 != 2:
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

    def _accept_source(self, addr: Any) -> bool:
        remote = self._remote
        if self._latch_open:
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
        # The same source seen as an IPv6 4-tuple rather than the 2-tuple we were given.
        if self._source_addr is not None and addr[:2] == self._source_addr[:2]:
            self._source_addr = addr
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

    def _detect_tones(self, data: bytes) -> None:
        payload = self._payload_of(data)
        if payload is not None and self._detector is not None:
            for digit in self._detector.feed(_DECODERS[self.codec](payload)):
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
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        out_seq, out_ts, starts = self._rewriter.rewrite(
            seq, ts, origin, ssrc, int(self._time() * SAMPLE_RATE)
        )
        out = bytearray(data)
        if origin.codec != self.codec:
            out[12:] = data[12:].translate(_TRANSCODE_TO[self.codec])
        out[1] = (data[1] & 0x80) | (0x80 if starts else 0) | self._payload_type
        _SEQ_TS_SSRC.pack_into(out, 2, out_seq, out_ts, self.ssrc)
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
        seq, ts, starts = self._rewriter.rewrite(
            sequence, timestamp, source, source_ssrc, int(self._time() * SAMPLE_RATE)
        )
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

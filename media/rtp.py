"""RTP and RTCP (RFC 3550) as values, the receiver statistics of its appendix A, and the rewriter
that keeps a leg's outgoing stream continuous while the audio behind it changes source.

Pure: nothing here reads a clock or touches a socket. Times come in as arguments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import ClassVar

__all__ = [
    "MIN_SEQUENTIAL",
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "SenderReport",
    "SequenceRewriter",
    "SourceDescription",
    "parse_rtcp",
    "serialize_rtcp",
]

_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


class RtpError(ValueError):
    """Bytes that are not a well-formed RTP packet."""


class RtcpError(ValueError):
    """Bytes that are not a well-formed RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """A header extension kept as it came (RFC 3550 5.3.1); `data` is a multiple of 4 bytes."""

    profile: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF or len(self.data) % 4 or len(self.data) > 0x3FFFF:
            raise ValueError("extension profile must be 16-bit, data whole 32-bit words")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0
    """Number of padding bytes after the payload, the count byte included (0: no padding)."""

    VERSION: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError("payload type is 7 bits")
        if not 0 <= self.sequence < _SEQ_MOD or not 0 <= self.timestamp < _TS_MOD:
            raise ValueError("sequence is 16 bits, timestamp 32 bits")
        if not 0 <= self.ssrc < _TS_MOD or not all(0 <= c < _TS_MOD for c in self.csrcs):
            raise ValueError("SSRC and CSRCs are 32 bits")
        if len(self.csrcs) > 15 or not 0 <= self.padding <= 255:
            raise ValueError("at most 15 CSRCs and 255 bytes of padding")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _RTP_HEADER.size:
            raise RtpError(f"RTP header needs 12 bytes, got {len(data)}")
        first, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if first >> 6 != cls.VERSION:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        offset = _RTP_HEADER.size
        csrc_count = first & 0x0F
        if offset + 4 * csrc_count > len(data):
            raise RtpError(f"{csrc_count} CSRCs do not fit in {len(data)} bytes")
        csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset)
        offset += 4 * csrc_count
        extension = None
        if first & 0x10:
            if offset + 4 > len(data):
                raise RtpError("header extension is cut short")
            profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            if offset + 4 * words > len(data):
                raise RtpError(f"header extension of {words} words runs past the packet")
            extension = RtpExtension(profile, bytes(data[offset : offset + 4 * words]))
            offset += 4 * words
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1] if end > offset else 0
            if padding == 0 or padding > end - offset:
                raise RtpError(f"padding length {padding} does not fit the packet")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=csrcs,
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        first = (
            self.VERSION << 6
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension else 0)
            | len(self.csrcs)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _RTP_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension:
            ext = self.extension
            parts.append(struct.pack("!HH", ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


# --- RTCP -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    """Fraction of packets lost since the previous report, in 1/256ths."""
    cumulative_lost: int
    """Signed 24-bit: duplicates can make it negative."""
    highest_sequence: int
    """Extended: cycles of the 16-bit sequence in the high 16 bits."""
    jitter: int
    """Interarrival jitter in timestamp units."""
    last_sr: int = 0
    delay_since_last_sr: int = 0

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        return cls(
            ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr
        )

    def __bytes__(self) -> bytes:
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            self.cumulative_lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    """64-bit NTP time: seconds in the high 32 bits, fraction in the low 32."""
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    PACKET_TYPE: ClassVar[int] = 200

    def __bytes__(self) -> bytes:
        body = struct.pack(
            "!IQIII",
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        return _rtcp(self.PACKET_TYPE, len(self.reports), body + _blocks(self.reports))


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    PACKET_TYPE: ClassVar[int] = 201

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + _blocks(self.reports)
        return _rtcp(self.PACKET_TYPE, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES carrying only CNAMEs, one per source; other items are skipped when parsing."""

    cnames: tuple[tuple[int, str], ...]

    PACKET_TYPE: ClassVar[int] = 202

    def __bytes__(self) -> bytes:
        chunks = []
        for ssrc, cname in self.cnames:
            text = cname.encode()
            if len(text) > 255:
                raise ValueError("a CNAME is at most 255 bytes")
            chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
            chunks.append(chunk + bytes(-len(chunk) % 4))
        return _rtcp(self.PACKET_TYPE, len(self.cnames), b"".join(chunks))


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str = ""

    PACKET_TYPE: ClassVar[int] = 203

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            text = self.reason.encode()
            if len(text) > 255:
                raise ValueError("a BYE reason is at most 255 bytes")
            reason = bytes([len(text)]) + text
            body += reason + bytes(-len(reason) % 4)
        return _rtcp(self.PACKET_TYPE, len(self.ssrcs), body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye


def _rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("an RTCP packet holds at most 31 reports, chunks or sources")
    return _RTCP_HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    return b"".join(bytes(r) for r in reports)


def serialize_rtcp(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """A compound packet: the packets back to back, none padded."""
    return b"".join(bytes(p) for p in packets)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound RTCP packet; packet types we do not use (APP, XR, feedback)
    are skipped, as RFC 3550 6.1 asks of receivers."""
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise RtcpError("RTCP header is cut short")
        first, packet_type, words = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtcpError(f"RTCP packet of {words} words runs past the data")
        body = bytes(data[offset + 4 : end])
        if first & 0x20:
            padding = body[-1] if body else 0
            if padding == 0 or padding > len(body):
                raise RtcpError(f"padding length {padding} does not fit the packet")
            body = body[:-padding]
        packet = _parse_one(packet_type, first & 0x1F, body)
        if packet is not None:
            packets.append(packet)
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type == SenderReport.PACKET_TYPE:
        _need(body, 24 + 24 * count, "sender report")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count))
    if packet_type == ReceiverReport.PACKET_TYPE:
        _need(body, 4 + 24 * count, "receiver report")
        (ssrc,) = struct.unpack_from("!I", body)
        return ReceiverReport(ssrc, _parse_blocks(body, 4, count))
    if packet_type == SourceDescription.PACKET_TYPE:
        return _parse_sdes(body, count)
    if packet_type == Bye.PACKET_TYPE:
        _need(body, 4 * count, "BYE")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        if len(body) > 4 * count:
            length = body[4 * count]
            _need(body, 4 * count + 1 + length, "BYE reason")
            reason = body[4 * count + 1 : 4 * count + 1 + length].decode(errors="replace")
        return Bye(ssrcs, reason)
    return None


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise RtcpError(f"{what} needs {size} bytes, has {len(body)}")


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _parse_sdes(body: bytes, count: int) -> SourceDescription:
    cnames: list[tuple[int, str]] = []
    offset = 0
    for _ in range(count):
        _need(body, offset + 4, "SDES chunk")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        while True:
            _need(body, offset + 1, "SDES item list")
            item = body[offset]
            if item == 0:
                offset += 1
                offset += -offset % 4
                break
            _need(body, offset + 2, "SDES item")
            length = body[offset + 1]
            _need(body, offset + 2 + length, "SDES item")
            if item == 1:
                cnames.append(
                    (ssrc, body[offset + 2 : offset + 2 + length].decode(errors="replace"))
                )
            offset += 2 + length
    return SourceDescription(tuple(cnames))


# --- Receiver statistics (RFC 3550 A.1, A.3, A.8) ---------------------------------------------

MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(slots=True)
class ReceptionStats:
    """What a receiver knows about one source, fed one packet at a time."""

    probation: int = MIN_SEQUENTIAL
    started: bool = False
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = _SEQ_MOD + 1
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    _transit: int | None = field(default=None, repr=False)
    _jitter_q4: int = field(default=0, repr=False)
    """Jitter scaled by 16, the integer form of A.8."""

    def update(self, seq: int, timestamp: int, arrival_ts_units: int) -> bool:
        """Count a packet; False if it is not (yet) accepted as part of the stream: the source is
        still on probation, or the sequence jumped and has not been confirmed."""
        if not self.started:
            self.started = True
            self._restart(seq)
            self.max_seq = (seq - 1) % _SEQ_MOD
            self.probation = MIN_SEQUENTIAL
        if not self._update_seq(seq):
            return False
        self._update_jitter(timestamp, arrival_ts_units)
        return True

    def _restart(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        delta = (seq - self.max_seq) % _SEQ_MOD
        if self.probation:
            if seq == (self.max_seq + 1) % _SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._restart(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if delta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
        elif delta <= _SEQ_MOD - MAX_MISORDER:
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) % _SEQ_MOD
                return False
            # Two packets in sequence after a big jump: the source restarted.
            self._restart(seq)
            self._transit = None
        # Otherwise a duplicate or a reordered packet: counted, as A.1 does.
        self.received += 1
        return True

    def _update_jitter(self, timestamp: int, arrival_ts_units: int) -> None:
        transit = (arrival_ts_units - timestamp) % _TS_MOD
        if self._transit is not None:
            d = abs((transit - self._transit + (1 << 31)) % _TS_MOD - (1 << 31))
            self._jitter_q4 += d - ((self._jitter_q4 + 8) >> 4)
        self._transit = transit

    @property
    def extended_highest_sequence(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_highest_sequence - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def jitter(self) -> int:
        return self._jitter_q4 >> 4

    def report_block(
        self, ssrc: int, *, last_sr: int = 0, delay_since_last_sr: int = 0
    ) -> ReportBlock:
        """The report for this source, starting a new interval for the fraction lost."""
        expected_interval = self.expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = self.expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.cumulative_lost,
            highest_sequence=self.extended_highest_sequence % _TS_MOD,
            jitter=self.jitter,
            last_sr=last_sr,
            delay_since_last_sr=delay_since_last_sr,
        )


# --- Continuity across source switches ----------------------------------------------------------


@dataclass(slots=True)
class SequenceRewriter:
    """One leg's outgoing stream: one SSRC, sequence and timestamp that carry on across a change
    of source (prompt, bridge, hold music), so the far end never sees a new stream."""

    ssrc: int
    next_sequence: int = 0
    first_timestamp: int = 0
    _source: object = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    _seq_offset: int = field(default=0, repr=False)
    _ts_offset: int = field(default=0, repr=False)
    _last_sequence: int = field(default=0, repr=False)
    _last_timestamp: int = field(default=0, repr=False)
    _last_now: int = field(default=0, repr=False)

    def rewrite(self, packet: RtpPacket, source_id: object, now_samples: int) -> RtpPacket:
        """`now_samples` is the sending clock in 8 kHz samples; only differences matter."""
        switched = not self._started or source_id != self._source
        if switched:
            if self._started:
                sequence = (self._last_sequence + 1) % _SEQ_MOD
                # At least one sample on, so the far end never sees a timestamp repeat.
                elapsed = max(1, now_samples - self._last_now)
                timestamp = (self._last_timestamp + elapsed) % _TS_MOD
            else:
                sequence = self.next_sequence % _SEQ_MOD
                timestamp = self.first_timestamp % _TS_MOD
            self._seq_offset = (sequence - packet.sequence) % _SEQ_MOD
            self._ts_offset = (timestamp - packet.timestamp) % _TS_MOD
            self._source = source_id
            self._started = True
        out = replace(
            packet,
            ssrc=self.ssrc,
            sequence=(packet.sequence + self._seq_offset) % _SEQ_MOD,
            timestamp=(packet.timestamp + self._ts_offset) % _TS_MOD,
            marker=packet.marker or switched,
        )
        # A late packet of the current source must not pull the next switch back in time.
        if switched or 0 < (out.sequence - self._last_sequence) % _SEQ_MOD < _SEQ_MOD // 2:
            self._last_sequence = out.sequence
            self._last_timestamp = out.timestamp
            self._last_now = now_samples
        return out

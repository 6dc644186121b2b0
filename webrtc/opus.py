"""Opus at the edge of a browser leg, for a browser whose offer has no G.711.

Every other part of a media node speaks G.711: bridges forward its payloads untouched, the mixer
and recorders decode it, players send it. A browser that offers neither PCMU nor PCMA (a
locked-down or unusual client) still offers Opus, so its leg is answered with Opus and
transcoded where the packets enter and leave the node, and the `WebRtcStream` behind it is an
ordinary PCMU stream:

- received Opus RTP (48 kHz clock) is decoded, resampled to 8 kHz mono and re-packetised as
  PCMU, one packet for each Opus packet, keeping the browser's SSRC, sequence number and marker
  and carrying its timestamp over to 8 kHz units, so loss and jitter statistics, bridges,
  in-band DTMF detection and recorders work as on any leg;
- what the stream sends as PCMU (bridged packets, prompts, hold music, key tones) is decoded
  and encoded as 20 ms Opus frames, with the stream's SSRC and its timestamps carried up to
  48 kHz units (moved on where a new source would make coded frames overlap);
- RTCP is translated the same way: the RTP timestamp, packet and octet counts of our sender
  reports describe the Opus packets actually sent, and report-block jitter is scaled between
  the two clocks in both directions.

The encoder is fed the 8 kHz audio as it is: libopus takes 8 kHz input natively and codes it as
narrowband, which is all that G.711 audio holds, so resampling it to 48 kHz first would cost CPU
and add the resampler's delay for nothing; the RTP clock is 48 kHz either way (RFC 7587). The
decoder always produces 48 kHz, which PyAV's resampler brings down to 8 kHz.

One transcoder serves one attached connection: codec state does not survive a reconnect, which
may well negotiate G.711 instead.
"""

from __future__ import annotations

import fractions
import secrets
import struct

import av
from av import AudioFrame, AudioResampler, CodecContext, Packet

from media.g711 import ulaw_decode, ulaw_encode
from media.rtp import RtpError, RtpPacket
from media.stream import FRAME_SAMPLES, SAMPLE_RATE

__all__ = ["OPUS_RATE", "PCMU_PAYLOAD_TYPE", "OpusTranscoder"]

OPUS_RATE = 48000
"""The RTP clock of Opus, whatever the audio's bandwidth (RFC 7587 4.1)."""
PCMU_PAYLOAD_TYPE = 0
"""The payload type of the PCMU packets the stream behind the transcoder sees and sends."""
BIT_RATE = 24000
"""Target bit rate of what we send: more than narrowband speech needs to sound clean."""

_RATIO = OPUS_RATE // SAMPLE_RATE
_FRAME_BYTES = 2 * FRAME_SAMPLES
_BACKLOG_BYTES = 2 * _FRAME_BYTES
"""Decoded audio kept past what was packetised: more would only grow the delay."""
_MASK32 = 0xFFFFFFFF
_HALF32 = 0x80000000
_PLAIN_FIRST_BYTE = 0x80
_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_WORD = struct.Struct("!I")
_SR, _RR = 200, 201
_REPORT_BLOCK_SIZE = 24
_JITTER_IN_BLOCK = 12


def _signed32(value: int) -> int:
    value &= _MASK32
    return value - (1 << 32) if value & _HALF32 else value


def _header(data: bytes | bytearray) -> tuple[int, int, int, int, bool, bytes] | None:
    """(payload type, sequence, timestamp, SSRC, marker, payload) of an RTP datagram."""
    if data[0] == _PLAIN_FIRST_BYTE and len(data) > 12:
        sequence, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        return data[1] & 0x7F, sequence, timestamp, ssrc, bool(data[1] & 0x80), bytes(data[12:])
    try:
        packet = RtpPacket.parse(bytes(data))
    except RtpError:
        return None
    return (
        packet.payload_type,
        packet.sequence,
        packet.timestamp,
        packet.ssrc,
        packet.marker,
        packet.payload,
    )


class OpusTranscoder:
    """Turns one connection's Opus into PCMU for its stream and the stream's PCMU into Opus.

    `receive` and `rtcp_in` take what the browser sent, `send` and `rtcp_out` what the stream
    sends; none of them raises on bad input (a packet that cannot be handled is dropped), since
    they run inside the transports' receive and send paths.
    """

    __slots__ = (
        "_decoder",
        "_downsampler",
        "_encoder",
        "_heard",
        "_in_sequence",
        "_in_ssrc",
        "_in_ts8",
        "_in_ts48",
        "_last_sequence",
        "_next_ts8",
        "_out_end",
        "_out_sequence",
        "_pending",
        "_pending_marker",
        "_pending_ts8",
        "_pts",
        "_sending",
        "_ts_offset",
        "octets_sent",
        "packets_sent",
        "payload_type",
    )

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        """The Opus payload type negotiated with the browser."""
        self.packets_sent = 0
        self.octets_sent = 0
        """Opus payload octets, as RFC 3550 counts them for sender reports."""

        decoder = CodecContext.create("libopus", "r")
        decoder.sample_rate = OPUS_RATE
        decoder.layout = "mono"  # a stereo packet is mixed down by libopus
        decoder.format = "s16"
        self._decoder = decoder
        self._downsampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._heard = bytearray()
        """8 kHz audio decoded but not yet put in a packet."""
        self._in_ssrc = -1
        self._in_sequence = 0
        self._in_ts48 = 0
        self._in_ts8 = 0

        encoder = CodecContext.create("libopus", "w")
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "mono"
        encoder.format = "s16"
        encoder.bit_rate = BIT_RATE
        encoder.time_base = fractions.Fraction(1, SAMPLE_RATE)
        encoder.options = {"application": "voip", "frame_duration": "20"}
        self._encoder = encoder
        self._pts = 0
        self._pending = bytearray()
        """8 kHz audio the stream sent that does not fill a 20 ms frame yet."""
        self._pending_ts8 = 0
        self._pending_marker = False
        self._next_ts8 = 0
        """The stream's timestamp right after its last packet: where contiguous audio goes on."""
        self._last_sequence = 0
        self._out_end = 0
        """Our (48 kHz) timestamp right after the last frame coded."""
        self._sending = False
        self._out_sequence = secrets.randbits(16)
        self._ts_offset = secrets.randbits(32)

    # --- from the browser ----------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes | None:
        """The PCMU packet for a received Opus packet, or None for one to drop (another payload
        type, a late or repeated packet, one that does not decode)."""
        if len(data) < 12:
            return None
        fields = _header(data)
        if fields is None:
            return None
        payload_type, sequence, ts48, ssrc, marker, payload = fields
        if payload_type != self.payload_type or not payload:
            return None
        if ssrc != self._in_ssrc:
            # A new source (the first, or the browser replaced its track): start the 8 kHz
            # clock from its timestamp.
            self._in_ssrc = ssrc
            self._in_ts48 = ts48
            self._in_ts8 = ts48 // _RATIO
        elif not 0 < (sequence - self._in_sequence) & 0xFFFF < 0x8000:
            # Late or repeated: its audio's moment has passed, and the decoder's state has
            # moved on past it. The stream never sees it, so its statistics count it as lost.
            return None
        else:
            # Whole 8 kHz samples only, the remainder carried in `_in_ts48`, so no rounding
            # accumulates however long the connection lasts.
            steps = _signed32(ts48 - self._in_ts48) // _RATIO
            self._in_ts48 = (self._in_ts48 + steps * _RATIO) & _MASK32
            self._in_ts8 = (self._in_ts8 + steps) & _MASK32
        self._in_sequence = sequence
        pcm = self._decode(payload)
        if pcm is None:
            return None
        header = _HEADER.pack(
            _PLAIN_FIRST_BYTE,
            (0x80 if marker else 0) | PCMU_PAYLOAD_TYPE,
            sequence,
            self._in_ts8,
            ssrc,
        )
        return header + ulaw_encode(pcm)

    def _decode(self, payload: bytes) -> bytes | None:
        """The 8 kHz audio of one Opus packet: exactly its duration, so that packets keep their
        length, taken from decoded and resampled audio which starts the resampler's filter
        delay (2 ms) late."""
        try:
            frames = self._decoder.decode(Packet(payload))
            samples48 = 0
            heard = self._heard
            for frame in frames:
                samples48 += frame.samples
                frame.pts = None  # contiguous audio: never let the resampler pad or trim
                for out in self._downsampler.resample(frame):
                    heard += bytes(out.planes[0])[: 2 * out.samples]
        except (av.FFmpegError, ValueError):
            return None
        size = 2 * (samples48 // _RATIO)
        if not size:
            return None
        if len(heard) < size:
            # Only at the start, while the resampler's filter fills: lead in with silence.
            heard[:0] = bytes(size - len(heard))
        pcm = bytes(heard[:size])
        del heard[:size]
        if len(heard) > _BACKLOG_BYTES:
            del heard[: len(heard) - _BACKLOG_BYTES]
        return pcm

    def rtcp_in(self, data: bytes) -> bytes:
        """The browser's RTCP with the jitter it reports about our packets in 8 kHz units."""
        return _translate_rtcp(data, divide=True, sender=None)

    # --- to the browser ------------------------------------------------------------------------

    def send(self, data: bytes | bytearray) -> list[bytes]:
        """The Opus packets (none, one, or more) to send for a PCMU packet of the stream.

        Audio is coded in 20 ms frames. Packets of 20 ms (what players, the mixer and nearly
        every SIP phone send) become one Opus packet each, straight away; other sizes are
        gathered into frames. When the timestamp does not go on from the previous packet (a new
        source, the end of a pause or of silence), what is gathered is sent padded with silence
        and the new audio starts a frame of its own. A packet whose sequence number is not past
        the previous one's is late or repeated and is dropped: the encoder has moved on.
        """
        if len(data) < 12:
            return []
        fields = _header(data)
        if fields is None:
            return []
        payload_type, sequence, ts8, ssrc, marker, payload = fields
        if payload_type != PCMU_PAYLOAD_TYPE or not payload:
            return []
        out: list[bytes] = []
        pending = self._pending
        if self._sending:
            if not 0 < (sequence - self._last_sequence) & 0xFFFF < 0x8000:
                return []
            if ts8 != self._next_ts8:
                if pending:
                    pending += bytes(_FRAME_BYTES - len(pending))
                    self._encode(pending, self._pending_ts8, self._pending_marker, ssrc, out)
                    pending.clear()
                # A new source may start less than a frame after the previous one did (the
                # stream only keeps its timestamps from going back): coded frames must not
                # overlap, so from here on ours run that much later.
                overlap = _signed32(self._out_end - self.timestamp_out(ts8))
                if overlap > 0:
                    self._ts_offset = (self._ts_offset + overlap) & _MASK32
        self._sending = True
        self._last_sequence = sequence
        if not pending:
            self._pending_ts8 = ts8
            self._pending_marker = marker
        pending += ulaw_decode(payload)
        self._next_ts8 = (ts8 + len(payload)) & _MASK32
        while len(pending) >= _FRAME_BYTES:
            self._encode(pending[:_FRAME_BYTES], self._pending_ts8, self._pending_marker, ssrc, out)
            del pending[:_FRAME_BYTES]
            self._pending_ts8 = (self._pending_ts8 + FRAME_SAMPLES) & _MASK32
            self._pending_marker = False
        return out

    def _encode(
        self, pcm: bytes | bytearray, ts8: int, marker: bool, ssrc: int, out: list[bytes]
    ) -> None:
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        timestamp = self.timestamp_out(ts8)
        self._out_end = (timestamp + FRAME_SAMPLES * _RATIO) & _MASK32
        try:
            packets = self._encoder.encode(frame)
        except (av.FFmpegError, ValueError):
            return
        # libopus codes each frame as it comes (its lookahead shows only in the pts), so every
        # packet here is this frame's.
        for packet in packets:
            payload = bytes(packet)
            self._out_sequence = (self._out_sequence + 1) & 0xFFFF
            header = _HEADER.pack(
                _PLAIN_FIRST_BYTE,
                (0x80 if marker else 0) | self.payload_type,
                self._out_sequence,
                timestamp,
                ssrc,
            )
            out.append(header + payload)
            self.packets_sent += 1
            self.octets_sent += len(payload)
            marker = False

    def timestamp_out(self, ts8: int) -> int:
        """The 48 kHz timestamp we send for the stream's 8 kHz timestamp `ts8` (sender reports
        use it too, so they agree with the packets)."""
        return (ts8 * _RATIO + self._ts_offset) & _MASK32

    def rtcp_out(self, data: bytes | bytearray) -> bytes:
        """The stream's RTCP as the browser must read it: sender reports describe the Opus
        packets sent, in their clock, and jitter is in 48 kHz units."""
        return _translate_rtcp(data, divide=False, sender=self)


def _translate_rtcp(
    data: bytes | bytearray, *, divide: bool, sender: OpusTranscoder | None
) -> bytes:
    """A compound RTCP packet with every report block's jitter divided or multiplied by the
    ratio of the clocks and, given `sender`, its sender reports' timestamp and counts replaced.
    A packet it cannot walk is returned unchanged (the stream's own parser rejects it)."""
    out = bytearray(data)
    offset = 0
    while offset + 4 <= len(out):
        if out[offset] >> 6 != 2:
            return bytes(data)
        count = out[offset] & 0x1F
        packet_type = out[offset + 1]
        end = offset + 4 + 4 * int.from_bytes(out[offset + 2 : offset + 4], "big")
        if end > len(out):
            return bytes(data)
        if packet_type in (_SR, _RR):
            blocks = offset + (28 if packet_type == _SR else 8)
            if blocks + count * _REPORT_BLOCK_SIZE > end:
                return bytes(data)
            if packet_type == _SR and sender is not None:
                (ts8,) = _WORD.unpack_from(out, offset + 16)
                _WORD.pack_into(out, offset + 16, sender.timestamp_out(ts8))
                _WORD.pack_into(out, offset + 20, sender.packets_sent & _MASK32)
                _WORD.pack_into(out, offset + 24, sender.octets_sent & _MASK32)
            for index in range(count):
                at = blocks + index * _REPORT_BLOCK_SIZE + _JITTER_IN_BLOCK
                (jitter,) = _WORD.unpack_from(out, at)
                jitter = jitter // _RATIO if divide else min(jitter * _RATIO, _MASK32)
                _WORD.pack_into(out, at, jitter)
        offset = end
    return bytes(out)

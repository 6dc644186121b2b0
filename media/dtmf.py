"""DTMF: keypad digits as RFC 4733 telephone-events (the usual way, out of band in RTP) and as
tone pairs in the audio itself (for trunks that do not negotiate telephone-event).

Everything here is pure: payloads are values, the sender is a generator of payloads and the
receiver and the tone detector are state machines fed what arrived. The transport stamps RTP
headers, paces packets and feeds the receiver and detector.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

DIGITS = "0123456789*#ABCD"
"""Telephone-event codes 0-15, in order (RFC 4733 section 3.2)."""

SAMPLE_RATE = 8000
PACKET_MS = 20
DEFAULT_VOLUME = 10
"""-10 dBm0: volume is the level's magnitude in dBm0."""
MAX_DURATION = 0xFFFF
"""The duration field is 16 bits of timestamp units; longer events would need segmenting."""

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
"""Keys by row (low tone) and column (high tone)."""
_ROW_OF = [next(r for r, keys in enumerate(KEYPAD) if d in keys) for d in DIGITS]
_COLUMN_OF = [next(keys.index(d) for keys in KEYPAD if d in keys) for d in DIGITS]


class DtmfError(Exception):
    """A telephone-event payload, digit or duration we cannot use."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload for a DTMF key (events 0-15)."""

    event: int
    end: bool
    volume: int
    """Level as -dBm0, 0-63."""
    duration: int
    """Timestamp units since the event's start, 0-65535."""

    def __post_init__(self) -> None:
        if not 0 <= self.event < len(DIGITS):
            raise DtmfError(f"Event {self.event} is not a DTMF key (0-15).")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"Volume {self.volume} is outside 0-63.")
        if not 0 <= self.duration <= MAX_DURATION:
            raise DtmfError(f"Duration {self.duration} is outside 0-65535.")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) != 4:
            raise DtmfError(f"A telephone-event payload is 4 bytes, not {len(payload)}.")
        event, flags, duration_hi, duration_lo = payload
        # The R bit (0x40) is reserved: senders set it to 0, receivers ignore it.
        return cls(
            event=event,
            end=bool(flags & 0x80),
            volume=flags & 0x3F,
            duration=duration_hi << 8 | duration_lo,
        )

    @classmethod
    def for_digit(
        cls, digit: str, *, end: bool = False, volume: int = DEFAULT_VOLUME, duration: int = 0
    ) -> TelephoneEvent:
        return cls(event=event_code(digit), end=end, volume=volume, duration=duration)

    @property
    def digit(self) -> str:
        return DIGITS[self.event]

    def __bytes__(self) -> bytes:
        flags = (0x80 if self.end else 0) | self.volume
        return bytes((self.event, flags, self.duration >> 8, self.duration & 0xFF))


def event_code(digit: str) -> int:
    """The telephone-event code of a keypad digit; lower-case a-d are accepted."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D).")
    return code


class EventPacket(NamedTuple):
    payload: bytes
    marker: bool
    timestamp_offset: int
    """Added to the RTP timestamp of the event's start: always 0, every packet of an event
    carries the start's timestamp (RFC 4733 section 2.5.1.2)."""


@dataclass(frozen=True, slots=True)
class EventSender:
    """The RTP payloads for one key press, in sending order, one every `packet_ms`: a start
    packet with the marker bit, updates with a growing duration, then the end packet sent
    three times (RFC 4733 section 2.5.1.4)."""

    digit: str
    duration_ms: int
    volume: int = DEFAULT_VOLUME
    sample_rate: int = SAMPLE_RATE
    packet_ms: int = PACKET_MS

    def __iter__(self) -> Iterator[EventPacket]:
        step = self.sample_rate * self.packet_ms // 1000
        total = self.duration_ms * self.sample_rate // 1000
        if self.duration_ms <= 0 or total < 1:
            raise DtmfError("A DTMF event must last at least one sample.")
        if total > MAX_DURATION:
            raise DtmfError(f"A DTMF event may last at most {MAX_DURATION} timestamp units.")
        code = event_code(self.digit)
        # Validates volume before anything is yielded.
        TelephoneEvent(event=code, end=True, volume=self.volume, duration=total)
        duration = min(step, total)
        first = True
        while duration < total:
            payload = TelephoneEvent(code, end=False, volume=self.volume, duration=duration)
            yield EventPacket(bytes(payload), first, 0)
            first = False
            duration += step
        end = bytes(TelephoneEvent(code, end=True, volume=self.volume, duration=total))
        for _ in range(3):
            # An event shorter than one packet is a lone end packet, which still starts it.
            yield EventPacket(end, first, 0)
            first = False


@dataclass(frozen=True, slots=True)
class ReceivedDigit:
    digit: str
    timestamp: int
    """RTP timestamp of the key press's start."""
    duration_ms: int


@dataclass(slots=True)
class _Pressing:
    timestamp: int
    digit: str
    duration: int
    ended: bool


class EventReceiver:
    """Turns received telephone-event payloads into key presses, each reported once.

    Packets of one press share its RTP timestamp, so a new timestamp is a new press (the same
    key twice included) and an older one is a late packet of a press already reported. A press
    is reported at its end packet; if every end packet is lost, when the next press begins.
    """

    def __init__(self, *, clock_rate: int = SAMPLE_RATE) -> None:
        self._clock_rate = clock_rate
        self._current: _Pressing | None = None

    def feed(self, rtp_timestamp: int, payload: bytes) -> list[ReceivedDigit]:
        """Presses completed by this packet, oldest first. Raises DtmfError for a payload that
        is not a DTMF telephone-event."""
        event = TelephoneEvent.parse(payload)
        timestamp = rtp_timestamp & 0xFFFFFFFF
        reported: list[ReceivedDigit] = []
        current = self._current
        if current is not None and timestamp != current.timestamp:
            if _serial_before(timestamp, current.timestamp):
                return reported  # a late packet of an earlier press
            if not current.ended:
                reported.append(self._digit(current))
            current = None
        if current is None:
            current = _Pressing(timestamp, event.digit, event.duration, ended=False)
            self._current = current
        elif current.ended:
            return reported  # a retransmitted end, or an update that arrived after the end
        current.duration = max(current.duration, event.duration)
        if event.end:
            current.ended = True
            reported.append(self._digit(current))
        return reported

    def _digit(self, pressing: _Pressing) -> ReceivedDigit:
        duration_ms = (pressing.duration * 1000 + self._clock_rate // 2) // self._clock_rate
        return ReceivedDigit(pressing.digit, pressing.timestamp, duration_ms)


def _serial_before(a: int, b: int) -> bool:
    """Whether 32-bit RTP timestamp a comes before b, allowing for wrap-around."""
    return a != b and (b - a) & 0xFFFFFFFF < 0x80000000


def dtmf_tone(
    digit: str, ms: int, *, amplitude: float = 10 ** (-10 / 20), sample_rate: int = SAMPLE_RATE
) -> bytes:
    """The key's row and column tones for `ms` milliseconds as s16le PCM; `amplitude` is each
    tone's peak as a fraction of full scale (the default is -10 dBFS)."""
    code = event_code(digit)
    if not 0 < amplitude <= 0.5:
        raise DtmfError("Each tone's amplitude must be above 0 and at most 0.5 of full scale.")
    row_hz, column_hz = ROW_HZ[_ROW_OF[code]], COLUMN_HZ[_COLUMN_OF[code]]
    peak = amplitude * 32767
    w_row = 2 * math.pi * row_hz / sample_rate
    w_column = 2 * math.pi * column_hz / sample_rate
    count = ms * sample_rate // 1000
    samples = array(
        "h",
        (round(peak * (math.sin(w_row * n) + math.sin(w_column * n))) for n in range(count)),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


# Detection thresholds, as power ratios.
_MIN_TONE_POWER = (32767 * 10 ** (-36 / 20)) ** 2 / 2
"""Each tone at least -36 dBFS (peak), well under the -25 dBFS we must hear."""
_DOMINANCE = 10 ** (8 / 10)
"""The strongest row (column) is 8 dB above every other row (column)."""
_FORWARD_TWIST = 10 ** (8 / 10)
"""The column (high) tone may be up to 8 dB louder than the row tone..."""
_REVERSE_TWIST = 10 ** (4 / 10)
"""...and the row (low) tone up to 4 dB louder than the column tone."""
_COLUMN_HARMONIC = 10 ** (-10 / 10)
"""The column tone's second harmonic is at least 10 dB below it: voices have strong harmonics."""
_ROW_HARMONIC = 1.0
"""The row tone's second harmonic (1394-1882 Hz) lies 60-250 Hz from the column tones, whose
leakage into it reaches -5 dB at the most forward twist, so it need only be below the tone."""
_SHARE_OF_TOTAL = 10 ** (-3 / 10)
"""The two tones are at least half the window's power: speech spreads its power wider."""


class GoertzelDetector:
    """In-band DTMF: feed s16le mono PCM in any chunks, get each key press back once.

    Windows of `block` samples (205 at 8 kHz puts every DTMF frequency close to a bin) are
    analysed every half block, so a 40 ms tone, wherever it falls, fills one window and at least
    three quarters of its neighbour: a digit must be found in two consecutive windows, and is
    not reported again until a window holds silence or something else.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, block: int = 205) -> None:
        if block < 2:
            raise ValueError("A detection block needs at least 2 samples.")
        self._block = block
        self._hop = block // 2
        self._row_coeffs = [_coefficient(f, sample_rate) for f in ROW_HZ]
        self._column_coeffs = [_coefficient(f, sample_rate) for f in COLUMN_HZ]
        nyquist = sample_rate / 2
        self._row_harmonics = [
            _coefficient(2 * f, sample_rate) if 2 * f < nyquist else None for f in ROW_HZ
        ]
        self._column_harmonics = [
            _coefficient(2 * f, sample_rate) if 2 * f < nyquist else None for f in COLUMN_HZ
        ]
        self._samples: list[int] = []
        self._odd_byte = b""
        self._previous: str | None = None
        self._held: str | None = None

    def feed(self, pcm: bytes) -> list[str]:
        """Digits whose press completed detection within this audio, in order."""
        data = self._odd_byte + pcm
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        chunk = array("h", data[:whole])
        if sys.byteorder == "big":
            chunk.byteswap()
        self._samples.extend(chunk)
        found: list[str] = []
        start = 0
        while len(self._samples) - start >= self._block:
            digit = self._classify(self._samples[start : start + self._block])
            start += self._hop
            if digit is not None and digit == self._previous and digit != self._held:
                found.append(digit)
                self._held = digit
            if digit != self._held:
                self._held = None
            self._previous = digit
        del self._samples[:start]
        return found

    def _classify(self, window: list[int]) -> str | None:
        n = len(window)
        # Mean power of a sine of peak A over the window is A^2/2; Goertzel power is (A*n/2)^2.
        scale = 2 / (n * n)
        rows = [_goertzel(window, c) * scale for c in self._row_coeffs]
        columns = [_goertzel(window, c) * scale for c in self._column_coeffs]
        row = max(range(4), key=rows.__getitem__)
        column = max(range(4), key=columns.__getitem__)
        row_power, column_power = rows[row], columns[column]
        if row_power < _MIN_TONE_POWER or column_power < _MIN_TONE_POWER:
            return None
        if column_power > row_power * _FORWARD_TWIST or row_power > column_power * _REVERSE_TWIST:
            return None
        if any(p * _DOMINANCE > row_power for i, p in enumerate(rows) if i != row):
            return None
        if any(p * _DOMINANCE > column_power for i, p in enumerate(columns) if i != column):
            return None
        total = sum(x * x for x in window) / n
        if row_power + column_power < total * _SHARE_OF_TOTAL:
            return None
        for power, harmonic, limit in (
            (row_power, self._row_harmonics[row], _ROW_HARMONIC),
            (column_power, self._column_harmonics[column], _COLUMN_HARMONIC),
        ):
            if harmonic is not None and _goertzel(window, harmonic) * scale > power * limit:
                return None
        return KEYPAD[row][column]


def _coefficient(frequency: float, sample_rate: int) -> float:
    return 2 * math.cos(2 * math.pi * frequency / sample_rate)


def _goertzel(samples: list[int], coeff: float) -> float:
    """Squared magnitude of one frequency in the samples."""
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2

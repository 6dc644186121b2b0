"""DTMF: RFC 4733 telephone-event payloads byte for byte, the packets a key press is sent as, a
receiver that reports every press once whatever the network does to its packets, and in-band
tone detection that hears all sixteen keys, quietly and in noise, but not voices or lone tones."""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.dtmf import (
    COLUMN_HZ,
    DIGITS,
    ROW_HZ,
    DtmfError,
    EventPacket,
    EventReceiver,
    EventSender,
    GoertzelDetector,
    ReceivedDigit,
    TelephoneEvent,
    dtmf_tone,
)

RATE = 8000
FULL_SCALE = 32767


def _db(level_dbfs: float) -> float:
    return 10 ** (level_dbfs / 20)


def _pcm(samples: list[float]) -> bytes:
    clipped = (max(-32768, min(32767, round(x))) for x in samples)
    return struct.pack(f"<{len(samples)}h", *clipped)


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _tones(freqs_and_levels: list[tuple[float, float]], ms: int) -> list[float]:
    """Sines of the given frequencies, each with its peak level in dBFS."""
    count = ms * RATE // 1000
    return [
        sum(
            FULL_SCALE * _db(level) * math.sin(2 * math.pi * freq * n / RATE)
            for freq, level in freqs_and_levels
        )
        for n in range(count)
    ]


def _silence(ms: int) -> bytes:
    return bytes(ms * RATE // 1000 * 2)


def _goertzel_power(samples: list[int], freq: float) -> float:
    """Power of one frequency as a fraction of a full-scale sine's."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (FULL_SCALE * len(samples) / 2) ** 2


def _detect(pcm: bytes, chunk: int = 160) -> str:
    detector = GoertzelDetector()
    found: list[str] = []
    for start in range(0, len(pcm), chunk):
        found += detector.feed(pcm[start : start + chunk])
    return "".join(found)


# RFC 4733 payloads


def test_digit_5_ending_at_volume_10_after_800_units_is_05_8a_03_20() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("058a0320"))

    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.digit == "5"
    assert bytes(event) == bytes.fromhex("058a0320")


@pytest.mark.parametrize(
    ("payload", "digit", "end", "volume", "duration"),
    [
        ("0b0a0000", "#", False, 10, 0),
        ("0a3f00a0", "*", False, 63, 160),
        ("0f80ffff", "D", True, 0, 65535),
        ("00070140", "0", False, 7, 320),
    ],
)
def test_golden_payloads_parse_and_serialize_back(
    payload: str, digit: str, end: bool, volume: int, duration: int
) -> None:
    event = TelephoneEvent.parse(bytes.fromhex(payload))

    assert (event.digit, event.end, event.volume, event.duration) == (
        digit,
        end,
        volume,
        duration,
    )
    assert bytes(event) == bytes.fromhex(payload)
    assert TelephoneEvent.for_digit(digit, end=end, volume=volume, duration=duration) == event


def test_the_reserved_bit_is_ignored_when_parsing_and_cleared_when_sending() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("05ca0320"))

    assert event == TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert bytes(event) == bytes.fromhex("058a0320")


@pytest.mark.parametrize(
    "payload",
    ["", "05", "058a03", "058a032000", "108a0320", "ff000000"],
    ids=["empty", "one byte", "three bytes", "five bytes", "event 16", "event 255"],
)
def test_short_long_and_non_dtmf_payloads_are_refused(payload: str) -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(bytes.fromhex(payload))


@given(st.binary(max_size=8))
def test_any_payload_either_is_refused_or_round_trips_without_the_reserved_bit(
    payload: bytes,
) -> None:
    try:
        event = TelephoneEvent.parse(payload)
    except DtmfError:
        assert len(payload) != 4 or payload[0] > 15
    else:
        assert bytes(event) == bytes((payload[0], payload[1] & 0xBF)) + payload[2:]
        assert TelephoneEvent.parse(bytes(event)) == event


def test_a_value_outside_its_field_cannot_be_built() -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent(event=1, end=False, volume=64, duration=0)
    with pytest.raises(DtmfError):
        TelephoneEvent(event=1, end=False, volume=10, duration=65536)
    with pytest.raises(DtmfError):
        TelephoneEvent.for_digit("E")


# Sending a key press


def test_a_100_ms_press_is_a_start_three_updates_and_three_identical_ends() -> None:
    packets = list(EventSender("1", duration_ms=100))
    events = [TelephoneEvent.parse(p.payload) for p in packets]

    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp_offset for p in packets} == {0}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.digit for e in events} == {"1"}
    assert {e.volume for e in events} == {10}
    assert packets[4] == packets[5] == packets[6]
    assert packets[4] == EventPacket(bytes.fromhex("018a0320"), False, 0)


def test_a_press_that_is_not_a_whole_number_of_packets_ends_at_its_exact_duration() -> None:
    events = [TelephoneEvent.parse(p.payload) for p in EventSender("#", 50, volume=20)]

    assert [(e.duration, e.end) for e in events] == [
        (160, False),
        (320, False),
        (400, True),
        (400, True),
        (400, True),
    ]
    assert {e.volume for e in events} == {20}


def test_a_press_shorter_than_a_packet_is_three_end_packets_the_first_marked() -> None:
    packets = list(EventSender("9", 10))

    assert [p.marker for p in packets] == [True, False, False]
    assert {p.payload for p in packets} == {bytes.fromhex("098a0050")}


@pytest.mark.parametrize(
    ("digit", "duration_ms", "volume"),
    [("X", 100, 10), ("1", 0, 10), ("1", 8200, 10), ("1", 100, 64)],
    ids=["not a key", "no duration", "longer than the field", "volume out of range"],
)
def test_a_press_that_cannot_be_sent_is_refused(digit: str, duration_ms: int, volume: int) -> None:
    with pytest.raises(DtmfError):
        list(EventSender(digit, duration_ms, volume=volume))


# Receiving key presses


def _payloads(digit: str, ms: int) -> list[bytes]:
    return [p.payload for p in EventSender(digit, ms)]


def test_a_press_is_reported_once_at_its_end_despite_the_retransmitted_ends() -> None:
    receiver = EventReceiver()
    reports = [receiver.feed(1000, payload) for payload in _payloads("7", 100)]

    assert reports == [[], [], [], [], [ReceivedDigit("7", 1000, 100)], [], []]


def test_a_press_whose_start_was_lost_is_still_reported_once() -> None:
    receiver = EventReceiver()
    reports = [receiver.feed(5000, payload) for payload in _payloads("*", 100)[2:]]

    assert reports == [[], [], [ReceivedDigit("*", 5000, 100)], [], []]


def test_a_press_of_which_only_a_retransmitted_end_arrived_is_reported() -> None:
    receiver = EventReceiver()

    assert receiver.feed(40, _payloads("B", 60)[-1]) == [ReceivedDigit("B", 40, 60)]


def test_the_same_key_pressed_twice_is_two_presses_told_apart_by_timestamp() -> None:
    receiver = EventReceiver()
    reported: list[ReceivedDigit] = []
    for timestamp in (8000, 8000 + 1600):
        for payload in _payloads("3", 100):
            reported += receiver.feed(timestamp, payload)

    assert reported == [ReceivedDigit("3", 8000, 100), ReceivedDigit("3", 9600, 100)]


def test_an_update_that_arrives_after_the_end_does_not_report_the_press_again() -> None:
    receiver = EventReceiver()
    start, update, *_, end = _payloads("0", 80)

    assert receiver.feed(300, start) == []
    assert receiver.feed(300, end) == [ReceivedDigit("0", 300, 80)]
    assert receiver.feed(300, update) == []
    assert receiver.feed(300, end) == []


def test_a_press_whose_end_packets_were_all_lost_is_reported_when_the_next_begins() -> None:
    receiver = EventReceiver()
    first = _payloads("4", 100)
    for payload in first[:3]:
        assert receiver.feed(0, payload) == []

    assert receiver.feed(2400, _payloads("5", 100)[0]) == [ReceivedDigit("4", 0, 60)]


def test_a_late_packet_of_an_earlier_press_is_ignored() -> None:
    receiver = EventReceiver()
    assert receiver.feed(100, _payloads("1", 60)[-1]) == [ReceivedDigit("1", 100, 60)]
    assert receiver.feed(900, _payloads("2", 60)[-1]) == [ReceivedDigit("2", 900, 60)]

    assert receiver.feed(100, _payloads("1", 60)[-1]) == []
    assert receiver.feed(100, _payloads("1", 60)[0]) == []
    assert receiver.feed(900, _payloads("2", 60)[-1]) == []


def test_presses_either_side_of_the_timestamp_wrapping_are_both_reported() -> None:
    receiver = EventReceiver()

    assert receiver.feed(0xFFFFFF00, _payloads("8", 40)[-1]) == [ReceivedDigit("8", 0xFFFFFF00, 40)]
    assert receiver.feed(0x200, _payloads("8", 40)[-1]) == [ReceivedDigit("8", 0x200, 40)]


def test_a_payload_that_is_not_a_dtmf_event_is_refused_by_the_receiver() -> None:
    with pytest.raises(DtmfError):
        EventReceiver().feed(0, bytes.fromhex("2000a0"))


@settings(max_examples=200)
@given(
    presses=st.lists(
        st.tuples(
            st.sampled_from(DIGITS), st.integers(1, 1000), st.integers(0, 500), st.booleans()
        ),
        max_size=12,
    ),
    first_timestamp=st.integers(0, 0xFFFFFFFF),
)
def test_what_the_sender_sends_the_receiver_reports_as_the_same_digits(
    presses: list[tuple[str, int, int, bool]], first_timestamp: int
) -> None:
    receiver = EventReceiver()
    timestamp = first_timestamp
    reported: list[ReceivedDigit] = []
    for digit, duration_ms, gap_ms, lose_start in presses:
        packets = list(EventSender(digit, duration_ms))
        if lose_start and len(packets) > 3:
            packets = packets[1:]
        for packet in packets:
            reported += receiver.feed(timestamp + packet.timestamp_offset, packet.payload)
        timestamp = (timestamp + (duration_ms + gap_ms) * 8 + 160) & 0xFFFFFFFF

    assert "".join(r.digit for r in reported) == "".join(p[0] for p in presses)
    assert [r.duration_ms for r in reported] == [p[1] for p in presses]


# In-band tones


def test_a_tone_holds_its_row_and_column_frequencies_and_nothing_else() -> None:
    samples = _samples(dtmf_tone("6", 100, amplitude=_db(-10)))

    assert len(samples) == 800
    for freq in (*ROW_HZ, *COLUMN_HZ):
        expected = _db(-10) ** 2 if freq in (770, 1477) else 0
        assert _goertzel_power(samples, freq) == pytest.approx(expected, abs=0.002)


@pytest.mark.parametrize("lead_in", [0, 37, 102, 150, 204])
def test_all_sixteen_keys_are_heard_in_40_ms_wherever_they_fall(lead_in: int) -> None:
    pcm = bytes(lead_in * 2) + b"".join(dtmf_tone(digit, 40) + _silence(40) for digit in DIGITS)

    assert _detect(pcm) == DIGITS


def test_all_sixteen_keys_are_heard_at_minus_25_dbfs_in_noise() -> None:
    rng = random.Random(4733)
    pcm = b"".join(dtmf_tone(d, 40, amplitude=_db(-25)) + _silence(40) for d in DIGITS)
    # Uniform noise of this peak is about 20 dB below the pair of tones.
    noise = FULL_SCALE * _db(-40)
    noisy = _pcm([x + rng.uniform(-noise, noise) for x in _samples(pcm)])

    assert _detect(noisy) == DIGITS


@settings(max_examples=15, deadline=None)
@given(chunks=st.lists(st.integers(1, 700), min_size=1, max_size=40))
def test_keys_are_heard_however_the_audio_is_chunked(chunks: list[int]) -> None:
    pcm = _silence(30) + dtmf_tone("1", 40) + _silence(40) + dtmf_tone("D", 50) + _silence(30)
    detector = GoertzelDetector()
    found: list[str] = []
    position = 0
    sizes = iter(chunks * (len(pcm) // sum(chunks) + 1))
    while position < len(pcm):
        size = next(sizes)
        found += detector.feed(pcm[position : position + size])
        position += size

    assert "".join(found) == "1D"


def test_a_held_key_is_reported_once() -> None:
    assert _detect(dtmf_tone("#", 1500) + _silence(100)) == "#"


def test_the_same_key_twice_with_a_40_ms_pause_is_reported_twice() -> None:
    assert _detect(dtmf_tone("0", 60) + _silence(40) + dtmf_tone("0", 60)) == "00"


@pytest.mark.parametrize("freq", [*ROW_HZ, *COLUMN_HZ, 1000.0])
def test_a_single_tone_is_not_a_key(freq: float) -> None:
    assert _detect(_pcm(_tones([(freq, -10)], 500))) == ""


def test_a_key_below_minus_36_dbfs_is_not_heard() -> None:
    assert _detect(dtmf_tone("5", 200, amplitude=_db(-40))) == ""


@pytest.mark.parametrize(
    ("row_db", "column_db", "heard"),
    [
        (-20, -13, "9"),  # forward twist of 7 dB
        (-20, -23.5, "9"),  # reverse twist of 3.5 dB
        (-20, -10, ""),  # forward twist of 10 dB
        (-14, -20, ""),  # reverse twist of 6 dB
    ],
)
def test_the_high_tone_may_be_8_db_louder_but_the_low_tone_only_4(
    row_db: float, column_db: float, heard: str
) -> None:
    pcm = _pcm(_tones([(852, row_db), (1477, column_db)], 200))

    assert _detect(pcm) == heard


@pytest.mark.parametrize("lead_in", [0, 40, 80])
def test_a_15_ms_blip_that_fills_only_one_window_is_not_a_key(lead_in: int) -> None:
    assert _detect(bytes(lead_in * 2) + dtmf_tone("5", 15) + _silence(100)) == ""


def test_two_rows_or_two_columns_sounding_at_once_are_not_a_key() -> None:
    assert _detect(_pcm(_tones([(852, -16), (941, -16), (1477, -16)], 200))) == ""
    assert _detect(_pcm(_tones([(852, -16), (1336, -16), (1477, -16)], 200))) == ""


def test_a_key_with_a_strong_second_harmonic_is_not_heard() -> None:
    # Twice 1336 Hz, 3 dB under the column tone: a timbre no keypad makes, but voices do.
    pcm = _pcm(_tones([(770, -16), (1336, -16), (2672, -19)], 200))

    assert _detect(pcm) == ""
    assert _detect(_pcm(_tones([(770, -16), (1336, -16)], 200))) == "5"


def test_a_vowel_with_harmonics_at_dtmf_frequencies_is_not_a_key() -> None:
    # Harmonics of 150 Hz: the 5th (750) and 9th (1350) sit in the 770 and 1336 Hz bins.
    harmonics = {1: 0.5, 2: 0.5, 3: 0.4, 5: 1.0, 9: 1.0, 10: 0.5, 18: 0.6}
    count = 500 * RATE // 1000
    samples = [
        2500 * sum(a * math.sin(2 * math.pi * 150 * h * n / RATE + h) for h, a in harmonics.items())
        for n in range(count)
    ]
    window = [round(x) for x in samples[:205]]
    rows = sorted(_goertzel_power(window, f) for f in ROW_HZ)
    columns = sorted(_goertzel_power(window, f) for f in COLUMN_HZ)
    # It would pass level, dominance and twist: only the speech checks can turn it away.
    assert rows[-1] > 10**0.8 * rows[-2]
    assert columns[-1] > 10**0.8 * columns[-2]
    assert 1 < columns[-1] / rows[-1] < 10**0.8

    assert _detect(_pcm(samples)) == ""

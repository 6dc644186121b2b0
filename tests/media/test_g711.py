from __future__ import annotations

import math
import struct
from collections.abc import Callable

import pytest

from media.g711 import (
    ALAW_SILENCE,
    ALAW_TO_ULAW,
    ULAW_SILENCE,
    ULAW_TO_ALAW,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

ALL_CODES = bytes(range(256))
Codec = Callable[[bytes], bytes]


def _pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _decoded(decode: Codec, code: int) -> int:
    return _samples(decode(bytes([code])))[0]


def test_ulaw_decodes_the_g711_reference_values() -> None:
    assert _samples(ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xFE, 0xEF]))) == [
        0,
        0,
        32124,
        -32124,
        8,
        132,
    ]


def test_alaw_decodes_the_g711_reference_values() -> None:
    assert _samples(alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD4]))) == [
        8,
        -8,
        32256,
        -32256,
        24,
    ]


def test_encoders_give_the_reference_codes_for_silence_and_full_scale() -> None:
    pcm = _pcm(0, -1, 32767, -32768)
    assert ulaw_encode(pcm) == bytes([0xFF, 0x7F, 0x80, 0x00])
    assert alaw_encode(pcm) == bytes([0xD5, 0x55, 0xAA, 0x2A])


def test_every_alaw_code_survives_decode_and_encode() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def test_every_ulaw_code_survives_decode_and_encode_except_negative_zero() -> None:
    expected = bytes(ULAW_SILENCE if c == 0x7F else c for c in range(256))
    assert ulaw_encode(ulaw_decode(ALL_CODES)) == expected


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_every_sample_comes_back_within_half_a_quantisation_step(
    encode: Codec, decode: Codec
) -> None:
    everything = list(range(-32000, 32001))
    back = _samples(decode(encode(_pcm(*everything))))
    worst = max(abs(y - x) - abs(x) / 32 for x, y in zip(everything, back, strict=True))
    assert worst <= 8


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_a_sine_through_the_codec_keeps_a_signal_to_noise_ratio_above_30_db(
    encode: Codec, decode: Codec
) -> None:
    tone = [round(12000 * math.sin(2 * math.pi * 1004 * n / 8000)) for n in range(8000)]
    back = _samples(decode(encode(_pcm(*tone))))
    signal = sum(x * x for x in tone)
    noise = sum((x - y) ** 2 for x, y in zip(tone, back, strict=True))
    assert 10 * math.log10(signal / noise) > 30


def test_encoding_an_odd_number_of_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        ulaw_encode(b"\x00\x00\x00")


def test_a_single_sample_and_an_empty_frame_encode() -> None:
    assert ulaw_encode(_pcm(0)) == bytes([ULAW_SILENCE])
    assert alaw_encode(b"") == b""


def test_silence_passes_between_the_laws_as_silence() -> None:
    assert ULAW_TO_ALAW[ULAW_SILENCE] == ALAW_SILENCE
    assert ULAW_TO_ALAW[0x7F] == 0x55
    assert _decoded(ulaw_decode, ALAW_TO_ULAW[ALAW_SILENCE]) == 8  # A-law has no exact zero


def test_transcoding_keeps_the_sign_of_every_code() -> None:
    assert all(ULAW_TO_ALAW[c] & 0x80 == c & 0x80 for c in range(256))
    assert all(ALAW_TO_ULAW[c] & 0x80 == c & 0x80 for c in range(256))


@pytest.mark.parametrize(
    ("table", "source", "target"),
    [(ULAW_TO_ALAW, ulaw_decode, alaw_decode), (ALAW_TO_ULAW, alaw_decode, ulaw_decode)],
)
def test_transcoding_picks_one_of_the_two_codes_of_the_other_law_around_the_level(
    table: bytes, source: Codec, target: Codec
) -> None:
    for code in range(256):
        value = _decoded(source, code)
        chosen = _decoded(target, table[code])
        low, high = sorted((value, chosen))
        between = [t for t in range(256) if low < _decoded(target, t) < high]
        assert between == [], hex(code)


def test_a_code_converted_there_and_back_is_unchanged_wherever_the_conversion_is_one_to_one() -> (
    None
):
    for there, back in ((ULAW_TO_ALAW, ALAW_TO_ULAW), (ALAW_TO_ULAW, ULAW_TO_ALAW)):
        for code in range(256):
            if there.count(there[code]) == 1:
                assert back[there[code]] == code, hex(code)


def test_repeated_transcoding_loses_nothing_after_the_first_round_trip() -> None:
    once = ALL_CODES.translate(ULAW_TO_ALAW).translate(ALAW_TO_ULAW)
    assert once.translate(ULAW_TO_ALAW).translate(ALAW_TO_ULAW) == once
    assert sum(a == b for a, b in zip(once, ALL_CODES, strict=True)) == 240


def test_transcoding_a_payload_matches_decoding_and_reencoding_it() -> None:
    payload = bytes(range(0x80, 0x100))
    assert payload.translate(ULAW_TO_ALAW) == alaw_encode(ulaw_decode(payload))

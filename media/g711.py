"""G.711 μ-law and A-law (ITU-T G.711, bit-exact with the G.191 reference coder) between
signed 16-bit little-endian PCM and one byte per sample, plus the byte-to-byte tables a bridge
uses to pass a call between a μ-law leg and an A-law leg without decoding.

Everything is table-driven; the tables are built once at import (about 35 ms). Decoding is two
`bytes.translate` calls and a slice interleave (about 2.5 µs per 20 ms frame of 160 samples);
encoding is one C-level gather through a 64 KiB table indexed by the raw 16-bit sample
(`operator.itemgetter`, about 11 µs per frame; a generator over the samples costs about 20 µs).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from operator import itemgetter

__all__ = [
    "ALAW_SILENCE",
    "ALAW_TO_ULAW",
    "ULAW_SILENCE",
    "ULAW_TO_ALAW",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def _ulaw_compress(sample: int) -> int:
    """One 16-bit sample to μ-law, as G.191 `ulaw_compress` does (one's complement negatives)."""
    magnitude = ((~sample if sample < 0 else sample) >> 2) + 33
    magnitude = min(magnitude, 0x1FFF)
    segment = 1
    rest = magnitude >> 6
    while rest:
        segment += 1
        rest >>= 1
    code = ((8 - segment) << 4) | (0x0F - ((magnitude >> segment) & 0x0F))
    return code | 0x80 if sample >= 0 else code


def _ulaw_expand(code: int) -> int:
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    step = 4 << (exponent + 1)
    value = (0x80 << exponent) + step * (inverted & 0x0F) + step // 2 - 4 * 33
    return value if code >= 0x80 else -value


def _alaw_compress(sample: int) -> int:
    """One 16-bit sample to A-law, as G.191 `alaw_compress` does (one's complement negatives)."""
    magnitude = (~sample if sample < 0 else sample) >> 4
    if magnitude > 15:
        exponent = 1
        while magnitude > 31:
            magnitude >>= 1
            exponent += 1
        magnitude = magnitude - 16 + (exponent << 4)
    if sample >= 0:
        magnitude |= 0x80
    return magnitude ^ 0x55


def _alaw_expand(code: int) -> int:
    toggled = (code ^ 0x55) & 0x7F
    exponent = toggled >> 4
    mantissa = toggled & 0x0F
    if exponent > 0:
        mantissa += 16
    value = (mantissa << 4) + 8
    if exponent > 1:
        value <<= exponent - 1
    return value if code >= 0x80 else -value


def _encode_table(compress: Callable[[int], int], shift: int) -> bytes:
    """Indexed by the sample as an unsigned 16-bit number. Both coders look only at
    `sample >> shift`, so each code is computed once and repeated `1 << shift` times."""
    reduced = 1 << (16 - shift)
    half = reduced // 2
    coarse = bytes(compress((i - reduced if i >= half else i) << shift) for i in range(reduced))
    table = bytearray(1 << 16)
    width = 1 << shift
    for offset in range(width):
        table[offset::width] = coarse
    return bytes(table)


def _decode_tables(expand: Callable[[int], int]) -> tuple[bytes, bytes]:
    """Low and high byte of each code's s16le sample, for two `translate` calls."""
    values = [expand(code) & 0xFFFF for code in range(256)]
    return bytes(v & 0xFF for v in values), bytes(v >> 8 for v in values)


_ULAW_ENCODE = _encode_table(_ulaw_compress, 2)
_ALAW_ENCODE = _encode_table(_alaw_compress, 4)
_ULAW_DECODE_LOW, _ULAW_DECODE_HIGH = _decode_tables(_ulaw_expand)
_ALAW_DECODE_LOW, _ALAW_DECODE_HIGH = _decode_tables(_alaw_expand)


def _transcode_table(expand: Callable[[int], int], encode_table: bytes) -> bytes:
    """Decode then encode, keeping the sign: the negative zero of μ-law (0x7F) stays negative."""
    table = bytearray(256)
    for code in range(256):
        positive = encode_table[expand(code | 0x80) & 0xFFFF]
        table[code] = positive if code & 0x80 else positive & 0x7F
    return bytes(table)


ULAW_TO_ALAW: bytes = _transcode_table(_ulaw_expand, _ALAW_ENCODE)
"""`ulaw_payload.translate(ULAW_TO_ALAW)` is the same audio as A-law."""
ALAW_TO_ULAW: bytes = _transcode_table(_alaw_expand, _ULAW_ENCODE)
"""`alaw_payload.translate(ALAW_TO_ULAW)` is the same audio as μ-law."""


def _samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise ValueError("s16le PCM must have an even number of bytes")
    samples = array("H", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _encode(pcm: bytes, table: bytes) -> bytes:
    samples = _samples(pcm)
    if len(samples) < 2:
        # itemgetter of one index returns a bare item, not a tuple.
        return bytes(table[s] for s in samples)
    # One C-level gather: measured twice as fast as map() or a generator over the samples.
    return bytes(itemgetter(*samples)(table))


def _decode(data: bytes, low: bytes, high: bytes) -> bytes:
    pcm = bytearray(2 * len(data))
    pcm[0::2] = data.translate(low)
    pcm[1::2] = data.translate(high)
    return bytes(pcm)


def ulaw_encode(pcm: bytes) -> bytes:
    return _encode(pcm, _ULAW_ENCODE)


def ulaw_decode(data: bytes) -> bytes:
    return _decode(data, _ULAW_DECODE_LOW, _ULAW_DECODE_HIGH)


def alaw_encode(pcm: bytes) -> bytes:
    return _encode(pcm, _ALAW_ENCODE)


def alaw_decode(data: bytes) -> bytes:
    return _decode(data, _ALAW_DECODE_LOW, _ALAW_DECODE_HIGH)

"""Audio files made in the tests: PCM WAV with the stdlib `wave` module, μ-law WAV by hand
(`wave` writes PCM only), MP3, FLAC and Ogg with PyAV's encoders. Nothing is downloaded."""

from __future__ import annotations

import io
import math
import struct
import wave
from array import array

import av


def sine_samples(rate: int, frames: int, *, freq: float = 1000.0, amp: float = 0.5) -> list[int]:
    return [round(amp * 32767 * math.sin(2 * math.pi * freq * i / rate)) for i in range(frames)]


def sine_wav(
    rate: int,
    channels: int,
    seconds: float,
    *,
    sampwidth: int = 2,
    freq: float = 1000.0,
) -> bytes:
    """A PCM WAV of a sine, the same on every channel."""
    frames = round(rate * seconds)
    out = bytearray()
    for s in sine_samples(rate, frames, freq=freq):
        if sampwidth == 1:
            one = bytes([(s >> 8) + 128])  # 8-bit WAV is unsigned
        elif sampwidth == 2:
            one = struct.pack("<h", s)
        else:
            one = struct.pack("<i", s << 16)[4 - sampwidth :]
        out += one * channels
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(bytes(out))
    return buf.getvalue()


def _ulaw(sample: int) -> int:
    """G.711 μ-law, as in the ITU reference encoder."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent, mask = 7, 0x4000
    while exponent > 0 and not magnitude & mask:
        exponent, mask = exponent - 1, mask >> 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_wav(rate: int, seconds: float, *, freq: float = 1000.0) -> bytes:
    """A mono μ-law WAV (format tag 7) with its fmt, fact and data chunks written by hand.
    With a whole number of cycles a second, one second is encoded and repeated: long files are
    cheap."""
    frames = round(rate * seconds)
    second = bytes(_ulaw(s) for s in sine_samples(rate, min(frames, rate), freq=freq))
    data = (second * (frames // rate + 1))[:frames]
    fmt = struct.pack("<HHIIHHH", 7, 1, rate, rate, 1, 8, 0)
    chunks = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<II", 4, len(data))
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def encoded(
    container: str, codec: str, rate: int, seconds: float, *, layout: str = "mono"
) -> bytes:
    """A 1 kHz sine encoded with PyAV, e.g. ("mp3", "mp3"), ("flac", "flac"), ("ogg", "opus")."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        channels = 2 if layout == "stereo" else 1
        total = round(rate * seconds)
        pcm = array("h")
        for s in sine_samples(rate, total):
            pcm.extend([s] * channels)
        step = 960
        for start in range(0, total, step):
            count = min(step, total - start)
            frame = av.AudioFrame(format="s16", layout=layout, samples=count)
            frame.planes[0].update(pcm[start * channels : (start + count) * channels].tobytes())
            frame.rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()

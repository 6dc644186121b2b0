"""Test tones and how to tell them apart: sine PCM, WAV files for Chromium's fake microphone,
pcap files of RTP for SIPp's `play_pcap_audio`, and frequency checks on what came back
(the strongest frequency, and the share of the energy near a given one).

Everything is signed 16-bit little-endian mono PCM ("s16le") unless a name says otherwise, and
nothing here needs numpy: the spectrum is a small radix-2 FFT, the single-frequency check a
Goertzel filter, both fast enough for the few seconds of audio a test looks at.

Chromium's fake microphone (`--use-file-for-fake-audio-capture=<wav>`), as measured with
Chromium 156 headless on Linux: the capture runs at 44.1 kHz stereo whatever the file, which
Chromium resamples; mono or stereo PCM of 8, 16 or 32 bits at 8, 16, 22.05, 44.1, 48 and 96 kHz
all play, while 24-bit PCM and μ-law WAVs give silence without any error. `write_tone_wav`
writes 16-bit mono at 48 kHz. The file loops for as long as the capture runs, seamlessly when it
holds a whole number of cycles (1 s of 440 Hz, say). With `%noloop` after the path it plays
once, after which its last buffer (about 10 ms) repeats forever rather than going silent: a
file meant to end in silence must itself end with silence.
"""

from __future__ import annotations

import cmath
import math
import struct
import sys
import wave
from array import array
from collections.abc import Iterable, Sequence
from os import PathLike

from media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from media.rtp import RtpPacket

__all__ = [
    "CODECS",
    "decode_rtp_payloads",
    "dominant_frequency",
    "hears",
    "tone_pcm",
    "tone_power",
    "write_rtp_pcap",
    "write_tone_pcap",
    "write_tone_wav",
    "write_wav",
]

G711_RATE = 8000
CODECS = {"PCMU": 0, "PCMA": 8}
"""The G.711 codecs by SDP name, with their static RTP payload types."""

_ENCODERS = {0: ulaw_encode, 8: alaw_encode}
_DECODERS = {0: ulaw_decode, 8: alaw_decode}

# pcap (https://wiki.wireshark.org/Development/LibpcapFileFormat): microsecond timestamps,
# written little-endian, link type 1 (Ethernet), which is what SIPp's pcap reader expects.
_PCAP_MAGIC = 0xA1B2C3D4
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
_LINKTYPE_ETHERNET = 1
_ETHERNET = struct.Struct("!6s6sH")
_ETHERTYPE_IPV4 = 0x0800
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
# Any fixed instant will do; a fixed one keeps the files byte-for-byte reproducible.
_PCAP_EPOCH = 1_700_000_000

StrPath = str | PathLike[str]


# --- making tones ----------------------------------------------------------------------------


def tone_pcm(freq_hz: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> bytes:
    """A sine of `freq_hz` at `amplitude` of full scale, as s16le mono PCM."""
    if not 0 <= amplitude <= 1:
        raise ValueError("amplitude is a fraction of full scale, 0 to 1")
    frames = round(rate * seconds)
    step = 2 * math.pi * freq_hz / rate
    peak = amplitude * 32767
    samples = array("h", (round(peak * math.sin(step * i)) for i in range(frames)))
    return _to_le(samples)


def write_wav(path: StrPath, pcm: bytes, rate: int) -> None:
    """A mono 16-bit PCM WAV file of s16le `pcm`."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def write_tone_wav(path: StrPath, freq_hz: float, seconds: float, rate: int = 48000) -> None:
    """A WAV of a sine for Chromium's fake microphone (16-bit mono; 48 kHz needs no resampling)."""
    write_wav(path, tone_pcm(freq_hz, seconds, rate), rate)


def write_rtp_pcap(
    path: StrPath,
    payloads: Sequence[bytes],
    payload_type: int = 0,
    src: tuple[str, int] = ("127.0.0.1", 6000),
    dst: tuple[str, int] = ("127.0.0.1", 6002),
    ptime_ms: int = 20,
) -> None:
    """A libpcap file (Ethernet/IPv4/UDP) of one RTP stream, one packet per `ptime_ms`.

    SIPp's `play_pcap_audio` replays the UDP payloads (RTP header included) at the capture's
    pace to the media address of the call, so the addresses here only need to be well formed.
    """
    samples_per_packet = G711_RATE * ptime_ms // 1000
    out = bytearray(_PCAP_HEADER.pack(_PCAP_MAGIC, 2, 4, 0, 0, 65535, _LINKTYPE_ETHERNET))
    for index, payload in enumerate(payloads):
        rtp = RtpPacket(
            payload_type=payload_type,
            sequence=(1000 + index) % 65536,
            timestamp=(160_000 + index * samples_per_packet) % (1 << 32),
            ssrc=0x5B0A_7D01,
            payload=payload,
            marker=index == 0,
        )
        frame = _ethernet_ipv4_udp(src, dst, bytes(rtp), ident=index)
        offset_us = index * ptime_ms * 1000
        seconds, micros = divmod(offset_us, 1_000_000)
        out += _PCAP_RECORD.pack(_PCAP_EPOCH + seconds, micros, len(frame), len(frame))
        out += frame
    with open(path, "wb") as f:
        f.write(out)


def write_tone_pcap(path: StrPath, freq_hz: float, seconds: float, codec: str = "PCMU") -> None:
    """A pcap of a G.711 RTP stream (20 ms packets) carrying a sine of `freq_hz`."""
    payload_type = CODECS[codec]
    encoded = _ENCODERS[payload_type](tone_pcm(freq_hz, seconds, G711_RATE))
    frame = G711_RATE // 50
    payloads = [encoded[i : i + frame] for i in range(0, len(encoded) - frame + 1, frame)]
    write_rtp_pcap(path, payloads, payload_type)


def _ethernet_ipv4_udp(
    src: tuple[str, int], dst: tuple[str, int], payload: bytes, *, ident: int
) -> bytes:
    src_ip, dst_ip = _ipv4(src[0]), _ipv4(dst[0])
    udp_length = _UDP.size + len(payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 17, udp_length)
    udp_checksum = _checksum(pseudo + _UDP.pack(src[1], dst[1], udp_length, 0) + payload) or 0xFFFF
    udp = _UDP.pack(src[1], dst[1], udp_length, udp_checksum) + payload
    total = _IPV4.size + len(udp)
    ip_header = _IPV4.pack(0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 17, 0, src_ip, dst_ip)
    ip_header = ip_header[:10] + struct.pack("!H", _checksum(ip_header)) + ip_header[12:]
    ethernet = _ETHERNET.pack(
        b"\x02\x00\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00\x01", _ETHERTYPE_IPV4
    )
    return ethernet + ip_header + udp


def _ipv4(address: str) -> bytes:
    parts = [int(p) for p in address.split(".")]
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"not an IPv4 address: {address!r}")
    return bytes(parts)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --- hearing tones ---------------------------------------------------------------------------


def decode_rtp_payloads(datagrams: Iterable[bytes]) -> bytes:
    """The G.711 audio (PCMU or PCMA) of RTP datagrams as s16le, in sequence-number order.

    Other payload types (telephone-event, comfort noise) and anything that is not RTP are left
    out; a repeated sequence number counts once. Streams (SSRCs) follow one another in the order
    they first appeared.
    """
    streams: dict[int, dict[int, RtpPacket]] = {}
    last_seq: dict[int, int] = {}
    for data in datagrams:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            continue
        if packet.payload_type not in _DECODERS:
            continue
        # Unwrap the 16-bit sequence number against the last one seen from the same source.
        previous = last_seq.get(packet.ssrc)
        if previous is None:
            extended = packet.sequence
        else:
            delta = (packet.sequence - previous) % 65536
            extended = previous + (delta - 65536 if delta >= 32768 else delta)
        last_seq[packet.ssrc] = extended
        streams.setdefault(packet.ssrc, {}).setdefault(extended, packet)
    pcm = bytearray()
    for packets in streams.values():
        for seq in sorted(packets):
            packet = packets[seq]
            pcm += _DECODERS[packet.payload_type](packet.payload)
    return bytes(pcm)


def dominant_frequency(pcm_s16le: bytes, rate: int) -> float:
    """The strongest frequency (Hz) in the audio, to about a hertz; 0.0 for silence."""
    samples = _from_le(pcm_s16le)
    if len(samples) < 16:
        return 0.0
    # A block of about half a second (a power of two), Hann-windowed, with the power spectra of
    # up to four blocks spread over the audio averaged (Welch's method).
    size = 1 << min(max(4, (len(samples)).bit_length() - 1), max(4, (rate // 2).bit_length()))
    window = _hann(size)
    count = min(4, len(samples) // size)
    starts = [round(i * (len(samples) - size) / max(1, count - 1)) for i in range(count)]
    power = [0.0] * (size // 2 + 1)
    for start in starts:
        block = [s * w for s, w in zip(samples[start : start + size], window, strict=True)]
        spectrum = _fft(block)
        for k in range(len(power)):
            power[k] += abs(spectrum[k]) ** 2
    # Bins 0 and 1 are DC and its leakage through the window.
    peak = max(range(2, len(power) - 1), key=power.__getitem__)
    if power[peak] <= 0:
        return 0.0
    # The log of a Hann-windowed peak is nearly a parabola: its vertex is the true frequency.
    a, b, c = (math.log(max(power[peak + i], 1e-30)) for i in (-1, 0, 1))
    bend = a - 2 * b + c
    offset = 0.5 * (a - c) / bend if bend < 0 else 0.0
    return (peak + offset) * rate / size


def tone_power(pcm: bytes, rate: int, freq: float) -> float:
    """The share (0..1) of the audio's energy within about ±10 Hz of `freq` (Goertzel).

    The audio is cut into Hann-windowed blocks of 50 ms; the tone's power in each is measured
    with a Goertzel filter and scaled so that a pure sine at `freq` scores 1.0, noise or another
    tone about 0, and a tone at `freq` over an equal energy of something else about 0.5.
    """
    samples = _from_le(pcm)
    size = max(16, rate // 20)
    window = _hann(size)
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    tone = energy = 0.0
    for start in range(0, len(samples) - size + 1, size):
        s1 = s2 = 0.0
        block_energy = 0.0
        for x, w in zip(samples[start : start + size], window, strict=True):
            y = x * w
            block_energy += y * y
            s1, s2 = y + coeff * s1 - s2, s1
        tone += s1 * s1 + s2 * s2 - coeff * s1 * s2
        energy += block_energy
    if energy <= 0:
        return 0.0
    # A sine of amplitude A gives |X|^2 = (A * sum(w) / 2)^2 and sum((w*x)^2) = A^2 sum(w^2) / 2.
    scale = sum(window) ** 2 / (2 * sum(w * w for w in window))
    return min(1.0, tone / (scale * energy))


def hears(pcm: bytes, rate: int, freq: float, *, min_share: float = 0.5) -> bool:
    """Whether a tone of `freq` carries at least `min_share` of the audio's energy."""
    return tone_power(pcm, rate, freq) >= min_share


def _hann(size: int) -> list[float]:
    return [0.5 - 0.5 * math.cos(2 * math.pi * i / size) for i in range(size)]


def _fft(values: Sequence[float]) -> list[complex]:
    """Iterative radix-2 FFT; `len(values)` is a power of two, at least 2."""
    n = len(values)
    bits = n.bit_length() - 1
    out = [complex(values[int(f"{i:0{bits}b}"[::-1], 2)]) for i in range(n)]
    span = 2
    while span <= n:
        half = span // 2
        twiddles = [cmath.exp(-2j * math.pi * k / span) for k in range(half)]
        for start in range(0, n, span):
            for k in range(half):
                even = out[start + k]
                odd = out[start + k + half] * twiddles[k]
                out[start + k] = even + odd
                out[start + k + half] = even - odd
        span *= 2
    return out


def _from_le(pcm: bytes) -> array[int]:
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_le(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()

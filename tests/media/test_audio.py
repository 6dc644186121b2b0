"""Prompt audio: WAV (PCM, μ-law, A-law, any rate and channel count) and MP3 in, 8 kHz mono
16-bit PCM out, with the right length and still the same tone; everything else refused with a
reason; text-to-speech with espeak-ng; WAV back out for download."""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
import wave

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.audio import (
    AudioError,
    PcmAudio,
    UnknownVoice,
    decode_to_pcm8k,
    render_tts,
    to_wav,
)
from tests.media import encoded, sine_wav, ulaw_wav

RATE = 8000


def _samples(pcm: PcmAudio) -> list[int]:
    return list(struct.unpack(f"<{len(pcm.samples) // 2}h", pcm.samples))


def _middle(samples: list[int]) -> list[int]:
    """Drop the first and last 50 ms, where resampler filters and codec priming ring."""
    edge = RATE // 20
    return samples[edge:-edge]


def _zero_crossings_per_second(samples: list[int]) -> float:
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings * RATE / len(samples)


def _goertzel(samples: list[int], freq: float) -> float:
    """Power of one frequency bin."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def _assert_is_1khz_sine(pcm: PcmAudio) -> None:
    middle = _middle(_samples(pcm))
    # A 1 kHz sine crosses zero 2000 times a second.
    assert _zero_crossings_per_second(middle) == pytest.approx(2000, rel=0.02)
    tone = _goertzel(middle, 1000)
    for other in (250, 500, 1500, 2000, 3000):
        assert tone > 100 * _goertzel(middle, other), other
    # Loudness survives: the source peaks at half scale.
    peak = max(abs(s) for s in middle)
    assert 0.35 * 32767 < peak < 0.65 * 32767


def _assert_8k_mono(pcm: PcmAudio, seconds: float) -> None:
    assert len(pcm.samples) % 2 == 0
    assert pcm.duration_ms == pytest.approx(seconds * 1000, abs=20)
    assert len(pcm.samples) // 2 == pytest.approx(seconds * RATE, abs=20 * RATE // 1000)


@pytest.mark.parametrize(
    ("rate", "channels", "sampwidth", "seconds"),
    [
        (16000, 2, 2, 1.5),
        (8000, 1, 2, 0.75),
        (44100, 1, 1, 1.0),
        (48000, 6, 2, 0.5),
        (22050, 2, 3, 1.2),
        (11025, 1, 4, 0.6),
    ],
)
def test_a_pcm_wav_of_any_rate_and_channel_count_becomes_8k_mono_of_the_same_length_and_tone(
    rate: int, channels: int, sampwidth: int, seconds: float
) -> None:
    pcm = decode_to_pcm8k(sine_wav(rate, channels, seconds, sampwidth=sampwidth))
    _assert_8k_mono(pcm, seconds)
    _assert_is_1khz_sine(pcm)


def test_a_mu_law_wav_is_decoded_like_pcm() -> None:
    pcm = decode_to_pcm8k(ulaw_wav(8000, 1.25))
    _assert_8k_mono(pcm, 1.25)
    _assert_is_1khz_sine(pcm)


def test_an_a_law_wav_at_16k_is_decoded_and_resampled() -> None:
    pcm = decode_to_pcm8k(encoded("wav", "pcm_alaw", 16000, 0.8))
    _assert_8k_mono(pcm, 0.8)
    _assert_is_1khz_sine(pcm)


@pytest.mark.parametrize(
    ("rate", "layout", "seconds"),
    [(44100, "stereo", 2.0), (16000, "mono", 1.0), (8000, "mono", 0.5)],
)
def test_an_mp3_becomes_8k_mono_of_the_same_length_and_tone(
    rate: int, layout: str, seconds: float
) -> None:
    pcm = decode_to_pcm8k(encoded("mp3", "mp3", rate, seconds, layout=layout))
    _assert_8k_mono(pcm, seconds)
    _assert_is_1khz_sine(pcm)


def test_8k_mono_audio_round_trips_through_the_download_wav_unchanged() -> None:
    original = decode_to_pcm8k(sine_wav(8000, 1, 0.5))
    wav = to_wav(original)
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.readframes(w.getnframes()) == original.samples
    assert decode_to_pcm8k(wav) == original


_VALID = sine_wav(16000, 1, 0.2)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, this is not audio at all\n" * 40, "not a WAV or MP3"),
        (bytes(4096), "not a WAV or MP3"),
        (random.Random(7).randbytes(8192), "not a WAV or MP3"),
        (_VALID[:20], "not a WAV or MP3"),
        (_VALID[:44], "length is zero"),
        (sine_wav(8000, 1, 0.0), "length is zero"),
        (b"%PDF-1.7\n" + bytes(2000), "not a WAV or MP3"),
        (_VALID[:34] + b"\x00\x00" + _VALID[36:], "damaged"),
    ],
    ids=[
        "empty",
        "text",
        "zeros",
        "random",
        "truncated-wav-header",
        "wav-header-only",
        "wav-without-samples",
        "pdf",
        "wav-of-0-bit-samples",
    ],
)
def test_data_that_is_not_usable_audio_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(AudioError, match=reason):
        decode_to_pcm8k(data)


@pytest.mark.parametrize(
    ("container", "codec", "named"),
    [("flac", "flac", "FLAC"), ("ogg", "libopus", "Ogg"), ("ogg", "flac", "Ogg")],
)
def test_other_audio_formats_are_refused_by_name(container: str, codec: str, named: str) -> None:
    data = encoded(container, codec, 48000, 0.3)
    with av.open(io.BytesIO(data)) as good:  # the file itself is sound audio
        assert sum(f.samples for f in good.decode(audio=0)) >= 0.3 * 48000
    with pytest.raises(AudioError, match=f"{named} files are not supported: upload WAV or MP3"):
        decode_to_pcm8k(data)


def test_a_wav_holding_mp3_is_refused_for_its_codec() -> None:
    with pytest.raises(AudioError, match="WAV files must hold PCM"):
        decode_to_pcm8k(encoded("wav", "mp3", 16000, 0.3))


def test_audio_longer_than_the_limit_is_refused_and_audio_at_the_limit_is_not() -> None:
    assert decode_to_pcm8k(sine_wav(8000, 1, 2.0), max_seconds=2).duration_ms == 2000
    with pytest.raises(AudioError, match="longer than 2 seconds"):
        decode_to_pcm8k(sine_wav(8000, 1, 2.1), max_seconds=2)
    with pytest.raises(AudioError, match="longer than 2 seconds"):
        decode_to_pcm8k(encoded("mp3", "mp3", 16000, 3.0), max_seconds=2)


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_audio_or_an_audio_error_never_anything_else(data: bytes) -> None:
    try:
        pcm = decode_to_pcm8k(data)
    except AudioError:
        return  # refused, as it should be; any other exception fails the test
    assert pcm.duration_ms > 0


_MP3 = encoded("mp3", "mp3", 16000, 0.3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([_VALID, ulaw_wav(8000, 0.2), _MP3]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=20),
    st.integers(0, 10_000),
)
def test_damaged_wav_and_mp3_files_give_audio_or_an_audio_error(
    original: bytes, changes: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(original[: max(cut, 1)] if cut < len(original) else original)
    for where, value in changes:
        data[where % len(data)] = value
    try:
        pcm = decode_to_pcm8k(bytes(data))
    except AudioError:
        return  # refused, as it should be; any other exception fails the test
    assert len(pcm.samples) % 2 == 0
    assert abs(len(pcm.samples) / 16 - pcm.duration_ms) <= 1


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=4000, max_value=96000),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=5, max_value=150),
)
def test_any_rate_and_channel_count_keeps_its_length(
    rate: int, channels: int, centiseconds: int
) -> None:
    seconds = centiseconds / 100
    pcm = decode_to_pcm8k(sine_wav(rate, channels, seconds, freq=300))
    _assert_8k_mono(pcm, seconds)


# --- text to speech ---------------------------------------------------------------------------


async def test_text_to_speech_says_thanks_for_calling_in_8k_mono() -> None:
    pcm = await render_tts("Thanks for calling")
    assert 300 < pcm.duration_ms < 5000
    assert pcm.duration_ms == pytest.approx(len(pcm.samples) / 16, abs=1)
    # Speech, not silence.
    assert max(abs(s) for s in _samples(pcm)) > 1000


async def test_text_is_spoken_not_read_as_command_line_options() -> None:
    spoken = await render_tts("--help -v xx --version")
    assert spoken.duration_ms > 500


async def test_longer_text_takes_longer_to_say() -> None:
    short = await render_tts("Hello.")
    long = await render_tts("Hello. Your call is important to us. Please stay on the line.")
    assert long.duration_ms > 2 * short.duration_ms


async def test_an_unknown_voice_is_refused_by_name() -> None:
    with pytest.raises(UnknownVoice, match="no voice named 'xx-nowhere'"):
        await render_tts("Hello", voice="xx-nowhere")
    with pytest.raises(UnknownVoice):
        await render_tts("Hello", voice="--stdin")


async def test_text_to_speech_without_espeak_ng_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AudioError, match="espeak-ng is not installed"):
        await render_tts("Hello")

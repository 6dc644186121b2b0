"""Audio for prompts: uploads (WAV, MP3) and text-to-speech turned into what a call plays,
signed 16-bit little-endian mono PCM at 8 kHz, and back into WAV for download.

Uploads are untrusted: FFmpeg (through PyAV) may only use its WAV and MP3 demuxers, so no other
demuxer ever parses the bytes, and decoding stops as soon as the audio passes its length limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import wave
from dataclasses import dataclass

import av
import av.error

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
MAX_SECONDS = 600
TTS_TIMEOUT = 20.0

_CONTAINERS = ("wav", "mp3")
_MP3_CODECS = frozenset({"mp3", "mp3float"})
# Only for a clearer message: these are refused by the demuxer whitelist whatever we call them.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"OggS", "Ogg"),
    (0, b"fLaC", "FLAC"),
    (4, b"ftyp", "MP4/M4A"),
    (0, b"FORM", "AIFF"),
    (0, b"#!AMR", "AMR"),
    (0, b"\x1a\x45\xdf\xa3", "WebM/Matroska"),
    (0, b"\x30\x26\xb2\x75", "WMA/ASF"),
)


class AudioError(Exception):
    """Audio we cannot use; the message says why, in words fit for the person who sent it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownVoice(AudioError):
    pass


@dataclass(frozen=True, slots=True)
class PcmAudio:
    samples: bytes
    """s16le, mono, 8 kHz."""
    duration_ms: int


def _duration_ms(sample_count: int) -> int:
    return (sample_count * 1000 + SAMPLE_RATE // 2) // SAMPLE_RATE


def _named_format(data: bytes) -> str | None:
    for offset, magic, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


def _open(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(
            io.BytesIO(data),
            mode="r",
            container_options={"format_whitelist": ",".join(_CONTAINERS)},
        )
    except av.error.ArgumentError:
        # FFmpeg recognised the data but the format is not on the whitelist.
        named = _named_format(data)
        what = f"{named} files are" if named else "This audio format is"
        raise AudioError(f"{what} not supported: upload WAV or MP3.") from None
    except (av.error.FFmpegError, ValueError, OSError):
        named = _named_format(data)
        if named:
            raise AudioError(f"{named} files are not supported: upload WAV or MP3.") from None
        raise AudioError("This is not a WAV or MP3 file, or the file is damaged.") from None


def _check_codec(container_format: str, codec: str) -> None:
    if container_format == "wav" and not codec.startswith("pcm_"):
        raise AudioError(f"WAV files must hold PCM, μ-law or A-law audio; this one holds {codec}.")
    if container_format == "mp3" and codec not in _MP3_CODECS:
        raise AudioError(f"This MP3 file holds {codec} audio, not MP3.")


def decode_to_pcm8k(data: bytes, *, max_seconds: int = MAX_SECONDS) -> PcmAudio:
    """WAV (PCM, μ-law or A-law at any rate and channel count) or MP3, as 8 kHz mono PCM.
    Raises AudioError for anything else, for damaged data, and for audio that is empty or
    longer than `max_seconds`."""
    if not data:
        raise AudioError("The file is empty.")
    container = _open(data)
    with container:
        name = container.format.name
        if name not in _CONTAINERS:
            raise AudioError(f"{name} files are not supported: upload WAV or MP3.")
        if not container.streams.audio:
            raise AudioError("The file holds no audio.")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # e.g. a WAV header naming 0 bits a sample
            raise AudioError("The audio could not be decoded: the file is damaged.")
        _check_codec(name, stream.codec_context.name)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        limit = max_seconds * SAMPLE_RATE
        chunks: list[bytes] = []
        count = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    count += out.samples
                    if count > limit:
                        raise AudioError(f"The audio is longer than {max_seconds} seconds.")
                    # The plane may be padded past the last sample.
                    chunks.append(bytes(out.planes[0])[: out.samples * SAMPLE_WIDTH])
            for out in resampler.resample(None):
                count += out.samples
                chunks.append(bytes(out.planes[0])[: out.samples * SAMPLE_WIDTH])
        except (av.error.FFmpegError, ValueError):
            raise AudioError("The audio could not be decoded: the file is damaged.") from None
    if count > limit:
        raise AudioError(f"The audio is longer than {max_seconds} seconds.")
    duration = _duration_ms(count)
    if duration == 0:
        raise AudioError("The file holds no audio: its length is zero.")
    return PcmAudio(samples=b"".join(chunks), duration_ms=duration)


async def render_tts(
    text: str,
    *,
    voice: str = "en-us",
    max_seconds: int = MAX_SECONDS,
) -> PcmAudio:
    """Speak `text` with espeak-ng. The text goes in on stdin, never on the command line.
    espeak-ng gets TTS_TIMEOUT seconds; it is killed then, or when the caller is cancelled."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise AudioError("Text-to-speech is not available: espeak-ng is not installed.")
    if not text.strip():
        raise AudioError("There is no text to speak.")
    # `--` is not understood by espeak-ng, so a voice that looks like an option is refused.
    if not voice or voice.startswith("-"):
        raise UnknownVoice(f"There is no voice named '{voice}'.")
    proc = await asyncio.create_subprocess_exec(
        espeak,
        "--stdout",
        "-v",
        voice,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TTS_TIMEOUT):
            wav, err = await proc.communicate(text.encode())
    except TimeoutError:
        raise AudioError(f"Text-to-speech took longer than {TTS_TIMEOUT:g} seconds.") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        if "voice does not exist" in message:
            raise UnknownVoice(f"There is no voice named '{voice}'.")
        raise AudioError(f"Text-to-speech failed: {message or f'exit status {proc.returncode}'}")
    return await asyncio.to_thread(decode_to_pcm8k, wav, max_seconds=max_seconds)


def to_wav(pcm: PcmAudio) -> bytes:
    """The audio as a WAV file: 8 kHz, mono, 16-bit."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.samples)
    return out.getvalue()

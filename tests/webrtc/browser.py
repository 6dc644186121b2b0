"""Headless Chromium as the agent's browser in tests, driven with Playwright.

The browser is the distribution's Chromium (`/usr/bin/chromium`), never a Playwright download.
Its microphone is a WAV file (`--use-file-for-fake-audio-capture`, looped for as long as the
capture runs; see `tests.media.tones` for the formats it takes) and what the page receives over
WebRTC is measured inside the page with WebAudio, so a test can say "the agent hears 1 kHz".

What Chromium (156, headless) needs for that:
- remote WebRTC audio reaches WebAudio only while a media element plays the stream (muted is
  enough); without one the analyser hears silence. `remote_spectrum` attaches one itself;
- getUserMedia's default processing (echo cancellation, noise suppression, gain control) fades
  a steady tone by about 15 dB within 3 s: a page that measures levels turns all three off.
  The tone's share of what is left stays high either way;
- WebRTC leaves the loopback interface out of ICE unless `--allow-loopback-in-peer-connection`
  is given: on a machine with only `lo` a peer connection never connects;
- `--no-sandbox` when running as root. Playwright adds `--mute-audio` in headless mode, which
  silences the speakers only, not what WebAudio analyses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

__all__ = [
    "CHROMIUM",
    "RemoteSpectrum",
    "chromium_args",
    "chromium_page",
    "remote_spectrum",
    "remote_tone_frequency",
    "remote_tone_power",
    "requires_chromium",
    "serve_pages",
]

CHROMIUM = Path("/usr/bin/chromium")

requires_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed (scripts/install)"
)


def chromium_args(fake_audio_wav: Path, *, loop_audio: bool = True) -> list[str]:
    """The command line for a headless agent browser whose microphone plays `fake_audio_wav`."""
    capture = str(fake_audio_wav.resolve()) + ("" if loop_audio else "%noloop")
    return [
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={capture}",
        "--autoplay-policy=no-user-gesture-required",
        # Without it ICE leaves out the loopback interface, where the media node listens in tests,
        # and a machine with nothing but lo cannot connect at all.
        "--allow-loopback-in-peer-connection",
    ]


@contextlib.asynccontextmanager
async def chromium_page(
    fake_audio_wav: Path, *, loop_audio: bool = True, extra_args: Sequence[str] = ()
) -> AsyncIterator[Page]:
    """A page in a fresh headless Chromium (microphone allowed); everything is closed after.

    With `loop_audio=False` the WAV plays once; it should end with silence (see
    `tests.media.tones`: Chromium repeats the file's last buffer after the end).
    """
    if not fake_audio_wav.is_file():
        raise FileNotFoundError(fake_audio_wav)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            timeout=30_000,
            # Playwright's own headless switch is replaced by the explicit --headless=new.
            ignore_default_args=["--headless"],
            args=[*chromium_args(fake_audio_wav, loop_audio=loop_audio), *extra_args],
        )
        try:
            context = await browser.new_context(permissions=["microphone"])
            page = await context.new_page()
            yield page
        finally:
            await browser.close()


# --- what the page hears ---------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteSpectrum:
    """The power spectrum of a MediaStream in the page, summed over the listening time."""

    sample_rate: float
    fft_size: int
    power: tuple[float, ...]
    """Linear power per bin, bin k being k * sample_rate / fft_size Hz."""

    @property
    def bin_hz(self) -> float:
        return self.sample_rate / self.fft_size

    @property
    def silent(self) -> bool:
        return not any(p > 0 for p in self.power[2:])

    def dominant_frequency(self) -> float:
        """The strongest frequency (Hz), between bins by a parabola through the peak's log."""
        if self.silent:
            return 0.0
        # Bins 0 and 1 hold DC and its leakage through the analyser's window.
        peak = max(range(2, len(self.power) - 1), key=self.power.__getitem__)
        a, b, c = (_log(self.power[peak + i]) for i in (-1, 0, 1))
        bend = a - 2 * b + c
        offset = 0.5 * (a - c) / bend if bend < 0 else 0.0
        return (peak + offset) * self.bin_hz

    def share_near(self, freq: float, tolerance_hz: float = 30.0) -> float:
        """The share (0..1) of the energy in bins within `tolerance_hz` of `freq`."""
        total = sum(self.power[2:])
        if total <= 0:
            return 0.0
        near = sum(
            p
            for k, p in enumerate(self.power)
            if k >= 2 and abs(k * self.bin_hz - freq) <= tolerance_hz
        )
        return near / total


def _log(value: float) -> float:
    return math.log(max(value, 1e-30))


# Chrome hands remote WebRTC audio to WebAudio only while the stream also plays in a media
# element, so a muted <audio> plays it for as long as the analyser listens. The AnalyserNode's
# spectra (Blackman-windowed, smoothing off) are read every 50 ms and their power summed.
_SPECTRUM_JS = """
async ([seconds, fftSize]) => {
  const stream = (%s);
  if (!(stream instanceof MediaStream)) {
    throw new Error("not a MediaStream: " + %s);
  }
  const sink = document.createElement("audio");
  sink.muted = true;
  sink.autoplay = true;
  sink.srcObject = stream;
  document.body.appendChild(sink);
  const context = new AudioContext();
  try {
    await sink.play().catch(() => {});
    await context.resume();
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = fftSize;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    const db = new Float32Array(analyser.frequencyBinCount);
    const power = new Float64Array(analyser.frequencyBinCount);
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      analyser.getFloatFrequencyData(db);
      for (let k = 0; k < db.length; k++) {
        if (Number.isFinite(db[k])) power[k] += Math.pow(10, db[k] / 10);
      }
    }
    source.disconnect();
    return {sampleRate: context.sampleRate, fftSize, power: Array.from(power)};
  } finally {
    sink.srcObject = null;
    sink.remove();
    await context.close();
  }
}
"""


async def remote_spectrum(
    page: Page,
    js_stream_expr: str = "window.softphone.remoteStream",
    seconds: float = 1.0,
    *,
    fft_size: int = 8192,
) -> RemoteSpectrum:
    """Listen to the MediaStream `js_stream_expr` evaluates to in the page for `seconds`."""
    script = _SPECTRUM_JS % (js_stream_expr, json.dumps(js_stream_expr))
    result = await page.evaluate(script, [seconds, fft_size])
    return RemoteSpectrum(
        sample_rate=float(result["sampleRate"]),
        fft_size=int(result["fftSize"]),
        power=tuple(float(p) for p in result["power"]),
    )


async def remote_tone_frequency(
    page: Page, js_stream_expr: str = "window.softphone.remoteStream", seconds: float = 1.0
) -> float:
    """The strongest frequency (Hz) the page receives on that stream; 0.0 for silence."""
    return (await remote_spectrum(page, js_stream_expr, seconds)).dominant_frequency()


async def remote_tone_power(
    page: Page,
    freq: float,
    js_stream_expr: str = "window.softphone.remoteStream",
    seconds: float = 1.0,
    *,
    tolerance_hz: float = 30.0,
) -> float:
    """The share (0..1) of what the page receives on that stream within `tolerance_hz` of `freq`."""
    spectrum = await remote_spectrum(page, js_stream_expr, seconds)
    return spectrum.share_near(freq, tolerance_hz)


# --- pages for the browser to load -----------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_pages(pages: Mapping[str, str]) -> AsyncIterator[str]:
    """Serve `pages` (path -> HTML) on 127.0.0.1 at a free port; yields the base URL.

    127.0.0.1 counts as a secure origin, so getUserMedia and WebRTC work over plain HTTP.
    """

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode().split("?", 1)[0] if len(parts) > 1 else "/"
            body = pages.get(path)
            status = "200 OK" if body is not None else "404 Not Found"
            data = (body if body is not None else "not found").encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()

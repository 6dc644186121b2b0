"""The audio test harness works on this machine: tones are generated and recognised by
frequency (also through G.711), SIPp plays the RTP pcaps we write, and headless Chromium's fake
microphone reaches a WebRTC peer, where the page's analyser hears it."""

from __future__ import annotations

import array
import asyncio
import os
import random
import re
import shutil
import socket
import struct
import time
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from media.rtp import RtpPacket
from runtime.embedded import free_port
from tests.media.sipp import run_sipp, start_sipp_server
from tests.media.tones import (
    decode_rtp_payloads,
    dominant_frequency,
    hears,
    tone_pcm,
    tone_power,
    write_rtp_pcap,
    write_tone_pcap,
    write_tone_wav,
)
from tests.webrtc.browser import (
    chromium_page,
    remote_tone_frequency,
    remote_tone_power,
    requires_chromium,
    serve_pages,
)

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

requires_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="SIPp is not installed (scripts/install)"
)


def _mix(*parts: bytes) -> bytes:
    total = [sum(samples) for samples in zip(*(array.array("h", p) for p in parts), strict=True)]
    return array.array("h", total).tobytes()


# --- tones -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 48000])
@pytest.mark.parametrize("freq", [440, 1000])
def test_a_generated_tone_is_heard_at_its_frequency_and_no_other(rate: int, freq: int) -> None:
    pcm = tone_pcm(freq, 1.0, rate)

    assert len(pcm) == 2 * rate
    assert dominant_frequency(pcm, rate) == pytest.approx(freq, abs=1)
    assert tone_power(pcm, rate, freq) > 0.99
    assert hears(pcm, rate, freq)
    other = 1000 if freq == 440 else 440
    assert tone_power(pcm, rate, other) < 0.01
    assert not hears(pcm, rate, other)
    assert not hears(pcm, rate, freq + 50)


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
@pytest.mark.parametrize("freq", [440, 1000])
def test_a_tone_survives_g711(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes], freq: int
) -> None:
    pcm = decode(encode(tone_pcm(freq, 1.0)))

    assert dominant_frequency(pcm, 8000) == pytest.approx(freq, abs=1)
    assert tone_power(pcm, 8000, freq) > 0.98


def test_two_tones_share_the_energy_and_silence_has_no_frequency() -> None:
    both = _mix(tone_pcm(440, 1.0, amplitude=0.3), tone_pcm(1000, 1.0, amplitude=0.3))
    assert tone_power(both, 8000, 440) == pytest.approx(0.5, abs=0.05)
    assert tone_power(both, 8000, 1000) == pytest.approx(0.5, abs=0.05)
    # Amplitudes 0.2 and 0.4: the quieter tone has a fifth of the energy.
    quiet_under_loud = _mix(tone_pcm(440, 1.0, amplitude=0.4), tone_pcm(1000, 1.0, amplitude=0.2))
    assert tone_power(quiet_under_loud, 8000, 1000) == pytest.approx(0.2, abs=0.03)
    assert hears(quiet_under_loud, 8000, 1000, min_share=0.15)
    assert not hears(quiet_under_loud, 8000, 1000)
    assert hears(quiet_under_loud, 8000, 440)
    assert dominant_frequency(quiet_under_loud, 8000) == pytest.approx(440, abs=1)

    noise = array.array("h", (random.randint(-8000, 8000) for _ in range(8000))).tobytes()
    assert tone_power(noise, 8000, 1000) < 0.05
    silence = bytes(16000)
    assert dominant_frequency(silence, 8000) == 0.0
    assert tone_power(silence, 8000, 1000) == 0.0


def test_a_tone_wav_is_16_bit_mono_pcm_at_48k(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_tone_wav(path, 1000, 0.5)

    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48000)
        assert w.getcomptype() == "NONE"
        frames = w.readframes(w.getnframes())
    assert len(frames) == 2 * 24000
    assert dominant_frequency(frames, 48000) == pytest.approx(1000, abs=1)


# --- pcap ------------------------------------------------------------------------------------


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _read_pcap(data: bytes) -> list[tuple[float, bytes, bytes, bytes]]:
    """(time, IPv4 header, UDP header, UDP payload) per record, lengths and checksums checked."""
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 1)
    records = []
    offset = 24
    while offset < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, offset)
        offset += 16
        frame = data[offset : offset + incl]
        offset += incl
        assert incl == orig == len(frame)
        assert frame[12:14] == b"\x08\x00"  # IPv4 in Ethernet II
        ip = frame[14:]
        assert ip[0] == 0x45  # version 4, 20-byte header
        assert ip[9] == 17  # UDP
        assert struct.unpack_from("!H", ip, 2)[0] == len(ip)
        assert _ones_complement_sum(ip[:20]) == 0xFFFF
        udp = ip[20:]
        assert struct.unpack_from("!H", udp, 4)[0] == len(udp)
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
        assert _ones_complement_sum(pseudo + udp) == 0xFFFF
        records.append((sec + usec / 1e6, ip[:20], udp[:8], udp[8:]))
    return records


@pytest.mark.parametrize(("codec", "payload_type"), [("PCMU", 0), ("PCMA", 8)])
def test_a_tone_pcap_has_one_rtp_packet_every_20_ms(
    tmp_path: Path, codec: str, payload_type: int
) -> None:
    path = tmp_path / "tone.pcap"
    write_tone_pcap(path, 1000, 2.0, codec)

    records = _read_pcap(path.read_bytes())
    assert len(records) == 100
    start = records[0][0]
    assert [round((t - start) * 1000) for t, *_ in records] == list(range(0, 2000, 20))
    assert {(ip[12:16], ip[16:20]) for _, ip, _, _ in records} == {(b"\x7f\0\0\1", b"\x7f\0\0\1")}
    assert {struct.unpack("!HH", udp[:4]) for _, _, udp, _ in records} == {(6000, 6002)}
    packets = [RtpPacket.parse(payload) for *_, payload in records]
    assert {p.payload_type for p in packets} == {payload_type}
    assert len({p.ssrc for p in packets}) == 1
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(100))
    assert [p.timestamp - packets[0].timestamp for p in packets] == list(range(0, 16000, 160))
    assert [p.marker for p in packets[:2]] == [True, False]
    assert {len(p.payload) for p in packets} == {160}
    pcm = decode_rtp_payloads([payload for *_, payload in records])
    assert len(pcm) == 2 * 16000
    assert hears(pcm, 8000, 1000, min_share=0.95)


def test_rtp_payloads_are_decoded_in_sequence_order_without_events(tmp_path: Path) -> None:
    pcm = tone_pcm(440, 0.4) + tone_pcm(1000, 0.4)
    frames = [alaw_encode(pcm[i : i + 320]) for i in range(0, len(pcm), 320)]
    # Sequence numbers wrap from 65535 to 0 half-way through.
    packets = [
        bytes(RtpPacket(8, (65520 + i) % 65536, 160 * i, 7, frame))
        for i, frame in enumerate(frames)
    ]
    event = bytes(RtpPacket(101, 65530, 0, 7, b"\x01\x0a\x00\xa0"))
    shuffled = [*packets, event, packets[3], b"\x00not rtp"]
    random.Random(5).shuffle(shuffled)

    decoded = decode_rtp_payloads(shuffled)

    assert decoded == alaw_decode(b"".join(frames))
    assert dominant_frequency(decoded[: len(decoded) // 2], 8000) == pytest.approx(440, abs=2)
    assert dominant_frequency(decoded[len(decoded) // 2 :], 8000) == pytest.approx(1000, abs=2)


def test_a_pcap_keeps_the_given_payloads_and_addresses(tmp_path: Path) -> None:
    path = tmp_path / "custom.pcap"
    payloads = [bytes([i]) * 80 for i in range(5)]
    write_rtp_pcap(path, payloads, 8, ("10.0.0.1", 4000), ("10.0.0.2", 4002), ptime_ms=10)

    records = _read_pcap(path.read_bytes())
    assert [RtpPacket.parse(p).payload for *_, p in records] == payloads
    assert [round((t - records[0][0]) * 1000) for t, *_ in records] == [0, 10, 20, 30, 40]
    assert [RtpPacket.parse(p).timestamp for *_, p in records][1:3] == [160_080, 160_160]
    _, ip, udp, _ = records[0]
    assert (socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])) == ("10.0.0.1", "10.0.0.2")
    assert struct.unpack("!HH", udp[:4]) == (4000, 4002)


# --- SIPp plays our pcaps --------------------------------------------------------------------


def _scenario(name: str, work: Path, **substitutions: str) -> Path:
    text = (SCENARIOS / name).read_text()
    for key, value in substitutions.items():
        text = text.replace(f"@{key}@", value)
    assert not re.search(r"@[A-Z_]+@", text), f"unfilled placeholder in {name}"
    path = work / name
    path.write_text(text)
    return path


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.datagrams.append((time.monotonic(), data))


@requires_sipp
@pytest.mark.parametrize(("codec", "payload_type", "freq"), [("PCMU", 0, 1000), ("PCMA", 8, 440)])
async def test_sipp_plays_a_generated_tone_pcap_to_the_caller(
    tmp_path: Path, codec: str, payload_type: int, freq: int
) -> None:
    pcap = tmp_path / "tone.pcap"
    write_tone_pcap(pcap, freq, 2.0, codec)
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0)
    )
    rtp_port = transport.get_extra_info("sockname")[1]
    sip_port = free_port()
    common = {"CODEC": codec, "PAYLOAD_TYPE": str(payload_type)}
    far_end = await start_sipp_server(
        _scenario("uas_play_pcap.xml", tmp_path, PCAP=str(pcap), **common),
        tmp_path,
        port=sip_port,
        media_port=free_port(),
    )
    try:
        await asyncio.sleep(0.3)
        caller = await run_sipp(
            f"127.0.0.1:{sip_port}",
            _scenario(
                "uac_listen.xml", tmp_path, RTP_PORT=str(rtp_port), LISTEN_MS="2500", **common
            ),
            tmp_path,
            service="tone",
            media_port=free_port(),
            timeout=15,
        )
        _, err = await asyncio.wait_for(far_end.communicate(), 10)
    finally:
        transport.close()
        if far_end.returncode is None:
            far_end.kill()
            await far_end.wait()

    assert caller.ok, caller.explain()
    assert far_end.returncode == 0, err.decode(errors="replace")
    assert b"npkts 100" in err  # SIPp read every packet of the file
    times = [t for t, _ in collector.datagrams]
    assert len(times) == 100
    assert times[-1] - times[0] == pytest.approx(1.98, abs=0.15)  # paced, not all at once
    assert {RtpPacket.parse(d).payload_type for _, d in collector.datagrams} == {payload_type}
    pcm = decode_rtp_payloads([d for _, d in collector.datagrams])
    assert len(pcm) == 2 * 16000
    assert dominant_frequency(pcm, 8000) == pytest.approx(freq, abs=2)
    assert hears(pcm, 8000, freq, min_share=0.95)


# --- Chromium --------------------------------------------------------------------------------

# The agent's microphone goes out of pc1 as PCMU and comes back in through pc2, whose remote
# stream stands where the softphone's will be. Echo cancellation, noise suppression and gain
# control are off: together they fade a steady tone by about 15 dB within 3 seconds.
LOOPBACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>loopback</title></head><body><script>
window.softphone = {};
window.startLoopback = async () => {
  const local = await navigator.mediaDevices.getUserMedia({
    audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false},
  });
  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  window.softphone.peers = [pc1, pc2];
  pc1.onicecandidate = (e) => { if (e.candidate) pc2.addIceCandidate(e.candidate); };
  pc2.onicecandidate = (e) => { if (e.candidate) pc1.addIceCandidate(e.candidate); };
  const remote = new Promise((resolve) => { pc2.ontrack = (e) => resolve(e.streams[0]); });
  const sender = pc1.addTransceiver(local.getAudioTracks()[0], {
    direction: "sendonly", streams: [local],
  });
  sender.setCodecPreferences(RTCRtpSender.getCapabilities("audio").codecs.filter(
    (c) => c.mimeType.toLowerCase() === "audio/pcmu"));
  await pc1.setLocalDescription();
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription();
  await pc1.setRemoteDescription(pc2.localDescription);
  window.softphone.remoteStream = await remote;
  while (pc2.connectionState !== "connected") {
    if (pc2.connectionState === "failed") throw new Error("ICE failed");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const stats = await pc1.getStats();
  let codec = null;
  stats.forEach((s) => { if (s.type === "outbound-rtp") codec = stats.get(s.codecId).mimeType; });
  return codec;
};
</script></body></html>
"""


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _zombie_children() -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and int(ppid) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


@requires_chromium
@pytest.mark.parametrize("freq", [1000, 440])
async def test_chromium_hears_its_fake_microphone_through_a_pcmu_peer_connection(
    tmp_path: Path, freq: int
) -> None:
    wav = tmp_path / f"agent-{freq}.wav"
    write_tone_wav(wav, freq, 1.0)

    async with serve_pages({"/": LOOPBACK_PAGE}) as base, chromium_page(wav) as page:
        assert _processes_mentioning(str(wav))  # the browser really has this microphone
        await page.goto(base + "/")
        async with asyncio.timeout(10):
            codec = await page.evaluate("window.startLoopback()")
        heard = await remote_tone_frequency(page, seconds=1.0)
        share = await remote_tone_power(page, freq, seconds=1.0)

    assert codec == "audio/PCMU"
    assert heard == pytest.approx(freq, abs=30)
    assert share > 0.8
    # Nothing of the browser is left running, and nothing is left unreaped.
    assert _processes_mentioning(str(wav)) == []
    assert _zombie_children() == []

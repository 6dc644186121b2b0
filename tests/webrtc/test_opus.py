"""The Opus fallback of browser legs: an offer without G.711 but with Opus is answered with Opus,
and the leg transcodes at its edge so that the node sees an ordinary PCMU stream. Browsers are
aiortc peer connections here, which decode what they receive for their tracks; the far end is
a plain RTP stream bridged to the agent's leg."""

from __future__ import annotations

import asyncio
import contextlib
import re
from array import array
from collections.abc import AsyncIterator, Iterator

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from media.bridge import Bridge
from media.g711 import alaw_encode, ulaw_encode
from media.rtp import (
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from media.stream import RtpStream
from tests.media.rtp_peer import HOST, Peer, audio_packet, negotiated, port_range
from tests.media.tones import (
    decode_rtp_payloads,
    dominant_frequency,
    tone_pcm,
    tone_power,
)
from tests.webrtc.softphone import ToneTrack
from webrtc.leg import AgentPeer, NegotiationFailed, WebRtcStream
from webrtc.opus import OPUS_RATE, PCMU_PAYLOAD_TYPE, OpusTranscoder

BROWSER_TONE = 1000.0
FAR_TONE = 440.0
OPUS_PT = 111
"""What Chromium numbers Opus; aiortc's own default would be 96."""


# --- the transcoder on its own ---------------------------------------------------------------


def _pcmu_packets(
    freq: float, count: int, *, samples: int = 160, first_seq: int = 500, first_ts: int = 8000
) -> Iterator[bytes]:
    payload = ulaw_encode(tone_pcm(freq, count * samples / 8000))
    for index in range(count):
        yield bytes(
            audio_packet(
                first_seq + index,
                payload[index * samples : (index + 1) * samples],
                timestamp=first_ts + index * samples,
                ssrc=0x5EED,
            )
        )


def test_the_transcoder_codes_stream_audio_as_opus_and_browser_opus_as_pcmu() -> None:
    leg = OpusTranscoder(OPUS_PT)
    browser = OpusTranscoder(OPUS_PT)  # stands for the browser: decodes what the leg sends

    sent = [RtpPacket.parse(p) for d in _pcmu_packets(FAR_TONE, 100) for p in leg.send(d)]
    # One 20 ms packet in, one out straight away, in Opus's clock, from the stream's SSRC.
    assert len(sent) == 100
    assert {(p.payload_type, p.ssrc) for p in sent} == {(OPUS_PT, 0x5EED)}
    assert [(p.sequence - sent[0].sequence) & 0xFFFF for p in sent] == list(range(100))
    assert [(p.timestamp - sent[0].timestamp) & 0xFFFFFFFF for p in sent] == [
        960 * i for i in range(100)
    ]
    assert sent[0].timestamp == leg.timestamp_out(8000)
    assert (leg.packets_sent, leg.octets_sent) == (100, sum(len(p.payload) for p in sent))
    assert max(len(p.payload) for p in sent) < 160, "Opus, not G.711 passed through"

    back = [browser.receive(bytes(p)) for p in sent]
    assert all(b is not None for b in back)
    pcmu = [RtpPacket.parse(b) for b in back if b is not None]
    # Sequence numbers and SSRC are kept, the timestamps carried over to 8 kHz.
    assert [p.sequence for p in pcmu] == [p.sequence for p in sent]
    assert {(p.payload_type, p.ssrc, len(p.payload)) for p in pcmu} == {
        (PCMU_PAYLOAD_TYPE, 0x5EED, 160)
    }
    assert [(p.timestamp - pcmu[0].timestamp) & 0xFFFFFFFF for p in pcmu] == [
        160 * i for i in range(100)
    ]
    heard = decode_rtp_payloads(bytes(p) for p in pcmu[10:])
    assert abs(dominant_frequency(heard, 8000) - FAR_TONE) < 10
    assert tone_power(heard, 8000, FAR_TONE) > 0.8

    # A repeated (or late) packet is dropped rather than decoded out of turn.
    assert browser.receive(bytes(sent[-1])) is None
    # Another payload type is not Opus.
    assert browser.receive(bytes(audio_packet(9, b"\xff" * 160, pt=0))) is None


def test_other_packet_sizes_are_framed_in_20_ms_and_a_jump_starts_afresh() -> None:
    leg = OpusTranscoder(OPUS_PT)

    def send(seq: int, ts: int, samples: int = 160) -> list[RtpPacket]:
        packet = next(_pcmu_packets(FAR_TONE, 1, samples=samples, first_seq=seq, first_ts=ts))
        return [RtpPacket.parse(p) for p in leg.send(packet)]

    # 30 ms packets: three make four 20 ms frames, with 10 ms left over.
    sent = [p for i in range(3) for p in send(500 + i, 1000 + 240 * i, 240)]
    assert [p.timestamp for p in sent] == [leg.timestamp_out(1000 + 160 * i) for i in range(4)]
    # A packet after a pause sends what was left over padded with silence, then its own audio.
    after_pause = send(503, 9000)
    assert [p.timestamp for p in after_pause] == [leg.timestamp_out(t) for t in (1640, 9000)]
    assert [p.sequence for p in after_pause] == [
        (sent[-1].sequence + 1) & 0xFFFF,
        (sent[-1].sequence + 2) & 0xFFFF,
    ]
    # A late or repeated packet has nothing left to add.
    assert send(502, 1480) == []
    assert send(503, 9000) == []
    # A new source starting within the last frame (as the stream allows: one sample on) is
    # moved past it, and what follows keeps the new spacing.
    (switched,) = send(504, 9001)
    assert switched.timestamp == (after_pause[-1].timestamp + 960) & 0xFFFFFFFF
    (following,) = send(505, 9161)
    assert following.timestamp == (switched.timestamp + 960) & 0xFFFFFFFF
    assert following.timestamp == leg.timestamp_out(9161)


def test_rtcp_is_translated_between_the_clocks() -> None:
    leg = OpusTranscoder(OPUS_PT)
    for packet in _pcmu_packets(FAR_TONE, 5):
        leg.send(packet)
    block = ReportBlock(
        ssrc=0xB0B, fraction_lost=0, cumulative_lost=1, highest_sequence=77, jitter=40
    )
    ours = serialize_rtcp(
        [
            SenderReport(0x5EED, 1 << 40, 12345, 5, 800, (block,)),
            SourceDescription(((0x5EED, "leg@switchboard"),)),
        ]
    )
    report, cname = parse_rtcp(leg.rtcp_out(ours))
    assert isinstance(report, SenderReport)
    assert report.rtp_timestamp == leg.timestamp_out(12345)
    assert (report.packet_count, report.octet_count) == (leg.packets_sent, leg.octets_sent)
    assert report.ntp_timestamp == 1 << 40
    assert report.reports[0].jitter == 40 * OPUS_RATE // 8000
    assert report.reports[0].highest_sequence == 77
    assert cname == SourceDescription(((0x5EED, "leg@switchboard"),))

    theirs = serialize_rtcp([ReceiverReport(0xB0B, (block,))])
    (received,) = parse_rtcp(leg.rtcp_in(theirs))
    assert isinstance(received, ReceiverReport)
    assert received.reports[0].jitter == 40 * 8000 // OPUS_RATE
    assert leg.rtcp_in(b"\x00garbage") == b"\x00garbage"


# --- through real peer connections -----------------------------------------------------------


class Browser:
    """An aiortc peer connection that offers only `mime_type`, sends a tone and keeps what its
    track decodes (left channel, s16le at `heard_rate`)."""

    def __init__(self, tone_hz: float, mime_type: str) -> None:
        self.pc = RTCPeerConnection()
        self.heard = bytearray()
        self.heard_rate = 0
        self._tasks: list[asyncio.Task[None]] = []
        transceiver = self.pc.addTransceiver(ToneTrack(tone_hz), direction="sendrecv")
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() == mime_type])

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._listen(track)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        # Number Opus and give it parameters as Chromium does, so that nothing depends on how
        # aiortc would (payload type 96, no fmtp).
        sdp = self.pc.localDescription.sdp
        sdp = re.sub(r"^(m=audio \d+ \S+) 96(\r?)$", rf"\1 {OPUS_PT}\2", sdp, flags=re.M)
        return sdp.replace(
            "a=rtpmap:96 opus/48000/2",
            f"a=rtpmap:{OPUS_PT} opus/48000/2\r\na=fmtp:{OPUS_PT} minptime=10;useinbandfec=1",
        )

    async def connect(self, stream: WebRtcStream) -> tuple[AgentPeer, str]:
        peer, answer = await AgentPeer.answer(await self.offer(), stream)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        async with asyncio.timeout(10):
            while self.pc.connectionState != "connected" or not stream.connected:
                await asyncio.sleep(0.02)
        return peer, answer

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            self.heard_rate = frame.sample_rate
            channels = len(frame.layout.channels)
            samples = array("h", bytes(frame.planes[0])[: frame.samples * channels * 2])
            self.heard += samples[::channels].tobytes()

    async def hear(self, seconds: float) -> bytes:
        """The next `seconds` of what the track receives."""
        start = len(self.heard)
        async with asyncio.timeout(10):
            while not self.heard_rate or len(self.heard) - start < 2 * seconds * self.heard_rate:
                await asyncio.sleep(0.05)
        return bytes(self.heard[start:])

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class FarEnd:
    """A plain RTP leg (as a SIP caller's would be) with the UDP peer behind it."""

    def __init__(self, stream: RtpStream, peer: Peer) -> None:
        self.stream = stream
        self.peer = peer
        self._task: asyncio.Task[None] | None = None

    def play(self, freq: float, codec: str = "PCMU") -> None:
        """Send a tone to the leg in real time, 20 ms packets, until `stop`."""
        self._task = asyncio.get_running_loop().create_task(self._play(freq, codec))

    async def _play(self, freq: float, codec: str) -> None:
        encode = ulaw_encode if codec == "PCMU" else alaw_encode
        second = encode(tone_pcm(freq, 1.0))  # a whole number of cycles: loops seamlessly
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while True:
            offset = index * 160 % len(second)
            packet = audio_packet(
                index, second[offset : offset + 160], ssrc=0xFA2, pt=0 if codec == "PCMU" else 8
            )
            self.peer.send(packet, (HOST, self.stream.local_port))
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - loop.time()))

    async def hear(self, packets: int) -> bytes:
        """The audio of the next `packets` packets the leg sends here, s16le at 8 kHz."""
        self.peer.drain()
        got = [(await self.peer.datagram(5.0))[0] for _ in range(packets)]
        return decode_rtp_payloads(got)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.fixture
async def far_end() -> AsyncIterator[FarEnd]:
    stream = await RtpStream.open(HOST, port_range(4))
    peer = await Peer.open()
    stream.configure(negotiated("PCMU", telephone_event_pt=None), peer.address)
    end = FarEnd(stream, peer)
    yield end
    await end.stop()
    await stream.close()
    peer.close()


@pytest.fixture
async def agent_leg() -> AsyncIterator[WebRtcStream]:
    stream = WebRtcStream.create()
    yield stream
    await stream.close()


def _answered_codecs(answer: str) -> list[tuple[str, int | None]]:
    media = SessionDescription.parse(answer).media[0]
    return [(c.mimeType.lower(), c.payloadType) for c in media.rtp.codecs]


async def test_an_opus_only_browser_is_answered_with_opus_and_both_ends_hear_each_other(
    agent_leg: WebRtcStream, far_end: FarEnd
) -> None:
    browser = Browser(BROWSER_TONE, "audio/opus")
    try:
        peer, answer = await browser.connect(agent_leg)
        assert _answered_codecs(answer) == [("audio/opus", OPUS_PT)]
        assert peer.codec == "OPUS"
        # The node sees a PCMU leg.
        assert agent_leg.codec == "PCMU"
        bridge = Bridge(far_end.stream, agent_leg)
        bridge.start()
        far_end.play(FAR_TONE)

        # The browser's tone arrives on the plain leg as PCMU.
        await asyncio.sleep(0.3)  # past the codecs' first frames
        heard = await far_end.hear(50)
        assert len(heard) == 50 * 160 * 2
        assert abs(dominant_frequency(heard, 8000) - BROWSER_TONE) < 15
        assert tone_power(heard, 8000, BROWSER_TONE) > 0.5

        # The plain leg's tone arrives at the browser, which decoded it from Opus.
        heard_by_browser = await browser.hear(1.0)
        assert browser.heard_rate == OPUS_RATE
        assert abs(dominant_frequency(heard_by_browser, OPUS_RATE) - FAR_TONE) < 10
        assert tone_power(heard_by_browser, OPUS_RATE, FAR_TONE) > 0.5

        stats = agent_leg.stats()
        assert stats.packets_received >= 50
        assert stats.octets_received == 160 * stats.packets_received
        assert stats.packets_sent >= 50
        bridge.stop()
        await peer.close()
    finally:
        await browser.close()


async def test_a_reconnect_may_change_between_opus_and_g711(
    agent_leg: WebRtcStream, far_end: FarEnd
) -> None:
    bridge = Bridge(far_end.stream, agent_leg)
    bridge.start()
    far_end.play(FAR_TONE)
    try:
        for mime_type, tone in (
            ("audio/opus", 1000.0),
            ("audio/pcma", 700.0),
            ("audio/opus", 600.0),
        ):
            browser = Browser(tone, mime_type)
            peer: AgentPeer | None = None
            try:
                peer, answer = await browser.connect(agent_leg)
                codec = mime_type.split("/")[1].upper()
                assert peer.codec == codec
                assert agent_leg.codec == ("PCMU" if codec == "OPUS" else codec)
                assert [name for name, _pt in _answered_codecs(answer)] == [mime_type]

                await asyncio.sleep(0.3)
                heard = await far_end.hear(40)
                assert abs(dominant_frequency(heard, 8000) - tone) < 15, mime_type
                heard_by_browser = await browser.hear(0.8)
                assert abs(dominant_frequency(heard_by_browser, browser.heard_rate) - FAR_TONE) < 10
                assert tone_power(heard_by_browser, browser.heard_rate, FAR_TONE) > 0.5
            finally:
                await browser.close()
                if peer is not None:
                    await peer.close()
    finally:
        bridge.stop()


async def test_an_offer_with_neither_g711_nor_opus_is_refused(agent_leg: WebRtcStream) -> None:
    browser = Browser(BROWSER_TONE, "audio/g722")
    try:
        offer = await browser.offer()
        assert "G722/8000" in offer
        assert "opus" not in offer.lower()
        assert "PCMU" not in offer
        with pytest.raises(NegotiationFailed) as refused:
            await AgentPeer.answer(offer, agent_leg)
        assert refused.value.code == "codec_unsupported"
        assert not agent_leg.connected
    finally:
        await browser.close()

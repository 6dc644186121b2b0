"""A call leg's RTP stream on loopback: audio in and out, symmetric RTP latching, continuity of
the outgoing stream across changes of source, DTMF both ways (RFC 4733 and in-band), reception
statistics and RTCP reports."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator

import pytest

from media.dtmf import EventReceiver, EventSender, GoertzelDetector, TelephoneEvent, dtmf_tone
from media.g711 import ulaw_decode, ulaw_encode
from media.ports import PortRange
from media.rtp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from media.sdp import Direction
from media.stream import HeaderRewriter, RtpStream
from tests.media.rtp_peer import HOST, Peer, audio_packet, negotiated, port_range

VOICE = bytes(range(0, 160))


@pytest.fixture
def ports() -> PortRange:
    return port_range()


@pytest.fixture
async def stream(ports: PortRange) -> AsyncIterator[RtpStream]:
    opened = await RtpStream.open(HOST, ports)
    yield opened
    await opened.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    far_end = await Peer.open()
    yield far_end
    far_end.close()


def _media_queue(stream: RtpStream) -> asyncio.Queue[RtpPacket]:
    queue: asyncio.Queue[RtpPacket] = asyncio.Queue()
    stream.on_media = queue.put_nowait
    return queue


def stream_addr(stream: RtpStream) -> tuple[str, int]:
    return (HOST, stream.local_port)


async def test_a_stream_opens_on_an_even_port_with_rtcp_on_the_next(
    stream: RtpStream, ports: PortRange
) -> None:
    assert stream.local_port % 2 == 0
    assert ports.low <= stream.local_port < stream.local_port + 1 <= ports.high
    assert ports.in_use == 1
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
        pytest.raises(OSError, match="in use"),
    ):
        probe.bind((HOST, stream.local_port + 1))


async def test_a_pair_held_by_another_program_is_skipped() -> None:
    ports = port_range(pairs=4)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HOST, ports.low + 1))  # the RTCP port of the first pair
        opened = await RtpStream.open(HOST, ports)
        try:
            assert opened.local_port != ports.low
            assert ports.in_use == 1
        finally:
            await opened.close()
    assert ports.in_use == 0


async def test_audio_goes_to_the_sdp_address_and_received_audio_reaches_on_media(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    received = _media_queue(stream)
    peer.send(audio_packet(1, VOICE), (HOST, stream.local_port))
    packet = await asyncio.wait_for(received.get(), 2)
    assert (packet.sequence, packet.payload, packet.ssrc) == (1, VOICE, 0x1234)

    stream.send_payload(b"\x55" * 160, source="prompt")
    (sent,) = await peer.packets(1)
    assert (sent.payload_type, sent.payload, sent.ssrc) == (0, b"\x55" * 160, stream.ssrc)
    assert sent.marker  # the first packet of a stream's first source


async def test_telephone_events_and_other_payload_types_do_not_reach_on_media(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    received = _media_queue(stream)
    peer.send(audio_packet(1, bytes(TelephoneEvent.for_digit("1")), pt=101), stream_addr(stream))
    peer.send(audio_packet(2, b"\x40", pt=13), stream_addr(stream))  # comfort noise
    peer.send(audio_packet(3, VOICE), stream_addr(stream))
    packet = await asyncio.wait_for(received.get(), 2)
    assert packet.sequence == 3
    assert received.empty()


async def test_the_first_packet_from_another_source_retargets_sending_there(
    stream: RtpStream, peer: Peer
) -> None:
    nat = await Peer.open()
    stranger = await Peer.open()
    try:
        stream.configure(negotiated(), peer.address)  # what the SDP said
        received = _media_queue(stream)
        nat.send(audio_packet(1, VOICE), stream_addr(stream))
        await asyncio.wait_for(received.get(), 2)
        assert stream.stats().latched
        assert stream.stats().remote == nat.address

        stream.send_payload(VOICE, source="prompt")
        (reply, _, _) = await nat.datagram()
        assert RtpPacket.parse(reply).payload == VOICE
        assert peer.queue.empty()

        # Latching happens once: later packets from elsewhere are not media of this call.
        stranger.send(audio_packet(2, VOICE), stream_addr(stream))
        nat.send(audio_packet(3, VOICE), stream_addr(stream))
        assert (await asyncio.wait_for(received.get(), 2)).sequence == 3
        assert received.empty()
        assert stream.stats().remote == nat.address
    finally:
        nat.close()
        stranger.close()


async def test_a_stray_datagram_does_not_capture_the_stream(stream: RtpStream, peer: Peer) -> None:
    stranger = await Peer.open()
    try:
        stream.configure(negotiated(), peer.address)
        received = _media_queue(stream)
        stranger.send(b"not RTP at all", stream_addr(stream))
        stranger.send(audio_packet(1, VOICE, pt=96), stream_addr(stream))
        peer.send(audio_packet(2, VOICE), stream_addr(stream))
        assert (await asyncio.wait_for(received.get(), 2)).sequence == 2
        assert stream.stats().remote == peer.address
    finally:
        stranger.close()


async def test_media_from_the_sdp_address_leaves_the_stream_not_latched(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    received = _media_queue(stream)
    peer.send(audio_packet(1, VOICE), stream_addr(stream))
    await asyncio.wait_for(received.get(), 2)
    stats = stream.stats()
    assert not stats.latched
    assert stats.remote == peer.address


async def test_configuring_again_moves_sending_and_reopens_latching(
    stream: RtpStream, peer: Peer
) -> None:
    moved = await Peer.open()
    try:
        stream.configure(negotiated(), peer.address)
        received = _media_queue(stream)
        peer.send(audio_packet(1, VOICE), stream_addr(stream))
        await asyncio.wait_for(received.get(), 2)

        # A re-INVITE: the far end now sends A-law from another port.
        stream.configure(negotiated("PCMA"), moved.address)
        assert stream.codec == "PCMA"
        stream.send_payload(VOICE, source="prompt")
        (sent,) = await moved.packets(1)
        assert sent.payload_type == 8
        assert peer.queue.empty()

        moved.send(audio_packet(2, VOICE, pt=8), stream_addr(stream))
        assert (await asyncio.wait_for(received.get(), 2)).payload_type == 8
        # The old address is no longer where media comes from.
        peer.send(audio_packet(3, VOICE, pt=8), stream_addr(stream))
        moved.send(audio_packet(4, VOICE, pt=8), stream_addr(stream))
        assert (await asyncio.wait_for(received.get(), 2)).sequence == 4
    finally:
        moved.close()


async def test_sequence_timestamp_and_ssrc_continue_across_a_change_of_source(
    ports: PortRange, peer: Peer
) -> None:
    leg = await RtpStream.open(HOST, ports)
    other = await RtpStream.open(HOST, ports)
    try:
        leg.configure(negotiated(), peer.address)
        for _ in range(3):
            leg.send_payload(VOICE, source="prompt")
        # Then audio forwarded from another leg whose numbers are nothing like ours.
        for seq in (40000, 40001, 40002):
            leg.forward(audio_packet(seq, VOICE, ssrc=0xABCDEF), source=other)
        for seq in (40003, 40004):
            leg.relay(other, bytes(audio_packet(seq, VOICE, ssrc=0xABCDEF)))
        # Longer than the 100 ms of audio forwarded so far, so the clock shows a pause.
        await asyncio.sleep(0.15)
        leg.send_payload(VOICE, source="music")
        sent = await peer.packets(9)
    finally:
        await leg.close()
        await other.close()
    assert {p.ssrc for p in sent} == {leg.ssrc}
    sequences = [p.sequence for p in sent]
    assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(9)]
    timestamps = [p.timestamp for p in sent]
    steps = [(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(timestamps)]
    assert steps[0:2] == [160, 160]  # within the prompt
    assert steps[3:7] == [160] * 4  # the other leg's audio, forwarded and relayed: one run
    assert steps[7] >= 0.04 * 8000  # the pause before the music shows in the timestamps
    assert all(0 < step < 8000 for step in steps)
    assert [p.marker for p in sent] == [True, False, False, True, False, False, False, False, True]


def test_a_new_run_continues_by_the_clock_and_never_goes_back() -> None:
    now = [0]
    rewriter = HeaderRewriter(7, lambda: now[0], first_sequence=100, first_timestamp=1000)
    assert rewriter.rewrite(5, 800, "a", 1) == (100, 1000, True)
    assert rewriter.rewrite(7, 1120, "a", 1) == (102, 1320, False)
    assert rewriter.rewrite(6, 960, "a", 1) == (101, 1160, False)  # late: counts for nothing
    now[0] = 8000  # one second after "a" began
    assert rewriter.rewrite(0, 0, "b", 1) == (103, 9000, True)
    # The far end of "b" restarting with a new SSRC is a new run too; a run whose audio got
    # ahead of the clock is continued from its last packet, not pulled back.
    assert rewriter.rewrite(50, 9999, "b", 2) == (104, 9001, True)
    packet = bytearray(bytes(audio_packet(51, b"x", timestamp=10159, ssrc=2)))
    assert rewriter.rewrite_datagram(packet, "b") is False
    sent = RtpPacket.parse(bytes(packet))
    assert (sent.sequence, sent.timestamp, sent.ssrc, sent.payload) == (105, 9161, 7, b"x")
    assert rewriter.timestamp_at(8000 + 800) == 9001 + 800


async def test_rfc_4733_key_presses_reach_the_digit_queue_once_each(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    heard: list[str] = []
    stream.on_digit = heard.append
    seq = 100
    for digit, start in (("5", 8000), ("#", 16000), ("5", 24000)):
        for event in EventSender(digit, 100):
            seq += 1
            packet = RtpPacket(101, seq, start, 0x4321, event.payload, event.marker)
            peer.send(packet, stream_addr(stream))
    got = [await asyncio.wait_for(stream.digits.get(), 2) for _ in range(3)]
    assert got == ["5", "#", "5"]
    await asyncio.sleep(0.05)
    assert stream.digits.empty()  # the retransmitted end packets are not new presses
    assert heard == ["5", "#", "5"]


def _tone_packets(digit: str, first_seq: int, pt: int = 0) -> list[RtpPacket]:
    pcm = bytes(320 * 3) + dtmf_tone(digit, 120) + bytes(320 * 4)
    payload = ulaw_encode(pcm)
    return [
        audio_packet(first_seq + i, payload[i * 160 : (i + 1) * 160], pt=pt)
        for i in range(len(payload) // 160)
    ]


async def test_in_band_tones_are_detected_when_telephone_event_was_not_negotiated(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(telephone_event_pt=None), peer.address)
    for packet in _tone_packets("7", 1) + _tone_packets("7", 100) + _tone_packets("*", 200):
        peer.send(packet, stream_addr(stream))
    got = [await asyncio.wait_for(stream.digits.get(), 2) for _ in range(3)]
    assert got == ["7", "7", "*"]


async def test_in_band_detection_can_be_turned_off(stream: RtpStream, peer: Peer) -> None:
    stream.configure(negotiated(telephone_event_pt=None), peer.address)
    stream.inband_detection = False
    received = _media_queue(stream)
    packets = _tone_packets("7", 1)
    for packet in packets:
        peer.send(packet, stream_addr(stream))
    for _ in packets:
        await asyncio.wait_for(received.get(), 2)
    assert stream.digits.empty()


async def test_tones_in_the_audio_are_ignored_when_telephone_event_was_negotiated(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    received = _media_queue(stream)
    packets = _tone_packets("7", 1)
    for packet in packets:
        peer.send(packet, stream_addr(stream))
    for _ in packets:
        await asyncio.wait_for(received.get(), 2)
    assert stream.digits.empty()


async def test_send_digit_sends_an_rfc_4733_event_train(stream: RtpStream, peer: Peer) -> None:
    stream.configure(negotiated(), peer.address)
    stream.send_payload(VOICE, source="prompt")
    await stream.send_digit("9", 100)
    stream.send_payload(VOICE, source="prompt")
    got = [RtpPacket.parse(d) for d, _, _ in await peer.until_quiet()]
    events = [p for p in got if p.payload_type == 101]
    assert len(events) == 4 + 3  # four updates then the end three times (RFC 4733 2.5.1.4)
    assert len({p.timestamp for p in events}) == 1
    assert [p.marker for p in events] == [True] + [False] * 6
    parsed = [TelephoneEvent.parse(p.payload) for p in events]
    assert {e.digit for e in parsed} == {"9"}
    assert [e.end for e in parsed] == [False] * 4 + [True] * 3
    assert parsed[-1].duration == 800
    receiver = EventReceiver()
    presses = [d for p in events for d in receiver.feed(p.timestamp, p.payload)]
    assert [(d.digit, d.duration_ms) for d in presses] == [("9", 100)]
    sequences = [p.sequence for p in got]
    assert sequences == [(sequences[0] + i) & 0xFFFF for i in range(len(got))]
    # Audio resumes after the press, later in time than the press began.
    assert got[-1].payload_type == 0
    assert (got[-1].timestamp - events[0].timestamp) & 0xFFFFFFFF < 0x80000000


async def test_send_digit_without_telephone_event_plays_the_tones_in_the_audio(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(telephone_event_pt=None), peer.address)
    await stream.send_digit("3", 100)
    got = [RtpPacket.parse(d) for d, _, _ in await peer.until_quiet()]
    assert len(got) == 5
    assert {p.payload_type for p in got} == {0}
    detector = GoertzelDetector()
    pcm = b"".join(ulaw_decode(p.payload) for p in got) + bytes(1600)
    assert detector.feed(pcm) == ["3"]


async def test_a_held_stream_sends_no_audio_and_resumes_later_in_time(
    stream: RtpStream, peer: Peer
) -> None:
    stream.configure(negotiated(), peer.address)
    stream.send_payload(VOICE, source="bridge")
    stream.held = True
    stream.send_payload(VOICE, source="bridge")
    await asyncio.sleep(0.05)
    stream.held = False
    stream.send_payload(VOICE, source="bridge")
    first, after = await peer.packets(2)
    assert after.sequence == (first.sequence + 1) & 0xFFFF
    assert after.marker
    assert (after.timestamp - first.timestamp) & 0xFFFFFFFF >= 0.04 * 8000
    assert peer.queue.empty()


async def test_a_sendonly_far_end_gets_no_audio_from_us(stream: RtpStream, peer: Peer) -> None:
    stream.configure(negotiated(direction=Direction.RECVONLY), peer.address)
    stream.send_payload(VOICE, source="prompt")
    assert await peer.until_quiet(0.1) == []


async def test_stats_count_packets_octets_and_losses(stream: RtpStream, peer: Peer) -> None:
    stream.configure(negotiated(), peer.address)
    received = _media_queue(stream)
    lost = {5, 9, 10}
    for seq in range(1, 21):
        if seq not in lost:
            peer.send(audio_packet(seq, VOICE), stream_addr(stream))
    for _ in range(17):
        await asyncio.wait_for(received.get(), 2)
    for _ in range(4):
        stream.send_payload(VOICE, source="prompt")
    stats = stream.stats()
    assert stats.packets_received == 17
    assert stats.octets_received == 17 * 160
    assert stats.packets_lost == 3
    assert (stats.packets_sent, stats.octets_sent) == (4, 4 * 160)
    assert stats.jitter_ms >= 0


async def test_rtcp_reports_are_sent_and_the_far_ends_reports_are_read(
    ports: PortRange, peer: Peer
) -> None:
    rtcp = await Peer.open()
    stream = await RtpStream.open(HOST, ports, rtcp_interval=0.05)
    try:
        stream.configure(negotiated(), peer.address)
        # The far end's RTCP comes from a port of its own: our reports follow it there.
        rtcp.send(serialize_rtcp([ReceiverReport(0x5150)]), (HOST, stream.local_port + 1))
        for seq in range(1, 6):
            peer.send(audio_packet(seq, VOICE, ssrc=0x5150), stream_addr(stream))
            stream.send_payload(VOICE, source="prompt")
        await peer.packets(5)
        report: list[object] = []
        while not any(isinstance(p, SenderReport) and p.reports for p in report):
            data, _, _ = await rtcp.datagram()
            report = list(parse_rtcp(data))
        sender = report[0]
        assert isinstance(sender, SenderReport)
        assert sender.ssrc == stream.ssrc
        assert (sender.packet_count, sender.octet_count) == (5, 5 * 160)
        assert sender.reports[0].ssrc == 0x5150
        assert sender.reports[0].cumulative_lost == 0
        assert any(isinstance(p, SourceDescription) for p in report)

        # The far end's receiver report about us, answering that sender report.
        lsr = (sender.ntp_timestamp >> 16) & 0xFFFFFFFF
        block = ReportBlock(stream.ssrc, 0, 7, 5, 80, last_sr=lsr, delay_since_last_sr=0)
        rtcp.send(serialize_rtcp([ReceiverReport(0x5150, (block,))]), (HOST, stream.local_port + 1))
        for _ in range(100):
            if stream.stats().remote_packets_lost is not None:
                break
            await asyncio.sleep(0.01)
        stats = stream.stats()
        assert stats.remote_packets_lost == 7
        assert stats.remote_jitter_ms == 10.0
        assert stats.round_trip_ms is not None
        assert 0 <= stats.round_trip_ms < 2000
        assert stats.rtcp_reports_received == 2
    finally:
        await stream.close()
        rtcp.close()


async def test_close_says_bye_and_gives_the_port_back(ports: PortRange, peer: Peer) -> None:
    rtcp = await Peer.open()
    stream = await RtpStream.open(HOST, ports)
    stream.configure(negotiated(), peer.address)
    # The far end's RTCP comes from its own port: RTCP latches onto it.
    rtcp.send(serialize_rtcp([ReceiverReport(0x99)]), (HOST, stream.local_port + 1))
    await asyncio.sleep(0.05)
    await stream.close()
    try:
        data, _, _ = await rtcp.datagram()
        packets = parse_rtcp(data)
        assert any(isinstance(p, Bye) and p.ssrcs == (stream.ssrc,) for p in packets)
        assert ports.in_use == 0
        assert stream.closed
        stream.send_payload(VOICE, source="prompt")  # harmless after close
        await stream.close()  # and closing twice too
    finally:
        rtcp.close()


async def test_a_failing_consumer_does_not_stop_the_stream(stream: RtpStream, peer: Peer) -> None:
    stream.configure(negotiated(), peer.address)
    calls: list[int] = []

    def broken(packet: RtpPacket) -> None:
        calls.append(packet.sequence)
        raise RuntimeError("consumer bug")

    stream.on_media = broken
    for seq in (1, 2):
        peer.send(audio_packet(seq, VOICE), stream_addr(stream))
    for _ in range(100):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == [1, 2]


async def test_a_packet_with_csrcs_is_forwarded_with_its_payload_intact(
    ports: PortRange, peer: Peer
) -> None:
    leg = await RtpStream.open(HOST, ports)
    other = await RtpStream.open(HOST, ports)
    try:
        leg.configure(negotiated(), peer.address)
        data = bytes(RtpPacket(0, 9, 1440, 0x77, VOICE, csrcs=(1, 2)))
        leg.relay(other, data)
        (sent,) = await peer.packets(1)
    finally:
        await leg.close()
        await other.close()
    assert (sent.payload, sent.ssrc, sent.csrcs) == (VOICE, leg.ssrc, ())

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    RtpError,
    RtpExtension,
    RtpPacket,
    SenderReport,
    SequenceRewriter,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)

# --- RTP packets ---------------------------------------------------------------------------------

PCMU_PACKET = bytes.fromhex("80000001000000a012345678") + b"\xff\xff\xff"
FULL_PACKET = (
    bytes.fromhex("b288ffffdeadbeef00000001")  # V=2 P X CC=2, M PT=8, seq, ts, ssrc
    + bytes.fromhex("0000000200000003")  # CSRCs
    + bytes.fromhex("bede000110aa0000")  # extension: profile 0xBEDE, one word
    + b"\xd5\xd5"
    + b"\x00\x00\x03"  # three bytes of padding
)


def test_a_plain_pcmu_packet_parses_and_serialises_back() -> None:
    packet = RtpPacket.parse(PCMU_PACKET)
    assert packet == RtpPacket(payload_type=0, sequence=1, timestamp=160, ssrc=0x12345678,
                               payload=b"\xff\xff\xff")  # fmt: skip
    assert bytes(packet) == PCMU_PACKET


def test_a_packet_with_every_optional_part_parses_and_serialises_back() -> None:
    packet = RtpPacket.parse(FULL_PACKET)
    assert packet == RtpPacket(
        payload_type=8,
        sequence=0xFFFF,
        timestamp=0xDEADBEEF,
        ssrc=1,
        payload=b"\xd5\xd5",
        marker=True,
        csrcs=(2, 3),
        extension=RtpExtension(0xBEDE, bytes.fromhex("10aa0000")),
        padding=3,
    )
    assert bytes(packet) == FULL_PACKET


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (PCMU_PACKET[:11], "12 bytes"),
        (b"\x40" + PCMU_PACKET[1:], "version 1"),
        (b"\x83" + PCMU_PACKET[1:], "3 CSRCs"),
        (b"\xa0" + PCMU_PACKET[1:-1] + b"\x00", "padding length 0"),
        (b"\xa0" + PCMU_PACKET[1:-1] + b"\x04", "padding length 4"),
        (b"\x90" + PCMU_PACKET[1:12] + b"\xbe\xde", "cut short"),
        (b"\x90" + PCMU_PACKET[1:12] + b"\xbe\xde\x00\x02" + bytes(7), "2 words"),
    ],
    ids=[
        "short header",
        "wrong version",
        "CSRC count beyond length",
        "zero padding length",
        "padding longer than payload",
        "extension header cut short",
        "extension beyond data",
    ],
)
def test_a_malformed_packet_is_refused_with_the_reason(data: bytes, complaint: str) -> None:
    with pytest.raises(RtpError, match=complaint):
        RtpPacket.parse(data)


rtp_packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        profile=st.integers(0, 0xFFFF),
        data=st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@given(rtp_packets)
def test_any_valid_packet_survives_serialising_and_parsing(packet: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(packet)) == packet


@given(st.binary(max_size=100))
def test_arbitrary_bytes_either_parse_or_raise_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        RtpPacket.parse(data)


@given(st.binary(min_size=12, max_size=100))
def test_bytes_with_version_2_either_parse_or_raise_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        RtpPacket.parse(bytes([0x80 | (data[0] & 0x3F)]) + data[1:])


# --- RTCP ----------------------------------------------------------------------------------------

BLOCK = ReportBlock(
    ssrc=0x22222222,
    fraction_lost=0x40,
    cumulative_lost=-1,
    highest_sequence=0x00010005,
    jitter=16,
    last_sr=0xAABBCCDD,
    delay_since_last_sr=0x00010000,
)
BLOCK_BYTES = bytes.fromhex("2222222240ffffff0001000500000010aabbccdd00010000")
SR_BYTES = (
    bytes.fromhex("81c8000c11111111")
    + bytes.fromhex("e8a1b2c380000000000003e80000000a00000640")
    + BLOCK_BYTES
)
SDES_BYTES = bytes.fromhex("81ca0003111111110105") + b"a@b.c" + b"\x00"
RR_BYTES = bytes.fromhex("81c9000711111111") + BLOCK_BYTES
BYE_BYTES = bytes.fromhex("81cb00021111111103") + b"bye"


def test_a_sender_report_compound_with_a_cname_parses_and_serialises_back() -> None:
    data = SR_BYTES + SDES_BYTES
    packets = parse_rtcp(data)
    assert packets == [
        SenderReport(
            ssrc=0x11111111,
            ntp_timestamp=0xE8A1B2C380000000,
            rtp_timestamp=1000,
            packet_count=10,
            octet_count=1600,
            reports=(BLOCK,),
        ),
        SourceDescription(cnames=((0x11111111, "a@b.c"),)),
    ]
    assert serialize_rtcp(packets) == data


def test_a_receiver_report_compound_with_a_bye_parses_and_serialises_back() -> None:
    data = RR_BYTES + BYE_BYTES
    packets = parse_rtcp(data)
    assert packets == [ReceiverReport(0x11111111, (BLOCK,)), Bye((0x11111111,), "bye")]
    assert serialize_rtcp(packets) == data


def test_packet_types_we_do_not_use_are_skipped() -> None:
    app = bytes.fromhex("80cc000211111111") + b"name"
    assert parse_rtcp(app + RR_BYTES) == [ReceiverReport(0x11111111, (BLOCK,))]


def test_sdes_items_other_than_cname_are_skipped() -> None:
    # NAME "x" then CNAME "c", end, pad to a word.
    sdes = bytes.fromhex("81ca0003111111110201780101630000")
    assert parse_rtcp(sdes) == [SourceDescription(((0x11111111, "c"),))]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (RR_BYTES[:3], "cut short"),
        (b"\x41" + RR_BYTES[1:], "version 1"),
        (RR_BYTES[:-4], "runs past"),
        (bytes.fromhex("82c90007") + RR_BYTES[4:], "receiver report needs"),
        (bytes.fromhex("a1c90007") + RR_BYTES[4:-1] + b"\x00", "padding length 0"),
    ],
    ids=["short header", "wrong version", "length beyond data", "count beyond length", "padding"],
)
def test_malformed_rtcp_is_refused_with_the_reason(data: bytes, complaint: str) -> None:
    with pytest.raises(RtcpError, match=complaint):
        parse_rtcp(data)


uint32 = st.integers(0, 0xFFFFFFFF)
report_blocks = st.builds(
    ReportBlock,
    ssrc=uint32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=uint32,
    jitter=uint32,
    last_sr=uint32,
    delay_since_last_sr=uint32,
)
blocks = st.lists(report_blocks, max_size=31).map(tuple)
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
rtcp_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(SenderReport, uint32, st.integers(0, 2**64 - 1), uint32, uint32, uint32, blocks),
    st.builds(ReceiverReport, uint32, blocks),
    st.builds(SourceDescription, st.lists(st.tuples(uint32, text), max_size=31).map(tuple)),
    st.builds(Bye, st.lists(uint32, max_size=31).map(tuple), text),
)


@given(st.lists(rtcp_packets, max_size=4))
def test_any_compound_packet_survives_serialising_and_parsing(
    packets: list[RtcpPacket],
) -> None:
    assert parse_rtcp(serialize_rtcp(packets)) == packets


@given(st.binary(max_size=120))
def test_arbitrary_bytes_either_parse_as_rtcp_or_raise_rtcp_error(data: bytes) -> None:
    with contextlib.suppress(RtcpError):
        parse_rtcp(data)


# --- Reception statistics ------------------------------------------------------------------------


def _feed(stats: ReceptionStats, sequences: list[int], *, first_ts: int = 0) -> list[bool]:
    """Packets 20 ms apart that arrive exactly on time, timestamped by their sequence."""
    return [stats.update(seq, (first_ts + 160 * seq) % 2**32, 160 * seq) for seq in sequences]


def test_a_new_source_is_accepted_after_two_packets_in_sequence() -> None:
    stats = ReceptionStats()
    assert _feed(stats, [100, 101, 102]) == [False, True, True]
    block = stats.report_block(0xABC)
    assert (block.ssrc, block.cumulative_lost, block.fraction_lost) == (0xABC, 0, 0)
    assert block.highest_sequence == 102


def test_a_source_that_jumps_during_probation_starts_probation_again() -> None:
    stats = ReceptionStats()
    assert _feed(stats, [100, 500, 501, 502]) == [False, False, True, True]
    assert stats.report_block(1).highest_sequence == 502


def test_lost_packets_count_cumulatively_and_as_a_fraction_since_the_last_report() -> None:
    stats = ReceptionStats()
    _feed(stats, [100, 101, 102, 103, 104, 107, 108, 109, 110])  # 105, 106 lost
    first = stats.report_block(1)
    assert (first.cumulative_lost, first.fraction_lost) == (2, 2 * 256 // 10)
    _feed(stats, list(range(111, 121)))
    second = stats.report_block(1)
    assert (second.cumulative_lost, second.fraction_lost) == (2, 0)
    assert second.highest_sequence == 120


def test_the_extended_highest_sequence_counts_a_wrap_at_65535() -> None:
    stats = ReceptionStats()
    _feed(stats, [65533, 65534, 65535, 0, 1, 3])  # 2 lost
    block = stats.report_block(1)
    assert block.highest_sequence == 0x0001_0003
    assert block.cumulative_lost == 1


def test_a_reordered_packet_is_not_counted_as_lost() -> None:
    stats = ReceptionStats()
    assert _feed(stats, [10, 11, 12, 14, 13, 15]) == [False, True, True, True, True, True]
    block = stats.report_block(1)
    assert (block.highest_sequence, block.cumulative_lost, block.fraction_lost) == (15, 0, 0)


def test_a_duplicate_counts_as_received_so_loss_goes_negative_as_rfc_3550_says() -> None:
    stats = ReceptionStats()
    _feed(stats, [10, 11, 12, 12, 13])
    block = stats.report_block(1)
    assert (block.cumulative_lost, block.fraction_lost) == (-1, 0)


def test_a_large_jump_is_believed_only_when_the_next_packet_follows_it() -> None:
    stats = ReceptionStats()
    assert _feed(stats, [10, 11, 12, 20000, 20001, 20002]) == [
        False, True, True, False, True, True,
    ]  # fmt: skip
    block = stats.report_block(1)
    assert (block.highest_sequence, block.cumulative_lost) == (20002, 0)


def test_packets_arriving_exactly_on_time_have_no_jitter_even_across_a_timestamp_wrap() -> None:
    stats = ReceptionStats()
    _feed(stats, list(range(50)), first_ts=2**32 - 160 * 25)
    assert stats.report_block(1).jitter == 0


def test_jitter_follows_rfc_3550_a8_for_a_delayed_stream() -> None:
    stats = ReceptionStats()
    _feed(stats, [0, 1, 2])
    stats.update(3, 480, 480 + 320)  # 40 ms late: D = 320
    assert stats.report_block(1).jitter == 320 // 16
    stats.update(4, 640, 640)  # back on time: D = 320 again
    assert stats.report_block(1).jitter == 38  # 20 + (320 - 20) / 16, truncated


def test_jitter_settles_near_a_steady_alternating_delay() -> None:
    stats = ReceptionStats()
    for seq in range(300):
        stats.update(seq, 160 * seq, 160 * seq + (80 if seq % 2 else 0))
    assert 78 <= stats.report_block(1).jitter <= 80


# --- Continuity across a change of source --------------------------------------------------------


def _stream(ssrc: int, first_seq: int, first_ts: int, count: int) -> list[RtpPacket]:
    return [
        RtpPacket(0, (first_seq + i) % 2**16, (first_ts + 160 * i) % 2**32, ssrc, bytes([ssrc, i]))
        for i in range(count)
    ]


def test_a_leg_keeps_one_continuous_stream_across_two_changes_of_source() -> None:
    rewriter = SequenceRewriter(ssrc=0xCAFE, next_sequence=65534, first_timestamp=2**32 - 320)
    now = 0
    sent, given_payloads = [], []
    for source, packets, gap in [
        ("prompt", _stream(0xA, 1000, 5000, 4), 0),
        ("bridge", _stream(0xB, 7, 123456, 4), 0),
        ("hold-music", _stream(0xC, 40000, 9, 4), 8000),  # one second of nothing first
    ]:
        now += gap
        for packet in packets:
            sent.append(rewriter.rewrite(packet, source, now))
            given_payloads.append(packet.payload)
            now += 160

    assert {p.ssrc for p in sent} == {0xCAFE}
    assert sent[0].sequence == 65534
    assert all((b.sequence - a.sequence) % 2**16 == 1 for a, b in itertools.pairwise(sent))
    steps = [(b.timestamp - a.timestamp) % 2**32 for a, b in itertools.pairwise(sent)]
    assert steps == [160] * 7 + [160 + 8000] + [160] * 3  # elapsed time, never backwards
    assert [i for i, p in enumerate(sent) if p.marker] == [0, 4, 8]
    assert [p.payload for p in sent] == given_payloads


def test_a_late_packet_of_the_current_source_does_not_pull_the_next_switch_back() -> None:
    rewriter = SequenceRewriter(ssrc=1)
    a = _stream(0xA, 0, 0, 3)
    first = [rewriter.rewrite(p, "a", 160 * i) for i, p in enumerate([a[0], a[2]])]
    late = rewriter.rewrite(a[1], "a", 320)
    after = rewriter.rewrite(_stream(0xB, 500, 0, 1)[0], "b", 480)
    assert late.sequence == 1
    assert after.sequence == first[-1].sequence + 1 == 3
    assert after.timestamp == first[-1].timestamp + 480 - 160

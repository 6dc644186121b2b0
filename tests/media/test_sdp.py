"""SDP as our SIP legs see it: offers from carriers, softphones and Asterisk read and written
back unchanged; answers that pick a codec both sides can use, mirror telephone-event, follow
hold directions, and refuse (488) what we cannot carry."""

from __future__ import annotations

import ipaddress
from typing import TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.sdp import (
    Connection,
    Direction,
    NoCommonCodec,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    answer,
    is_hold,
    make_offer,
    read_answer,
)


def sdp(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


CARRIER_OFFER = sdp(
    "v=0",
    "o=Sonus_UAC 245916 120337 IN IP4 203.0.113.10",
    "s=SIP Media Capabilities",
    "c=IN IP4 203.0.113.20",
    "t=0 0",
    "m=audio 17854 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=maxptime:30",
    "a=sendrecv",
)
SOFTPHONE_OFFER = sdp(
    "v=0",
    "o=Z 1700000000000 1 IN IP4 192.168.1.23",
    "s=Z",
    "c=IN IP4 192.168.1.23",
    "t=0 0",
    "m=audio 8000 RTP/AVP 9 106 0 8 96",
    "a=rtpmap:106 opus/48000/2",
    "a=fmtp:106 sprop-maxcapturerate=16000; minptime=20; useinbandfec=1",
    "a=rtpmap:96 telephone-event/8000",
    "a=fmtp:96 0-16",
    "a=rtcp:8001",
    "a=sendrecv",
)
ASTERISK_HOLD = sdp(
    "v=0",
    "o=- 1234 1236 IN IP4 198.51.100.5",
    "s=Asterisk",
    "c=IN IP4 198.51.100.5",
    "t=0 0",
    "m=audio 14000 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendonly",
)
OLD_STYLE_HOLD = sdp(
    "v=0",
    "o=user1 53655765 2353687638 IN IP4 198.51.100.7",
    "s=-",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)


class _Us(TypedDict):
    address: str
    port: int
    session_id: int
    version: int


OURS = _Us(address="192.0.2.1", port=40000, session_id=77, version=1)


def offer_with(media: str, *attributes: str, connection: str = "203.0.113.20") -> bytes:
    return sdp(
        "v=0",
        "o=- 1 1 IN IP4 203.0.113.20",
        "s=-",
        f"c=IN IP4 {connection}",
        "t=0 0",
        f"m={media}",
        *attributes,
    )


@pytest.mark.parametrize(
    "data",
    [CARRIER_OFFER, SOFTPHONE_OFFER, ASTERISK_HOLD, OLD_STYLE_HOLD],
    ids=["carrier", "softphone", "asterisk-hold", "old-style-hold"],
)
def test_real_offers_are_written_back_byte_for_byte(data: bytes) -> None:
    assert bytes(SessionDescription.parse(data)) == data


def test_a_carrier_offer_reads_as_what_the_carrier_said() -> None:
    sd = SessionDescription.parse(CARRIER_OFFER)
    assert sd.origin == Origin("Sonus_UAC", 245916, 120337, "203.0.113.10")
    assert sd.session_name == "SIP Media Capabilities"
    assert sd.connection == Connection("203.0.113.20")
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 17854, "RTP/AVP")
    assert audio.payload_types == (0, 8, 101)
    assert audio.rtpmaps[2] == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp(101) == "0-15"
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert audio.attributes == ("maxptime:30",)


def test_a_softphone_offer_keeps_its_rtcp_port_and_opus_channels() -> None:
    (audio,) = SessionDescription.parse(SOFTPHONE_OFFER).media
    assert audio.rtcp is not None
    assert audio.rtcp.port == 8001
    assert audio.rtpmaps[0] == RtpMap(106, "opus", 48000, 2)


def test_lf_only_sdp_with_trailing_whitespace_reads_the_same_as_crlf() -> None:
    sloppy = CARRIER_OFFER.replace(b"\r\n", b"  \n") + b"\n\n"
    assert SessionDescription.parse(sloppy) == SessionDescription.parse(CARRIER_OFFER)


def test_a_media_connection_overrides_the_session_connection() -> None:
    sd = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 0", "c=IN IP4 198.51.100.99"))
    negotiated = answer(sd, **OURS)
    assert negotiated.remote_address == "198.51.100.99"
    assert negotiated.remote_port == 5004


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "v=0"),
        (b"o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n", "v=0"),
        (sdp("v=0", "s=-", "c=IN IP4 192.0.2.1", "m=audio 5 RTP/AVP 0"), "no o= line"),
        (sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "m=audio 5 RTP/AVP 0"), "c="),
        (offer_with("audio 70000 RTP/AVP 0"), "m= port is out of range"),
        (offer_with("audio five RTP/AVP 0"), "m= port is not a number"),
        (offer_with("audio 5004 RTP/AVP"), "at least one format"),
        (offer_with("audio 5004 RTP/AVP 0", "a=rtpmap:0 PCMU"), "rtpmap"),
        (sdp("v=0", "o=- x 1 IN IP4 192.0.2.1"), "session id"),
        (sdp("v=0", "hello"), "line 2"),
    ],
)
def test_sdp_we_cannot_use_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        SessionDescription.parse(data)


def test_our_offer_is_pcmu_pcma_and_telephone_event_at_20_ms() -> None:
    offer = make_offer(**OURS)
    assert bytes(offer) == sdp(
        "v=0",
        "o=- 77 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_a_softphone_preferring_g722_and_opus_gets_pcmu_and_its_own_event_type() -> None:
    negotiated = answer(SessionDescription.parse(SOFTPHONE_OFFER), **OURS)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMU", 0)
    assert negotiated.telephone_event_pt == 96
    assert (negotiated.remote_address, negotiated.remote_port) == ("192.168.1.23", 8000)
    assert negotiated.ptime == 20
    assert bytes(negotiated.answer) == sdp(
        "v=0",
        "o=- 77 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 96",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_the_offerers_codec_order_wins_over_ours() -> None:
    offer = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 8 0"))
    negotiated = answer(offer, **OURS, supported=("PCMU", "PCMA"))
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 8)


def test_an_offer_without_telephone_event_leaves_dtmf_in_band() -> None:
    offer = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 0", "a=ptime:30"))
    negotiated = answer(offer, **OURS)
    assert negotiated.telephone_event_pt is None
    assert negotiated.answer.media[0].payload_types == (0,)
    assert negotiated.ptime == 30


def test_a_dynamic_codec_name_is_matched_whatever_its_case() -> None:
    offer = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 97", "a=rtpmap:97 pcma/8000"))
    negotiated = answer(offer, **OURS)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 97)


@pytest.mark.parametrize(
    "media",
    ["audio 5004 RTP/AVP 18", "audio 5004 RTP/SAVP 0", "video 5006 RTP/AVP 31"],
    ids=["g729-only", "srtp-only", "video-only"],
)
def test_an_offer_with_nothing_we_can_carry_is_refused_for_a_488(media: str) -> None:
    offer = SessionDescription.parse(offer_with(media, "a=rtpmap:18 G729/8000"))
    with pytest.raises(NoCommonCodec):
        answer(offer, **OURS)


def test_video_is_refused_with_port_zero_in_its_place() -> None:
    offer = SessionDescription.parse(
        offer_with("video 5006 RTP/AVP 31") + b"m=audio 5004 RTP/AVP 0\r\n"
    )
    answered = answer(offer, **OURS).answer
    assert [(m.media, m.port, m.formats) for m in answered.media] == [
        ("video", 0, ("31",)),
        ("audio", 40000, ("0",)),
    ]


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("a=sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("a=sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("a=recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("a=inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("a=sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("a=sendonly", Direction.SENDONLY, Direction.INACTIVE),
    ],
)
def test_the_answer_direction_follows_rfc_3264(
    offered: str, wanted: Direction, expected: Direction
) -> None:
    offer = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 0", offered))
    negotiated = answer(offer, **OURS, direction_wanted=wanted)
    assert negotiated.direction is expected
    assert negotiated.answer.media[0].direction is expected


def test_an_old_style_hold_is_answered_recvonly() -> None:
    negotiated = answer(SessionDescription.parse(OLD_STYLE_HOLD), **OURS)
    assert negotiated.direction is Direction.RECVONLY


@pytest.mark.parametrize(
    ("data", "held"),
    [(ASTERISK_HOLD, True), (OLD_STYLE_HOLD, True), (CARRIER_OFFER, False)],
)
def test_hold_is_recognised_both_ways(data: bytes, held: bool) -> None:
    assert is_hold(SessionDescription.parse(data)) is held


def test_the_caller_side_reads_the_answer_it_got() -> None:
    offer = make_offer(**OURS)
    far_end = answer(
        SessionDescription.parse(bytes(offer)),
        address="203.0.113.9",
        port=30000,
        session_id=5,
        version=1,
        supported=("PCMA",),
        direction_wanted=Direction.RECVONLY,
    )
    negotiated = read_answer(offer, SessionDescription.parse(bytes(far_end.answer)))
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 8)
    assert negotiated.telephone_event_pt == 101
    assert (negotiated.remote_address, negotiated.remote_port) == ("203.0.113.9", 30000)
    assert negotiated.direction is Direction.SENDONLY


def test_an_answer_picking_a_codec_we_did_not_offer_is_refused() -> None:
    offer = make_offer(**OURS, codecs=("PCMU",))
    bad = SessionDescription.parse(offer_with("audio 5004 RTP/AVP 8"))
    with pytest.raises(SdpError, match="did not offer"):
        read_answer(offer, bad)


def test_an_answer_refusing_our_audio_means_no_common_codec() -> None:
    offer = make_offer(**OURS)
    refused = SessionDescription.parse(offer_with("audio 0 RTP/AVP 0"))
    with pytest.raises(NoCommonCodec):
        read_answer(offer, refused)


addresses = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(
    address=addresses,
    port=st.integers(1, 65535),
    session_id=st.integers(0, 2**64),
    version=st.integers(0, 2**32),
    codecs=st.permutations(["PCMU", "PCMA"]).flatmap(
        lambda c: st.integers(1, 2).map(lambda n: c[:n])
    ),
    event_pt=st.one_of(st.none(), st.integers(96, 127)),
    direction=st.sampled_from(Direction),
)
def test_any_offer_we_make_reads_back_as_itself(
    address: str,
    port: int,
    session_id: int,
    version: int,
    codecs: list[str],
    event_pt: int | None,
    direction: Direction,
) -> None:
    offer = make_offer(
        address=address,
        port=port,
        session_id=session_id,
        version=version,
        codecs=codecs,
        telephone_event_pt=event_pt,
        direction=direction,
    )
    parsed = SessionDescription.parse(bytes(offer))
    assert parsed == offer
    expected_type = "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    assert parsed.connection == Connection(address, expected_type)


SAMPLE_LINES = sorted(
    {
        line
        for data in (CARRIER_OFFER, SOFTPHONE_OFFER, ASTERISK_HOLD, OLD_STYLE_HOLD)
        for line in data.decode().split("\r\n")
        if line
    }
)
sdp_like = st.lists(
    st.one_of(st.sampled_from(SAMPLE_LINES), st.text(max_size=30)), max_size=20
).map(lambda lines: "\n".join(["v=0", *lines]))


@given(st.one_of(st.text(), st.binary(), sdp_like))
def test_any_input_is_read_or_refused_with_sdp_error_and_reads_back_the_same(
    data: str | bytes,
) -> None:
    try:
        sd = SessionDescription.parse(data)
    except SdpError:
        return
    assert SessionDescription.parse(bytes(sd)) == sd

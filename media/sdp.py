"""SDP (RFC 4566) for our SIP legs, and RFC 3264 offer/answer for audio calls: PCMU, PCMA and
telephone-event (RFC 4733), ptime, and hold directions.

Descriptions are values: `SessionDescription.parse(data)` reads what a peer sent and
`bytes(sd)` writes canonical CRLF SDP. Lines we do not interpret are kept, in order, so a
description passed through us says what it said. Negotiation returns decisions (`Negotiated`);
opening RTP sockets is the transport's business.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PTIME = 20
TELEPHONE_EVENT = "telephone-event"
RTP_AVP = "RTP/AVP"
# Static payload types (RFC 3551) that need no rtpmap; G.722 says 8000 for historical reasons.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_STATIC_BY_NAME = {name: pt for pt, (name, _) in STATIC_PAYLOAD_TYPES.items()}
_HOLD_ADDRESSES = frozenset({"0.0.0.0"})  # noqa: S104 - RFC 2543 hold, not a bind address


class SdpError(Exception):
    """SDP we cannot use; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoCommonCodec(SdpError):
    """No audio codec both sides can use: the caller answers 488 Not Acceptable Here."""


class Direction(StrEnum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, *, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end."""
        return Direction.of(sends=self.receives, receives=self.sends)


@dataclass(frozen=True, slots=True)
class Connection:
    address: str
    address_type: str = "IP4"

    def __str__(self) -> str:
        return f"IN {self.address_type} {self.address}"


@dataclass(frozen=True, slots=True)
class Origin:
    username: str
    session_id: int
    version: int
    address: str
    address_type: str = "IP4"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"IN {self.address_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Fmtp:
    payload_type: int
    parameters: str


@dataclass(frozen=True, slots=True)
class Rtcp:
    port: int
    connection: Connection | None = None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    """As written: RTP payload type numbers for RTP/AVP, other tokens for other protocols."""
    port_count: int | None = None
    connection: Connection | None = None
    rtpmaps: tuple[RtpMap, ...] = ()
    fmtps: tuple[Fmtp, ...] = ()
    ptime: int | None = None
    direction: Direction | None = None
    """None when the m-line says nothing: the session-level direction, or sendrecv, applies."""
    rtcp: Rtcp | None = None
    attributes: tuple[str, ...] = ()
    """Other `a=` values, in order, without the `a=`."""
    extra_lines: tuple[str, ...] = ()
    """Other lines (`i=`, `b=`, `k=`), whole, in order; written after `c=`."""

    @property
    def payload_types(self) -> tuple[int, ...]:
        return tuple(int(f) for f in self.formats if _is_uint(f))

    def codec_name(self, payload_type: int) -> str | None:
        """The encoding name for a payload type: its rtpmap, else the static assignment."""
        for rtpmap in self.rtpmaps:
            if rtpmap.payload_type == payload_type:
                return rtpmap.encoding
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        return static[0] if static else None

    def fmtp(self, payload_type: int) -> str | None:
        for fmtp in self.fmtps:
            if fmtp.payload_type == payload_type:
                return fmtp.parameters
        return None

    def telephone_event_pt(self) -> int | None:
        for pt in self.payload_types:
            rtpmap = next((r for r in self.rtpmaps if r.payload_type == pt), None)
            if (
                rtpmap is not None
                and rtpmap.encoding.lower() == TELEPHONE_EVENT
                and rtpmap.clock_rate == 8000
            ):
                return pt
        return None

    def _lines(self) -> list[str]:
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        lines = [f"m={self.media} {port} {' '.join((self.proto, *self.formats))}"]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(self.extra_lines)
        written: set[int] = set()
        for rtpmap in self.rtpmaps:
            lines.append(f"a=rtpmap:{rtpmap}")
            if rtpmap.payload_type not in written:
                written.add(rtpmap.payload_type)
                lines.extend(
                    _fmtp_line(f) for f in self.fmtps if f.payload_type == rtpmap.payload_type
                )
        lines.extend(_fmtp_line(f) for f in self.fmtps if f.payload_type not in written)
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        if self.rtcp is not None:
            where = "" if self.rtcp.connection is None else f" {self.rtcp.connection}"
            lines.append(f"a=rtcp:{self.rtcp.port}{where}")
        lines.extend(f"a={a}" for a in self.attributes)
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        return lines


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    media: tuple[MediaDescription, ...] = ()
    direction: Direction | None = None
    attributes: tuple[str, ...] = ()
    """Other session-level `a=` values, in order, without the `a=`."""
    info_lines: tuple[str, ...] = ()
    """`i=`, `u=`, `e=`, `p=` lines, whole; written between `s=` and `c=`."""
    extra_lines: tuple[str, ...] = ()
    """`b=` lines, whole; written after `c=`."""
    timing: tuple[str, ...] = ("t=0 0",)
    """`t=`, `r=`, `z=`, `k=` lines, whole, in order."""

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
        return _Parser().parse(text)

    def __bytes__(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}", *self.info_lines]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines.extend(self.extra_lines)
        lines.extend(self.timing)
        lines.extend(f"a={a}" for a in self.attributes)
        if self.direction is not None:
            lines.append(f"a={self.direction}")
        for media in self.media:
            lines.extend(media._lines())
        return "".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape")

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """The media-level connection, else the session-level one."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """The direction the sender of this description means for `media`. The old hold
        convention, `c=IN IP4 0.0.0.0`, means "do not send to me"."""
        direction = media.direction or self.direction or Direction.SENDRECV
        connection = self.connection_of(media)
        if connection is not None and connection.address in _HOLD_ADDRESSES:
            return Direction.of(sends=direction.sends, receives=False)
        return direction


_DIRECTIONS = frozenset(d.value for d in Direction)


def _fmtp_line(fmtp: Fmtp) -> str:
    if fmtp.parameters:
        return f"a=fmtp:{fmtp.payload_type} {fmtp.parameters}"
    return f"a=fmtp:{fmtp.payload_type}"


def _is_uint(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _uint(text: str, what: str, *, maximum: int | None = None) -> int:
    if not _is_uint(text):
        raise SdpError(f"{what} is not a number: {text!r}")
    value = int(text)
    if maximum is not None and value > maximum:
        raise SdpError(f"{what} is out of range: {value}")
    return value


def _connection(fields: Sequence[str], what: str) -> Connection:
    if len(fields) != 3:
        raise SdpError(f"{what} must be 'IN IP4|IP6 <address>'")
    net_type, address_type, address = fields
    if net_type != "IN":
        raise SdpError(f"{what} has network type {net_type!r}, not IN")
    if address_type not in ("IP4", "IP6"):
        raise SdpError(f"{what} has address type {address_type!r}, not IP4 or IP6")
    return Connection(address=address, address_type=address_type)


@dataclass(slots=True)
class _MediaBuilder:
    media: MediaDescription
    rtpmaps: list[RtpMap] = dataclasses.field(default_factory=list)
    fmtps: list[Fmtp] = dataclasses.field(default_factory=list)
    attributes: list[str] = dataclasses.field(default_factory=list)
    extra_lines: list[str] = dataclasses.field(default_factory=list)

    def build(self) -> MediaDescription:
        # fmtps in the order they are written (after their rtpmap), so a parse of our own
        # output gives the same value.
        order: dict[int, int] = {}
        for index, rtpmap in enumerate(self.rtpmaps):
            order.setdefault(rtpmap.payload_type, index)
        fmtps = sorted(self.fmtps, key=lambda f: order.get(f.payload_type, len(order)))
        return dataclasses.replace(
            self.media,
            rtpmaps=tuple(self.rtpmaps),
            fmtps=tuple(fmtps),
            attributes=tuple(self.attributes),
            extra_lines=tuple(self.extra_lines),
        )


class _Parser:
    def parse(self, text: str) -> SessionDescription:
        lines = [line.rstrip() for line in text.split("\n")]
        lines = [line for line in lines if line]
        if not lines or lines[0] != "v=0":
            raise SdpError("SDP must start with v=0")
        origin: Origin | None = None
        session_name = "-"
        connection: Connection | None = None
        direction: Direction | None = None
        info: list[str] = []
        extra: list[str] = []
        timing: list[str] = []
        attributes: list[str] = []
        media: list[_MediaBuilder] = []
        for number, line in enumerate(lines[1:], start=2):
            kind, eq, value = line.partition("=")
            if len(kind) != 1 or not eq or not ("a" <= kind <= "z"):
                raise SdpError(f"line {number} is not a <type>=<value> line: {line!r}")
            if kind == "m":
                media.append(_MediaBuilder(self._media(value)))
            elif media:
                self._media_line(media[-1], kind, value, line)
            elif kind == "v":
                raise SdpError(f"line {number}: v= may only be the first line")
            elif kind == "o":
                origin = self._origin(value)
            elif kind == "s":
                session_name = value
            elif kind == "c":
                connection = _connection(value.split(), "c= line")
            elif kind == "a":
                if value in _DIRECTIONS:
                    direction = Direction(value)
                else:
                    attributes.append(value)
            elif kind in "iuep":
                info.append(line)
            elif kind in "tzrk":
                timing.append(line)
            else:
                extra.append(line)
        if origin is None:
            raise SdpError("SDP has no o= line")
        built = tuple(m.build() for m in media)
        for m in built:
            if m.port != 0 and m.connection is None and connection is None:
                raise SdpError(f"no connection address (c=) for the {m.media} stream")
        return SessionDescription(
            origin=origin,
            session_name=session_name,
            connection=connection,
            media=built,
            direction=direction,
            attributes=tuple(attributes),
            info_lines=tuple(info),
            extra_lines=tuple(extra),
            timing=tuple(timing) or ("t=0 0",),
        )

    def _origin(self, value: str) -> Origin:
        fields = value.split()
        if len(fields) != 6:
            raise SdpError("o= line must have six fields")
        username, session_id, version, *connection = fields
        where = _connection(connection, "o= line")
        return Origin(
            username=username,
            session_id=_uint(session_id, "o= session id"),
            version=_uint(version, "o= session version"),
            address=where.address,
            address_type=where.address_type,
        )

    def _media(self, value: str) -> MediaDescription:
        fields = value.split()
        if len(fields) < 4:
            raise SdpError("m= line must name media, port, protocol and at least one format")
        kind, port_text, proto, *formats = fields
        port_text, slash, count_text = port_text.partition("/")
        return MediaDescription(
            media=kind,
            port=_uint(port_text, "m= port", maximum=65535),
            port_count=_uint(count_text, "m= port count") if slash else None,
            proto=proto,
            formats=tuple(formats),
        )

    def _media_line(self, builder: _MediaBuilder, kind: str, value: str, line: str) -> None:
        if kind == "c":
            connection = _connection(value.split(), "c= line")
            builder.media = dataclasses.replace(builder.media, connection=connection)
        elif kind != "a":
            builder.extra_lines.append(line)
        elif value in _DIRECTIONS:
            builder.media = dataclasses.replace(builder.media, direction=Direction(value))
        else:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                builder.rtpmaps.append(self._rtpmap(rest))
            elif name == "fmtp":
                pt, _, parameters = rest.partition(" ")
                builder.fmtps.append(
                    Fmtp(_uint(pt, "fmtp payload type", maximum=127), parameters.strip())
                )
            elif name == "ptime":
                ptime = _uint(rest.strip(), "ptime")
                builder.media = dataclasses.replace(builder.media, ptime=ptime)
            elif name == "rtcp":
                fields = rest.split()
                if not fields:
                    raise SdpError("a=rtcp has no port")
                rtcp = Rtcp(
                    port=_uint(fields[0], "a=rtcp port", maximum=65535),
                    connection=_connection(fields[1:], "a=rtcp") if len(fields) > 1 else None,
                )
                builder.media = dataclasses.replace(builder.media, rtcp=rtcp)
            else:
                builder.attributes.append(value)

    def _rtpmap(self, value: str) -> RtpMap:
        fields = value.split()
        if len(fields) != 2:
            raise SdpError(f"a=rtpmap must be '<payload type> <encoding>/<rate>': {value!r}")
        encoding, *numbers = fields[1].split("/")
        if not encoding or len(numbers) not in (1, 2):
            raise SdpError(f"a=rtpmap must be '<payload type> <encoding>/<rate>': {value!r}")
        return RtpMap(
            payload_type=_uint(fields[0], "rtpmap payload type", maximum=127),
            encoding=encoding,
            clock_rate=_uint(numbers[0], "rtpmap clock rate"),
            channels=_uint(numbers[1], "rtpmap channels") if len(numbers) == 2 else None,
        )


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What an offer/answer exchange decided, from our side of the call."""

    answer: SessionDescription
    codec: str
    """Upper-case encoding name, e.g. "PCMU"."""
    payload_type: int
    """The payload type we send the codec with: the one the far end declared."""
    telephone_event_pt: int | None
    """None when the far end does not do RFC 4733: DTMF must be detected in-band."""
    remote_address: str
    remote_port: int
    ptime: int
    direction: Direction
    """Our direction: whether we send and whether we receive."""


def _address_type(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name; IP4 is what every peer we meet expects


def _audio_media(
    port: int, codecs: Sequence[tuple[int, str, str | None]], ptime: int, direction: Direction
) -> MediaDescription:
    """An RTP/AVP audio m-line offering `(payload type, encoding, fmtp)` in order."""
    rtpmaps = []
    for pt, encoding, _ in codecs:
        rate = 8000
        static = STATIC_PAYLOAD_TYPES.get(pt)
        if static is not None and static[0] == encoding.upper():
            encoding, rate = static
        rtpmaps.append(RtpMap(pt, encoding, rate))
    return MediaDescription(
        media="audio",
        port=port,
        proto=RTP_AVP,
        formats=tuple(str(pt) for pt, _, _ in codecs),
        rtpmaps=tuple(rtpmaps),
        fmtps=tuple(Fmtp(pt, fmtp) for pt, _, fmtp in codecs if fmtp is not None),
        ptime=ptime,
        direction=direction,
    )


def _session(
    address: str, session_id: int, version: int, media: tuple[MediaDescription, ...]
) -> SessionDescription:
    address_type = _address_type(address)
    return SessionDescription(
        origin=Origin("-", session_id, version, address, address_type),
        connection=Connection(address, address_type),
        media=media,
    )


def make_offer(
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event_pt: int | None = 101,
    direction: Direction = Direction.SENDRECV,
) -> SessionDescription:
    """An audio offer for the static codecs named in `codecs`, in our order of preference,
    with RFC 4733 events 0-16 on `telephone_event_pt` unless it is None."""
    offered: list[tuple[int, str, str | None]] = []
    for name in codecs:
        pt = _STATIC_BY_NAME.get(name.upper())
        if pt is None:
            raise ValueError(f"cannot offer {name!r}: only {sorted(_STATIC_BY_NAME)}")
        offered.append((pt, name, None))
    if telephone_event_pt is not None:
        offered.append((telephone_event_pt, TELEPHONE_EVENT, "0-16"))
    audio = _audio_media(port, offered, DEFAULT_PTIME, direction)
    return _session(address, session_id, version, (audio,))


def _usable_audio(media: MediaDescription) -> bool:
    # Plain RTP only: SRTP keying (a=crypto, DTLS) is not done here, so an RTP/SAVP offer
    # is refused rather than answered with media the far end would not decrypt.
    return media.media == "audio" and media.port != 0 and media.proto == RTP_AVP


def _choose(media: MediaDescription, wanted: Sequence[str]) -> tuple[int, str] | None:
    """The first codec in `media`'s order whose name is in `wanted`."""
    names = {name.upper() for name in wanted}
    for pt in media.payload_types:
        name = media.codec_name(pt)
        if name is not None and name.upper() in names and name.lower() != TELEPHONE_EVENT:
            return pt, name.upper()
    return None


def answer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    direction_wanted: Direction = Direction.SENDRECV,
) -> Negotiated:
    """Answer `offer` (RFC 3264 §6.1) with one audio stream.

    The codec is the first in the offerer's order that is in `supported`: the offerer listed
    its preference and we have none worth a transcode. The offerer's telephone-event payload
    type is mirrored. Every other m-line, and any audio after the first usable one, is
    refused with port 0 in the same place. Raises NoCommonCodec when no audio can be agreed.
    """
    chosen: tuple[int, MediaDescription, tuple[int, str]] | None = None
    for index, media in enumerate(offer.media):
        if chosen is None and _usable_audio(media):
            codec = _choose(media, supported)
            if codec is not None:
                chosen = index, media, codec
    if chosen is None:
        raise NoCommonCodec("no audio codec in the offer is one we support")
    index, offered, (pt, name) = chosen
    remote = offer.direction_of(offered)
    direction = Direction.of(
        sends=remote.receives and direction_wanted.sends,
        receives=remote.sends and direction_wanted.receives,
    )
    event_pt = offered.telephone_event_pt()
    codecs: list[tuple[int, str, str | None]] = [(pt, offered.codec_name(pt) or name, None)]
    if event_pt is not None:
        codecs.append((event_pt, TELEPHONE_EVENT, offered.fmtp(event_pt) or "0-15"))
    ptime = offered.ptime or DEFAULT_PTIME
    answered = tuple(
        _audio_media(port, codecs, ptime, direction)
        if i == index
        else MediaDescription(media=m.media, port=0, proto=m.proto, formats=m.formats)
        for i, m in enumerate(offer.media)
    )
    connection = offer.connection_of(offered)
    assert connection is not None  # parse refuses an active stream without one
    return Negotiated(
        answer=_session(address, session_id, version, answered),
        codec=name,
        payload_type=pt,
        telephone_event_pt=event_pt,
        remote_address=connection.address,
        remote_port=offered.port,
        ptime=ptime,
        direction=direction,
    )


def read_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated:
    """What the far end's answer to our `offer` decided. Raises NoCommonCodec when it refused
    our audio, SdpError when the answer does not fit the offer (RFC 3264 §6)."""
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"the answer has {len(answer.media)} m-lines; the offer had {len(offer.media)}"
        )
    for ours, theirs in zip(offer.media, answer.media, strict=True):
        if ours.media != theirs.media:
            raise SdpError(f"the answer has {theirs.media} where the offer had {ours.media}")
        if not _usable_audio(ours) or theirs.port == 0:
            continue
        if theirs.proto != ours.proto:
            raise SdpError(f"the answer uses {theirs.proto}; we offered {ours.proto}")
        offered_names = [
            name
            for pt in ours.payload_types
            if (name := ours.codec_name(pt)) is not None and name.lower() != TELEPHONE_EVENT
        ]
        first = next((pt for pt in theirs.payload_types if pt != theirs.telephone_event_pt()), None)
        if first is None:
            raise SdpError("the answer names no audio codec")
        codec = _choose(dataclasses.replace(theirs, formats=(str(first),)), offered_names)
        if codec is None:
            raise SdpError(f"the answer picked payload type {first}, which we did not offer")
        remote = answer.direction_of(theirs).reversed()
        ours_direction = offer.direction_of(ours)
        direction = Direction.of(
            sends=remote.sends and ours_direction.sends,
            receives=remote.receives and ours_direction.receives,
        )
        connection = answer.connection_of(theirs)
        assert connection is not None  # parse refuses an active stream without one
        return Negotiated(
            answer=answer,
            codec=codec[1],
            payload_type=codec[0],
            telephone_event_pt=theirs.telephone_event_pt() if ours.telephone_event_pt() else None,
            remote_address=connection.address,
            remote_port=theirs.port,
            ptime=theirs.ptime or DEFAULT_PTIME,
            direction=direction,
        )
    raise NoCommonCodec("the answer refused our audio stream")


def is_hold(sd: SessionDescription) -> bool:
    """Whether the sender of `sd` puts the call on hold: an active audio stream it will not
    receive on (sendonly, inactive, or the old `c=IN IP4 0.0.0.0`)."""
    audio = [m for m in sd.media if m.media == "audio" and m.port != 0]
    return bool(audio) and all(not sd.direction_of(m).receives for m in audio)

"""An agent's browser leg: aiortc negotiates it (ICE, DTLS, SRTP keys), our RTP code carries it.

aiortc's own media path decodes every received packet into frames through a jitter buffer and a
decoder thread, and encodes frames again to send; for G.711 that is pure cost, and its jitter
buffer is known to hold audio back by hundreds of milliseconds after a single lost packet. So
the leg takes aiortc's transports and nothing of its media pipeline: the transceiver's sender
and receiver are never started, decrypted RTP and RTCP go straight to a `WebRtcStream` (an
`RtpStream` without sockets), and what the stream sends is SRTP-protected and written to the
ICE pair aiortc selected. Bridges, the mixer, players and recorders treat it like any other leg,
so audio passes between the caller and the browser without decode or encode.

G.711 (PCMU or PCMA) is answered whenever the offer has it. An offer without either but with
Opus (opus/48000/2) is answered with Opus, and only then is audio coded at all: an
`OpusTranscoder` (webrtc/opus.py) sits between the connection and the stream, turning received
Opus into PCMU packets before the stream sees them and what the stream sends as PCMU into Opus,
so the stream stays a PCMU leg to the rest of the node. Each path is chosen once when a
connection is attached (separate callbacks and transports), so G.711 packets pass through no
test for it. Offers with neither are refused (`codec_unsupported`).

The stream outlives peer connections: when the browser reconnects (a new offer after a network
change), the new connection is attached to the same stream, which keeps its SSRC, sequence and
timestamp, so whatever it was bridged to carries on. The reconnected browser may negotiate the
other codec family: the transcoder belongs to the connection, not the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.sdp import SessionDescription as AiortcSdp

from media.ports import PortRange
from media.stream import RTCP_INTERVAL, RtpStream
from webrtc.opus import PCMU_PAYLOAD_TYPE, OpusTranscoder

__all__ = ["AgentPeer", "IceServer", "NegotiationFailed", "WebRtcStream"]

log = logging.getLogger(__name__)

_G711 = ("audio/pcmu", "audio/pcma")
_OPUS = ("audio/opus",)
_PSEUDO_RTP = ("192.0.2.1", 9)
"""Where the stream believes its far end is (TEST-NET-1): the real address is the ICE pair's."""
_PSEUDO_RTCP = ("192.0.2.1", 10)
_EXTMAP = re.compile(r"^a=extmap(?:-allow-mixed|:.*)\r?\n", re.M)
_NO_PORTS = PortRange(2, 3)


class NegotiationFailed(Exception):
    """The browser's offer cannot be answered (no audio, neither G.711 nor Opus, malformed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


class _SrtpOut(asyncio.DatagramTransport):
    """What a `WebRtcStream` sends through: protects with the DTLS-derived SRTP keys and writes
    to the selected ICE candidate pair. The stream's addresses are ignored."""

    def __init__(self, dtls: RTCDtlsTransport, *, rtcp: bool) -> None:
        super().__init__()
        self.dtls = dtls
        self._rtcp = rtcp
        self._closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        dtls = self.dtls
        session = dtls._tx_srtp
        if self._closed or session is None:
            return
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return
        try:
            # pylibsrtp takes bytes only; relayed packets arrive as a rewritten bytearray.
            raw = data if type(data) is bytes else bytes(data)
            packet = session.protect_rtcp(raw) if self._rtcp else session.protect(raw)
        except pylibsrtp.Error:
            return
        pair.protocol.transport.sendto(packet, pair.remote_addr)

    def close(self) -> None:
        self._closed = True

    def is_closing(self) -> bool:
        return self._closed


class _OpusOut(_SrtpOut):
    """`_SrtpOut` for a connection that carries Opus: the stream's PCMU packets are encoded
    first, its RTCP translated to the Opus clock."""

    def __init__(self, dtls: RTCDtlsTransport, transcoder: OpusTranscoder, *, rtcp: bool) -> None:
        super().__init__(dtls, rtcp=rtcp)
        self._transcoder = transcoder

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closed:
            return
        if self._rtcp:
            super().sendto(self._transcoder.rtcp_out(data), addr)
            return
        for packet in self._transcoder.send(data):
            super().sendto(packet, addr)


class WebRtcStream(RtpStream):
    """An `RtpStream` whose packets travel through a browser peer connection's SRTP."""

    __slots__ = ("_link",)

    @classmethod
    def create(cls, *, rtcp_interval: float = RTCP_INTERVAL) -> WebRtcStream:
        stream = cls(asyncio.get_running_loop(), _NO_PORTS, "0.0.0.0", None, rtcp_interval)  # noqa: S104 - never bound
        stream._link = None
        # An agent's keys arrive as commands (AgentDesk.dtmf), never as tones in their audio:
        # searching it for tones would cost more CPU than carrying it.
        stream.inband_detection = False
        return stream

    @property
    def connected(self) -> bool:
        return self._rtp is not None

    def carried_by(self, dtls: RTCDtlsTransport) -> bool:
        return isinstance(self._rtp, _SrtpOut) and self._rtp.dtls is dtls

    def attach(
        self, dtls: RTCDtlsTransport, codec: str, payload_type: int, event_pt: int | None
    ) -> None:
        """Carry the stream over `dtls` from now on (a new or renegotiated connection). With
        `codec` "OPUS" the connection gets its own transcoder and the stream becomes PCMU."""
        self.detach()
        link = object()
        self._link = link
        on_rtp: Callable[[bytes, int], Awaitable[None]]
        on_rtcp: Callable[[bytes], Awaitable[None]]
        if codec.upper() != "OPUS":

            async def on_rtp(data: bytes, arrival_time_ms: int = 0) -> None:
                if self._link is link:
                    self._receive_rtp(data, _PSEUDO_RTP)

            async def on_rtcp(data: bytes) -> None:
                if self._link is link:
                    self._receive_rtcp(data, _PSEUDO_RTCP)

            self._rtp = _SrtpOut(dtls, rtcp=False)
            self._rtcp = _SrtpOut(dtls, rtcp=True)
            self._take(codec, payload_type, event_pt, sends=True)
        else:
            # telephone-event is not negotiated (aiortc cannot answer it), so keys pressed on
            # either side travel as tones in the audio.
            transcoder = OpusTranscoder(payload_type)

            async def on_rtp(data: bytes, arrival_time_ms: int = 0) -> None:
                if self._link is link:
                    packet = transcoder.receive(data)
                    if packet is not None:
                        self._receive_rtp(packet, _PSEUDO_RTP)

            async def on_rtcp(data: bytes) -> None:
                if self._link is link:
                    self._receive_rtcp(transcoder.rtcp_in(data), _PSEUDO_RTCP)

            self._rtp = _OpusOut(dtls, transcoder, rtcp=False)
            self._rtcp = _OpusOut(dtls, transcoder, rtcp=True)
            self._take("PCMU", PCMU_PAYLOAD_TYPE, None, sends=True)

        # Instance attributes shadow the transport's methods: its receive loop calls these with
        # each decrypted packet, so aiortc's parsing, routing and decoding never run.
        dtls._handle_rtp_data = on_rtp  # type: ignore[method-assign]
        dtls._handle_rtcp_data = on_rtcp  # type: ignore[method-assign]
        self._remote = _PSEUDO_RTP
        self._rtcp_remote = _PSEUDO_RTCP
        self._source_addr = _PSEUDO_RTP
        self._rtcp_source = _PSEUDO_RTCP
        self._latch_open = False
        self._rtcp_latch_open = False
        # The browser sees a new source after a reconnect: continue from the wall clock.
        self._rewriter.restart()
        self._refresh_sending()
        if self._report_handle is None:
            self._schedule_report()

    def detach(self) -> None:
        """The connection is gone: stop sending until the next `attach`."""
        self._link = None
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = None
        self._rtcp = None
        self._refresh_sending()

    async def _close_transports(self) -> None:
        self.detach()


async def _skip(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for the sender's and receiver's start: their media pipeline is not used."""


def g711_only(answer_sdp: str) -> str:
    """Drop RTP header extensions from our answer so the browser sends plain 12-byte headers,
    which bridges forward (and the Opus transcoder reads) without parsing."""
    return _EXTMAP.sub("", answer_sdp)


class AgentPeer:
    """One browser peer connection feeding an agent's `WebRtcStream`."""

    def __init__(self, pc: RTCPeerConnection, stream: WebRtcStream) -> None:
        self.pc = pc
        self.stream = stream
        self.codec = "PCMU"
        """What the connection carries: PCMU, PCMA or OPUS (the stream itself is then PCMU)."""
        self.on_state: Callable[[str], None] | None = None
        self._dtls: RTCDtlsTransport | None = None

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    @classmethod
    async def answer(
        cls, offer_sdp: str, stream: WebRtcStream, ice_servers: Sequence[IceServer] = ()
    ) -> tuple[AgentPeer, str]:
        """Answer a browser's (non-trickle) offer; returns the peer and our answer SDP, which
        carries every candidate. The peer attaches to `stream` once DTLS is up."""
        try:
            parsed = AiortcSdp.parse(offer_sdp)
        except (ValueError, IndexError, KeyError) as exc:
            raise NegotiationFailed("invalid_sdp", f"the offer is not valid SDP: {exc}") from exc
        audio = [m for m in parsed.media if m.kind == "audio"]
        if len(audio) != 1 or len(parsed.media) != 1:
            raise NegotiationFailed("invalid_sdp", "the offer must have exactly one audio stream")
        offered = audio[0].rtp.codecs
        wanted: tuple[str, ...]
        if any(c.mimeType.lower() in _G711 for c in offered):
            wanted = _G711
        elif any(
            c.mimeType.lower() in _OPUS and c.clockRate == 48000 and c.channels == 2
            for c in offered
        ):
            # Only when the browser insists: Opus costs a decode and an encode per packet.
            wanted = _OPUS
        else:
            raise NegotiationFailed(
                "codec_unsupported", "the offer has neither PCMU, PCMA nor Opus"
            )
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in ice_servers
            ]
        )
        pc = RTCPeerConnection(config)
        peer = cls(pc, stream)
        try:
            # Made before the offer is applied so that the offer's audio lands on it with our
            # codec preferences (G.711, or else Opus alone) already set.
            transceiver = pc.addTransceiver("audio", direction="sendrecv")
            capabilities = RTCRtpSender.getCapabilities("audio")
            transceiver.setCodecPreferences(
                [c for c in capabilities.codecs if c.mimeType.lower() in wanted]
            )
            sender, receiver = transceiver.sender, transceiver.receiver
            sender._ssrc = stream.ssrc
            sender.send = _skip  # type: ignore[method-assign]
            receiver.receive = _skip  # type: ignore[method-assign]
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except NegotiationFailed:
            await pc.close()
            raise
        except Exception as exc:
            await pc.close()
            raise NegotiationFailed(
                "negotiation_failed", f"cannot answer the offer: {exc}"
            ) from exc
        local = pc.localDescription
        answer_media = AiortcSdp.parse(local.sdp).media[0]
        codec = answer_media.rtp.codecs[0]
        peer.codec = codec.mimeType.split("/", 1)[1].upper()
        payload_type = codec.payloadType
        assert payload_type is not None
        dtls = sender.transport
        peer._dtls = dtls

        @pc.on("connectionstatechange")
        def changed() -> None:
            state = pc.connectionState
            if state == "connected":
                stream.attach(dtls, peer.codec, payload_type, None)
            elif state in ("failed", "closed") and stream.carried_by(dtls):
                # Only the connection the stream is on may take it down.
                stream.detach()
            if peer.on_state is not None:
                peer.on_state(str(state))

        return peer, g711_only(local.sdp)

    async def close(self) -> None:
        if self._dtls is not None and self.stream.carried_by(self._dtls):
            self.stream.detach()
        with contextlib.suppress(Exception):
            await self.pc.close()

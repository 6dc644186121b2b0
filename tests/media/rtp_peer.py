"""A far end for RTP tests: plain UDP sockets on loopback that send what a test gives them and
keep what arrives, plus the negotiated SDP a stream is configured with."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from typing import Any

from media.ports import PortRange
from media.rtp import RtpPacket
from media.sdp import Direction, Negotiated, answer, make_offer

HOST = "127.0.0.1"


def port_range(pairs: int = 256) -> PortRange:
    """A range below the ephemeral ports whose ports were all free a moment ago, so programs
    running beside the tests (other test runs, a media node) rarely get in the way; a pair
    taken since is skipped by RtpStream.open."""
    for _ in range(50):
        low = random.randrange(20000, 30000 - 2 * pairs, 2)
        if all(_free(port) for port in range(low, low + 2 * pairs)):
            break
    return PortRange(low, low + 2 * pairs - 1)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def negotiated(
    codec: str = "PCMU",
    *,
    telephone_event_pt: int | None = 101,
    direction: Direction = Direction.SENDRECV,
) -> Negotiated:
    """What answering a far end's offer of `codec` (and telephone-event) decides."""
    offer = make_offer(
        address=HOST,
        port=40000,
        session_id=1,
        version=1,
        codecs=(codec,),
        telephone_event_pt=telephone_event_pt,
    )
    decided = answer(offer, address=HOST, port=40002, session_id=2, version=1)
    return dataclasses.replace(decided, direction=direction)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[tuple[bytes, Any, float]]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr, asyncio.get_running_loop().time()))


class Peer:
    """One UDP socket of the far end."""

    def __init__(self, transport: asyncio.DatagramTransport, queue: asyncio.Queue[Any]) -> None:
        self.transport = transport
        self.queue: asyncio.Queue[tuple[bytes, Any, float]] = queue
        self.address: tuple[str, int] = transport.get_extra_info("sockname")[:2]

    @classmethod
    async def open(cls, port: int = 0) -> Peer:
        queue: asyncio.Queue[tuple[bytes, Any, float]] = asyncio.Queue()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Collector(queue), local_addr=(HOST, port)
        )
        return cls(transport, queue)

    def send(self, data: bytes | RtpPacket, to: tuple[str, int]) -> None:
        self.transport.sendto(bytes(data), to)

    async def datagram(self, timeout: float = 2.0) -> tuple[bytes, Any, float]:
        """The next datagram: bytes, source address, arrival time on the loop's clock."""
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def packets(self, count: int, timeout: float = 2.0) -> list[RtpPacket]:
        return [RtpPacket.parse((await self.datagram(timeout))[0]) for _ in range(count)]

    async def until_quiet(self, quiet: float = 0.15) -> list[tuple[bytes, Any, float]]:
        """Everything that arrives until nothing has for `quiet` seconds."""
        got = []
        while True:
            try:
                got.append(await asyncio.wait_for(self.queue.get(), quiet))
            except TimeoutError:
                return got

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    def close(self) -> None:
        self.transport.close()


def audio_packet(
    sequence: int, payload: bytes, *, timestamp: int | None = None, ssrc: int = 0x1234, pt: int = 0
) -> RtpPacket:
    return RtpPacket(
        payload_type=pt,
        sequence=sequence & 0xFFFF,
        timestamp=(sequence * 160 if timestamp is None else timestamp) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    )

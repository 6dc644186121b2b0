"""Capturing UDP on the loopback interface (AF_PACKET), to see what really went to SIPp."""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
_ETHERNET = 14


def can_capture() -> bool:
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except (PermissionError, OSError):
        return False
    s.close()
    return True


@dataclass
class UdpCapture:
    """Every UDP datagram to `dst_port` on lo, grouped by source port, while running."""

    dst_port: int
    by_source: dict[int, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:  # loopback shows each packet twice
                continue
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        if len(frame) < _ETHERNET + 28 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[_ETHERNET:]
        if ip[9] != socket.IPPROTO_UDP:
            return
        header = (ip[0] & 0x0F) * 4
        src, dst, length = struct.unpack("!HHH", ip[header : header + 6])
        if dst != self.dst_port:
            return
        self.by_source[src].append(bytes(ip[header + 8 : header + length]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

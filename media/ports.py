"""The node's RTP port range: even ports for RTP, the odd port above each for its RTCP."""

from __future__ import annotations

from collections import deque

__all__ = ["NoFreePorts", "PortRange"]


class NoFreePorts(Exception):
    """Every RTP port of the range is taken: the node cannot take another call leg."""


class PortRange:
    """Hands out even RTP ports from an inclusive range, oldest-released first, so a port is not
    reused at once and a late packet meant for an ended call does not reach the next one."""

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"port range {low}-{high} is not within 1-65535")
        first = low + low % 2
        # Each RTP port needs its RTCP port (port + 1) inside the range too.
        self._free: deque[int] = deque(range(first, high, 2))
        if not self._free:
            raise ValueError(f"port range {low}-{high} holds no even port with its odd neighbour")
        self.low = low
        self.high = high
        self.capacity = len(self._free)
        self._taken: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._taken)

    def allocate(self) -> int:
        """The free even port released longest ago (or never used)."""
        if not self._free:
            raise NoFreePorts(f"all {self.capacity} RTP ports of {self.low}-{self.high} are in use")
        port = self._free.popleft()
        self._taken.add(port)
        return port

    def release(self, port: int) -> None:
        if port not in self._taken:
            raise ValueError(f"port {port} was not allocated from this range")
        self._taken.remove(port)
        self._free.append(port)

"""RTP forwarding capacity of one media-node process, next to the raw UDP echo ceiling of the
same machine, measured in one run.

    .venv/bin/python loadtests/rtp_bench.py [--calls 3000] [--seconds 4] [--echo-streams 8000]

Two phases, each stepping its load up a ladder until a step fails (any loss, or p99 above
5 ms), then halving the gap between the last pass and the first failure down to 50 calls
(100 echo streams). A failing step is tried once more (--attempts), since the machine may be
shared; the "other programs" column shows how much CPU others took meanwhile.

1. Echo ceiling: a uvloop process with K UDP sockets that send every datagram straight back;
   K streams of 20 ms-paced 172-byte packets. The most a Python/uvloop process on this machine
   can move, with no RTP work at all.
2. Bridged calls: for each of N calls, two `RtpStream`s joined by a `Bridge` in a uvloop "node"
   process (G.711 μ-law both sides, telephone-event negotiated, as a SIP trunk to a WebRTC agent
   leg would be); both sides of every call send 50 packets/s.

The traffic generator is a separate process (this one), a plain epoll loop on one socket that
puts its send time (CLOCK_MONOTONIC, shared by all processes) and stream index into each
payload, so one-way latency through the node and loss are exact per packet. One bridged call
moves as many packets through the node as two echo streams; the table lines them up that way.
The node is pinned to CPU 0 and the generator to CPU 1 (--no-pin to let the scheduler decide).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
PACKET_INTERVAL = 0.020
SLOTS = 20
"""Sends are spread over 1 ms slots of each 20 ms period, as independent phones would be."""
PAYLOAD = 160
P99_LIMIT_MS = 5.0
WARMUP = 1.0
DRAIN = 0.5
NODE_PORTS = (16000, 31999)
BRIDGE_LADDER = (250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 3500, 4000)
ECHO_LADDER = (500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000)
BRIDGE_RESOLUTION = 50
ECHO_RESOLUTION = 100
CPUS = os.cpu_count() or 1
_STAMP = struct.Struct("<qIB")
"""Payload start: send time (ns), stream index, 1 if sent inside the measured window."""
_SEQ_TS = struct.Struct("!HI")


# --- node process ---------------------------------------------------------------------------


def _node_main(
    conn: Connection, mode: str, count: int, generator: tuple[str, int], cpu: int
) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(_node(conn, mode, count, generator))


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # The bare minimum: hand the datagram back, no Python frame of our own in between.
        self.datagram_received = transport.sendto  # type: ignore[method-assign]


async def _node(conn: Connection, mode: str, count: int, generator: tuple[str, int]) -> None:
    from media.bridge import Bridge
    from media.ports import PortRange
    from media.sdp import answer, make_offer
    from media.stream import RtpStream

    loop = asyncio.get_running_loop()
    ports: list[int] = []
    streams: list[RtpStream] = []
    if mode == "echo":
        for _ in range(count):
            transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, 0))
            ports.append(transport.get_extra_info("sockname")[1])
    else:
        offer = make_offer(address=HOST, port=generator[1], session_id=1, version=1)
        negotiated = answer(offer, address=HOST, port=NODE_PORTS[0], session_id=2, version=1)
        port_range = PortRange(*NODE_PORTS)
        for _ in range(count):
            caller = await RtpStream.open(HOST, port_range)
            agent = await RtpStream.open(HOST, port_range)
            for leg in (caller, agent):
                leg.configure(negotiated, generator)
            Bridge(caller, agent).start()
            streams += (caller, agent)
            ports += (caller.local_port, agent.local_port)
    conn.send(ports)

    done = loop.create_future()
    started = {"cpu": 0.0, "wall": 0.0}

    def command() -> None:
        try:
            message = conn.recv()
        except EOFError:  # the generator is gone: so is the benchmark
            message = "exit"
        if message == "start":
            started["cpu"] = time.process_time()
            started["wall"] = time.monotonic()
        elif message == "stop":
            cpu = time.process_time() - started["cpu"]
            wall = time.monotonic() - started["wall"]
            conn.send({"cpu": cpu, "wall": wall})
        elif message == "exit" and not done.done():
            done.set_result(None)

    loop.add_reader(conn.fileno(), command)
    await done
    loop.remove_reader(conn.fileno())
    # Sockets close with the process; saying BYE on thousands of streams is not measured here.


# --- generator --------------------------------------------------------------------------------


@dataclass
class StepResult:
    mode: str
    load: int
    """Echo streams, or bridged calls."""
    packets_per_second: float
    """Offered to the node in the measured window (what it received, when nothing was lost)."""
    sent: int
    lost: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    node_cpu: float
    generator_cpu: float
    generator_lag_ms: float
    """The generator's worst lateness against its own send schedule."""
    others_cpu: float = 0.0
    """CPU (in cores) that other programs on the machine used meanwhile."""
    attempt: int = 1

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.p99_ms <= P99_LIMIT_MS

    @property
    def caveat(self) -> str:
        if self.generator_cpu > 0.9:
            return " (generator-bound)"
        if self.others_cpu > 0.25:
            return " (machine busy)"
        return ""


def _machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return (0, 0)
    idle = fields[3] + fields[4]
    return (sum(fields) - idle, sum(fields))


def _generator_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    return sock


def _generate(
    sock: socket.socket, targets: list[int], seconds: float, node: Connection
) -> tuple[int, int, list[int], float, float, float]:
    """Send 50 packets/s to every target port and read what comes back; returns sent, received,
    latencies (ns) of the measured window, generator CPU share and worst lag (ms)."""
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    packets = []
    for index, port in enumerate(targets):
        packet = bytearray(12 + PAYLOAD)
        packet[0], packet[1] = 0x80, 0
        struct.pack_into("!HII", packet, 2, index & 0xFFFF, index * 7919, 0x10000 + index)
        packet[12 + _STAMP.size :] = b"\xff" * (PAYLOAD - _STAMP.size)
        packets.append((packet, (HOST, port), index))
    slots = [packets[slot::SLOTS] for slot in range(SLOTS)]
    sequence = [0] * len(targets)
    buffer = bytearray(2048)
    latencies: list[int] = []
    sent = received = 0
    lag = 0.0
    slot_length = PACKET_INTERVAL / SLOTS
    start = time.monotonic() + 0.05
    measure_from = start + WARMUP
    measure_until = measure_from + seconds
    stop_sending = measure_until
    end = stop_sending + DRAIN
    next_slot = start
    slot = 0
    measuring = False
    stopped = False
    cpu_start = wall_start = 0.0
    cpu = busy = 0.0
    machine_start = (0, 0)

    def begin(now: float) -> None:
        nonlocal measuring, cpu_start, wall_start, machine_start
        measuring = True
        node.send("start")
        machine_start = _machine_busy()
        cpu_start, wall_start = time.process_time(), now

    def finish(now: float) -> None:
        nonlocal measuring, stopped, cpu, busy
        measuring, stopped = False, True
        node.send("stop")
        cpu = (time.process_time() - cpu_start) / max(now - wall_start, 1e-9)
        machine = _machine_busy()
        busy = (machine[0] - machine_start[0]) / max(machine[1] - machine_start[1], 1)

    now = time.monotonic()
    while now < end:
        if not measuring and not stopped and now >= measure_from:
            begin(now)
        if measuring and now >= measure_until:
            finish(now)
        while next_slot <= now and next_slot < stop_sending:
            lag = max(lag, now - next_slot) if measuring else lag
            flag = 1 if measuring else 0
            for packet, address, index in slots[slot]:
                seq = sequence[index] = (sequence[index] + 1) & 0xFFFF
                _SEQ_TS.pack_into(packet, 2, seq, (seq * 160) & 0xFFFFFFFF)
                _STAMP.pack_into(packet, 12, time.monotonic_ns(), index, flag)
                try:
                    sock.sendto(packet, address)
                except BlockingIOError:
                    continue
                sent += flag
            slot = (slot + 1) % SLOTS
            next_slot += slot_length
        while True:
            try:
                sock.recv_into(buffer)
            except BlockingIOError:
                break
            arrived = time.monotonic_ns()
            sent_at, _, flag = _STAMP.unpack_from(buffer, 12)
            if flag:
                received += 1
                latencies.append(arrived - sent_at)
        now = time.monotonic()
        wait = (next_slot if next_slot < stop_sending else end) - now
        if wait > 0:
            poller.poll(wait)
        now = time.monotonic()
    # A generator that fell far behind can overshoot the whole window: the node still waits.
    if not stopped:
        if not measuring:
            begin(now)
        finish(now)
    poller.close()
    return sent, received, latencies, cpu, lag * 1000, busy


def run_step(mode: str, load: int, seconds: float, pin: bool) -> StepResult:
    sock = _generator_socket()
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    node = context.Process(
        target=_node_main, args=(theirs, mode, load, sock.getsockname(), 0 if pin else -1)
    )
    node.start()
    try:
        while not ours.poll(1):
            if not node.is_alive():
                raise SystemExit(f"the node died setting up {mode} {load}: {node.exitcode}")
        targets: list[int] = ours.recv()
        sent, received, latencies, generator_cpu, lag, busy = _generate(
            sock, targets, seconds, ours
        )
        usage = ours.recv()
        ours.send("exit")
    finally:
        sock.close()
        node.join(10)
        if node.is_alive():
            node.kill()
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    return StepResult(
        mode=mode,
        load=load,
        packets_per_second=sent / seconds,
        sent=sent,
        lost=sent - received,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        max_ms=latencies[-1] / 1e6 if latencies else float("nan"),
        node_cpu=usage["cpu"] / usage["wall"],
        generator_cpu=generator_cpu,
        generator_lag_ms=lag,
        others_cpu=max(0.0, busy * CPUS - generator_cpu - usage["cpu"] / usage["wall"]),
    )


def ladder(base: tuple[int, ...], limit: int) -> list[int]:
    steps = [step for step in base if step < limit]
    return [*steps, limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="largest bridged step")
    parser.add_argument("--echo-streams", type=int, default=8000, help="largest echo step")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per step")
    parser.add_argument("--no-pin", action="store_true", help="do not pin node and generator")
    parser.add_argument(
        "--attempts",
        type=int,
        default=2,
        help="tries of a failing step before stepping stops (the machine may be shared)",
    )
    args = parser.parse_args()
    pin = not args.no_pin
    if pin:
        os.sched_setaffinity(0, {1})
    started = time.monotonic()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results: list[StepResult] = []
    for mode, steps, resolution in (
        ("echo", ladder(ECHO_LADDER, args.echo_streams), ECHO_RESOLUTION),
        ("bridge", ladder(BRIDGE_LADDER, args.calls), BRIDGE_RESOLUTION),
    ):
        passed, failed = 0, 0
        for load in steps:
            result = measure(mode, load, args, pin)
            results.append(result)
            if not result.passed:
                failed = load
                break
            passed = load
        # Then halve the gap between the last load that passed and the first that failed.
        while failed and failed - passed > resolution:
            load = (passed + failed) // 2 // resolution * resolution
            if load <= passed:
                break
            result = measure(mode, load, args, pin)
            results.append(result)
            if result.passed:
                passed = load
            else:
                failed = load
    print(f"\n(total {time.monotonic() - started:.0f} s, {args.seconds:g} s measured per step)\n")
    print(table(results))


def measure(mode: str, load: int, args: argparse.Namespace, pin: bool) -> StepResult:
    """One step, tried again when it fails (the machine may be shared with other work)."""
    for attempt in range(1, args.attempts + 1):
        result = run_step(mode, load, args.seconds, pin)
        result.attempt = attempt
        print(
            f"{mode} {load} (try {attempt}): lost {result.lost}/{result.sent}, "
            f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
            f"node CPU {result.node_cpu:.0%}, generator CPU {result.generator_cpu:.0%}, "
            f"other programs {result.others_cpu:.0%}",
            flush=True,
        )
        if result.passed:
            break
    return result


def table(results: list[StepResult]) -> str:
    lines = [
        "| phase | load | node packets/s in | sent | lost | p50 ms | p99 ms | max ms "
        "| node CPU | generator CPU | other programs | result | try |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.mode != "echo", r.load)):
        load = f"{r.load} streams (≈{r.load // 2} calls)" if r.mode == "echo" else f"{r.load} calls"
        verdict = ("pass" if r.passed else "FAIL") + r.caveat
        lines.append(
            f"| {'raw uvloop echo' if r.mode == 'echo' else 'bridged RtpStreams'} | {load} "
            f"| {r.packets_per_second:,.0f} | {r.sent:,} | {r.lost:,} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {r.max_ms:.2f} | {r.node_cpu:.0%} | {r.generator_cpu:.0%} "
            f"| {r.others_cpu:.0%} "
            f"| {verdict} | {r.attempt} |"
        )
    best_echo = max((r.load for r in results if r.mode == "echo" and r.passed), default=0)
    best_bridge = max((r.load for r in results if r.mode == "bridge" and r.passed), default=0)
    lines.append("")
    lines.append(
        f"Echo ceiling: {best_echo} streams (≈ {best_echo // 2} calls' worth of packets). "
        f"Bridged: {best_bridge} calls with 0 loss and p99 ≤ {P99_LIMIT_MS:g} ms"
        + (f" ({best_bridge / (best_echo / 2):.0%} of the echo ceiling)." if best_echo else ".")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

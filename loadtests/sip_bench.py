"""Inbound call setups per second (CPS) one media node process completes with no failed call.

Starts its own PostgreSQL and nats-server, provisions one tenant (enterprise plan) with a number
on platform trunk carrier-a whose published flow plays a tone prompt, runs `switchboard media` as
a separate process, and steps SIPp (the carrier) through the given rates. Each caller is answered,
listens for --pause-ms, and hangs up. A rate passes when every call completed and none failed, and
the node holds no call and no RTP port a few seconds later. Stepping stops at the first rate that
fails.

    .venv/bin/python loadtests/sip_bench.py [--rates 100,200,300,400,500] [--seconds 20]

On a machine with two or more cores the node is pinned to one core and SIPp, nats-server and
PostgreSQL to another, so the figure is "per node process on one core" (--no-pin to let the
kernel place them). --profile cprofile runs the node under cProfile and prints its top functions
when the node stops; --profile py-spy samples the node with py-spy (pip install --target
/tmp/py-spy py-spy) during every step and prints where the last step's time went.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import logging
import math
import os
import pstats
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import quantiles

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.connection import Bus, connect  # noqa: E402
from bus.requests import NoResponder, send_command  # noqa: E402
from loadtests.processes import (  # noqa: E402
    children_of,
    cpu_seconds,
    pin,
    rss_mb,
    stop_process,
    tail,
)
from runtime.embedded import EmbeddedNats, EmbeddedPostgres  # noqa: E402
from runtime.migrate import APP_ROLE, migrate, replace_database  # noqa: E402

BIN = Path(sys.executable).parent
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "inbound_call.xml"
NUMBER = "+12125550100"
NODE_ID = "bench-node"
DATABASE = "bench"
PROMPT_MARGIN_SECONDS = 2
"""The prompt outlasts the caller's listening by this much: the flow hangs up when it ends, and
a BYE from the node crossing the caller's own is a failed call in SIPp's eyes."""
# Below the kernel's ephemeral range (32768-60999), so RTP never races SIPp's or anyone's
# outgoing sockets for a port.
RTP_PORTS = (20000, 32767)
BUSIEST_WINDOW = 5.0


# --- processes -----------------------------------------------------------------------------


def children_cpu_seconds() -> float:
    """CPU of our reaped children so far: SIPp's, once its run has been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_sip_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the node listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise SystemExit("no port free for both UDP and TCP")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        return port


# --- provisioning ----------------------------------------------------------------------------


def tone(seconds: int, hz: float = 440.0) -> bytes:
    """A sine tone as 8 kHz mono s16le PCM, the format prompts are stored in."""
    samples = array.array(
        "h", (round(8000 * math.sin(2 * math.pi * hz * n / 8000)) for n in range(8000 * seconds))
    )
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def prompt_seconds(pause_ms: int) -> int:
    return math.ceil(pause_ms / 1000) + PROMPT_MARGIN_SECONDS


async def provision(dsn: str, seconds: int) -> None:
    """One active enterprise tenant, its number on carrier-a, a prompt and a published flow that
    plays it; written as the superuser (row-level security does not apply to it)."""
    tenant_id, number_id, prompt_id, flow_id = (uuid.uuid4() for _ in range(4))
    audio = tone(seconds)
    document = json.dumps(
        {"start": "greet", "nodes": {"greet": {"type": "play", "prompt_id": str(prompt_id)}}}
    )
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "insert into platform_trunks (name, host, allowed_sources)"
                " values ('carrier-a', '127.0.0.1', '{127.0.0.1/32}')"
            )
            await conn.execute(
                "insert into number_inventory (e164, country, area_code, trunk, status)"
                " values ($1, 'US', '212', 'carrier-a', 'assigned')",
                NUMBER,
            )
            await conn.execute(
                "insert into tenants (tenant_id, name, status, plan, verified_at)"
                " values ($1, 'Bench Co', 'active', 'enterprise', now())",
                tenant_id,
            )
            await conn.execute(
                "insert into numbers (tenant_id, id, e164, provider, country, capabilities)"
                " values ($1, $2, $3, 'platform', 'US', '{voice}')",
                tenant_id,
                number_id,
                NUMBER,
            )
            await conn.execute(
                "insert into prompts (tenant_id, id, name, source, duration_ms, audio, size_bytes)"
                " values ($1, $2, 'Greeting', 'upload', $3, $4, $5)",
                tenant_id,
                prompt_id,
                seconds * 1000,
                audio,
                len(audio),
            )
            await conn.execute(
                "insert into flows (tenant_id, id, name, draft, published_version)"
                " values ($1, $2, 'Main', $3::jsonb, 1)",
                tenant_id,
                flow_id,
                document,
            )
            await conn.execute(
                "insert into flow_versions (tenant_id, flow_id, version, document)"
                " values ($1, $2, 1, $3::jsonb)",
                tenant_id,
                flow_id,
                document,
            )
            await conn.execute(
                "insert into flow_prompt_refs (tenant_id, flow_id, prompt_id) values ($1, $2, $3)",
                tenant_id,
                flow_id,
                prompt_id,
            )
            await conn.execute(
                "update numbers set flow_id = $2 where tenant_id = $1 and id = $3",
                tenant_id,
                flow_id,
                number_id,
            )
    finally:
        await conn.close()


# --- the node ----------------------------------------------------------------------------------


def options_probe(port: int, local_port: int, seq: int) -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-bench-probe-{seq}\r\n"
        f"From: <sip:bench@127.0.0.1>;tag=bench-{seq}\r\n"
        f"To: <sip:probe@127.0.0.1:{port}>\r\n"
        f"Call-ID: bench-probe-{seq}@127.0.0.1\r\n"
        f"CSeq: {seq} OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def wait_for_options(node: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    """Until the node answers OPTIONS with 200 over UDP."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.3)
        local_port = sock.getsockname()[1]
        seq = 0
        while time.monotonic() < deadline:
            if node.poll() is not None:
                raise SystemExit(f"the node exited ({node.returncode}):\n{tail(log)}")
            seq += 1
            sock.sendto(options_probe(port, local_port, seq), ("127.0.0.1", port))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0 200"):
                return
    raise SystemExit(f"the node did not answer OPTIONS within {timeout:.0f}s:\n{tail(log)}")


async def settle(bus: Bus, seconds: float) -> tuple[int, int]:
    """Calls and RTP ports the node still holds once it has let go of them all, or after
    `seconds` (-1: the node never answered its status command)."""
    deadline = time.monotonic() + seconds
    calls = ports = -1
    while time.monotonic() < deadline:
        try:
            reply = await send_command(bus, f"media.{NODE_ID}.status", b"{}")
        except NoResponder:
            await asyncio.sleep(0.5)
            continue
        status = json.loads(reply)
        calls, ports = int(status["calls"]), int(status["rtp_ports_in_use"])
        if calls == 0 and ports == 0:
            break
        await asyncio.sleep(0.25)
    return calls, ports


# --- SIPp ------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    expected: int
    successful: int
    failed: int
    retransmissions: int
    exit_code: int
    wall: float
    answered_per_second: float
    node_cpu: float
    node_busiest: float
    """The node's CPU share over its busiest BUSIEST_WINDOW seconds of the step."""
    sipp_cpu: float
    nats_cpu: float
    rss_end: float
    rss_peak: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    calls_left: int
    ports_left: int
    failures: dict[str, int]

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.successful == self.expected
            and self.calls_left == 0
            and self.ports_left == 0
        )


def busiest(samples: list[tuple[float, float]], window: float) -> float:
    """The highest CPU share over any `window` seconds of (time, CPU seconds) samples; the
    mean when all of them span less than that."""
    best: float | None = None
    first = 0
    for last in range(1, len(samples)):
        while samples[last][0] - samples[first + 1][0] >= window:
            first += 1
        span = samples[last][0] - samples[first][0]
        if span >= window:
            share = (samples[last][1] - samples[first][1]) / span
            best = share if best is None else max(best, share)
    if best is None:
        span = samples[-1][0] - samples[0][0]
        return (samples[-1][1] - samples[0][1]) / span if span > 0 else 0.0
    return best


def read_stats(path: Path) -> dict[str, str]:
    """SIPp's last cumulative statistics row (-trace_stat), by column name."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    return dict(zip(header, lines[-1].rstrip(";").split(";"), strict=False))


def read_rtt(work: Path) -> list[tuple[float, float]]:
    """(when measured, ms since SIPp started; INVITE-to-200 in whole ms) for every call, from
    the <scenario>_<pid>_rtt.csv that -trace_rtt writes."""
    out: list[tuple[float, float]] = []
    lines = [line for f in work.glob("*_rtt.csv") for line in f.read_text().splitlines()]
    for line in lines:
        parts = line.split(";")
        if len(parts) < 3:
            continue
        try:
            out.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue  # the header
    return out


def _count(stats: dict[str, str], name: str) -> int:
    value = stats.get(name, "0").strip()
    return int(value) if value.isdigit() else 0


@dataclass
class Target:
    """What a step drives and watches."""

    sip_port: int
    node: subprocess.Popen[bytes]
    nats_pid: int | None
    bus: Bus
    runner: asyncio.Runner
    pause_ms: int
    sipp_cpus: set[int] | None
    settle_seconds: float


def run_rate(
    target: Target, rate: int, seconds: int, work: Path, profiler: list[str] | None = None
) -> Step:
    """One SIPp run at `rate` CPS for `seconds`, measured from the outside of the node."""
    work.mkdir(parents=True, exist_ok=True)
    node = target.node
    expected = rate * seconds
    argv = sipp_command(
        rate, expected, sip_port=target.sip_port, pause_ms=target.pause_ms, seconds=seconds
    )
    (work / "command").write_text(shlex.join(argv) + "\n")
    node_before = cpu_seconds(node.pid)
    nats_before = cpu_seconds(target.nats_pid) if target.nats_pid else 0.0
    children_before = children_cpu_seconds()
    started = time.monotonic()
    spy = None
    if profiler is not None:
        with open(work / "profiler.log", "wb") as spy_log:
            spy = subprocess.Popen(
                [*profiler, "--duration", str(seconds)],
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=spy_log,
                stderr=spy_log,
            )
        if target.sipp_cpus:
            pin(spy.pid, target.sipp_cpus)
    with open(work / "sipp.out", "wb") as out:
        sipp = subprocess.Popen(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    if target.sipp_cpus:
        pin(sipp.pid, target.sipp_cpus)
    peak = rss_mb(node.pid)
    # (when, node CPU seconds so far): a step that ends in timeouts runs on long after the
    # node stopped being busy, so the mean alone would understate how loaded it was.
    samples = [(started, node_before)]
    try:
        while sipp.poll() is None:
            time.sleep(0.5)
            if node.poll() is not None:
                raise SystemExit(f"the node exited ({node.returncode}) at {rate} CPS")
            samples.append((time.monotonic(), cpu_seconds(node.pid)))
            peak = max(peak, rss_mb(node.pid))
        wall = time.monotonic() - started
        node_cpu = cpu_seconds(node.pid) - node_before
        samples.append((started + wall, node_before + node_cpu))
        nats_cpu = (cpu_seconds(target.nats_pid) - nats_before) if target.nats_pid else 0.0
        sipp_cpu = children_cpu_seconds() - children_before
        rss_end = rss_mb(node.pid)
        if spy is not None:
            spy.wait(timeout=seconds + 60)
    finally:
        for proc in (sipp, spy):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    calls_left, ports_left = target.runner.run(settle(target.bus, target.settle_seconds))
    stats = read_stats(work / "stats.csv")
    rtt = read_rtt(work)
    delays = sorted(d for _, d in rtt)
    p50 = p99 = worst = None
    if len(delays) >= 2:
        cuts = quantiles(delays, n=100, method="inclusive")
        p50, p99, worst = cuts[49], cuts[98], delays[-1]
    answered = 0.0
    if len(rtt) >= 2:
        span = (max(t for t, _ in rtt) - min(t for t, _ in rtt)) / 1000
        answered = (len(rtt) - 1) / span if span > 0 else 0.0
    failures = {
        name: _count(stats, name)
        for name in stats
        if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)"
    }
    return Step(
        rate=rate,
        expected=expected,
        successful=_count(stats, "SuccessfulCall(C)"),
        failed=_count(stats, "FailedCall(C)"),
        retransmissions=_count(stats, "Retransmissions(C)"),
        exit_code=sipp.returncode,
        wall=wall,
        answered_per_second=answered,
        node_cpu=node_cpu,
        node_busiest=busiest(samples, BUSIEST_WINDOW),
        sipp_cpu=sipp_cpu,
        nats_cpu=nats_cpu,
        rss_end=rss_end,
        rss_peak=max(peak, rss_end),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        calls_left=calls_left,
        ports_left=ports_left,
        failures={k: v for k, v in failures.items() if v},
    )


def sipp_command(rate: int, calls: int, *, sip_port: int, pause_ms: int, seconds: int) -> list[str]:
    sipp = shutil.which("sipp") or "/usr/bin/sipp"
    return [
        sipp,
        f"127.0.0.1:{sip_port}",
        "-sf",
        str(SCENARIO),
        "-s",
        NUMBER.lstrip("+"),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port()),
        "-t",
        "u1",
        "-r",
        str(rate),
        "-rp",
        "1000",
        "-m",
        str(calls),
        # Room for ten seconds of calls: the limit must never be what holds the rate back.
        "-l",
        str(max(rate * 10, 100)),
        "-d",
        str(pause_ms),
        "-nostdin",
        "-buff_size",
        str(4 * 1024 * 1024),
        # A call the node never answers fails after 10 s instead of holding the run.
        "-recv_timeout",
        "10000",
        "-timeout",
        f"{seconds + 60}s",
        "-timeout_error",
        "-trace_stat",
        "-stf",
        "stats.csv",
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_err",
        "-error_file",
        "errors.log",
        "-trace_screen",
        "-screen_file",
        "screen.log",
    ]


# --- report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(steps: list[Step]) -> None:
    print(
        "| rate (CPS) | answered/s | calls ok / sent | failed | INVITE→200 p50 / p99 / max ms "
        "| node CPU % of one core (mean / busiest 5 s) | node CPU ms per call "
        "| node RSS MB (end / peak) "
        "| SIPp CPU % | nats CPU % | retrans | left on node | result |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in steps:
        per_call = s.node_cpu * 1000 / s.successful if s.successful else float("nan")
        print(
            f"| {s.rate} | {s.answered_per_second:.0f} | {s.successful} / {s.expected} "
            f"| {s.failed} "
            f"| {_ms(s.p50_ms)} / {_ms(s.p99_ms)} / {_ms(s.max_ms)} "
            f"| {100 * s.node_cpu / s.wall:.0f} / {100 * s.node_busiest:.0f} | {per_call:.2f} "
            f"| {s.rss_end:.0f} / {s.rss_peak:.0f} "
            f"| {100 * s.sipp_cpu / s.wall:.0f} | {100 * s.nats_cpu / s.wall:.0f} "
            f"| {s.retransmissions} | {s.calls_left} calls, {s.ports_left} ports "
            f"| {'pass' if s.passed else 'FAIL'} |"
        )
    for s in steps:
        if not s.passed:
            why = ", ".join(f"{k} {v}" for k, v in s.failures.items()) or "see errors.log"
            print(f"\n{s.rate} CPS failed: sipp exit {s.exit_code}; {why}")


def summarise_cprofile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    print(
        "\ncProfile counts the node's start-up (imports) and its idle waits too; the idle time"
        " lands on whichever coroutine last ran under uvloop. py-spy is the truer view."
    )
    print(f"\ncProfile of the node (top {top} by own time):")
    stats.sort_stats("tottime").print_stats(top)
    print(f"cProfile of the node (top {top} by cumulative time):")
    stats.sort_stats("cumulative").print_stats(top)


def summarise_py_spy(path: Path, top: int) -> None:
    """Where the node's time goes, from py-spy's collapsed stacks: own samples per source line,
    and own and inclusive samples per function."""
    if not path.exists():
        print(f"\npy-spy wrote nothing to {path}")
        return
    own_line: Counter[str] = Counter()
    own_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own_line[frames[-1]] += n
        functions = [_function_of(frame) for frame in frames]
        own_function[functions[-1]] += n
        for function in set(functions):
            inclusive[function] += n
    if not total:
        print(f"\npy-spy took no samples ({path})")
        return
    for title, counter in (
        ("own samples per line", own_line),
        ("own samples per function", own_function),
        ("inclusive samples per function", inclusive),
    ):
        print(f"\npy-spy, node process, {total} samples: top {top} by {title}")
        for frame, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {frame}")


def _function_of(frame: str) -> str:
    """'name (path/file.py:123)' without the line number."""
    head, sep, rest = frame.rpartition(":")
    return head + ")" if sep and rest.rstrip(")").isdigit() else frame


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="100,200,300,400,500", help="CPS steps, ascending")
    parser.add_argument("--seconds", type=int, default=20, help="length of each step")
    parser.add_argument("--pause-ms", type=int, default=500, help="how long each caller listens")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--profile", choices=["cprofile", "py-spy"])
    parser.add_argument(
        "--py-spy",
        default="/tmp/py-spy/bin/py-spy",  # noqa: S108 - where the docstring says to install it
        help="py-spy binary for --profile py-spy",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=15.0,
        help="how long the node may take to let go of every call after a step",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.rate_list = [int(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_list or args.rate_list != sorted(args.rate_list) or min(args.rate_list) < 1:
        parser.error("--rates: positive CPS values in ascending order")
    if args.seconds < 1 or args.pause_ms < 0:
        parser.error("--seconds must be >= 1 and --pause-ms >= 0")
    if args.profile == "py-spy" and not Path(args.py_spy).exists():
        parser.error(f"--py-spy {args.py_spy} not found (pip install --target /tmp/py-spy py-spy)")
    if not shutil.which("sipp"):
        parser.error("SIPp is needed: apt-get install sip-tester")
    return args


def node_environment(
    pg: EmbeddedPostgres, nats: EmbeddedNats, password: str, sip_port: int, work: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        {
            "SWITCHBOARD_DATABASE_URL": (
                f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{pg.port}/{DATABASE}"
            ),
            "SWITCHBOARD_NATS_URL": nats.url,
            "SWITCHBOARD_MASTER_KEY": secrets.token_hex(32),
            "SWITCHBOARD_SIP_PORT": str(sip_port),
            "SWITCHBOARD_RTP_PORT_MIN": str(RTP_PORTS[0]),
            "SWITCHBOARD_RTP_PORT_MAX": str(RTP_PORTS[1]),
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_NODE_ID": NODE_ID,
            # The carrier is on the trunk allow-list (exempt anyway); nothing else calls.
            "SWITCHBOARD_SIP_SOURCE_RATE": "100000",
            "SWITCHBOARD_SIP_SOURCE_BURST": "100000",
            "SWITCHBOARD_DATA_DIR": str(work / "node"),
        }
    )
    return env


def bench(args: argparse.Namespace, work: Path, runner: asyncio.Runner) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    node_cpus = {cpus[-1]} if pinned else None
    others = set(cpus[:-1]) if pinned else None
    pg = EmbeddedPostgres(work / "pg", durable=False)
    nats = EmbeddedNats(work / "nats")
    node: subprocess.Popen[bytes] | None = None
    bus: Bus | None = None
    profile_out = work / "node.cprofile"
    try:
        runner.run(pg.start())
        runner.run(nats.start())
        if others:
            for pid in (pg.pid, *children_of(pg.pid or -1), nats.pid):
                if pid is not None:
                    pin(pid, others)
        password = secrets.token_urlsafe(16)
        migrations = ROOT / "switchboard" / "migrations"
        runner.run(migrate(pg.superuser_dsn, migrations, app_password=password, database=DATABASE))
        runner.run(
            provision(replace_database(pg.superuser_dsn, DATABASE), prompt_seconds(args.pause_ms))
        )
        sip_port = free_sip_port()
        command = [str(BIN / "switchboard"), "media"]
        if args.profile == "cprofile":
            command = [sys.executable, "-m", "cProfile", "-o", str(profile_out), *command]
        node_log = work / "node.log"
        with open(node_log, "wb") as log:
            node = subprocess.Popen(
                command,
                env=node_environment(pg, nats, password, sip_port, work),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if node_cpus:
            pin(node.pid, node_cpus)
        wait_for_options(node, sip_port, node_log, timeout=60)
        bus = runner.run(connect(nats.url, name="sip-bench"))
        print(f"node pid {node.pid}, SIP udp 127.0.0.1:{sip_port}, work dir {work}")
        if pinned:
            print(
                f"pinned: the node to CPU {sorted(node_cpus or ())}; "
                f"SIPp, nats-server and PostgreSQL to CPU {sorted(others or ())}"
            )
        target = Target(
            sip_port, node, nats.pid, bus, runner, args.pause_ms, others, args.settle_seconds
        )
        # The first calls load the route and the prompt and encode it: not part of any step.
        warm = run_rate(target, 10, 2, work / "warm-up")
        if not warm.passed:
            print_table([warm])
            raise SystemExit(f"the warm-up calls failed; see {work / 'warm-up'} (--keep)")
        steps: list[Step] = []
        for rate in args.rate_list:
            step_dir = work / f"{rate}cps"
            spy_out = step_dir / "py-spy.txt"
            profiler = None
            if args.profile == "py-spy":
                profiler = [
                    args.py_spy, "record", "--pid", str(node.pid), "--rate", "250",
                    "--format", "raw", "--nonblocking", "-o", str(spy_out),
                ]  # fmt: skip
            step = run_rate(target, rate, args.seconds, step_dir, profiler)
            steps.append(step)
            print(
                f"{rate} CPS: {step.successful}/{step.expected} ok, {step.failed} failed, "
                f"node CPU {100 * step.node_cpu / step.wall:.0f}% -> "
                + ("pass" if step.passed else "FAIL"),
                flush=True,
            )
            if not step.passed:
                break
        if args.profile == "py-spy":
            summarise_py_spy(work / f"{steps[-1].rate}cps" / "py-spy.txt", 30)
        print()
        print(
            f"SIPp -r RATE for {args.seconds} s per step over UDP; each caller (PCMU) is answered, "
            f"hears a {prompt_seconds(args.pause_ms)} s prompt for {args.pause_ms} ms and hangs "
            "up; one `switchboard media` process" + (" pinned to one core" if pinned else "")
        )
        print()
        print_table(steps)
        passing = [s.rate for s in steps if s.passed]
        print(f"\nhighest passing rate: {max(passing) if passing else 'none'} CPS")
        print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")
        print(f"SIPp at the last step: {(work / f'{steps[-1].rate}cps' / 'command').read_text()}")
    finally:
        if bus is not None:
            with contextlib.suppress(Exception):
                runner.run(bus.close())
        if node is not None:
            # SIGTERM: the node hangs up what is left and, under cProfile, writes its profile.
            stop_process(node, 15)
            if args.profile == "cprofile" and profile_out.exists():
                summarise_cprofile(profile_out, 30)
        try:
            runner.run(nats.stop())
            runner.run(pg.destroy())
        except BaseException:
            nats.kill_now()
            pg.kill_now()
            raise


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    args = parse_args()
    # The bus logs its own disconnect at close as a warning; nothing else of it matters here.
    logging.getLogger("bus").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="sb-sip-bench-"))
    # SIGTERM unwinds like Ctrl-C, through bench()'s cleanup.
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        with asyncio.Runner() as runner:
            bench(args, work, runner)
    except KeyboardInterrupt:
        print("interrupted; every process this run started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

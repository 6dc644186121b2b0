"""How fast one ACD router process turns a queued call into an offer to an agent.

Starts its own PostgreSQL and nats-server, provisions one tenant (enterprise plan) with --agents
seated agents and --queues queues (longest_idle, no wrap-up; every agent a member of 2-3 of
them), runs `switchboard router` as a separate process, and plays the media node `bench-node`
in this process: it serves `media.bench-node.offer`, answers every offer at once (offer_ringing,
offer_answered) and ends the call after --talk-ms (call.ended with the agent). Every agent goes
available through the router's presence command with an E.164 device.

The figure is the time from `call.queued` handed to the event publisher (the media node's own
path to stream EVENTS) to the offer command arriving here: JetStream publish and store, the
router's pull consumer, the core's decision, the KV save of the tenant's state, and the NATS
request to the node, all on loopback.

    .venv/bin/python loadtests/router_bench.py [--calls 500] [--rates 50,100,200,300,400]

(a) one call at a time: the next call is queued --gap-ms after the previous offer arrived;
(b) steady arrivals stepping through --rates for --seconds each. A call counts as wait-free when
the agent it was offered to had no call in progress (here) when the call was queued; a call
offered to an agent whose previous call ended after it was queued waited for an agent, and its
latency includes that wait: both are reported.

On a machine with two or more cores the router is pinned to one core and this process,
nats-server and PostgreSQL to the others (--no-pin to let the kernel place them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus.connection import Bus, connect  # noqa: E402
from bus.publisher import EventPublisher  # noqa: E402
from bus.requests import CommandService, serve_commands  # noqa: E402
from loadtests.processes import (  # noqa: E402
    children_of,
    cpu_seconds,
    pin,
    rss_mb,
    stop_process,
    tail,
)
from media import events as ev  # noqa: E402
from routing.client import RouterClient, RouterRefused, RouterUnavailable  # noqa: E402
from runtime.embedded import EmbeddedNats, EmbeddedPostgres  # noqa: E402
from runtime.migrate import APP_ROLE, migrate, replace_database  # noqa: E402

BIN = Path(sys.executable).parent
NODE_ID = "bench-node"
DATABASE = "bench"
PARTITIONS = 4
OK = b'{"ok":true}'


# --- provisioning ----------------------------------------------------------------------------


@dataclass
class Tenant:
    tenant_id: uuid.UUID
    agents: list[uuid.UUID]
    queues: list[uuid.UUID]
    members: dict[uuid.UUID, list[uuid.UUID]]
    """Queue → its member agents."""


async def provision(dsn: str, agents: int, queues: int, rng: random.Random) -> Tenant:
    """One active enterprise tenant with seated agents and longest-idle queues without wrap-up,
    every agent in 2-3 of them; written as the superuser (row-level security does not apply)."""
    tenant_id = uuid.uuid4()
    agent_ids = [uuid.uuid4() for _ in range(agents)]
    queue_ids = [uuid.uuid4() for _ in range(queues)]
    members: dict[uuid.UUID, list[uuid.UUID]] = {q: [] for q in queue_ids}
    for agent_id in agent_ids:
        for queue_id in rng.sample(queue_ids, min(len(queue_ids), rng.choice((2, 3)))):
            members[queue_id].append(agent_id)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "insert into tenants (tenant_id, name, status, plan, verified_at)"
                " values ($1, 'Bench Co', 'active', 'enterprise', now())",
                tenant_id,
            )
            await conn.executemany(
                "insert into users (tenant_id, id, email, name, role, status, email_verified_at)"
                " values ($1, $2, $3, $4, 'agent', 'active', now())",
                [
                    (tenant_id, a, f"agent{i}.{tenant_id.hex[:8]}@bench.example", f"Agent {i}")
                    for i, a in enumerate(agent_ids)
                ],
            )
            await conn.executemany(
                "insert into seats (tenant_id, id, label, user_id, assigned_at)"
                " values ($1, $2, $3, $4, now())",
                [(tenant_id, uuid.uuid4(), f"Seat {i}", a) for i, a in enumerate(agent_ids)],
            )
            await conn.executemany(
                "insert into queues (tenant_id, id, name, strategy, wrap_up_seconds,"
                " max_wait_seconds) values ($1, $2, $3, 'longest_idle', 0, 3600)",
                [(tenant_id, q, f"Queue {i}") for i, q in enumerate(queue_ids)],
            )
            await conn.executemany(
                "insert into queue_members (tenant_id, queue_id, user_id, priority)"
                " values ($1, $2, $3, 5)",
                [(tenant_id, q, a) for q, agents_of in members.items() for a in agents_of],
            )
    finally:
        await conn.close()
    return Tenant(tenant_id, agent_ids, queue_ids, members)


# --- the media node this process plays -------------------------------------------------------


class OfferBody(msgspec.Struct):
    tenant_id: uuid.UUID
    call_id: uuid.UUID
    agent_id: uuid.UUID
    device: str
    timeout_seconds: float
    record: bool


@dataclass
class Call:
    call_id: uuid.UUID
    queue_id: uuid.UUID
    queued: float
    """perf_counter when call.queued went to the publisher."""
    started_at: datetime
    offered: float | None = None
    agent_id: uuid.UUID | None = None
    wait_free: bool | None = None
    waiter: asyncio.Future[None] | None = None


@dataclass
class BenchNode:
    """Answers the router's offers like a media node whose agents pick up at once."""

    tenant_id: uuid.UUID
    publisher: EventPublisher
    talk: float
    calls: dict[uuid.UUID, Call] = field(default_factory=dict)
    busy: set[uuid.UUID] = field(default_factory=set)
    last_ended: dict[uuid.UUID, float] = field(default_factory=dict)
    """Agent → perf_counter when its last call.ended went to the publisher."""
    repeated_offers: int = 0
    offers_to_busy_agents: int = 0
    unknown_offers: int = 0
    in_talk: int = 0

    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no offered call is in talk."""

    def queue_call(self, queue_id: uuid.UUID) -> Call:
        call = Call(uuid.uuid4(), queue_id, 0.0, datetime.now(UTC))
        call.waiter = asyncio.get_running_loop().create_future()
        self.calls[call.call_id] = call
        event = ev.CallQueued(
            tenant_id=self.tenant_id,
            call_id=call.call_id,
            node_id=NODE_ID,
            queue_id=queue_id,
            priority=5,
            skills={},
            attributes={},
            from_number="+12125550100",
            to_number="+12125550101",
        )
        call.queued = time.perf_counter()
        self.publisher.emit(event)
        return call

    async def on_offer(self, _subject: str, payload: bytes) -> bytes:
        received = time.perf_counter()
        body = msgspec.json.decode(payload, type=OfferBody)
        call = self.calls.get(body.call_id)
        if call is None:
            self.unknown_offers += 1
            return b'{"ok":false,"error":"call_not_found"}'
        if call.offered is not None:
            self.repeated_offers += 1
            return OK
        agent_id = body.agent_id
        if agent_id in self.busy:
            self.offers_to_busy_agents += 1
        call.offered = received
        call.agent_id = agent_id
        ended = self.last_ended.get(agent_id)
        call.wait_free = ended is None or ended <= call.queued
        self.busy.add(agent_id)
        self.in_talk += 1
        self.quiet.clear()
        common: dict[str, Any] = {
            "tenant_id": self.tenant_id,
            "call_id": call.call_id,
            "node_id": NODE_ID,
            "agent_id": agent_id,
        }
        self.publisher.emit(ev.CallOfferRinging(**common))
        self.publisher.emit(ev.CallOfferAnswered(**common))
        asyncio.get_running_loop().call_later(self.talk, self._hang_up, call)
        if call.waiter is not None and not call.waiter.done():
            call.waiter.set_result(None)
        return OK

    def _hang_up(self, call: Call) -> None:
        assert call.agent_id is not None
        now = datetime.now(UTC)
        talk_ms = round(self.talk * 1000)
        self.publisher.emit(
            ev.CallEnded(
                tenant_id=self.tenant_id,
                call_id=call.call_id,
                node_id=NODE_ID,
                direction="inbound",
                cause="caller_hangup",
                started_at=call.started_at,
                answered_at=now - timedelta(milliseconds=talk_ms),
                ended_at=now,
                duration_ms=round((now - call.started_at).total_seconds() * 1000),
                talk_ms=talk_ms,
                agent_id=call.agent_id,
                queue_id=call.queue_id,
            )
        )
        self.last_ended[call.agent_id] = time.perf_counter()
        self.busy.discard(call.agent_id)
        self.in_talk -= 1
        if not self.in_talk:
            self.quiet.set()


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    rate: int | None
    sent: int
    offered: int
    wait_free: int
    span: float
    """Seconds from the first offer to the last."""
    latencies: list[float]
    wait_free_latencies: list[float]
    router_cpu: float
    """Share of one core the router used while the step ran."""
    nats_cpu: float
    bench_cpu: float
    """Share of one core this process (the node's side and the arrivals) used."""
    router_rss: float

    @property
    def offers_per_second(self) -> float:
        return (self.offered - 1) / self.span if self.offered > 1 and self.span > 0 else 0.0


def percentiles(values: list[float]) -> tuple[float, float, float, float] | None:
    """p50, p90, p99, max in ms."""
    if len(values) < 2:
        return None
    ms = sorted(v * 1000 for v in values)
    cuts = quantiles(ms, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98], ms[-1]


def summarise(name: str, rate: int | None, calls: list[Call], cpu: Cpu, rss: float) -> Result:
    offered = [c for c in calls if c.offered is not None]
    times = [c.offered for c in offered if c.offered is not None]
    return Result(
        name=name,
        rate=rate,
        sent=len(calls),
        offered=len(offered),
        wait_free=sum(1 for c in offered if c.wait_free),
        span=(max(times) - min(times)) if times else 0.0,
        latencies=[c.offered - c.queued for c in offered if c.offered is not None],
        wait_free_latencies=[
            c.offered - c.queued for c in offered if c.offered is not None and c.wait_free
        ],
        router_cpu=cpu[0] / cpu[3] if cpu[3] > 0 else 0.0,
        nats_cpu=cpu[1] / cpu[3] if cpu[3] > 0 else 0.0,
        bench_cpu=cpu[2] / cpu[3] if cpu[3] > 0 else 0.0,
        router_rss=rss,
    )


Cpu = tuple[float, float, float, float]
"""CPU seconds of the router, nats-server and this process, and the monotonic clock."""


@dataclass
class Rig:
    node: BenchNode
    tenant: Tenant
    router_pid: int
    nats_pid: int | None
    rng: random.Random

    def cpu(self) -> Cpu:
        nats = cpu_seconds(self.nats_pid) if self.nats_pid else 0.0
        return cpu_seconds(self.router_pid), nats, time.process_time(), time.monotonic()

    def used(self, before: Cpu) -> Cpu:
        after = self.cpu()
        return (
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            after[3] - before[3],
        )

    def pick_queue(self) -> uuid.UUID:
        return self.rng.choice(self.tenant.queues)


async def one_at_a_time(rig: Rig, count: int, gap: float, name: str) -> Result:
    before = rig.cpu()
    calls: list[Call] = []
    for _ in range(count):
        call = rig.node.queue_call(rig.pick_queue())
        calls.append(call)
        assert call.waiter is not None
        try:
            await asyncio.wait_for(call.waiter, 10.0)
        except TimeoutError:
            print(f"call {call.call_id} was not offered within 10 s", file=sys.stderr)
        if gap:
            await asyncio.sleep(gap)
    return summarise(name, None, calls, rig.used(before), rss_mb(rig.router_pid))


async def steady(rig: Rig, rate: int, seconds: float, drain: float) -> Result:
    """Calls evenly spaced at `rate` per second for `seconds`, then up to `drain` seconds for
    the last of them to be offered."""
    before = rig.cpu()
    calls: list[Call] = []
    total = round(rate * seconds)
    start = time.perf_counter()
    for k in range(total):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(rig.node.queue_call(rig.pick_queue()))
    waiters = [c.waiter for c in calls if c.waiter is not None]
    await asyncio.wait(waiters, timeout=drain)
    used = rig.used(before)
    late = (time.perf_counter() - start) - seconds
    result = summarise(f"{rate}/s", rate, calls, used, 0.0)
    result.router_rss = rss_mb(rig.router_pid)
    if late > 1.0:
        print(f"  ({rate}/s: the last offers came {late:.1f} s after the last call was queued)")
    return result


async def settle(node: BenchNode, within: float) -> None:
    """Until every offered call has ended and every event is acknowledged by the stream."""
    deadline = time.monotonic() + within
    if node.in_talk:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.quiet.wait(), within)
    await node.publisher.flush(max(0.1, deadline - time.monotonic()))
    # The router absorbs the last call.ended events: the agents are available again.
    await asyncio.sleep(0.3)


# --- report ------------------------------------------------------------------------------------


def _cells(values: list[float]) -> str:
    p = percentiles(values)
    return " / ".join(f"{v:.2f}" for v in p) if p else "-"


def print_table(results: list[Result]) -> None:
    print(
        "| run | calls queued | offered | offers/s | wait-free | latency p50 / p90 / p99 / max ms "
        "| wait-free only: p50 / p90 / p99 / max ms | router CPU % of one core "
        "| nats CPU % | bench CPU % | router RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.sent} | {r.offered} | {r.offers_per_second:.0f} "
            f"| {r.wait_free} | {_cells(r.latencies)} | {_cells(r.wait_free_latencies)} "
            f"| {100 * r.router_cpu:.0f} | {100 * r.nats_cpu:.0f} | {100 * r.bench_cpu:.0f} "
            f"| {r.router_rss:.0f} |"
        )


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--calls", type=int, default=500, help="calls one at a time")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="pause between those calls")
    parser.add_argument("--warmup", type=int, default=50, help="calls before measuring")
    parser.add_argument("--rates", default="50,100,200,300,400", help="calls/s steps, ascending")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--talk-ms", type=float, default=50.0, help="how long each call talks")
    parser.add_argument("--drain", type=float, default=30.0, help="wait for late offers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    args.rate_list = [int(r) for r in args.rates.split(",") if r.strip()]
    if args.rate_list != sorted(args.rate_list) or any(r < 1 for r in args.rate_list):
        parser.error("--rates: positive calls/s values in ascending order")
    if args.agents < 1 or args.queues < 2 or args.calls < 2 or args.seconds <= 0:
        parser.error("--agents >= 1, --queues >= 2, --calls >= 2 and --seconds > 0")
    return args


def router_environment(
    pg: EmbeddedPostgres, nats: EmbeddedNats, password: str, work: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        {
            "SWITCHBOARD_DATABASE_URL": (
                f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{pg.port}/{DATABASE}"
            ),
            "SWITCHBOARD_NATS_URL": nats.url,
            "SWITCHBOARD_MASTER_KEY": secrets.token_hex(32),
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_NODE_ID": "bench-router",
            "SWITCHBOARD_ROUTER_PARTITIONS": str(PARTITIONS),
            "SWITCHBOARD_DATA_DIR": str(work / "router"),
        }
    )
    return env


def start_router(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(BIN / "switchboard"), "router"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


async def wait_for_router(
    client: RouterClient, tenant_id: uuid.UUID, router: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if router.poll() is not None:
            raise SystemExit(f"the router exited ({router.returncode}):\n{tail(log)}")
        try:
            await client.agents(tenant_id)
            return
        except (RouterUnavailable, RouterRefused):
            await asyncio.sleep(0.2)
    raise SystemExit(f"the router did not answer within 60 s:\n{tail(log)}")


async def bench(args: argparse.Namespace, work: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    router_cpus = {cpus[-1]} if pinned else None
    others = set(cpus[:-1]) if pinned else None
    rng = random.Random(args.seed)
    pg = EmbeddedPostgres(work / "pg", durable=False)
    nats = EmbeddedNats(work / "nats")
    router: subprocess.Popen[bytes] | None = None
    bus: Bus | None = None
    publisher: EventPublisher | None = None
    offers: CommandService | None = None
    router_log = work / "router.log"
    try:
        await pg.start()
        await nats.start()
        if others:
            os.sched_setaffinity(0, others)
            for pid in (pg.pid, *children_of(pg.pid or -1), nats.pid):
                if pid is not None:
                    pin(pid, others)
        password = secrets.token_urlsafe(16)
        await migrate(
            pg.superuser_dsn,
            ROOT / "switchboard" / "migrations",
            app_password=password,
            database=DATABASE,
        )
        tenant = await provision(
            replace_database(pg.superuser_dsn, DATABASE), args.agents, args.queues, rng
        )
        router = start_router(router_environment(pg, nats, password, work), router_log)
        if router_cpus:
            pin(router.pid, router_cpus)
        bus = await connect(nats.url, name="router-bench")
        client = RouterClient(bus, PARTITIONS)
        await wait_for_router(client, tenant.tenant_id, router, router_log)
        if router_cpus:
            pin(router.pid, router_cpus)  # threads started since (asyncpg, the resolver)
        publisher = EventPublisher(bus, ev.codec)
        publisher.start()
        node = BenchNode(tenant.tenant_id, publisher, args.talk_ms / 1000)
        offers = await serve_commands(bus, f"media.{NODE_ID}.offer", node.on_offer)
        for i, agent_id in enumerate(tenant.agents):
            state = await client.set_presence(
                tenant.tenant_id, agent_id, "available", device=f"+1212555{i:04d}"
            )
            if state["state"] != "available":
                raise SystemExit(f"agent {agent_id} is {state['state']}, not available")
        sizes = sorted(len(m) for m in tenant.members.values())
        print(
            f"router pid {router.pid}; tenant {tenant.tenant_id}: {len(tenant.agents)} agents "
            f"available, {len(tenant.queues)} queues of {sizes[0]}-{sizes[-1]} members; "
            f"work dir {work}"
        )
        if pinned:
            print(
                f"pinned: the router to CPU {sorted(router_cpus or ())}; this process, "
                f"nats-server and PostgreSQL to CPU {sorted(others or ())}"
            )
        rig = Rig(node, tenant, router.pid, nats.pid, rng)
        idle_before = rig.cpu()
        await asyncio.sleep(3)
        idle = rig.used(idle_before)
        idle_share = idle[0] / idle[3]
        gap = args.gap_ms / 1000
        await one_at_a_time(rig, args.warmup, gap, "warm-up")
        await settle(node, 10)
        results = [await one_at_a_time(rig, args.calls, gap, "one at a time")]
        print(f"one at a time: {results[0].offered}/{results[0].sent} offered", flush=True)
        for rate in args.rate_list:
            await settle(node, 10)
            result = await steady(rig, rate, args.seconds, args.drain)
            results.append(result)
            print(
                f"{rate}/s: {result.offered}/{result.sent} offered, {result.wait_free} wait-free, "
                f"router CPU {100 * result.router_cpu:.0f}%",
                flush=True,
            )
        await settle(node, 10)
        agents = await client.agents(tenant.tenant_id)
        states: dict[str, int] = {}
        for agent in agents:
            states[agent["state"]] = states.get(agent["state"], 0) + 1
        handled = sum(int(a["calls_handled"]) for a in agents)
        print()
        print(
            f"one `switchboard router` process ({PARTITIONS} partitions)"
            + (" pinned to one core" if pinned else "")
            + f"; {len(tenant.agents)} agents, {len(tenant.queues)} queues (longest_idle, "
            f"no wrap-up); talk {args.talk_ms:g} ms; one at a time with {args.gap_ms:g} ms "
            f"between calls; steady steps of {args.seconds:g} s"
        )
        print()
        print_table(results)
        print(f"\nrouter CPU while idle (all agents available, no calls): {100 * idle_share:.1f}%")
        print()
        print(
            f"at the end: agents {states}, calls handled {handled} "
            f"(queued {len(node.calls)}); repeated offers {node.repeated_offers}, offers to an "
            f"agent in a call {node.offers_to_busy_agents}, offers of unknown calls "
            f"{node.unknown_offers}; bench publisher retries {publisher.retries}"
        )
        errors = [
            line
            for line in router_log.read_text(errors="replace").splitlines()
            if "ERROR" in line or "Traceback" in line
        ]
        first = f", first: {errors[0]}" if errors else ""
        print(f"router log: {len(errors)} error lines{first}")
        print(f"load average before the end: {os.getloadavg()}")
        print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")
    finally:
        if offers is not None:
            await offers.close()
        if publisher is not None:
            await publisher.close(5)
        if bus is not None:
            with contextlib.suppress(Exception):
                await bus.close()
        if router is not None:
            stop_process(router, 15)
        try:
            await nats.stop()
            await pg.destroy()
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
    work = Path(tempfile.mkdtemp(prefix="sb-router-bench-"))
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        asyncio.run(bench(args, work))
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

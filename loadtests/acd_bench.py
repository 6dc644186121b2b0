"""Routing decisions per second of the pure ACD core (routing/acd) at 1,000 agents, 100 queues
and a steady backlog of 10,000 waiting calls, with per-decision latency.

    .venv/bin/python -m loadtests.acd_bench [--decisions 50000] [--warmup 5000] [--seed 1]

One process, no I/O: a simulated call center drives one tenant's `Acd` on a simulated clock.
Queues mix all five strategies (ring_all rarer), priorities 0-10, some required skills,
announcements and overflows; every agent is a member of 3-5 queues with member priorities and
0-3 skills. The backlog is filled to 10,000 before measuring (arrivals spread over half an hour
of simulated time) and topped up after every step with new calls of random priority, some
needing a skill. The steady loop takes the agent whose talk ends next: call ended → wrap-up
(ended early by the agent, or by the timer through tick) → available → the core offers it the
next call → ringing → answered; 2 % of offers go unanswered (the agent is away for a minute,
then available again). Overflows, announcements and wrap-up ends come out of `tick`, called at
every step.

Every call into the core is timed with time.perf_counter_ns; an input whose decisions contain
an Offer or a DialBack is a routing decision, and its time is that decision's latency.
Throughput is decisions per second of core time (all inputs, decision-yielding or not) and per
second of the whole loop (core plus the simulator around it). Garbage collections are counted,
and the latency of decisions without a collection inside is shown apart.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.acd import (  # noqa: E402
    Acd,
    AgentSpec,
    Announce,
    CallSpec,
    Decision,
    DialBack,
    Offer,
    Overflow,
    OverflowSpec,
    QueueSpec,
)

AGENTS = 1000
QUEUES = 100
BACKLOG = 10_000
SKILLS = ("spanish", "french", "billing", "tech", "vip")
STRATEGIES = ("longest_idle", "round_robin", "fewest_calls", "skills_based", "ring_all")
STRATEGY_WEIGHTS = (30, 20, 20, 20, 10)
MEAN_TALK = 120.0
ARRIVAL_SPREAD = 1800.0
NO_ANSWER_SHARE = 0.02
P99_GOAL_MS = 2.0
THROUGHPUT_GOAL = 5000


class Bench:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.acd = Acd()
        self.now = 0.0
        self.ids = iter(UUID(int=n) for n in range(1, 10**9))
        self.queue_ids: list[UUID] = []
        self.agent_ids: list[UUID] = []
        self.backlog = 0
        self.talking: list[tuple[float, int, UUID]] = []
        """(talk ends at, tie-break, agent) for agents on a call."""
        self.returning: list[tuple[float, int, UUID]] = []
        """(back at, tie-break, agent) for agents away after a missed offer."""
        self.serial = 0
        self.measuring = False
        self.core_ns = 0
        self.decisions = 0
        self.latencies: list[int] = []
        self.by_input: dict[str, list[int]] = defaultdict(list)
        self.yielded: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.overflows: Counter[str] = Counter()
        self.announcements = 0
        self.collections = 0
        """Garbage collections so far (a gc callback counts them)."""
        self.clean_latencies: list[int] = []
        """Decision latencies of inputs during which no garbage collection ran."""
        gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collections += 1

    def reset_counters(self) -> None:
        """Start measuring afresh; the call center's state carries on."""
        self.core_ns = self.decisions = self.announcements = 0
        for kept in (self.latencies, self.clean_latencies, self.by_input, self.yielded):
            kept.clear()
        self.calls.clear()
        self.overflows.clear()

    # --- timing ---------------------------------------------------------------------------

    def call(self, name: str, method: Callable[..., list[Decision]], *args: Any) -> None:
        collections = self.collections
        started = time.perf_counter_ns()
        out = method(*args)
        elapsed = time.perf_counter_ns() - started
        offers = [d for d in out if isinstance(d, Offer | DialBack)]
        if self.measuring:
            self.core_ns += elapsed
            self.calls[name] += 1
            self.by_input[name].append(elapsed)
            if offers:
                self.decisions += len(offers)
                self.latencies.append(elapsed)
                if self.collections == collections:
                    self.clean_latencies.append(elapsed)
                self.yielded[name] += 1
        self.carry_out(out)

    def carry_out(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Offer):
                self.ring(decision.call_id, decision.agent_ids)
            elif isinstance(decision, DialBack):
                self.ring(decision.call_id, (decision.agent_id,))
            elif isinstance(decision, Announce):
                self.announcements += 1
            elif isinstance(decision, Overflow):
                self.overflows[decision.spec.action] += 1
                if decision.spec.action in ("voicemail", "hangup"):
                    self.backlog -= 1

    def ring(self, call_id: UUID, agent_ids: tuple[UUID, ...]) -> None:
        """The offered agents' phones ring; the first answers (or, rarely, nobody does)."""
        self.backlog -= 1
        for agent_id in agent_ids:
            self.call("offer_ringing", self.acd.offer_ringing, call_id, agent_id, self.now)
        if self.rng.random() < NO_ANSWER_SHARE:
            self.backlog += 1  # back in its place
            for agent_id in agent_ids:
                self.call(
                    "offer_failed", self.acd.offer_failed, call_id, agent_id, "no_answer", self.now
                )
                self.push(self.returning, self.now + 60.0, agent_id)
            return
        self.call("offer_answered", self.acd.offer_answered, call_id, agent_ids[0], self.now)
        self.push(self.talking, self.now + self.rng.expovariate(1 / MEAN_TALK), agent_ids[0])

    def push(self, heap: list[tuple[float, int, UUID]], at: float, agent_id: UUID) -> None:
        self.serial += 1
        heapq.heappush(heap, (at, self.serial, agent_id))

    # --- building -------------------------------------------------------------------------

    def build(self) -> None:
        rng = self.rng
        self.queue_ids = [next(self.ids) for _ in range(QUEUES)]
        for n, queue_id in enumerate(self.queue_ids):
            strategy = rng.choices(STRATEGIES, STRATEGY_WEIGHTS)[0]
            required = {rng.choice(SKILLS): rng.randint(1, 2)} if strategy == "skills_based" else {}
            if strategy != "skills_based" and rng.random() < 0.1:
                required = {rng.choice(SKILLS): 1}
            overflow = rng.choice(
                (
                    OverflowSpec("hangup"),
                    OverflowSpec("voicemail", mailbox="main"),
                    OverflowSpec("callback"),
                    OverflowSpec("queue", queue_id=self.queue_ids[(n + 1) % QUEUES]),
                )
            )
            self.acd.configure_queue(
                QueueSpec(
                    queue_id=queue_id,
                    strategy=strategy,  # type: ignore[arg-type]
                    priority=rng.randint(0, 10),
                    required_skills=required,
                    max_wait_seconds=rng.choice((1800.0, 3600.0, 7200.0)),
                    overflow=overflow,
                    wrap_up_seconds=rng.choice((0.0, 10.0, 30.0)),
                    announce_position=rng.random() < 0.3,
                    announce_ewt=rng.random() < 0.3,
                ),
                self.now,
            )
        for n in range(AGENTS):
            agent_id = next(self.ids)
            self.agent_ids.append(agent_id)
            skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(0, 3))}
            queues = {q: rng.randint(1, 10) for q in rng.sample(self.queue_ids, rng.randint(3, 5))}
            spec = AgentSpec(
                agent_id=agent_id,
                skills=skills,
                queues=queues,
                device=f"sip:agent{n}@10.1.{n // 250}.{n % 250 + 1}:5060",
            )
            self.acd.set_agent(spec, self.now)
        # Every agent gets one call, the rest wait; they arrived over the last half hour, as a
        # real backlog would have (so their announcements are not all due at one instant).
        for _ in range(BACKLOG + AGENTS):
            self.now += ARRIVAL_SPREAD / (BACKLOG + AGENTS)
            self.arrive()
            self.call("tick", self.acd.tick, self.now)
        for agent_id in self.agent_ids:
            self.call("set_presence", self.acd.set_presence, agent_id, "available", None, self.now)

    def arrive(self) -> None:
        rng = self.rng
        skills = {rng.choice(SKILLS): 1} if rng.random() < 0.2 else {}
        spec = CallSpec(
            call_id=next(self.ids),
            queue_id=rng.choice(self.queue_ids),
            priority=min(10, int(rng.expovariate(0.7))),
            skills=skills,
            node_id=f"node-{rng.randint(1, 4)}",
            from_number="+15550100000",
            to_number="+15550199999",
        )
        self.backlog += 1
        self.call("enqueue", self.acd.enqueue, spec, self.now)

    # --- the steady loop ------------------------------------------------------------------

    def step(self) -> None:
        """The next talk ends; time moves to it; whatever falls due happens; the backlog is
        topped up."""
        if self.returning and (not self.talking or self.returning[0][0] <= self.talking[0][0]):
            at, _, agent_id = heapq.heappop(self.returning)
            self.now = max(self.now, at)
            self.call("set_presence", self.acd.set_presence, agent_id, "available", None, self.now)
        elif self.talking:
            at, _, agent_id = heapq.heappop(self.talking)
            self.now = max(self.now, at)
            call_id = self.acd.agent(agent_id).call_id
            assert call_id is not None
            self.call("call_ended", self.acd.call_ended, call_id, self.now)
            if self.acd.agent(agent_id).state == "wrap_up" and self.rng.random() < 0.5:
                self.call("end_wrap_up", self.acd.end_wrap_up, agent_id, self.now)
        self.call("tick", self.acd.tick, self.now)
        while self.backlog < BACKLOG:
            self.arrive()


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=50_000, help="measured decisions")
    parser.add_argument("--warmup", type=int, default=5_000, help="decisions before measuring")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    bench = Bench(args.seed)
    started = time.perf_counter()
    bench.build()
    built = time.perf_counter() - started
    waiting = sum(1 for c in bench.acd.calls() if c.state == "waiting")
    print(f"built in {built:.1f} s: {AGENTS} agents, {QUEUES} queues, {waiting} waiting calls")

    while bench.decisions < args.warmup:
        bench.measuring = True
        bench.step()
    bench.reset_counters()
    simulated_from = bench.now

    bench.measuring = True
    collections_before = bench.collections
    loop_started = time.perf_counter()
    cpu_started = time.process_time()
    while bench.decisions < args.decisions:
        bench.step()
    wall = time.perf_counter() - loop_started
    cpu = time.process_time() - cpu_started
    full_collections = gc.get_stats()[2]["collections"]
    bench.measuring = False
    collections = bench.collections - collections_before

    waiting_now = sum(1 for c in bench.acd.calls() if c.state == "waiting")
    snap_started = time.perf_counter()
    data = bench.acd.snapshot()
    snap_time = time.perf_counter() - snap_started
    restore_started = time.perf_counter()
    Acd.restore(data)
    restore_time = time.perf_counter() - restore_started

    core = bench.core_ns / 1e9
    print()
    print("| input | calls | yielding an offer | p50 µs | p99 µs | max µs |")
    print("|---|---|---|---|---|---|")
    for name in sorted(bench.by_input, key=lambda n: -len(bench.by_input[n])):
        times = bench.by_input[name]
        print(
            f"| {name} | {len(times):,} | {bench.yielded[name]:,} "
            f"| {percentile(times, 0.5) * 1000:.1f} | {percentile(times, 0.99) * 1000:.1f} "
            f"| {max(times) / 1000:.1f} |"
        )
    print()
    p50 = percentile(bench.latencies, 0.5)
    p99 = percentile(bench.latencies, 0.99)
    rate_core = bench.decisions / core
    rate_wall = bench.decisions / wall
    print("| measure | value |")
    print("|---|---|")
    print(f"| routing decisions (Offer/DialBack) | {bench.decisions:,} |")
    print(f"| decisions / s of core time | {rate_core:,.0f} |")
    print(f"| decisions / s of the whole loop (core + simulator) | {rate_wall:,.0f} |")
    print(
        f"| per-decision latency p50 / p99 / max | {p50:.3f} / {p99:.3f} / "
        f"{max(bench.latencies) / 1e6:.3f} ms |"
    )
    print(f"| core share of the loop | {core / wall:.0%} (process CPU {cpu / wall:.0%} of wall) |")
    print(
        f"| garbage collections while measuring | {collections:,} "
        f"({full_collections} full ones since the start) |"
    )
    clean = bench.clean_latencies
    print(
        f"| latency of decisions with no garbage collection inside p99 / max | "
        f"{percentile(clean, 0.99):.3f} / {max(clean) / 1e6:.3f} ms "
        f"({len(clean):,} of {len(bench.latencies):,} inputs) |"
    )
    print(f"| waiting calls at the end | {waiting_now:,} |")
    print(f"| simulated time covered | {bench.now - simulated_from:,.0f} s |")
    print(f"| announcements in the window | {bench.announcements:,} |")
    print(f"| overflows in the window | {dict(bench.overflows)} |")
    print(
        f"| snapshot / restore of the final state | {len(data) / 1e6:.1f} MB, "
        f"{snap_time * 1000:.0f} ms / {restore_time * 1000:.0f} ms |"
    )
    print()
    met = rate_core >= THROUGHPUT_GOAL and p99 <= P99_GOAL_MS
    print(
        f"Goal ≥ {THROUGHPUT_GOAL:,} decisions/s and p99 ≤ {P99_GOAL_MS:g} ms: "
        + ("met." if met else "NOT met.")
    )


if __name__ == "__main__":
    main()

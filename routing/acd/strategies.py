"""Which of a call's eligible, available agents to offer it to. Members of the highest member
priority tier are chosen first; within the tier the queue's strategy decides. Every order ends
on the agent's sequence, so the choice never depends on the order agents were found in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from routing.acd.model import Strategy
from routing.acd.state import AgentRecord

Candidate = tuple[int, AgentRecord]
"""(member priority in the call's queue, agent)."""


def top_tier(candidates: Sequence[Candidate]) -> list[AgentRecord]:
    best = max(priority for priority, _ in candidates)
    return [agent for priority, agent in candidates if priority == best]


def idle_key(agent: AgentRecord) -> tuple[float, int]:
    return (agent.idle_since, agent.seq)


def longest_idle(agents: Iterable[AgentRecord]) -> AgentRecord:
    return min(agents, key=idle_key)


def fewest_calls(agents: Iterable[AgentRecord]) -> AgentRecord:
    return min(agents, key=lambda a: (a.calls_handled, a.idle_since, a.seq))


def best_skilled(agents: Iterable[AgentRecord], skill_names: Iterable[str]) -> AgentRecord:
    """Highest sum of the agent's levels over the skills the call needs, then longest idle."""
    names = tuple(skill_names)

    def key(agent: AgentRecord) -> tuple[int, float, int]:
        levels = agent.spec.skills
        return (-sum(levels.get(name, 0) for name in names), agent.idle_since, agent.seq)

    return min(agents, key=key)


def round_robin(agents: Iterable[AgentRecord], last_seq: int | None) -> AgentRecord:
    """The next member after the one last offered, in member order, wrapping around."""
    ordered = sorted(agents, key=lambda a: a.seq)
    if last_seq is not None:
        for agent in ordered:
            if agent.seq > last_seq:
                return agent
    return ordered[0]


def choose(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    *,
    skill_names: Iterable[str],
    round_robin_last: int | None,
    single: bool = False,
) -> list[AgentRecord]:
    """The agents to offer the call to: one, or for ring_all the whole top tier (longest idle
    first). `single` asks for one agent even under ring_all (a dial-back rings one agent)."""
    tier = top_tier(candidates)
    if strategy == "ring_all":
        ordered = sorted(tier, key=idle_key)
        return ordered[:1] if single else ordered
    if strategy == "round_robin":
        return [round_robin(tier, round_robin_last)]
    if strategy == "fewest_calls":
        return [fewest_calls(tier)]
    if strategy == "skills_based":
        return [best_skilled(tier, skill_names)]
    return [longest_idle(tier)]

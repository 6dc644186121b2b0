"""A small desk for driving the ACD core in tests: named queues, agents and calls, and a
clock that only moves when the test says so."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from uuid import UUID, uuid5

from routing.acd import (
    Acd,
    AgentChanged,
    AgentSpec,
    CallSpec,
    Decision,
    Offer,
    QueueSpec,
)

NAMESPACE = UUID("6d1f1f9e-4c1b-4b53-9a3e-0b6c1f4a0001")
D = TypeVar("D")


def uid(name: str) -> UUID:
    return uuid5(NAMESPACE, name)


def qid(name: str) -> UUID:
    return uid("queue:" + name)


def aid(name: str) -> UUID:
    return uid("agent:" + name)


def cid(name: str) -> UUID:
    return uid("call:" + name)


def of(kind: type[D], decisions: list[Decision]) -> list[D]:
    return [d for d in decisions if isinstance(d, kind)]


class Desk:
    def __init__(self, now: float = 1000.0) -> None:
        self.acd = Acd()
        self.now = now

    def at(self, seconds: float) -> float:
        """Move the clock to `seconds` after the start of the test."""
        self.now = 1000.0 + seconds
        return self.now

    def queue(self, name: str, strategy: str = "longest_idle", **fields: Any) -> UUID:
        queue_id = qid(name)
        spec = QueueSpec(queue_id=queue_id, strategy=strategy, **fields)  # type: ignore[arg-type]
        self.acd.configure_queue(spec, self.now)
        return queue_id

    def agent(
        self,
        name: str,
        queues: Mapping[str, int],
        *,
        skills: Mapping[str, int] | None = None,
        device: str | None = "auto",
        available: bool = True,
    ) -> UUID:
        agent_id = aid(name)
        self.acd.set_agent(
            AgentSpec(
                agent_id=agent_id,
                skills=dict(skills or {}),
                queues={qid(q): p for q, p in queues.items()},
                device=f"sip:{name}@10.0.0.1:5060" if device == "auto" else device,
            ),
            self.now,
        )
        if available:
            self.acd.set_presence(agent_id, "available", None, self.now)
        return agent_id

    def call(
        self,
        name: str,
        queue: str,
        *,
        priority: int = 0,
        skills: Mapping[str, int] | None = None,
    ) -> list[Decision]:
        return self.acd.enqueue(
            CallSpec(
                call_id=cid(name),
                queue_id=qid(queue),
                priority=priority,
                skills=dict(skills or {}),
                node_id="node-1",
                from_number="+15551230000",
                to_number="+15559870000",
            ),
            self.now,
        )

    def offers(self, decisions: list[Decision]) -> list[tuple[UUID, tuple[UUID, ...]]]:
        return [(d.call_id, d.agent_ids) for d in of(Offer, decisions)]

    def state(self, agent: UUID) -> str:
        return self.acd.agent(agent).state

    def serve(self, agent: UUID) -> list[Decision]:
        """The agent answers what they were offered, talks, hangs up and skips wrap-up."""
        view = self.acd.agent(agent)
        assert view.call_id is not None, f"agent is {view.state}, not offered a call"
        out = self.acd.offer_answered(view.call_id, agent, self.now)
        out += self.acd.call_ended(view.call_id, self.now)
        if self.state(agent) == "wrap_up":
            out += self.acd.end_wrap_up(agent, self.now)
        return out


def changes(decisions: list[Decision], agent: UUID) -> list[tuple[str, str | None]]:
    return [(d.state, d.reason) for d in of(AgentChanged, decisions) if d.agent_id == agent]

"""Configuration and call shapes check themselves: bad input is refused with a clear error
before it can reach the core; good input is normalised (skill names without case)."""

from __future__ import annotations

from typing import Any

import pytest

from routing.acd import AgentSpec, CallSpec, QueueSpec
from tests.routing.acd.support import qid, uid

QUEUE = qid("main")


def queue(**fields: Any) -> QueueSpec:
    return QueueSpec(queue_id=QUEUE, **{"strategy": "longest_idle", **fields})


def agent(**fields: Any) -> AgentSpec:
    return AgentSpec(agent_id=uid("agent"), **fields)


def call(**fields: Any) -> CallSpec:
    base: dict[str, Any] = {
        "call_id": uid("call"),
        "queue_id": QUEUE,
        "priority": 0,
        "skills": {},
        "node_id": "n",
        "from_number": "+1",
        "to_number": "+2",
    }
    return CallSpec(**{**base, **fields})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: queue(strategy="random"), "strategy"),
        (lambda: queue(priority=11), "queue priority"),
        (lambda: queue(priority=2.5), "queue priority"),
        (lambda: queue(max_wait_seconds=0), "max_wait_seconds"),
        (lambda: queue(wrap_up_seconds=-1), "wrap_up_seconds"),
        (lambda: queue(offer_timeout_seconds=float("nan")), "offer_timeout_seconds"),
        (lambda: queue(required_skills={"spanish": 0}), "level of 'spanish'"),
        (lambda: queue(required_skills={"": 1}), "skill name"),
        (lambda: agent(queues={QUEUE: 0}), "member priority"),
        (lambda: agent(queues={QUEUE: 11}), "member priority"),
        (lambda: agent(skills={"Spanish": 3, "spanish": 4}), "named twice"),
        (lambda: agent(skills={"spanish": 11}), "level of 'spanish'"),
        (lambda: agent(device=" "), "device"),
        (lambda: call(priority=-1), "call priority"),
        (lambda: call(priority=True), "call priority"),
        (lambda: call(skills={"billing": "3"}), "level of 'billing'"),
    ],
)
def test_bad_shapes_are_refused_with_a_clear_error(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_skill_names_are_kept_without_case_and_times_as_floats() -> None:
    assert queue(required_skills={" Spanish ": 2}).required_skills == {"spanish": 2}
    assert agent(skills={"BILLING": 3}).skills == {"billing": 3}
    assert call(skills={"Vip": 1}).skills == {"vip": 1}
    spec = queue(wrap_up_seconds=30, max_wait_seconds=600)
    assert (type(spec.wrap_up_seconds), type(spec.max_wait_seconds)) == (float, float)

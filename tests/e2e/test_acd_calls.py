"""Callers reach agents: SIPp carriers call numbers provisioned through the API, real flows run on
a media node, the ACD router picks agents whose phones (SIPp) ring, answer and talk; and the
voicemail and callback branches, and a router crash with callers waiting."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from runtime.embedded import free_port
from switchboard.media_role import RunningNode
from switchboard.router_role import RouterNode
from tests.conftest import Api, MailCatcher, Services
from tests.media.sipp import SippResult, run_sipp, scenario
from tests.media.test_node import running_node
from tests.media.test_queueing import (
    PLAY_VOICE,
    _pause,
    _press,
    finished,
    media_port,
    start_devices,
)
from tests.routing.center import (
    Agent,
    Center,
    add_agents,
    add_queue,
    ok,
    open_center,
    routing_api,
    running_router,
)

SALES_NUMBER = "+12125550101"
SUPPORT_NUMBER = "+12125550102"
LATE_NUMBER = "+12125550103"
CALLER = "+14155552671"
"""A number the outbound policy accepts, so the callback can dial it."""
TALK_SECONDS = 3.0
"""The agents' phones (tests/media/scenarios/agent_devices.xml, user "hangup...") hang up
after this long."""


@pytest.fixture
async def api(
    services: Services, database: str, smtp: tuple[MailCatcher, int]
) -> AsyncIterator[Api]:
    async with routing_api(services, database, smtp) as running:
        yield running


class Timeline:
    """Every event of the tenant, in arrival order."""

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.all if e["type"] == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                await asyncio.sleep(0.05)
        return self.of(kind)


@dataclass
class Floor:
    api: Api
    admin_conn: asyncpg.Connection
    center: Center
    node: RunningNode
    timeline: Timeline
    devices_port: int
    customers_port: int
    """Where the platform trunk sends outbound calls: the customers' phones (SIPp)."""
    tmp: Path

    def device(self, agent: Agent) -> str:
        return f"sip:hangup{self.center.agents.index(agent)}@127.0.0.1:{self.devices_port}"

    async def available(self, agent: Agent) -> Any:
        return await ok(
            self.api.client.put(
                f"/v1/agents/{agent.id}/presence",
                json={"state": "available", "device": self.device(agent)},
                headers=agent.auth,
            ),
            200,
        )

    def callers(self, number: str, calls: int, media: str, *, rate: float = 5.0) -> Any:
        return asyncio.create_task(
            run_sipp(
                f"127.0.0.1:{self.node.node.sip_ports['udp']}",
                scenario(
                    "queue_caller.xml", self.tmp / number.lstrip("+"), MEDIA=media, CALLER=CALLER
                ),
                self.tmp / number.lstrip("+"),
                service=number.lstrip("+"),
                calls=calls,
                rate=rate,
                media_port=media_port(),
                timeout=90,
            )
        )

    async def settled(self) -> None:
        node = self.node.node
        async with asyncio.timeout(15):
            while node.calls or node.queues.legs or node.ports.in_use:
                await asyncio.sleep(0.05)


async def _number(api: Api, center: Center, e164: str) -> Any:
    return await ok(
        api.client.post(
            "/v1/numbers", json={"e164": e164}, headers={**center.auth, "Idempotency-Key": e164}
        )
    )


async def _route(api: Api, center: Center, number: Any, name: str, document: Any) -> None:
    c = api.client
    flow = await ok(
        c.post("/v1/flows", json={"name": name, "document": document}, headers=center.auth)
    )
    await ok(c.post(f"/v1/flows/{flow['id']}/publish", headers=center.auth))
    await ok(
        c.put(
            f"/v1/numbers/{number['id']}/flow", json={"flow_id": flow["id"]}, headers=center.auth
        ),
        200,
    )


@pytest.fixture
async def floor(api: Api, admin_conn: asyncpg.Connection, tmp_path: Path) -> AsyncIterator[Floor]:
    customers = free_port()
    await admin_conn.execute(
        "insert into platform_trunks (name, host, port, allowed_sources)"
        " values ('carrier-a', '127.0.0.1', $1, '{127.0.0.1/32}')",
        customers,
    )
    await admin_conn.execute(
        "insert into number_inventory (e164, country, area_code, trunk) values"
        " ($1, 'US', '212', 'carrier-a'), ($2, 'US', '212', 'carrier-a'),"
        " ($3, 'US', '212', 'carrier-a')",
        SALES_NUMBER,
        SUPPORT_NUMBER,
        LATE_NUMBER,
    )
    center = await open_center(api)
    await admin_conn.execute(
        "update tenants set plan = 'growth' where tenant_id = $1", center.tenant_id
    )
    timeline = Timeline()

    async def on_event(msg: Any) -> None:
        timeline.all.append(msgspec.json.decode(msg.data))

    sub = await api.resources.bus.nc.subscribe(f"tenant.{center.tenant_id}.>", cb=on_event)
    for number in (SALES_NUMBER, SUPPORT_NUMBER, LATE_NUMBER):
        (tmp_path / number.lstrip("+")).mkdir()
    async with running_node(
        api,
        trunk_keepalive_seconds=0,
        settings_overrides={"agent_device_networks": ["127.0.0.0/8"]},
    ) as node:
        yield Floor(api, admin_conn, center, node, timeline, free_port(), customers, tmp_path)
    await sub.unsubscribe()


def _enqueue_flow(queue_id: str, **set_node: Any) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "hello": {"type": "play", "text": "Thank you for calling Acme.", "next": "set"},
        "set": {"type": "set", "next": "queue", **set_node},
        "queue": {"type": "enqueue", "queue_id": queue_id},
    }
    return {"start": "hello", "nodes": nodes}


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def _device_invites(messages: str) -> Counter[str]:
    """INVITEs each agent's phone received, by the Request-URI user."""
    return Counter(re.findall(r"^INVITE sip:(hangup\d+)@", messages, re.M))


async def _both(task: Any) -> SippResult:
    result: SippResult = await task
    assert result.ok, result.explain()
    return result


async def test_fifty_callers_through_two_queues_each_reach_an_eligible_agent_once(
    floor: Floor,
) -> None:
    api, center = floor.api, floor.center
    agents = await add_agents(api, center, 10)
    billing = await ok(api.client.post("/v1/skills", json={"name": "billing"}, headers=center.auth))
    for i, agent in enumerate(agents):
        await ok(
            api.client.put(
                f"/v1/users/{agent.id}/skills",
                json={"skills": [{"skill_id": billing["id"], "level": 3 if i < 5 else 8}]},
                headers=center.auth,
            ),
            200,
        )
    sales = await add_queue(api, center, "Sales", agents, wrap_up_seconds=0)
    support = await add_queue(
        api,
        center,
        "Support",
        agents,
        strategy="skills_based",
        required_skills=[{"skill_id": billing["id"], "min_level": 5}],
        wrap_up_seconds=1,
    )
    await _route(
        api,
        center,
        await _number(api, center, SALES_NUMBER),
        "Sales line",
        _enqueue_flow(sales["id"]),
    )
    await _route(
        api,
        center,
        await _number(api, center, SUPPORT_NUMBER),
        "Support line",
        _enqueue_flow(support["id"], priority=3),
    )
    phones = await start_devices(floor.tmp, port=floor.devices_port, calls=50, echo=False)
    async with running_router(api):
        for agent in agents:
            assert (await floor.available(agent))["state"] == "available"
        started = time.monotonic()
        sales_calls = floor.callers(SALES_NUMBER, 25, PLAY_VOICE)
        support_calls = floor.callers(SUPPORT_NUMBER, 25, PLAY_VOICE)
        await _both(sales_calls)
        await _both(support_calls)
        elapsed = time.monotonic() - started
        messages = await finished(phones, floor.tmp, floor.devices_port)
        await floor.settled()
        # Every agent ends up available again, with the calls they took counted.
        async with asyncio.timeout(10):
            while True:
                everyone = await ok(api.client.get("/v1/agents/presence", headers=center.auth), 200)
                if all(a["state"] == "available" for a in everyone):
                    break
                await asyncio.sleep(0.2)

    timeline = floor.timeline
    queued = {e["call_id"]: e for e in timeline.of("call.queued")}
    answered = {e["call_id"]: e for e in timeline.of("call.offer_answered")}
    ended = {e["call_id"]: e for e in timeline.of("call.ended")}
    assert len(queued) == 50
    assert set(answered) == set(queued) == set(ended)
    assert not timeline.of("call.offer_failed")
    by_index = {a.id: i for i, a in enumerate(agents)}
    # Eligible: Support takes only agents with billing at level 5 or more.
    for call_id, event in queued.items():
        agent = answered[call_id]["agent_id"]
        if event["queue_id"] == support["id"]:
            assert by_index[agent] >= 5, (call_id, agent)
        assert ended[call_id]["agent_id"] == agent
        assert ended[call_id]["queue_id"] == event["queue_id"]
        assert ended[call_id]["reason"] == "agent_hangup"
    # Never double-booked: each agent's talks follow one another.
    talks: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for call_id, event in answered.items():
        talks[event["agent_id"]].append((_ts(event), _ts(ended[call_id])))
    for spans in talks.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.05, spans
    # Each call rang exactly one phone once, and the phones saw what the events say.
    ringing = Counter(e["call_id"] for e in timeline.of("call.offer_ringing"))
    assert set(ringing.values()) == {1}
    invites = _device_invites(messages)
    per_agent = Counter(f"hangup{by_index[e['agent_id']]}" for e in answered.values())
    assert invites == per_agent
    assert sum(invites.values()) == 50
    # The phones hung up after TALK_SECONDS of talk: the node's timings say the same.
    for call_id, event in answered.items():
        talk = _ts(ended[call_id]) - _ts(event)
        assert TALK_SECONDS - 0.3 < talk < TALK_SECONDS + 2.0, (call_id, talk)
        assert ended[call_id]["talk_ms"] >= TALK_SECONDS * 1000
    # Agents' presence went reserved → on_call → wrap_up/available around each call.
    states = [e for e in timeline.of("agent.state")]
    on_call = Counter(e["agent_id"] for e in states if e["state"] == "on_call")
    assert on_call == Counter(e["agent_id"] for e in answered.values())
    assert elapsed < 90


async def test_a_caller_who_waits_too_long_leaves_a_voicemail_the_supervisor_can_play(
    floor: Floor,
) -> None:
    api, center = floor.api, floor.center
    agents = await add_agents(api, center, 1)
    late = await add_queue(
        api,
        center,
        "Late",
        agents,
        max_wait_seconds=10,
        overflow={"action": "voicemail", "mailbox": "late"},
    )
    await _route(
        api, center, await _number(api, center, LATE_NUMBER), "Late line", _enqueue_flow(late["id"])
    )
    async with running_router(api):
        # Nobody is available: after ten seconds the queue sends the caller to voicemail.
        media = _pause(16000) + PLAY_VOICE + _pause(7000) + _press("pound")
        await _both(floor.callers(LATE_NUMBER, 1, media))
        (voicemail,) = await floor.timeline.wait("call.voicemail")
        await floor.settled()
    ended = floor.timeline.of("call.ended")[-1]
    assert ended["reason"] == "voicemail"
    assert ended["agent_id"] is None
    listed = await ok(api.client.get("/v1/voicemails", headers=center.auth), 200)
    (stored,) = listed["data"]
    assert stored["id"] == voicemail["voicemail_id"]
    assert stored["mailbox"] == "late"
    assert stored["from_number"] == CALLER
    assert stored["duration_ms"] > 3000
    audio = await api.client.get(f"/v1/voicemails/{stored['id']}/audio", headers=center.auth)
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.content[:4] == b"RIFF"
    assert len(audio.content) > 8000 * 2 * 3


async def test_a_caller_who_asks_for_a_callback_is_called_back_when_an_agent_is_free(
    floor: Floor,
) -> None:
    api, center = floor.api, floor.center
    (agent,) = await add_agents(api, center, 1)
    late = await add_queue(
        api,
        center,
        "Late",
        [agent],
        max_wait_seconds=10,
        overflow={"action": "callback"},
        wrap_up_seconds=0,
    )
    await _route(
        api, center, await _number(api, center, LATE_NUMBER), "Late line", _enqueue_flow(late["id"])
    )
    port = floor.customers_port
    customers = await start_devices(floor.tmp, port=port, calls=1, echo=False)
    phones = await start_devices(floor.tmp, port=floor.devices_port, calls=1, echo=False)
    async with running_router(api):
        # The queue is unattended: after ten seconds the caller is offered a callback, presses
        # 1 and hangs up, keeping their place.
        await _both(floor.callers(LATE_NUMBER, 1, _pause(13000) + _press("1")))
        (request,) = await floor.timeline.wait("call.callback_requested")
        assert request["number"] == CALLER
        call_id = request["call_id"]
        live = await ok(api.client.get(f"/v1/queues/{late['id']}/live", headers=center.auth), 200)
        assert (live["waiting"], live["callbacks"]) == (1, 1)
        # The agent comes back: they are rung first, then the customer is dialed and bridged.
        await floor.available(agent)
        await finished(phones, floor.tmp, floor.devices_port)
        await finished(customers, floor.tmp, port)
        await floor.settled()
    kinds = [
        e["type"]
        for e in floor.timeline.all
        if e.get("call_id") == call_id and e["type"].startswith("call.")
    ]
    after = kinds[kinds.index("call.callback_requested") :]
    assert after[:4] == [
        "call.callback_requested",
        "call.ended",
        "call.offer_ringing",
        "call.offer_answered",
    ], kinds
    assert "call.started" in after
    outbound = [e for e in floor.timeline.of("call.started") if e["call_id"] == call_id][-1]
    assert (outbound["direction"], outbound["to_number"], outbound["from_number"]) == (
        "outbound",
        CALLER,
        LATE_NUMBER,
    )
    last = [e for e in floor.timeline.of("call.ended") if e["call_id"] == call_id][-1]
    assert last["agent_id"] == agent.id
    assert last["talk_ms"] > 1500


async def test_callers_waiting_through_a_router_crash_are_each_answered_once(
    floor: Floor,
) -> None:
    api, center = floor.api, floor.center
    agents = await add_agents(api, center, 3)
    sales = await add_queue(api, center, "Sales", agents, wrap_up_seconds=0)
    await _route(
        api,
        center,
        await _number(api, center, SALES_NUMBER),
        "Sales line",
        _enqueue_flow(sales["id"]),
    )
    phones = await start_devices(floor.tmp, port=floor.devices_port, calls=8, echo=False)
    first = RouterNode(
        api.settings, api.resources.pool, api.resources.bus, instance_id="router-first"
    )
    await first.start()
    for agent in agents:
        await floor.available(agent)
    callers = floor.callers(SALES_NUMBER, 8, PLAY_VOICE, rate=10)
    await floor.timeline.wait("call.queued", 8)
    await floor.timeline.wait("call.offer_answered", 3)
    # The router dies with three calls talking and five waiting; its leases age out.
    await first.stop(release=False)
    crashed = time.monotonic()
    await asyncio.sleep(1.0)
    second = RouterNode(
        api.settings, api.resources.pool, api.resources.bus, instance_id="router-second"
    )
    await second.start()
    try:
        answered_before = len(floor.timeline.of("call.offer_answered"))
        await floor.timeline.wait("call.offer_answered", answered_before + 1, timeout=20)
        resumed = time.monotonic() - crashed
        logging.getLogger(__name__).info("routing resumed %.2f s after the crash", resumed)
        await _both(callers)
        await finished(phones, floor.tmp, floor.devices_port)
        await floor.settled()
    finally:
        await second.stop()
    timeline = floor.timeline
    queued = {e["call_id"] for e in timeline.of("call.queued")}
    answered = Counter(e["call_id"] for e in timeline.of("call.offer_answered"))
    ringing = Counter(e["call_id"] for e in timeline.of("call.offer_ringing"))
    assert set(answered) == queued
    assert set(answered.values()) == {1}
    assert set(ringing.values()) == {1}
    assert not timeline.of("call.offer_failed")
    # Leases age out after two seconds; the talking calls end after three: routing resumes
    # within seconds (the figure is in BENCHMARKS.md, not asserted here).
    assert resumed < 15

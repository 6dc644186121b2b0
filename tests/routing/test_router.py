"""The ACD router process with real NATS and PostgreSQL: presence through the API, live queue
numbers, state kept across a router crash, and partitions moving between routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
import pytest

from bus.connection import EVENTS_STREAM
from tests.conftest import Api, MailCatcher, Services
from tests.routing.center import (
    Center,
    add_agents,
    add_queue,
    ok,
    open_center,
    routing_api,
    running_router,
)


@pytest.fixture
async def api(
    services: Services, database: str, smtp: tuple[MailCatcher, int]
) -> AsyncIterator[Api]:
    async with routing_api(services, database, smtp) as running:
        yield running


async def _center(api: Api) -> Center:
    center = await open_center(api)
    await add_agents(api, center, 2)
    await add_queue(api, center, "Sales", center.agents)
    return center


async def _presence(api: Api, agent_id: str, body: dict[str, Any], auth: dict[str, str]) -> Any:
    return await api.client.put(f"/v1/agents/{agent_id}/presence", json=body, headers=auth)


async def _state_events(api: Api, tenant_id: str, count: int) -> list[dict[str, Any]]:
    js = api.resources.bus.js
    sub = await js.pull_subscribe(
        f"tenant.{tenant_id}.agent.*.state", stream=EVENTS_STREAM, durable=None
    )
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(events) < count:
            try:
                msgs = await sub.fetch(count - len(events), timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                events.append(msgspec.json.decode(msg.data))
                await msg.ack()
    await sub.unsubscribe()
    return events


async def test_agents_go_available_and_away_and_supervisors_see_it_live(api: Api) -> None:
    center = await _center(api)
    one, two = center.agents
    queue = center.queues["Sales"]
    async with running_router(api):
        # Going available needs somewhere to ring first.
        r = await _presence(api, one.id, {"state": "available"}, one.auth)
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await _presence(
            api, one.id, {"state": "available", "device": "sip:one@198.51.100.7:5060"}, one.auth
        )
        assert r.status_code == 422
        assert r.json()["code"] == "invalid-device"
        r = await _presence(api, one.id, {"state": "available", "device": "tel:123"}, one.auth)
        assert r.status_code == 422
        r = await _presence(api, one.id, {"state": "available", "reason": "lunch"}, one.auth)
        assert r.status_code == 422
        available = await ok(
            _presence(
                api,
                one.id,
                {"state": "available", "device": "sip:one@127.0.0.1:5999"},
                one.auth,
            ),
            200,
        )
        assert available["state"] == "available"
        assert available["agent_id"] == one.id
        # An agent manages only their own presence; a supervisor role may manage anyone's.
        r = await _presence(api, two.id, {"state": "away", "reason": "break"}, one.auth)
        assert r.status_code == 403
        away = await ok(
            _presence(api, two.id, {"state": "away", "reason": "break"}, center.auth), 200
        )
        assert (away["state"], away["reason"]) == ("away", "break")
        r = await _presence(api, str(UUID(int=7)), {"state": "offline"}, center.auth)
        assert r.status_code == 404

        r = await api.client.get("/v1/agents/presence", headers=one.auth)
        assert r.status_code == 403
        everyone = await ok(api.client.get("/v1/agents/presence", headers=center.auth), 200)
        states = {a["agent_id"]: (a["state"], a["reason"]) for a in everyone}
        assert states == {one.id: ("available", None), two.id: ("away", "break")}

        live = await ok(api.client.get(f"/v1/queues/{queue['id']}/live", headers=center.auth), 200)
        assert live["waiting"] == 0
        assert {state: n for state, n in live["agents"].items() if n} == {
            "available": 1,
            "away": 1,
        }
        assert live["staffed"] == 1
        r = await api.client.get(f"/v1/queues/{UUID(int=9)}/live", headers=center.auth)
        assert r.status_code == 404

        events = await _state_events(api, center.tenant_id, 2)
        assert {(e["agent_id"], e["state"]) for e in events} == {
            (one.id, "available"),
            (two.id, "away"),
        }


async def test_without_a_router_presence_is_refused_with_retry_after(api: Api) -> None:
    center = await _center(api)
    one = center.agents[0]
    r = await _presence(
        api, one.id, {"state": "available", "device": "sip:one@127.0.0.1:5999"}, one.auth
    )
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["code"] == "router-unavailable"


async def test_presence_survives_a_router_crash_and_the_next_router_takes_over(
    api: Api,
) -> None:
    center = await _center(api)
    one, two = center.agents
    async with running_router(api, release=False) as first:
        assert first.owned == list(range(api.settings.router_partitions))
        before = await ok(
            _presence(api, one.id, {"state": "available", "device": "+12125550123"}, one.auth),
            200,
        )
        await ok(_presence(api, two.id, {"state": "away", "reason": "lunch"}, two.auth), 200)
    # The first router died without giving its leases back: they age out, then the next one
    # restores the tenant's state from KV.
    async with running_router(api) as second:
        async with asyncio.timeout(15):
            while len(second.owned) < api.settings.router_partitions:
                await asyncio.sleep(0.2)
        everyone = await ok(api.client.get("/v1/agents/presence", headers=center.auth), 200)
        by_id = {a["agent_id"]: a for a in everyone}
        assert by_id[one.id]["state"] == "available"
        assert by_id[one.id]["since"] == before["since"]
        assert (by_id[two.id]["state"], by_id[two.id]["reason"]) == ("away", "lunch")


async def test_two_routers_split_the_partitions_and_either_can_be_asked(api: Api) -> None:
    center = await _center(api)
    one = center.agents[0]
    partitions = api.settings.router_partitions
    async with running_router(api) as first, running_router(api) as second:
        async with asyncio.timeout(15):
            while not (
                first.owned and second.owned and len(first.owned) + len(second.owned) == partitions
            ):
                await asyncio.sleep(0.2)
        assert not set(first.owned) & set(second.owned)
        answer = await ok(
            _presence(
                api, one.id, {"state": "available", "device": "sip:one@127.0.0.1:5999"}, one.auth
            ),
            200,
        )
        assert answer["state"] == "available"


async def test_malformed_and_unknown_router_commands_are_refused_and_change_nothing(
    api: Api,
) -> None:
    from bus.requests import send_command
    from routing.client import router_subject
    from routing.router import partition_of

    center = await _center(api)
    one = center.agents[0]
    tenant = UUID(center.tenant_id)
    subject = router_subject(
        api.settings.router_namespace, partition_of(tenant, api.settings.router_partitions)
    )
    bus = api.resources.bus
    async with running_router(api):
        before = await ok(api.client.get("/v1/agents/presence", headers=center.auth), 200)
        for verb, payload in [
            ("presence", b"not json"),
            ("presence", msgspec.json.encode({"tenant_id": str(tenant), "state": "available"})),
            (
                "presence",
                msgspec.json.encode(
                    {"tenant_id": str(tenant), "agent_id": one.id, "state": "available", "extra": 1}
                ),
            ),
            ("dance", msgspec.json.encode({"tenant_id": str(tenant)})),
        ]:
            reply = msgspec.json.decode(await send_command(bus, f"{subject}.{verb}", payload))
            assert reply["ok"] is False
            expected = "unknown_command" if verb == "dance" else "invalid_command"
            assert reply["error"] == expected, reply
        after = await ok(api.client.get("/v1/agents/presence", headers=center.auth), 200)
        assert after == before

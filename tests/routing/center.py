"""Building a small call center through the API, and running routers, for the routing tests."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from switchboard.router_role import RouterNode
from tests.conftest import Api, MailCatcher, Services, running_api


async def ok(response: Any, status: int = 201) -> Any:
    r = await response
    assert r.status_code == status, r.text
    return r.json() if r.content else None


@dataclass
class Agent:
    id: str
    email: str
    auth: dict[str, str]


@dataclass
class Center:
    tenant_id: str
    auth: dict[str, str]
    agents: list[Agent] = field(default_factory=list)
    skills: dict[str, str] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)


async def add_agents(api: Api, center: Center, count: int, *, start: int = 0) -> list[Agent]:
    """Invite `count` agents, have each accept by mail and log in, and give each a seat."""
    c = api.client
    made = []
    for i in range(start, start + count):
        email = f"agent{i}@acme.test"
        user = await ok(
            c.post("/v1/users", json={"email": email, "role": "agent"}, headers=center.auth)
        )
        token = MailCatcher.token_in(await api.mail.wait_for(email, "invited"))
        password = f"Headset-{i}-Passw0rd"
        await ok(
            c.post("/v1/auth/accept-invitation", json={"token": token, "password": password}),
            200,
        )
        await ok(c.post("/v1/seats", json={"user_id": user["id"]}, headers=center.auth))
        tokens = await ok(
            c.post("/v1/auth/login", json={"email": email, "password": password}), 200
        )
        agent = Agent(user["id"], email, {"Authorization": f"Bearer {tokens['access_token']}"})
        made.append(agent)
    center.agents += made
    return made


async def add_queue(api: Api, center: Center, name: str, members: list[Agent], **spec: Any) -> Any:
    c = api.client
    queue = await ok(
        c.post(
            "/v1/queues",
            json={"name": name, "strategy": "longest_idle", **spec},
            headers=center.auth,
        )
    )
    await ok(
        c.put(
            f"/v1/queues/{queue['id']}/members",
            json={"members": [{"user_id": a.id, "priority": 5} for a in members]},
            headers=center.auth,
        ),
        200,
    )
    center.queues[name] = queue
    return queue


async def open_center(api: Api) -> Center:
    owner = await api.signup_verified("owner@acme.test", "Acme")
    return Center(owner["tenant_id"], owner["auth"])


@contextlib.asynccontextmanager
async def routing_api(
    services: Services, database: str, smtp: tuple[MailCatcher, int], **overrides: Any
) -> AsyncIterator[Api]:
    """The API, with routers of its own (a namespace no other test shares), short leases, and
    agents' SIP phones allowed on loopback."""
    mail, port = smtp
    async with running_api(
        services,
        database,
        mail,
        port,
        router_namespace=f"t{secrets.token_hex(4)}",
        router_lease_seconds=2.0,
        agent_device_networks=["127.0.0.0/8"],
        **overrides,
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def running_router(
    api: Api, *, release: bool = True, instance_id: str | None = None
) -> AsyncIterator[RouterNode]:
    node = RouterNode(
        api.settings,
        api.resources.pool,
        api.resources.bus,
        instance_id=instance_id or f"router-{secrets.token_hex(3)}",
    )
    await node.start()
    try:
        yield node
    finally:
        await node.stop(release=release)

"""A tenant builds its call center through the API, and every step is on the EVENTS stream."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import msgspec

from tests.conftest import Api, MailCatcher
from tests.routing.test_flow_api import support_flow


async def _stream_subjects(api: Api, tenant_id: str, expected: int) -> list[str]:
    """Subjects of the tenant's events as stored in JetStream (not just the outbox)."""
    js = api.resources.bus.js
    sub = await js.pull_subscribe(f"tenant.{tenant_id}.>", durable=f"t{secrets.token_hex(4)}")
    subjects: list[str] = []
    async with asyncio.timeout(30):
        while len(subjects) < expected:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:
                continue
            for m in msgs:
                subjects.append(m.subject)
                await m.ack()
    await sub.unsubscribe()
    return subjects


async def test_a_tenant_builds_its_call_center_and_every_step_is_an_event(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await admin_conn.execute(
        "insert into number_inventory (e164, country, area_code, trunk) values"
        " ('+12125550101', 'US', '212', 'carrier-a'), ('+12125550102', 'US', '212', 'carrier-a')"
    )
    owner = await api.signup_verified("owner@acme.test", "Acme")
    auth = owner["auth"]
    c = api.client

    async def ok(r: Any, status: int = 201) -> Any:
        response = await r
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    numbers = [
        await ok(c.post("/v1/numbers", json={"e164": e}, headers={**auth, "Idempotency-Key": e}))
        for e in ("+12125550101", "+12125550102")
    ]
    english = await ok(c.post("/v1/skills", json={"name": "english"}, headers=auth))
    billing = await ok(c.post("/v1/skills", json={"name": "billing"}, headers=auth))
    agents = []
    for i in range(5):
        user = await ok(
            c.post(
                "/v1/users", json={"email": f"agent{i}@acme.test", "role": "agent"}, headers=auth
            )
        )
        token = MailCatcher.token_in(await api.mail.wait_for(f"agent{i}@acme.test", "invited"))
        await ok(
            c.post(
                "/v1/auth/accept-invitation",
                json={"token": token, "password": f"Headset-{i}-Passw0rd"},
            ),
            200,
        )
        await ok(c.post("/v1/seats", json={"user_id": user["id"]}, headers=auth))
        await ok(
            c.put(
                f"/v1/users/{user['id']}/skills",
                json={
                    "skills": [
                        {"skill_id": english["id"], "level": 5 + i},
                        {"skill_id": billing["id"], "level": 9 - i},
                    ]
                },
                headers=auth,
            ),
            200,
        )
        agents.append(user)
    sales = await ok(
        c.post("/v1/queues", json={"name": "Sales", "strategy": "longest_idle"}, headers=auth)
    )
    support = await ok(
        c.post(
            "/v1/queues",
            json={
                "name": "Support",
                "strategy": "skills_based",
                "required_skills": [{"skill_id": billing["id"], "min_level": 6}],
            },
            headers=auth,
        )
    )
    for queue in (sales, support):
        await ok(
            c.put(
                f"/v1/queues/{queue['id']}/members",
                json={"members": [{"user_id": a["id"], "priority": 5} for a in agents]},
                headers=auth,
            ),
            200,
        )
    flow = await ok(
        c.post(
            "/v1/flows",
            json={"name": "Main line", "document": support_flow(sales["id"], support["id"])},
            headers=auth,
        )
    )
    await ok(c.post(f"/v1/flows/{flow['id']}/publish", headers=auth))
    for number in numbers:
        routed = await ok(
            c.put(f"/v1/numbers/{number['id']}/flow", json={"flow_id": flow["id"]}, headers=auth),
            200,
        )
        assert routed["flow_id"] == flow["id"]

    outbox = await admin_conn.fetchval(
        "select count(*) from outbox where tenant_id = $1", msgspec.convert(owner["tenant_id"], str)
    )
    subjects = await _stream_subjects(api, owner["tenant_id"], outbox)
    prefix = f"tenant.{owner['tenant_id']}."
    assert all(s.startswith(prefix) for s in subjects)
    kinds = [s[len(prefix) :].split(".")[0] + "." + s.rsplit(".", 1)[1] for s in subjects]
    for kind, count in {
        "number.purchased": 2,
        "skill.created": 2,
        "user.invited": 5,
        "user.created": 6,
        "seat.created": 5,
        "seat.assigned": 5,
        "agent.skills_changed": 5,
        "queue.created": 2,
        "queue.members_changed": 2,
        "flow.created": 1,
        "flow.published": 1,
        "number.routed": 2,
    }.items():
        assert kinds.count(kind) == count, (kind, kinds)

"""Flows over the API: validated drafts, immutable published versions, numbers routed to them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.conftest import Api


async def _queue(api: Api, who: dict[str, Any], name: str) -> str:
    r = await api.client.post(
        "/v1/queues", json={"name": name, "strategy": "longest_idle"}, headers=who["auth"]
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def support_flow(sales: str, support: str) -> dict[str, Any]:
    return {
        "start": "welcome",
        "nodes": {
            "welcome": {"type": "play", "text": "Thanks for calling Acme.", "next": "hours"},
            "hours": {
                "type": "business_hours",
                "timezone": "Europe/Berlin",
                "weekly": {d: [["08:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
                "holidays": ["2026-12-25"],
                "open": "menu",
                "closed": "closed",
            },
            "menu": {
                "type": "menu",
                "text": "For sales press 1, for support press 2.",
                "options": {"1": "sales", "2": "support"},
                "failed": "support",
            },
            "sales": {"type": "enqueue", "queue_id": sales},
            "support": {"type": "enqueue", "queue_id": support},
            "closed": {"type": "play", "text": "We are closed.", "next": "bye"},
            "bye": {"type": "hangup"},
        },
    }


async def test_a_flow_is_drafted_published_and_numbers_route_to_it(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    sales, support = await _queue(api, owner, "Sales"), await _queue(api, owner, "Support")
    r = await api.client.post(
        "/v1/flows",
        json={"name": "Main line", "document": support_flow(sales, support)},
        headers=owner["auth"],
    )
    assert r.status_code == 201, r.text
    flow = r.json()
    assert flow["published_version"] is None
    r = await api.client.post(f"/v1/flows/{flow['id']}/publish", headers=owner["auth"])
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    # Editing the draft does not touch version 1; publishing again makes version 2.
    changed = support_flow(sales, support)
    changed["nodes"]["welcome"]["text"] = "Welcome to Acme."
    r = await api.client.patch(
        f"/v1/flows/{flow['id']}", json={"document": changed}, headers=owner["auth"]
    )
    assert r.status_code == 200, r.text
    v1 = (await api.client.get(f"/v1/flows/{flow['id']}/versions/1", headers=owner["auth"])).json()
    assert v1["document"]["nodes"]["welcome"]["text"] == "Thanks for calling Acme."
    r = await api.client.post(f"/v1/flows/{flow['id']}/publish", headers=owner["auth"])
    assert r.json()["version"] == 2
    # Versions cannot be changed, even by the app role behind the API's back.
    async with api.pool.acquire() as conn:
        await conn.execute("select set_config('app.tenant_id', $1, false)", owner["tenant_id"])
        try:
            await conn.execute("update flow_versions set document = '{}'::jsonb")
        except asyncpg.InsufficientPrivilegeError:
            pass
        else:
            raise AssertionError("a published version was changed")
        finally:
            await conn.execute("select set_config('app.tenant_id', '', false)")

    await admin_conn.execute(
        "insert into number_inventory (e164, country, area_code, trunk) values"
        " ('+12125550101', 'US', '212', 'carrier-a')"
    )
    r = await api.client.post(
        "/v1/numbers",
        json={"e164": "+12125550101"},
        headers={**owner["auth"], "Idempotency-Key": "n1"},
    )
    number = r.json()
    r = await api.client.put(
        f"/v1/numbers/{number['id']}/flow", json={"flow_id": flow["id"]}, headers=owner["auth"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["flow_id"] == flow["id"]
    r = await api.client.delete(f"/v1/flows/{flow['id']}", headers=owner["auth"])
    assert r.status_code == 409
    assert "+12125550101" in r.json()["detail"]
    subjects = [
        row["subject"].split(".", 2)[2]
        for row in await admin_conn.fetch(
            "select subject from outbox where subject like '%.flow.%' or subject like '%.routed'"
            " order by id"
        )
    ]
    fid = flow["id"]
    assert subjects == [
        f"flow.{fid}.created",
        f"flow.{fid}.published",
        f"flow.{fid}.draft_updated",
        f"flow.{fid}.published",
        f"number.{number['id']}.routed",
    ]


async def test_invalid_flows_are_rejected_field_by_field_and_nothing_is_stored(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    sales, support = await _queue(api, a, "Sales"), await _queue(api, a, "Support")
    b_queue = await _queue(api, b, "Theirs")

    def broken(change: Any) -> dict[str, Any]:
        doc = support_flow(sales, support)
        change(doc)
        return doc

    cases = {
        "document.nodes.menu.options.2": lambda d: d["nodes"]["menu"]["options"].update(
            {"2": "nowhere"}
        ),
        "document.nodes.sales.queue_id": lambda d: d["nodes"]["sales"].update(
            {"queue_id": str(uuid.uuid4())}
        ),
        "document.nodes.support.queue_id": lambda d: d["nodes"]["support"].update(
            {"queue_id": b_queue}
        ),
        "document.nodes.hours.timezone": lambda d: d["nodes"]["hours"].update(
            {"timezone": "Mars/Olympus"}
        ),
        "document.nodes.orphan": lambda d: d["nodes"].update({"orphan": {"type": "hangup"}}),
        "document.nodes.welcome.type": lambda d: d["nodes"]["welcome"].update({"type": "dance"}),
    }
    for field, change in cases.items():
        r = await api.client.post(
            "/v1/flows",
            json={"name": f"f-{field}", "document": broken(change)},
            headers=a["auth"],
        )
        assert r.status_code == 422, (field, r.text)
        problem = r.json()
        assert problem["code"] == "invalid-flow"
        assert field in [e["field"] for e in problem["errors"]], (field, problem["errors"])
    assert await admin_conn.fetchval("select count(*) from flows") == 0
    # A flow cannot be routed before it is published, nor can B route A's flow.
    r = await api.client.post(
        "/v1/flows",
        json={"name": "ok", "document": support_flow(sales, support)},
        headers=a["auth"],
    )
    flow = r.json()
    for method, path in (
        ("GET", f"/v1/flows/{flow['id']}"),
        ("POST", f"/v1/flows/{flow['id']}/publish"),
        ("DELETE", f"/v1/flows/{flow['id']}"),
        ("GET", f"/v1/flows/{flow['id']}/versions"),
    ):
        assert (await api.client.request(method, path, headers=b["auth"])).status_code == 404
    assert await admin_conn.fetchval("select count(*) from flow_versions") == 0


async def test_a_queue_or_prompt_a_flow_uses_cannot_be_deleted(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    sales, support = await _queue(api, owner, "Sales"), await _queue(api, owner, "Support")
    r = await api.client.post(
        "/v1/prompts",
        json={"name": "welcome", "text": "Welcome to Acme."},
        headers=owner["auth"],
    )
    assert r.status_code == 201, r.text
    prompt = r.json()
    doc = support_flow(sales, support)
    doc["nodes"]["welcome"] = {"type": "play", "prompt_id": prompt["id"], "next": "hours"}
    r = await api.client.post(
        "/v1/flows", json={"name": "Main", "document": doc}, headers=owner["auth"]
    )
    assert r.status_code == 201, r.text
    flow = r.json()
    for path in (f"/v1/queues/{sales}", f"/v1/prompts/{prompt['id']}"):
        r = await api.client.delete(path, headers=owner["auth"])
        assert r.status_code == 409, (path, r.text)
    assert await admin_conn.fetchval("select count(*) from prompts") == 1
    # Once no flow uses them (draft and published version), they can go.
    await api.client.post(f"/v1/flows/{flow['id']}/publish", headers=owner["auth"])
    plain = support_flow(support, support)
    r = await api.client.patch(
        f"/v1/flows/{flow['id']}", json={"document": plain}, headers=owner["auth"]
    )
    assert r.status_code == 200
    # The published version still sends callers to Sales and plays the prompt.
    assert (
        await api.client.delete(f"/v1/queues/{sales}", headers=owner["auth"])
    ).status_code == 409
    await api.client.post(f"/v1/flows/{flow['id']}/publish", headers=owner["auth"])
    assert (
        await api.client.delete(f"/v1/queues/{sales}", headers=owner["auth"])
    ).status_code == 204
    r = await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"])
    assert r.status_code == 204

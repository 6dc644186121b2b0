"""Skills, agents' skill levels, queues and their members: unique names, references only to the
tenant's own rows, nothing in use deleted, queues within the plan, an event for every change."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from bus.events import Event
from tenancy.queues import events as ev
from tests.conftest import Api

TABLES = ("skills", "agent_skills", "queues", "queue_members")


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


def _fields(problem: dict[str, Any]) -> list[str]:
    return [e["field"] for e in problem.get("errors") or []]


async def _skill(api: Api, who: dict[str, Any], name: str) -> dict[str, Any]:
    return _ok(await api.client.post("/v1/skills", json={"name": name}, headers=who["auth"]), 201)


async def _queue(api: Api, who: dict[str, Any], name: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "strategy": "longest_idle", **fields}
    return _ok(await api.client.post("/v1/queues", json=body, headers=who["auth"]), 201)


async def _agent(api: Api, who: dict[str, Any], email: str) -> str:
    r = await api.client.post(
        "/v1/users", json={"email": email, "role": "agent"}, headers=who["auth"]
    )
    return str(_ok(r, 201)["id"])


async def _snapshot(conn: asyncpg.Connection, tenant_id: str | None = None) -> dict[str, Any]:
    out = {}
    for table in TABLES:
        rows = await conn.fetch(
            f"select * from {table} where $1::uuid is null or tenant_id = $1"  # noqa: S608
            " order by 1, 2, 3",
            tenant_id,
        )
        out[table] = [dict(r) for r in rows]
    return out


async def _subjects(conn: asyncpg.Connection, tenant_id: str) -> list[str]:
    rows = await conn.fetch(
        """select subject from outbox where subject like $1
             and split_part(subject, '.', 3) in ('skill', 'queue', 'agent')
           order by id""",
        f"tenant.{tenant_id}.%",
    )
    return [r["subject"] for r in rows]


async def _event(conn: asyncpg.Connection, subject: str) -> Event:
    """The latest event on `subject`, decoded as its typed class."""
    payload = await conn.fetchval(
        "select payload from outbox where subject = $1 order by id desc limit 1", subject
    )
    assert payload is not None, subject
    return ev.codec.decode(payload)


async def test_skills_queues_agent_levels_and_members_are_created_and_read_back(
    api: Api,
) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    auth = owner["auth"]
    german = await _skill(api, owner, "german")
    billing = await _skill(api, owner, "Billing")
    assert german["name"] == "german"
    assert _ok(await c.get(f"/v1/skills/{german['id']}", headers=auth)) == german

    queue = await _queue(
        api,
        owner,
        "German billing",
        strategy="skills_based",
        required_skills=[
            {"skill_id": german["id"], "min_level": 5},
            {"skill_id": billing["id"], "min_level": 2},
        ],
        overflow={"action": "voicemail", "mailbox": "billing"},
        announce_position=True,
    )
    assert queue["strategy"] == "skills_based"
    assert queue["required_skills"] == [
        {"skill_id": german["id"], "min_level": 5},
        {"skill_id": billing["id"], "min_level": 2},
    ]
    assert queue["overflow"] == {"action": "voicemail", "mailbox": "billing"}
    assert queue["announce_position"] is True
    assert _ok(await c.get(f"/v1/queues/{queue['id']}", headers=auth)) == queue

    # Everything left out takes its default.
    plain = await _queue(api, owner, "Sales")
    assert {k: plain[k] for k in plain if k not in ("id", "name", "created_at", "updated_at")} == {
        "strategy": "longest_idle",
        "required_skills": [],
        "priority": 5,
        "service_level_seconds": 20,
        "max_wait_seconds": 600,
        "overflow": {"action": "hangup", "message": ""},
        "wrap_up_seconds": 30,
        "announce_position": False,
        "announce_ewt": False,
        "record": False,
        "hold_music_prompt_id": None,
    }

    ann, bob = await _agent(api, owner, "ann@acme.test"), await _agent(api, owner, "bob@acme.test")
    r = await c.put(
        f"/v1/users/{ann}/skills",
        json={
            "skills": [
                {"skill_id": german["id"], "level": 7},
                {"skill_id": billing["id"], "level": 3},
            ]
        },
        headers=auth,
    )
    levels = _ok(r)
    assert levels == {
        "user_id": ann,
        "skills": [
            {"skill_id": billing["id"], "name": "Billing", "level": 3},
            {"skill_id": german["id"], "name": "german", "level": 7},
        ],
    }
    assert _ok(await c.get(f"/v1/users/{ann}/skills", headers=auth)) == levels
    # Replacing drops what is left out.
    r = await c.put(
        f"/v1/users/{ann}/skills",
        json={"skills": [{"skill_id": german["id"], "level": 9}]},
        headers=auth,
    )
    assert _ok(r)["skills"] == [{"skill_id": german["id"], "name": "german", "level": 9}]

    r = await c.put(
        f"/v1/queues/{queue['id']}/members",
        json={"members": [{"user_id": ann, "priority": 3}, {"user_id": bob, "priority": 8}]},
        headers=auth,
    )
    members = _ok(r)
    assert members == {
        "queue_id": queue["id"],
        "members": [{"user_id": bob, "priority": 8}, {"user_id": ann, "priority": 3}],
    }
    assert _ok(await c.get(f"/v1/queues/{queue['id']}/members", headers=auth)) == members
    r = await c.put(f"/v1/queues/{queue['id']}/members", json={"members": []}, headers=auth)
    assert _ok(r)["members"] == []

    # Lists are cursor pages.
    page = _ok(await c.get("/v1/queues", params={"limit": 1}, headers=auth))
    assert (len(page["data"]), page["has_more"]) == (1, True)
    rest = _ok(
        await c.get("/v1/queues", params={"starting_after": page["data"][0]["id"]}, headers=auth)
    )
    assert (len(rest["data"]), rest["has_more"]) == (1, False)
    assert {q["id"] for q in page["data"] + rest["data"]} == {queue["id"], plain["id"]}
    skills = _ok(await c.get("/v1/skills", headers=auth))
    assert {s["name"] for s in skills["data"]} == {"german", "Billing"}


async def test_skill_and_queue_names_are_unique_ignoring_case(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    german = await _skill(api, owner, "German")
    french = await _skill(api, owner, "french")
    r = await c.post("/v1/skills", json={"name": "GERMAN"}, headers=owner["auth"])
    assert _fields(_problem(r, 409)) == ["name"]
    r = await c.patch(f"/v1/skills/{french['id']}", json={"name": "german"}, headers=owner["auth"])
    assert _problem(r, 409)["code"] == "name-taken"

    sales = await _queue(api, owner, "Sales")
    await _queue(api, owner, "Support")
    r = await c.post(
        "/v1/queues", json={"name": "  sales ", "strategy": "ring_all"}, headers=owner["auth"]
    )
    assert _fields(_problem(r, 409)) == ["name"]
    r = await c.patch(f"/v1/queues/{sales['id']}", json={"name": "SUPPORT"}, headers=owner["auth"])
    assert _problem(r, 409)["code"] == "name-taken"
    # A change of case alone is a rename, not a clash with itself.
    r = await c.patch(f"/v1/skills/{german['id']}", json={"name": "german"}, headers=owner["auth"])
    assert _ok(r)["name"] == "german"
    assert await admin_conn.fetchval("select count(*) from skills") == 2
    assert await admin_conn.fetchval("select count(*) from queues") == 2


@pytest.mark.parametrize(
    ("case", "expected_field"),
    [
        ("bad strategy", "strategy"),
        ("unknown field", "bogus"),
        ("min_level 11", "required_skills[0].min_level"),
        ("unknown required skill", "required_skills[0].skill_id"),
        ("skill required twice", "required_skills[1].skill_id"),
        ("skills_based without skills", "required_skills"),
        ("unknown overflow action", "overflow.action"),
        ("overflow to an unknown queue", "overflow.queue_id"),
        ("hangup message too long", "overflow.message"),
        ("priority 11", "priority"),
        ("max wait too short", "max_wait_seconds"),
        ("blank name", "name"),
    ],
)
async def test_an_invalid_queue_is_refused_naming_the_field_and_nothing_is_stored(
    api: Api, admin_conn: asyncpg.Connection, case: str, expected_field: str
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    skill = await _skill(api, owner, "german")
    body: dict[str, Any] = {"name": "Support", "strategy": "longest_idle"}
    required = {"skill_id": skill["id"], "min_level": 3}
    match case:
        case "bad strategy":
            body["strategy"] = "random"
        case "unknown field":
            body["bogus"] = 1
        case "min_level 11":
            body["required_skills"] = [{**required, "min_level": 11}]
        case "unknown required skill":
            body["required_skills"] = [{**required, "skill_id": str(uuid.uuid4())}]
        case "skill required twice":
            body["required_skills"] = [required, {**required, "min_level": 5}]
        case "skills_based without skills":
            body["strategy"] = "skills_based"
        case "unknown overflow action":
            body["overflow"] = {"action": "transfer"}
        case "overflow to an unknown queue":
            body["overflow"] = {"action": "queue", "queue_id": str(uuid.uuid4())}
        case "hangup message too long":
            body["overflow"] = {"action": "hangup", "message": "x" * 501}
        case "priority 11":
            body["priority"] = 11
        case "max wait too short":
            body["max_wait_seconds"] = 9
        case "blank name":
            body["name"] = "   "
    before = await _snapshot(admin_conn)
    r = await api.client.post("/v1/queues", json=body, headers=owner["auth"])
    assert expected_field in _fields(_problem(r, 422)), r.text
    assert await _snapshot(admin_conn) == before


async def test_invalid_skill_levels_and_members_are_refused_naming_the_index(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    auth = owner["auth"]
    skill = await _skill(api, owner, "german")
    queue = await _queue(api, owner, "Support")
    ann = await _agent(api, owner, "ann@acme.test")
    r = await c.post("/v1/skills", json={"name": "has spaces"}, headers=auth)
    assert _fields(_problem(r, 422)) == ["name"]
    r = await c.post("/v1/skills", json={"name": "x" * 65}, headers=auth)
    assert _fields(_problem(r, 422)) == ["name"]
    before = await _snapshot(admin_conn)

    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            f"/v1/users/{ann}/skills",
            {"skills": [{"skill_id": skill["id"], "level": 11}]},
            "skills[0].level",
        ),
        (
            f"/v1/users/{ann}/skills",
            {"skills": [{"skill_id": skill["id"], "level": 0}]},
            "skills[0].level",
        ),
        (
            f"/v1/users/{ann}/skills",
            {
                "skills": [
                    {"skill_id": skill["id"], "level": 5},
                    {"skill_id": str(uuid.uuid4()), "level": 5},
                ]
            },
            "skills[1].skill_id",
        ),
        (
            f"/v1/queues/{queue['id']}/members",
            {
                "members": [
                    {"user_id": ann, "priority": 1},
                    {"user_id": str(uuid.uuid4()), "priority": 1},
                ]
            },
            "members[1].user_id",
        ),
        (
            f"/v1/queues/{queue['id']}/members",
            {"members": [{"user_id": ann, "priority": 1}, {"user_id": ann, "priority": 2}]},
            "members[1].user_id",
        ),
        (
            f"/v1/queues/{queue['id']}/members",
            {"members": [{"user_id": ann, "priority": 11}]},
            "members[0].priority",
        ),
        (f"/v1/queues/{queue['id']}/members", [{"user_id": ann, "priority": 1}], "body"),
    ]
    for path, body, field in cases:
        r = await c.put(path, json=body, headers=auth)
        assert field in _fields(_problem(r, 422)), (body, r.text)
    # Unknown users and queues are 404, not 422.
    r = await c.put(f"/v1/users/{uuid.uuid4()}/skills", json={"skills": []}, headers=auth)
    _problem(r, 404)
    r = await c.get(f"/v1/users/{uuid.uuid4()}/skills", headers=auth)
    _problem(r, 404)
    r = await c.put(f"/v1/queues/{uuid.uuid4()}/members", json={"members": []}, headers=auth)
    _problem(r, 404)
    assert await _snapshot(admin_conn) == before


async def test_the_fourth_queue_on_the_trial_plan_is_refused_and_not_created(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    for name in ("One", "Two", "Three"):
        await _queue(api, owner, name)
    r = await api.client.post(
        "/v1/queues", json={"name": "Four", "strategy": "ring_all"}, headers=owner["auth"]
    )
    problem = _problem(r, 403)
    assert problem["code"] == "plan-limit-reached"
    assert (problem["limit"], problem["plan"], problem["allowed"]) == ("queues", "trial", 3)
    assert await admin_conn.fetchval("select count(*) from queues") == 3
    assert len(await _subjects(admin_conn, owner["tenant_id"])) == 3
    # Concurrent creations cannot squeeze past the limit either.
    other = await api.signup_verified("other@other.test", "Other")
    answers = await asyncio.gather(
        *(
            api.client.post(
                "/v1/queues", json={"name": f"Q{i}", "strategy": "ring_all"}, headers=other["auth"]
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in answers) == [201] * 3 + [403] * 3
    # A deleted queue frees its place.
    first = _ok(await api.client.get("/v1/queues", headers=owner["auth"]))["data"][0]
    r = await api.client.delete(f"/v1/queues/{first['id']}", headers=owner["auth"])
    assert r.status_code == 204
    await _queue(api, owner, "Four")


async def test_patch_changes_only_the_fields_sent(api: Api, admin_conn: asyncpg.Connection) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    skill = await _skill(api, owner, "german")
    other = await _queue(api, owner, "Backup")
    queue = await _queue(
        api,
        owner,
        "Support",
        required_skills=[{"skill_id": skill["id"], "min_level": 4}],
        wrap_up_seconds=45,
        record=True,
    )
    r = await c.patch(
        f"/v1/queues/{queue['id']}",
        json={
            "priority": 9,
            "announce_ewt": True,
            "overflow": {"action": "queue", "queue_id": other["id"]},
        },
        headers=owner["auth"],
    )
    changed = _ok(r)
    assert (changed["priority"], changed["announce_ewt"]) == (9, True)
    assert changed["overflow"] == {"action": "queue", "queue_id": other["id"]}
    untouched = ("name", "strategy", "required_skills", "wrap_up_seconds", "record", "created_at")
    assert {k: changed[k] for k in untouched} == {k: queue[k] for k in untouched}
    assert _ok(await c.get(f"/v1/queues/{queue['id']}", headers=owner["auth"])) == changed
    event = await _event(admin_conn, f"tenant.{owner['tenant_id']}.queue.{queue['id']}.updated")
    assert isinstance(event, ev.QueueUpdated)
    assert event.fields == ["announce_ewt", "overflow", "priority"]

    # Switching to skills_based keeps the required skills it already has...
    r = await c.patch(
        f"/v1/queues/{queue['id']}", json={"strategy": "skills_based"}, headers=owner["auth"]
    )
    assert _ok(r)["required_skills"] == queue["required_skills"]
    # ...and then cannot drop them all.
    r = await c.patch(
        f"/v1/queues/{queue['id']}", json={"required_skills": []}, headers=owner["auth"]
    )
    assert _fields(_problem(r, 422)) == ["required_skills"]
    # Sending what is already there changes nothing and publishes nothing.
    current = _ok(await c.get(f"/v1/queues/{queue['id']}", headers=owner["auth"]))
    events = await _subjects(admin_conn, owner["tenant_id"])
    for same in ({"priority": 9, "name": "Support"}, {}):
        r = await c.patch(f"/v1/queues/{queue['id']}", json=same, headers=owner["auth"])
        assert _ok(r) == current
    assert await _subjects(admin_conn, owner["tenant_id"]) == events


async def test_a_queue_cannot_overflow_to_itself_or_into_a_loop(api: Api) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    a = await _queue(api, owner, "A")
    b = await _queue(api, owner, "B")
    c_ = await _queue(api, owner, "C")

    async def overflow(queue: dict[str, Any], target: dict[str, Any]) -> Any:
        return await c.patch(
            f"/v1/queues/{queue['id']}",
            json={"overflow": {"action": "queue", "queue_id": target["id"]}},
            headers=owner["auth"],
        )

    assert _fields(_problem(await overflow(a, a), 422)) == ["overflow.queue_id"]
    _ok(await overflow(a, b))
    _ok(await overflow(b, c_))
    problem = _problem(await overflow(c_, a), 422)
    assert _fields(problem) == ["overflow.queue_id"]
    assert "loop" in problem["errors"][0]["message"]
    r = await c.patch(
        f"/v1/queues/{c_['id']}", json={"overflow": {"action": "callback"}}, headers=owner["auth"]
    )
    assert _ok(r)["overflow"] == {"action": "callback"}

    # Two changes that would each be fine alone cannot race each other into a loop.
    hangup = {"overflow": {"action": "hangup"}}
    for _ in range(5):
        for q in (a, b):
            _ok(await c.patch(f"/v1/queues/{q['id']}", json=hangup, headers=owner["auth"]))
        ra, rb = await asyncio.gather(overflow(a, b), overflow(b, a))
        assert sorted([ra.status_code, rb.status_code]) == [200, 422], (ra.text, rb.text)


async def test_skills_and_queues_still_in_use_are_not_deleted(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    auth = owner["auth"]
    german = await _skill(api, owner, "german")
    french = await _skill(api, owner, "french")
    target = await _queue(api, owner, "Overflow")
    queue = await _queue(
        api,
        owner,
        "German line",
        required_skills=[{"skill_id": german["id"], "min_level": 2}],
        overflow={"action": "queue", "queue_id": target["id"]},
    )
    ann = await _agent(api, owner, "ann@acme.test")
    r = await c.put(
        f"/v1/users/{ann}/skills",
        json={
            "skills": [
                {"skill_id": german["id"], "level": 6},
                {"skill_id": french["id"], "level": 4},
            ]
        },
        headers=auth,
    )
    _ok(r)
    _ok(
        await c.put(
            f"/v1/queues/{queue['id']}/members",
            json={"members": [{"user_id": ann, "priority": 5}]},
            headers=auth,
        )
    )
    before = await _snapshot(admin_conn)

    problem = _problem(await c.delete(f"/v1/skills/{german['id']}", headers=auth), 409)
    assert "'German line'" in problem["detail"]
    problem = _problem(await c.delete(f"/v1/queues/{target['id']}", headers=auth), 409)
    assert "'German line'" in problem["detail"]
    assert await _snapshot(admin_conn) == before

    # A skill no queue requires is deleted, and the agents holding it lose it.
    assert (await c.delete(f"/v1/skills/{french['id']}", headers=auth)).status_code == 204
    _problem(await c.get(f"/v1/skills/{french['id']}", headers=auth), 404)
    r = await c.get(f"/v1/users/{ann}/skills", headers=auth)
    assert [s["name"] for s in _ok(r)["skills"]] == ["german"]
    event = await _event(admin_conn, f"tenant.{owner['tenant_id']}.agent.{ann}.skills_changed")
    assert isinstance(event, ev.AgentSkillsChanged)
    assert event.skills == [ev.SkillLevel(skill_id=uuid.UUID(german["id"]), level=6)]

    # Once nothing refers to them, both go; the queue takes its members with it.
    assert (await c.delete(f"/v1/queues/{queue['id']}", headers=auth)).status_code == 204
    assert await admin_conn.fetchval("select count(*) from queue_members") == 0
    assert (await c.delete(f"/v1/queues/{target['id']}", headers=auth)).status_code == 204
    assert (await c.delete(f"/v1/skills/{german['id']}", headers=auth)).status_code == 204
    assert await admin_conn.fetchval("select count(*) from agent_skills") == 0
    _problem(await c.delete(f"/v1/queues/{queue['id']}", headers=auth), 404)


async def test_another_tenant_cannot_read_change_or_reference_skills_queues_or_members(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    a = await api.signup_verified("alice@a.test", "Tenant A")
    b = await api.signup_verified("bob@b.test", "Tenant B")
    a_skill = await _skill(api, a, "german")
    a_target = await _queue(api, a, "A overflow")
    a_queue = await _queue(
        api,
        a,
        "A support",
        required_skills=[{"skill_id": a_skill["id"], "min_level": 3}],
        overflow={"action": "queue", "queue_id": a_target["id"]},
    )
    a_agent = await _agent(api, a, "agent@a.test")
    _ok(
        await c.put(
            f"/v1/users/{a_agent}/skills",
            json={"skills": [{"skill_id": a_skill["id"], "level": 5}]},
            headers=a["auth"],
        )
    )
    _ok(
        await c.put(
            f"/v1/queues/{a_queue['id']}/members",
            json={"members": [{"user_id": a_agent, "priority": 5}]},
            headers=a["auth"],
        )
    )
    r = await c.post(
        "/v1/api-keys",
        json={
            "name": "b-ops",
            "scopes": ["skills:read", "skills:write", "queues:read", "queues:write"],
        },
        headers=b["auth"],
    )
    b_key_auth = {"Authorization": f"Bearer {_ok(r, 201)['secret']}"}
    b_skill = await _skill(api, b, "german")
    b_queue = await _queue(api, b, "B support")
    b_agent = await _agent(api, b, "agent@b.test")

    before = await _snapshot(admin_conn, a["tenant_id"])
    events = await _subjects(admin_conn, a["tenant_id"])
    for creds in (b["auth"], b_key_auth):
        attempts: list[tuple[str, str, Any]] = [
            ("GET", f"/v1/skills/{a_skill['id']}", None),
            ("PATCH", f"/v1/skills/{a_skill['id']}", {"name": "stolen"}),
            ("DELETE", f"/v1/skills/{a_skill['id']}", None),
            ("GET", f"/v1/queues/{a_queue['id']}", None),
            ("PATCH", f"/v1/queues/{a_queue['id']}", {"priority": 0}),
            ("DELETE", f"/v1/queues/{a_queue['id']}", None),
            ("DELETE", f"/v1/queues/{a_target['id']}", None),
            ("GET", f"/v1/queues/{a_queue['id']}/members", None),
            ("PUT", f"/v1/queues/{a_queue['id']}/members", {"members": []}),
            ("GET", f"/v1/users/{a_agent}/skills", None),
            ("PUT", f"/v1/users/{a_agent}/skills", {"skills": []}),
        ]
        for method, path, body in attempts:
            r = await c.request(method, path, json=body, headers=creds)
            _problem(r, 404)
        # Lists show only B's own rows.
        assert [s["id"] for s in _ok(await c.get("/v1/skills", headers=creds))["data"]] == [
            b_skill["id"]
        ]
        assert [q["id"] for q in _ok(await c.get("/v1/queues", headers=creds))["data"]] == [
            b_queue["id"]
        ]
        # B cannot point its own rows at A's skill, queue or user.
        references: list[tuple[str, str, Any, str]] = [
            (
                "POST",
                "/v1/queues",
                {
                    "name": "B skills",
                    "strategy": "skills_based",
                    "required_skills": [{"skill_id": a_skill["id"], "min_level": 1}],
                },
                "required_skills[0].skill_id",
            ),
            (
                "PATCH",
                f"/v1/queues/{b_queue['id']}",
                {"overflow": {"action": "queue", "queue_id": a_queue["id"]}},
                "overflow.queue_id",
            ),
            (
                "PUT",
                f"/v1/users/{b_agent}/skills",
                {"skills": [{"skill_id": a_skill["id"], "level": 5}]},
                "skills[0].skill_id",
            ),
            (
                "PUT",
                f"/v1/queues/{b_queue['id']}/members",
                {"members": [{"user_id": a_agent, "priority": 5}]},
                "members[0].user_id",
            ),
        ]
        for method, path, body, field in references:
            r = await c.request(method, path, json=body, headers=creds)
            assert _fields(_problem(r, 422)) == [field], (method, path)
    assert await _snapshot(admin_conn, a["tenant_id"]) == before
    assert await _subjects(admin_conn, a["tenant_id"]) == events
    r = await c.get(f"/v1/queues/{b_queue['id']}/members", headers=b["auth"])
    assert _ok(r)["members"] == []


async def test_every_change_is_an_event_in_the_outbox_and_the_audit_log(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    auth, tenant = owner["auth"], owner["tenant_id"]
    skill = await _skill(api, owner, "german")
    _ok(await c.patch(f"/v1/skills/{skill['id']}", json={"name": "deutsch"}, headers=auth))
    ann = await _agent(api, owner, "ann@acme.test")
    r = await c.put(
        f"/v1/users/{ann}/skills",
        json={"skills": [{"skill_id": skill["id"], "level": 7}]},
        headers=auth,
    )
    _ok(r)
    queue = await _queue(api, owner, "Support", strategy="round_robin")
    _ok(await c.patch(f"/v1/queues/{queue['id']}", json={"record": True}, headers=auth))
    r = await c.put(
        f"/v1/queues/{queue['id']}/members",
        json={"members": [{"user_id": ann, "priority": 2}]},
        headers=auth,
    )
    _ok(r)
    assert (await c.delete(f"/v1/queues/{queue['id']}", headers=auth)).status_code == 204
    assert (await c.delete(f"/v1/skills/{skill['id']}", headers=auth)).status_code == 204

    s = f"tenant.{tenant}.skill.{skill['id']}"
    q = f"tenant.{tenant}.queue.{queue['id']}"
    agent = f"tenant.{tenant}.agent.{ann}"
    assert await _subjects(admin_conn, tenant) == [
        f"{s}.created",
        f"{s}.updated",
        f"{agent}.skills_changed",
        f"{q}.created",
        f"{q}.updated",
        f"{q}.members_changed",
        f"{q}.deleted",
        f"{s}.deleted",
        f"{agent}.skills_changed",
    ]
    renamed = await _event(admin_conn, f"{s}.updated")
    assert isinstance(renamed, ev.SkillUpdated)
    assert (renamed.name, renamed.previous_name) == ("deutsch", "german")
    created = await _event(admin_conn, f"{q}.created")
    assert isinstance(created, ev.QueueCreated)
    assert (created.name, created.strategy) == ("Support", "round_robin")
    members = await _event(admin_conn, f"{q}.members_changed")
    assert isinstance(members, ev.QueueMembersChanged)
    assert members.members == [ev.MemberPriority(user_id=uuid.UUID(ann), priority=2)]
    deleted = await _event(admin_conn, f"{s}.deleted")
    assert isinstance(deleted, ev.SkillDeleted)
    assert deleted.name == "deutsch"
    emptied = await _event(admin_conn, f"{agent}.skills_changed")
    assert isinstance(emptied, ev.AgentSkillsChanged)
    assert emptied.skills == []
    actions = [
        r["action"]
        for r in await admin_conn.fetch(
            "select action from audit_log where tenant_id = $1 order by id", tenant
        )
    ]
    assert [a for a in actions if a.split(".")[0] in ("skill", "queue", "agent")] == [
        "skill.created",
        "skill.updated",
        "agent.skills_changed",
        "queue.created",
        "queue.updated",
        "queue.members_changed",
        "queue.deleted",
        "skill.deleted",
    ]


async def test_an_idempotency_key_replays_queue_creation(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    headers = {**owner["auth"], "Idempotency-Key": "create-support-queue"}
    body = {"name": "Support", "strategy": "fewest_calls"}
    first = await api.client.post("/v1/queues", json=body, headers=headers)
    again = await api.client.post("/v1/queues", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert await admin_conn.fetchval("select count(*) from queues") == 1
    assert (
        await admin_conn.fetchval("select count(*) from outbox where subject like '%.queue.%'") == 1
    )
    r = await api.client.post("/v1/queues", json={**body, "name": "Other"}, headers=headers)
    assert _problem(r, 422)["code"] == "idempotency-key-reused"


async def test_reading_and_changing_needs_the_permission(api: Api) -> None:
    c = api.client
    owner = await api.signup_verified("owner@acme.test")
    queue = await _queue(api, owner, "Support")
    skill = await _skill(api, owner, "german")
    r = await c.post(
        "/v1/api-keys",
        json={"name": "reader", "scopes": ["queues:read", "skills:read"]},
        headers=owner["auth"],
    )
    reader = {"Authorization": f"Bearer {_ok(r, 201)['secret']}"}
    assert _ok(await c.get(f"/v1/queues/{queue['id']}", headers=reader))["id"] == queue["id"]
    assert _ok(await c.get(f"/v1/skills/{skill['id']}", headers=reader))["id"] == skill["id"]
    _problem(
        await c.post("/v1/queues", json={"name": "X", "strategy": "ring_all"}, headers=reader), 403
    )
    _problem(await c.patch(f"/v1/queues/{queue['id']}", json={"priority": 1}, headers=reader), 403)
    _problem(await c.delete(f"/v1/skills/{skill['id']}", headers=reader), 403)
    r = await c.put(
        f"/v1/users/{owner['user_id']}/skills",
        json={"skills": [{"skill_id": skill["id"], "level": 5}]},
        headers=reader,
    )
    _problem(r, 403)


async def test_a_queue_plays_one_of_the_tenants_prompts_as_hold_music(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    other = await api.signup_verified("other@b.test", "B")
    r = await api.client.post(
        "/v1/prompts", json={"name": "jazz", "text": "Please hold."}, headers=owner["auth"]
    )
    prompt = r.json()
    theirs = (
        await api.client.post(
            "/v1/prompts", json={"name": "theirs", "text": "Hold."}, headers=other["auth"]
        )
    ).json()
    r = await api.client.post(
        "/v1/queues",
        json={"name": "Sales", "strategy": "round_robin", "hold_music_prompt_id": theirs["id"]},
        headers=owner["auth"],
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "hold_music_prompt_id"
    r = await api.client.post(
        "/v1/queues",
        json={"name": "Sales", "strategy": "round_robin", "hold_music_prompt_id": prompt["id"]},
        headers=owner["auth"],
    )
    assert r.status_code == 201, r.text
    queue = r.json()
    assert queue["hold_music_prompt_id"] == prompt["id"]
    r = await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"])
    assert r.status_code == 409
    r = await api.client.patch(
        f"/v1/queues/{queue['id']}", json={"hold_music_prompt_id": None}, headers=owner["auth"]
    )
    assert r.status_code == 200
    assert r.json()["hold_music_prompt_id"] is None
    assert (
        await api.client.delete(f"/v1/prompts/{prompt['id']}", headers=owner["auth"])
    ).status_code == 204

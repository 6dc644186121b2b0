"""Numbers: import into the inventory, search, buy (once, within the plan), release into
quarantine; seats within the plan, assigned to agents; every step an event."""

from __future__ import annotations

import asyncio
import io
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from tenancy.numbers.importer import import_numbers
from tests.conftest import Api, Services

CSV = """number,country,capabilities
+12125550101,,voice;sms
+12125550102,,voice
+12125550103,,voice
(415) 555-0101,US,voice
+442079460101,,voice
+1212555012,,voice
+12125550101,,voice
+12125550104,,fax
,,voice
"""


async def _load(pool: asyncpg.Pool, text: str = CSV) -> Any:
    async with pool.acquire() as conn, conn.transaction():
        return await import_numbers(conn, io.StringIO(text), trunk="carrier-a")


def _buy(api: Api, who: dict[str, Any], e164: str, key: str | None = None) -> Any:
    headers = {**who["auth"], "Idempotency-Key": key or secrets.token_hex(8)}
    return api.client.post("/v1/numbers", json={"e164": e164}, headers=headers)


async def test_import_reports_what_it_skipped_and_why(api: Api) -> None:
    summary = await _load(api.pool)
    assert summary.imported == 5
    assert dict(summary.skipped) == {
        "not a valid phone number": 1,
        "duplicate within the file": 1,
        "unknown capability": 1,
        "empty number": 1,
    }
    again = await _load(api.pool)
    assert again.imported == 0
    assert again.already_present == 5


async def test_search_filters_by_country_area_prefix_contains_and_capability(api: Api) -> None:
    await _load(api.pool)
    owner = await api.signup_verified("owner@acme.test")

    async def found(**params: Any) -> list[str]:
        r = await api.client.get("/v1/numbers/available", params=params, headers=owner["auth"])
        assert r.status_code == 200, r.text
        return [n["e164"] for n in r.json()["data"]]

    assert await found(country="GB") == ["+442079460101"]
    assert await found(country="us", area_code="415") == ["+14155550101"]
    assert await found(prefix="+1212") == ["+12125550101", "+12125550102", "+12125550103"]
    assert await found(contains="0102") == ["+12125550102"]
    assert await found(capability="sms") == ["+12125550101"]
    r = await api.client.get(
        "/v1/numbers/available", params={"country": "USA"}, headers=owner["auth"]
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "country"


async def test_two_tenants_race_for_one_number_and_exactly_one_gets_it(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await _load(api.pool)
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    for _ in range(5):
        await admin_conn.execute(
            "update number_inventory set status = 'available' where e164 = '+12125550103'"
        )
        await admin_conn.execute("delete from numbers")
        ra, rb = await asyncio.gather(_buy(api, a, "+12125550103"), _buy(api, b, "+12125550103"))
        assert sorted([ra.status_code, rb.status_code]) == [201, 409], (ra.text, rb.text)
        loser = ra if ra.status_code == 409 else rb
        assert loser.json()["code"] == "number-unavailable"
        assert await admin_conn.fetchval("select count(*) from numbers") == 1


async def test_a_released_number_is_quarantined_then_offered_again(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await _load(api.pool)
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    r = await _buy(api, a, "+12125550102")
    assert r.status_code == 201
    number = r.json()
    r = await api.client.delete(f"/v1/numbers/{number['id']}", headers=a["auth"])
    assert r.status_code == 204
    for who in (a, b):
        r = await api.client.get(
            "/v1/numbers/available", params={"contains": "0102"}, headers=who["auth"]
        )
        assert r.json()["data"] == []
        assert (await _buy(api, who, "+12125550102")).status_code == 409
    until = await admin_conn.fetchval(
        "select available_after - now() from number_inventory where e164 = '+12125550102'"
    )
    assert 29 * 86400 < until.total_seconds() <= 30 * 86400
    # Once quarantine is over the number is offered and can be bought again.
    await admin_conn.execute(
        "update number_inventory set available_after = now() - interval '1 second'"
        " where e164 = '+12125550102'"
    )
    assert (await _buy(api, b, "+12125550102")).status_code == 201


async def test_purchase_needs_an_idempotency_key_valid_e164_and_room_in_the_plan(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await _load(api.pool)
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post("/v1/numbers", json={"e164": "+12125550101"}, headers=owner["auth"])
    assert r.status_code == 422, r.text
    assert "Idempotency-Key" in r.text
    for bad in ("+1212555012", "12345", "+999123456789", "not a number"):
        r = await _buy(api, owner, bad)
        assert r.status_code == 422, bad
        assert r.json()["errors"][0]["field"] == "e164"
    # The same key replays the purchase instead of buying twice.
    first = await _buy(api, owner, "+12125550101", key="buy-1")
    again = await _buy(api, owner, "+12125550101", key="buy-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert (await _buy(api, owner, "+1 212-555-0102")).status_code == 201  # normalised
    # Trial plan: two numbers.
    r = await _buy(api, owner, "+12125550103")
    assert r.status_code == 403
    problem = r.json()
    assert (problem["code"], problem["limit"], problem["plan"], problem["allowed"]) == (
        "plan-limit-reached",
        "numbers",
        "trial",
        2,
    )
    assert await admin_conn.fetchval("select count(*) from numbers") == 2
    assert (
        await admin_conn.fetchval("select status from number_inventory where e164 = '+12125550103'")
        == "available"
    )


async def test_number_events_carry_the_tenant_subject(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await _load(api.pool)
    owner = await api.signup_verified("owner@acme.test")
    number = (await _buy(api, owner, "+12125550101")).json()
    await api.client.delete(f"/v1/numbers/{number['id']}", headers=owner["auth"])
    subjects = [
        r["subject"]
        for r in await admin_conn.fetch(
            "select subject from outbox where subject like '%.number.%' order by id"
        )
    ]
    prefix = f"tenant.{owner['tenant_id']}.number.{number['id']}"
    assert subjects == [f"{prefix}.purchased", f"{prefix}.released"]


async def test_seats_are_limited_assigned_to_agents_and_evented(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/users", json={"email": "ann@acme.test", "role": "agent"}, headers=owner["auth"]
    )
    agent = r.json()
    r = await api.client.post(
        "/v1/users", json={"email": "fin@acme.test", "role": "finance"}, headers=owner["auth"]
    )
    finance = r.json()
    r = await api.client.post(
        "/v1/seats", json={"label": "desk 1", "user_id": agent["id"]}, headers=owner["auth"]
    )
    assert r.status_code == 201, r.text
    seat = r.json()
    assert seat["user_id"] == agent["id"]
    # One seat per agent; seats are not for finance users; unknown users are named.
    r = await api.client.post("/v1/seats", json={"user_id": agent["id"]}, headers=owner["auth"])
    assert r.status_code == 409
    r = await api.client.post("/v1/seats", json={"user_id": finance["id"]}, headers=owner["auth"])
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "user_id"
    # The failed attempts created nothing.
    assert await admin_conn.fetchval("select count(*) from seats") == 1
    r = await api.client.put(
        f"/v1/seats/{seat['id']}/user", json={"user_id": None}, headers=owner["auth"]
    )
    assert r.json()["user_id"] is None
    for _ in range(4):
        assert (
            await api.client.post("/v1/seats", json={}, headers=owner["auth"])
        ).status_code == 201
    r = await api.client.post("/v1/seats", json={}, headers=owner["auth"])
    assert r.status_code == 403
    assert r.json()["limit"] == "seats"
    r = await api.client.delete(f"/v1/seats/{seat['id']}", headers=owner["auth"])
    assert r.status_code == 204
    assert (await api.client.post("/v1/seats", json={}, headers=owner["auth"])).status_code == 201
    rows = await admin_conn.fetch(
        "select subject, payload from outbox where subject like $1 order by id",
        f"tenant.{owner['tenant_id']}.seat.{seat['id']}.%",
    )
    assert [r["subject"].rsplit(".", 1)[1] for r in rows] == [
        "created",
        "assigned",
        "unassigned",
        "released",
    ]
    assert all(b'_at":"' in r["payload"] for r in rows)


async def test_another_tenants_numbers_and_seats_are_404_and_unchanged(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await _load(api.pool)
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    number = (await _buy(api, a, "+12125550101")).json()
    seat = (await api.client.post("/v1/seats", json={}, headers=a["auth"])).json()
    b_agent = (
        await api.client.post(
            "/v1/users", json={"email": "bob-agent@b.test", "role": "agent"}, headers=b["auth"]
        )
    ).json()
    before = [dict(r) for r in await admin_conn.fetch("select * from numbers order by id")]
    assert len(before) == 1
    seats_before = [dict(r) for r in await admin_conn.fetch("select * from seats order by id")]
    for method, path, body in [
        ("GET", f"/v1/numbers/{number['id']}", None),
        ("PATCH", f"/v1/numbers/{number['id']}", {"label": "mine now"}),
        ("DELETE", f"/v1/numbers/{number['id']}", None),
        ("GET", f"/v1/seats/{seat['id']}", None),
        ("PUT", f"/v1/seats/{seat['id']}/user", {"user_id": b_agent["id"]}),
        ("DELETE", f"/v1/seats/{seat['id']}", None),
    ]:
        r = await api.client.request(method, path, json=body, headers=b["auth"])
        assert r.status_code == 404, (method, path, r.text)
    after = [dict(r) for r in await admin_conn.fetch("select * from numbers order by id")]
    assert after == before
    assert [
        dict(r) for r in await admin_conn.fetch("select * from seats order by id")
    ] == seats_before
    assert (await api.client.get("/v1/numbers", headers=b["auth"])).json()["data"] == []
    # A cannot put B's agent in A's seat either.
    r = await api.client.put(
        f"/v1/seats/{seat['id']}/user", json={"user_id": b_agent["id"]}, headers=a["auth"]
    )
    assert r.status_code == 422


def test_numbers_import_command_prints_progress_and_a_summary(
    services: Services, database: str, tmp_path: Path
) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text(CSV)
    from tests.conftest import APP_PASSWORD

    env = {"SWITCHBOARD_DATABASE_URL": services.app_dsn(database), "PATH": "/usr/bin:/bin"}
    assert APP_PASSWORD in env["SWITCHBOARD_DATABASE_URL"]
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "switchboard"),
            "numbers",
            "import",
            str(path),
            "--trunk",
            "carrier-a",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "9 read, 5 imported so far" in r.stdout
    assert "9 rows read: 5 imported, 0 already in the inventory, 4 skipped" in r.stdout
    assert "skipped 1: not a valid phone number (first at line 7)" in r.stdout
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "switchboard"),
            "numbers",
            "import",
            str(tmp_path / "missing.csv"),
            "--trunk",
            "t",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "cannot read" in r.stderr

"""SIP trunks: tenants bring their own carrier (BYOC) through the API, with write-only passwords
sealed at rest; the operator adds platform trunks with the CLI."""

from __future__ import annotations

import asyncio
import copy
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from runtime.db import platform_tx, tenant_tx
from tenancy.errors import NotFound
from tenancy.models import TenantId
from tenancy.trunks import service as trunks
from tenancy.trunks.platform import load_platform_for_media
from tests.conftest import Api, MailCatcher, Services, running_api

INBOUND_PW = "in-Digest-7731"
OUTBOUND_PW = "out-Reg-55190"

GOOD: dict[str, Any] = {
    "name": "Carrier EU",
    "host": "sip.carrier-eu.example.com",
    "transport": "tls",
    "port": 5061,
    "inbound": {
        "allowed_sources": ["185.12.64.0/28", "185.12.65.7"],
        "digest_username": "acme-in",
        "digest_password": INBOUND_PW,
    },
    "outbound": {
        "username": "acme-out",
        "password": OUTBOUND_PW,
        "from_domain": "acme.example.com",
    },
    "codecs": ["PCMA", "PCMU"],
    "max_channels": 40,
    "register": True,
    "register_expires": 600,
}


def _body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(GOOD)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = body
        for p in parents:
            target = target[p]
        if value is ...:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return body


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


def _field(problem: dict[str, Any]) -> str:
    return str(problem["errors"][0]["field"]).split("[")[0]


async def _rows(conn: asyncpg.Connection, table: str = "trunks") -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(f"select * from {table} order by 1, 2")]  # noqa: S608


async def _trunk_events(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select subject, payload from outbox where subject like $1 order by id",
        f"tenant.{tenant_id}.trunk.%",
    )


async def test_a_trunk_is_created_listed_changed_and_deleted_with_an_event_each(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post("/v1/trunks", json=GOOD, headers=owner["auth"])
    assert r.status_code == 201, r.text
    trunk = r.json()
    assert trunk["name"] == "Carrier EU"
    assert (trunk["host"], trunk["port"], trunk["transport"]) == (
        "sip.carrier-eu.example.com",
        5061,
        "tls",
    )
    assert trunk["inbound"] == {
        "allowed_sources": ["185.12.64.0/28", "185.12.65.7/32"],
        "digest_username": "acme-in",
        "has_password": True,
    }
    assert trunk["outbound"] == {
        "username": "acme-out",
        "has_password": True,
        "from_domain": "acme.example.com",
    }
    assert trunk["codecs"] == ["PCMA", "PCMU"]
    assert trunk["caller_id_policy"] == "tenant_numbers_only"

    # The defaults: port 5060 over UDP, both G.711 codecs, no registration.
    minimal = {"name": "Backup", "host": "203.0.113.9", "inbound": {"allowed_sources": ["::1"]}}
    r = await api.client.post("/v1/trunks", json=minimal, headers=owner["auth"])
    assert r.status_code == 201, r.text
    backup = r.json()
    assert (backup["port"], backup["transport"], backup["codecs"], backup["register"]) == (
        5060,
        "udp",
        ["PCMU", "PCMA"],
        False,
    )
    assert backup["outbound"] == {"username": None, "has_password": False, "from_domain": None}

    r = await api.client.get("/v1/trunks", params={"limit": 1}, headers=owner["auth"])
    assert [t["id"] for t in r.json()["data"]] == [trunk["id"]]
    assert r.json()["has_more"] is True
    r = await api.client.get(
        "/v1/trunks", params={"starting_after": trunk["id"]}, headers=owner["auth"]
    )
    assert [t["id"] for t in r.json()["data"]] == [backup["id"]]

    # PATCH changes only what is sent, nested fields included.
    r = await api.client.patch(
        f"/v1/trunks/{trunk['id']}",
        json={
            "max_channels": 60,
            "caller_id_policy": "passthrough",
            "inbound": {"allowed_sources": ["185.12.64.0/27"]},
        },
        headers=owner["auth"],
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["max_channels"] == 60
    assert changed["caller_id_policy"] == "passthrough"
    assert changed["inbound"] == {
        "allowed_sources": ["185.12.64.0/27"],
        "digest_username": "acme-in",
        "has_password": True,
    }
    assert changed["outbound"] == trunk["outbound"]
    assert changed["updated_at"] > trunk["updated_at"]
    r = await api.client.get(f"/v1/trunks/{trunk['id']}", headers=owner["auth"])
    assert r.json() == changed

    r = await api.client.delete(f"/v1/trunks/{trunk['id']}", headers=owner["auth"])
    assert r.status_code == 204
    r = await api.client.get(f"/v1/trunks/{trunk['id']}", headers=owner["auth"])
    assert _problem(r, 404)["code"] == "not-found"
    assert await admin_conn.fetchval("select count(*) from trunks") == 1

    events = await _trunk_events(admin_conn, owner["tenant_id"])
    subjects = [e["subject"] for e in events]
    prefix = f"tenant.{owner['tenant_id']}.trunk"
    assert subjects == [
        f"{prefix}.{trunk['id']}.created",
        f"{prefix}.{backup['id']}.created",
        f"{prefix}.{trunk['id']}.updated",
        f"{prefix}.{trunk['id']}.deleted",
    ]
    assert (
        b'"changed":["inbound.allowed_sources","max_channels","caller_id_policy"]'
        in (events[2]["payload"])
    )
    actions = [
        r["action"]
        for r in await admin_conn.fetch(
            "select action from audit_log where target_type = 'trunk' order by at, id"
        )
    ]
    assert actions == ["trunk.created", "trunk.created", "trunk.updated", "trunk.deleted"]


async def test_passwords_are_write_only_sealed_at_rest_and_never_in_events(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    headers = {**owner["auth"], "Idempotency-Key": "trunk-1"}
    created = await api.client.post("/v1/trunks", json=GOOD, headers=headers)
    assert created.status_code == 201, created.text
    trunk = created.json()
    replayed = await api.client.post("/v1/trunks", json=GOOD, headers=headers)
    assert replayed.json()["id"] == trunk["id"]
    read = await api.client.get(f"/v1/trunks/{trunk['id']}", headers=owner["auth"])
    listed = await api.client.get("/v1/trunks", headers=owner["auth"])
    renamed = await api.client.patch(
        f"/v1/trunks/{trunk['id']}",
        json={"outbound": {"password": "rotated-Out-42"}, "name": "Carrier EU 2"},
        headers=owner["auth"],
    )
    assert renamed.status_code == 200, renamed.text
    for r in (created, replayed, read, listed, renamed):
        for secret in (INBOUND_PW, OUTBOUND_PW, "rotated-Out-42"):
            assert secret not in r.text
        assert 'password"' not in r.text.replace("has_password", "")

    row = await admin_conn.fetchrow("select * from trunks where id = $1", uuid.UUID(trunk["id"]))
    for column, plain in (
        ("inbound_password", INBOUND_PW),
        ("outbound_password", "rotated-Out-42"),
    ):
        assert isinstance(row[column], bytes)
        assert plain.encode() not in row[column]
    # Nowhere else either: not in events, the audit log or stored idempotent responses.
    for table, column in (
        ("outbox", "payload"),
        ("audit_log", "details::text"),
        ("idempotency_keys", "response"),
    ):
        dump = b"".join(
            v if isinstance(v, bytes) else str(v).encode()
            for v in [
                r[0]
                for r in await admin_conn.fetch(f"select {column} from {table}")  # noqa: S608
            ]
        )
        assert dump, table
        for secret in (INBOUND_PW, OUTBOUND_PW, "rotated-Out-42"):
            assert secret.encode() not in dump, table
    events = await _trunk_events(admin_conn, owner["tenant_id"])
    assert [e["subject"].rsplit(".", 1)[1] for e in events] == ["created", "updated"]
    assert b'"changed":["name","outbound.password"]' in events[1]["payload"]

    # The media node gets the credentials back, unsealed.
    tenant = TenantId(uuid.UUID(owner["tenant_id"]))
    vault = _vault(api)
    async with tenant_tx(api.pool, tenant) as conn:
        media = await trunks.load_for_media(conn, tenant, uuid.UUID(trunk["id"]), vault)
    assert (media.inbound_username, media.inbound_password) == ("acme-in", INBOUND_PW)
    assert (media.outbound_username, media.outbound_password) == ("acme-out", "rotated-Out-42")
    assert media.allowed_sources == ("185.12.64.0/28", "185.12.65.7/32")
    assert media.codecs == ("PCMA", "PCMU")
    assert (media.host, media.port, media.transport, media.register) == (
        "sip.carrier-eu.example.com",
        5061,
        "tls",
        True,
    )
    assert INBOUND_PW not in repr(media)
    assert OUTBOUND_PW not in repr(media)

    # null clears a password (its username too, as they come in pairs), and registration with it.
    r = await api.client.patch(
        f"/v1/trunks/{trunk['id']}",
        json={"register": False, "outbound": {"username": None, "password": None}},
        headers=owner["auth"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["outbound"] == {
        "username": None,
        "has_password": False,
        "from_domain": "acme.example.com",
    }
    assert r.json()["inbound"]["has_password"] is True
    async with tenant_tx(api.pool, tenant) as conn:
        media = await trunks.load_for_media(conn, tenant, uuid.UUID(trunk["id"]), vault)
        assert media.outbound_password is None
        assert media.inbound_password == INBOUND_PW
        with pytest.raises(NotFound):
            await trunks.load_for_media(conn, tenant, uuid.uuid4(), vault)
    assert (
        await admin_conn.fetchval(
            "select outbound_password from trunks where id = $1", uuid.UUID(trunk["id"])
        )
        is None
    )


def _vault(api: Api) -> Any:
    from tenancy.vault import Vault

    return Vault(api.settings.master_key_bytes)


BAD_CREATES = [
    ({"inbound__allowed_sources": ["185.12.64.300/28"]}, "inbound.allowed_sources"),
    ({"inbound__allowed_sources": ["185.12.64.7/28"]}, "inbound.allowed_sources"),
    ({"inbound__allowed_sources": ["0.0.0.0/0"]}, "inbound.allowed_sources"),
    (
        {"inbound__allowed_sources": [f"185.12.64.{i}" for i in range(51)]},
        "inbound.allowed_sources",
    ),
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"codecs": ["G729"]}, "codecs"),
    ({"codecs": ["PCMU", "PCMU"]}, "codecs"),
    ({"codecs": []}, "codecs"),
    ({"transport": "sctp"}, "transport"),
    ({"max_channels": 1001}, "max_channels"),
    ({"register_expires": 30}, "register_expires"),
    ({"caller_id_policy": "anything"}, "caller_id_policy"),
    ({"host": "not a host!"}, "host"),
    ({"host": "sip.example.com:5060"}, "host"),
    ({"name": "   "}, "name"),
    ({"outbound__password": ..., "outbound__username": ...}, "register"),
    ({"outbound__password": ...}, "outbound.password"),
    ({"inbound__digest_password": ...}, "inbound.digest_password"),
    (
        {
            "inbound__allowed_sources": [],
            "inbound__digest_username": ...,
            "inbound__digest_password": ...,
        },
        "inbound",
    ),
    ({"outbound__from_domain": "bad domain"}, "outbound.from_domain"),
    ({"password": "top-level"}, "password"),
]


async def test_bad_trunks_are_refused_naming_the_field_and_change_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    before = (
        await _rows(admin_conn),
        await admin_conn.fetchval("select count(*) from outbox"),
        await admin_conn.fetchval("select count(*) from tenant_keys"),
    )
    for changes, field in BAD_CREATES:
        r = await api.client.post("/v1/trunks", json=_body(**changes), headers=owner["auth"])
        problem = _problem(r, 422)
        assert _field(problem).startswith(field), (changes, problem)
        assert problem["detail"], changes
    after = (
        await _rows(admin_conn),
        await admin_conn.fetchval("select count(*) from outbox"),
        await admin_conn.fetchval("select count(*) from tenant_keys"),
    )
    assert after == before
    # The reasons are worded for a person.
    r = await api.client.post(
        "/v1/trunks", json=_body(inbound__allowed_sources=["185.12.64.7/28"]), headers=owner["auth"]
    )
    assert "did you mean 185.12.64.0/28" in r.json()["detail"]
    r = await api.client.post(
        "/v1/trunks",
        json=_body(outbound__password=..., outbound__username=...),
        headers=owner["auth"],
    )
    assert "outbound credentials" in r.json()["detail"]

    # A PATCH is checked against the whole trunk, and a refused one changes nothing.
    trunk = (await api.client.post("/v1/trunks", json=GOOD, headers=owner["auth"])).json()
    rows = await _rows(admin_conn)
    events = await admin_conn.fetchval("select count(*) from outbox")
    for patch, field in [
        ({"outbound": {"password": None}}, "outbound.password"),
        ({"outbound": {"username": None, "password": None}}, "register"),
        ({"inbound": {"allowed_sources": [], "digest_username": None}}, "inbound"),
        ({"port": 0}, "port"),
        ({"codecs": ["G729"]}, "codecs"),
        ({"inbound": {"allowed_sources": ["nope"]}}, "inbound.allowed_sources"),
        ({"id": str(uuid.uuid4())}, "id"),
    ]:
        r = await api.client.patch(f"/v1/trunks/{trunk['id']}", json=patch, headers=owner["auth"])
        problem = _problem(r, 422)
        assert _field(problem).startswith(field), (patch, problem)
    assert await _rows(admin_conn) == rows
    assert await admin_conn.fetchval("select count(*) from outbox") == events


async def test_private_hosts_and_networks_are_refused_outside_test_mode(
    services: Services,
    database: str,
    smtp: tuple[MailCatcher, int],
    admin_conn: asyncpg.Connection,
) -> None:
    mail, port = smtp
    async with running_api(services, database, mail, port, test_mode=False) as live:
        owner = await live.signup_verified("owner@acme.test")
        for host in (
            "10.0.0.5",
            "192.168.1.10",
            "127.0.0.1",
            "169.254.10.1",
            "[::1]",
            "fe80::1",
            "0.0.0.0",  # noqa: S104
            "localhost",
            "pbx",
        ):
            r = await live.client.post("/v1/trunks", json=_body(host=host), headers=owner["auth"])
            assert _field(_problem(r, 422)) == "host", host
        for net in ("10.0.0.0/8", "127.0.0.1", "169.254.0.0/16", "fd00::/64"):
            r = await live.client.post(
                "/v1/trunks", json=_body(inbound__allowed_sources=[net]), headers=owner["auth"]
            )
            assert _field(_problem(r, 422)) == "inbound.allowed_sources", net
        assert await _rows(admin_conn) == []
        r = await live.client.post("/v1/trunks", json=GOOD, headers=owner["auth"])
        assert r.status_code == 201, r.text
        trunk = r.json()
        r = await live.client.patch(
            f"/v1/trunks/{trunk['id']}", json={"host": "10.1.2.3"}, headers=owner["auth"]
        )
        assert _field(_problem(r, 422)) == "host"
        assert await admin_conn.fetchval("select host from trunks") == GOOD["host"]


async def test_trunk_names_are_unique_per_tenant(api: Api, admin_conn: asyncpg.Connection) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    first = await api.client.post("/v1/trunks", json=GOOD, headers=a["auth"])
    assert first.status_code == 201
    rows = await _rows(admin_conn)
    r = await api.client.post("/v1/trunks", json=_body(name="carrier eu"), headers=a["auth"])
    problem = _problem(r, 409)
    assert problem["errors"][0]["field"] == "name"
    assert await _rows(admin_conn) == rows
    # Another tenant may use the same name.
    assert (await api.client.post("/v1/trunks", json=GOOD, headers=b["auth"])).status_code == 201
    # Renaming onto a taken name is refused too; renaming in place is fine.
    other = (
        await api.client.post("/v1/trunks", json=_body(name="Other"), headers=a["auth"])
    ).json()
    r = await api.client.patch(
        f"/v1/trunks/{other['id']}", json={"name": "CARRIER EU"}, headers=a["auth"]
    )
    assert _problem(r, 409)["errors"][0]["field"] == "name"
    r = await api.client.patch(
        f"/v1/trunks/{other['id']}", json={"name": "other"}, headers=a["auth"]
    )
    assert r.status_code == 200
    assert r.json()["name"] == "other"


async def test_reading_trunks_does_not_allow_changing_them(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    trunk = (await api.client.post("/v1/trunks", json=GOOD, headers=owner["auth"])).json()
    r = await api.client.post(
        "/v1/api-keys", json={"name": "ro", "scopes": ["trunks:read"]}, headers=owner["auth"]
    )
    reader = {"Authorization": f"Bearer {r.json()['secret']}"}
    assert (await api.client.get(f"/v1/trunks/{trunk['id']}", headers=reader)).status_code == 200
    assert (await api.client.post("/v1/trunks", json=GOOD, headers=reader)).status_code == 403
    r = await api.client.patch(f"/v1/trunks/{trunk['id']}", json={"port": 5062}, headers=reader)
    assert r.status_code == 403
    assert (await api.client.delete(f"/v1/trunks/{trunk['id']}", headers=reader)).status_code == 403


async def test_another_tenants_trunks_are_404_and_unchanged(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    trunk = (await api.client.post("/v1/trunks", json=GOOD, headers=a["auth"])).json()
    before = await _rows(admin_conn)
    for method, body in [
        ("GET", None),
        ("PATCH", {"host": "sip.evil.example.com"}),
        ("PATCH", {"outbound": {"password": "stolen"}}),
        ("DELETE", None),
    ]:
        r = await api.client.request(
            method, f"/v1/trunks/{trunk['id']}", json=body, headers=b["auth"]
        )
        assert _problem(r, 404)["code"] == "not-found", method
    assert await _rows(admin_conn) == before
    assert (await api.client.get("/v1/trunks", headers=b["auth"])).json()["data"] == []
    assert await _trunk_events(admin_conn, b["tenant_id"]) == []
    # Nor can B's media lookup read A's credentials.
    b_tenant = TenantId(uuid.UUID(b["tenant_id"]))
    async with tenant_tx(api.pool, b_tenant) as conn:
        with pytest.raises(NotFound):
            await trunks.load_for_media(conn, b_tenant, uuid.UUID(trunk["id"]), _vault(api))


def _switchboard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "switchboard"), "trunks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_operator_adds_and_lists_platform_trunks_with_the_cli(
    services: Services, database: str, admin_conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    master = secrets.token_hex(32)
    env = {
        "SWITCHBOARD_DATABASE_URL": services.app_dsn(database),
        "SWITCHBOARD_MASTER_KEY": master,
        "CARRIER_A_PASSWORD": "plat-Secret-981",
        "PATH": "/usr/bin:/bin",
    }
    # Numbers imported before the trunk exists still name it.
    await admin_conn.execute(
        """insert into number_inventory (e164, country, trunk)
           values ('+12125550101', 'US', 'carrier-a'), ('+12125550102', 'US', 'carrier-a'),
                  ('+12125550103', 'US', 'carrier-b')"""
    )

    def run(*args: str) -> Any:
        return asyncio.to_thread(_switchboard, *args, env=env)

    r = await run("list-platform")
    assert r.returncode == 0, r.stderr
    assert "no platform trunks" in r.stdout
    r = await run(
        "add-platform",
        "carrier-a",
        "--host",
        "sip.carrier-a.example.com",
        "--port",
        "5080",
        "--transport",
        "tcp",
        "--allow",
        "198.51.100.0/28",
        "--allow",
        "10.20.0.0/16",
        "--username",
        "switchboard",
        "--password-env",
        "CARRIER_A_PASSWORD",
        "--register",
    )
    assert r.returncode == 0, r.stderr
    assert "platform trunk added: carrier-a  sip.carrier-a.example.com:5080/tcp" in r.stdout
    assert "2 inventory numbers already arrive on 'carrier-a'" in r.stdout
    assert "plat-Secret-981" not in r.stdout + r.stderr
    r = await run("add-platform", "carrier-c", "--host", "192.0.2.10")
    assert r.returncode == 0, r.stderr
    assert "No inventory numbers name 'carrier-c' yet" in r.stdout
    assert "calls from this carrier will be refused" in r.stdout

    r = await run("list-platform")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["carrier-a", "carrier-c"]
    assert "allow 198.51.100.0/28,10.20.0.0/16" in lines[0]
    assert "user switchboard (password sealed)" in lines[0]
    assert "registers" in lines[0]
    assert "2 inventory numbers" in lines[0]
    assert "5060/udp" in lines[1]
    assert "plat-Secret-981" not in r.stdout

    sealed = await admin_conn.fetchval(
        "select password_sealed from platform_trunks where name = 'carrier-a'"
    )
    assert b"plat-Secret-981" not in sealed
    async with platform_tx(pool) as conn:
        media = await load_platform_for_media(conn, "carrier-a", bytes.fromhex(master))
    assert (media.username, media.password, media.port) == ("switchboard", "plat-Secret-981", 5080)

    rows = await _rows(admin_conn, "platform_trunks")
    for args, exit_code, message in [
        (("add-platform", "Carrier_A", "--host", "sip.example.com"), 1, "not a valid platform"),
        (("add-platform", "carrier-d"), 2, "--host"),
        (("add-platform", "carrier-a", "--host", "sip.example.com"), 1, "already exists"),
        (("add-platform", "carrier-d", "--host", "bad host"), 1, "--host"),
        (
            ("add-platform", "carrier-d", "--host", "h.example", "--allow", "300.1.1.1"),
            1,
            "--allow",
        ),
        (
            ("add-platform", "carrier-d", "--host", "h.example", "--username", "u"),
            1,
            "--password-env",
        ),
        (("add-platform", "carrier-d", "--host", "h.example", "--register"), 1, "--register"),
        (
            ("add-platform", "carrier-d", "--host", "h.example", "--password-env", "UNSET_VAR"),
            1,
            "UNSET_VAR is not set",
        ),
    ]:
        r = await run(*args)
        assert r.returncode == exit_code, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
    assert await _rows(admin_conn, "platform_trunks") == rows

"""No tenant can read or change another tenant's data: by type, by query, and by RLS."""

from __future__ import annotations

from typing import Any

import asyncpg

from runtime.migrate import APP_ROLE
from tests.conftest import Api

TENANT_TABLES_SNAPSHOT = ("tenants", "users", "api_keys", "oauth_clients", "refresh_tokens")


async def _snapshot(conn: asyncpg.Connection, tenant_id: str) -> dict[str, list[Any]]:
    out = {}
    for table in TENANT_TABLES_SNAPSHOT:
        rows = await conn.fetch(
            f"select * from {table} where tenant_id = $1 order by 1, 2",  # noqa: S608
            tenant_id,
        )
        out[table] = [dict(r) for r in rows]
    return out


async def test_another_tenants_resources_are_404_and_unchanged(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    c = api.client
    a = await api.signup_verified("alice@a.test", "Tenant A")
    b = await api.signup_verified("bob@b.test", "Tenant B")
    r = await c.post(
        "/v1/api-keys", json={"name": "a-key", "scopes": ["users:read"]}, headers=a["auth"]
    )
    a_key = r.json()
    r = await c.post(
        "/v1/oauth-clients", json={"name": "a-app", "scopes": ["users:read"]}, headers=a["auth"]
    )
    a_client = r.json()
    r = await c.post(
        "/v1/users", json={"email": "agent@a.test", "role": "agent"}, headers=a["auth"]
    )
    a_agent = r.json()
    r = await c.post(
        "/v1/api-keys",
        json={
            "name": "b-admin",
            "scopes": [
                "users:read",
                "users:write",
                "api_keys:read",
                "api_keys:write",
                "oauth_clients:read",
                "oauth_clients:write",
            ],
        },
        headers=b["auth"],
    )
    b_key_auth = {"Authorization": f"Bearer {r.json()['secret']}"}

    before = await _snapshot(admin_conn, a["tenant_id"])
    for creds in (b["auth"], b_key_auth):
        attempts = [
            ("GET", f"/v1/users/{a['user_id']}", None),
            ("GET", f"/v1/users/{a_agent['id']}", None),
            ("PATCH", f"/v1/users/{a_agent['id']}", {"role": "admin"}),
            ("PATCH", f"/v1/users/{a['user_id']}", {"status": "disabled"}),
            ("GET", f"/v1/api-keys/{a_key['id']}", None),
            ("DELETE", f"/v1/api-keys/{a_key['id']}", None),
            ("DELETE", f"/v1/oauth-clients/{a_client['id']}", None),
        ]
        for method, path, body in attempts:
            r = await c.request(method, path, json=body, headers=creds)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        # Lists show only B's own rows.
        r = await c.get("/v1/users", headers=creds)
        assert {u["email"] for u in r.json()["data"]} == {"bob@b.test"}
        r = await c.get("/v1/api-keys", headers=creds)
        assert a_key["id"] not in {k["id"] for k in r.json()["data"]}
    assert await _snapshot(admin_conn, a["tenant_id"]) == before

    # A's credentials still work: nothing of A was revoked through B.
    r = await c.get("/v1/users", headers={"Authorization": f"Bearer {a_key['secret']}"})
    assert r.status_code == 200


async def test_a_tampered_api_key_naming_another_tenant_is_refused(api: Api) -> None:
    a = await api.signup_verified("alice@a.test", "Tenant A")
    b = await api.signup_verified("bob@b.test", "Tenant B")
    r = await api.client.post(
        "/v1/api-keys", json={"name": "b", "scopes": ["users:read"]}, headers=b["auth"]
    )
    prefix, _tenant, key_id, secret = r.json()["secret"].split("_", 3)
    forged = "_".join([prefix, a["tenant_id"].replace("-", ""), key_id, secret])
    r = await api.client.get("/v1/users", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


async def test_app_role_without_tenant_sees_no_rows(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await api.signup_verified("alice@a.test", "Tenant A")
    await api.signup_verified("bob@b.test", "Tenant B")
    tables = await _tenant_tables(admin_conn)
    assert {"tenants", "users", "audit_log", "outbox", "mail_outbox"} <= set(tables)
    populated = {
        t
        for t in tables
        if await admin_conn.fetchval(f"select count(*) from {t}")  # noqa: S608
    }
    assert {"tenants", "users", "audit_log", "outbox", "mail_outbox", "email_tokens"} <= populated
    async with api.pool.acquire() as conn:
        for table in tables:
            count = await conn.fetchval(f"select count(*) from {table}")  # noqa: S608
            assert count == 0, table
        # And with a tenant set, rows of that tenant only.
        async with conn.transaction():
            tenant = await admin_conn.fetchval("select tenant_id from tenants limit 1")
            await conn.execute("select set_config('app.tenant_id', $1, true)", str(tenant))
            ids = {r["tenant_id"] for r in await conn.fetch("select tenant_id from users")}
            assert ids == {tenant}
        # Writing a row for another tenant is refused by the policy's WITH CHECK.
        async with conn.transaction():
            other = await admin_conn.fetchval(
                "select tenant_id from tenants where tenant_id <> $1", tenant
            )
            await conn.execute("select set_config('app.tenant_id', $1, true)", str(tenant))
            try:
                await conn.execute(
                    "insert into audit_log (tenant_id, id, actor_type, action)"
                    " values ($1, gen_random_uuid(), 'system', 'x')",
                    other,
                )
            except asyncpg.InsufficientPrivilegeError:
                pass
            else:
                raise AssertionError("RLS allowed a cross-tenant insert")


async def _tenant_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = c.oid
           where a.attname = 'tenant_id' and not a.attisdropped and c.relkind in ('r', 'p')
             and n.nspname not in ('pg_catalog', 'information_schema')"""
    )
    return sorted(r["relname"] for r in rows)


EXPECTED = "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"


async def test_every_tenant_table_forces_rls_with_the_tenant_policy(
    admin_conn: asyncpg.Connection,
) -> None:
    tables = await _tenant_tables(admin_conn)
    assert len(tables) >= 10
    problems = []
    for table in tables:
        row = await admin_conn.fetchrow(
            "select relrowsecurity, relforcerowsecurity from pg_class where relname = $1", table
        )
        if not (row["relrowsecurity"] and row["relforcerowsecurity"]):
            problems.append(f"{table}: RLS not enabled and forced")
        policies = await admin_conn.fetch(
            "select qual, with_check, permissive, cmd from pg_policies where tablename = $1", table
        )
        if not any(p["qual"] == EXPECTED and p["with_check"] == EXPECTED for p in policies):
            problems.append(f"{table}: no tenant policy with USING and WITH CHECK ({policies})")
        if any(p["qual"] != EXPECTED for p in policies):
            problems.append(f"{table}: an extra policy widens access")
        key = await admin_conn.fetchval(
            """select array_agg(a.attname order by k.ord) from pg_index i
               cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
               where i.indrelid = $1::regclass and i.indisprimary""",
            table,
        )
        if not key or key[0] != "tenant_id":
            problems.append(f"{table}: primary key does not start with tenant_id ({key})")
    assert problems == []


async def test_the_app_role_owns_nothing_and_cannot_bypass_rls(
    admin_conn: asyncpg.Connection,
) -> None:
    role = await admin_conn.fetchrow(
        "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles"
        " where rolname = $1",
        APP_ROLE,
    )
    assert not any(role.values())
    owned = await admin_conn.fetchval(
        """select count(*) from pg_class c join pg_roles r on r.oid = c.relowner
           where r.rolname = $1""",
        APP_ROLE,
    )
    assert owned == 0


async def test_tenant_context_never_outlives_its_transaction(pool: asyncpg.Pool) -> None:
    import uuid

    import pytest

    from runtime.db import tenant_tx

    tenant = uuid.uuid4()
    async with tenant_tx(pool, tenant) as conn:
        assert await conn.fetchval("select current_setting('app.tenant_id', true)") == str(tenant)
    with pytest.raises(RuntimeError):
        async with tenant_tx(pool, tenant) as conn:
            raise RuntimeError("handler failed")
    # Every pooled connection is back to no tenant, after success and after failure.
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        for conn in held:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("select current_setting('app.tenant_id', true)") in (
                "",
                None,
            )
    finally:
        for conn in held:
            await pool.release(conn)
    with pytest.raises(ValueError, match="hexadecimal"):
        tenant_tx(pool, "00000000-0000-0000-0000-000000000000'; drop table users; --")  # type: ignore[arg-type]

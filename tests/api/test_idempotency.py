"""Idempotency-Key: one resource per key, the first answer replayed, misuse refused."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.conftest import Api


async def test_twenty_concurrent_posts_with_one_key_create_exactly_one_resource(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    headers = {**owner["auth"], "Idempotency-Key": "create-crm-key-1"}
    body = {"name": "crm", "scopes": ["users:read"]}
    responses = await asyncio.gather(
        *(api.client.post("/v1/api-keys", json=body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.json()["secret"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await admin_conn.fetchval("select count(*) from api_keys") == 1
    events = await admin_conn.fetchval(
        "select count(*) from outbox where subject like '%.api_key.%.created'"
    )
    assert events == 1


async def test_same_key_with_a_different_body_is_refused_and_changes_nothing(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    headers = {**owner["auth"], "Idempotency-Key": "k-2"}
    r = await api.client.post(
        "/v1/api-keys", json={"name": "a", "scopes": ["users:read"]}, headers=headers
    )
    assert r.status_code == 201
    r = await api.client.post(
        "/v1/api-keys", json={"name": "b", "scopes": ["users:read"]}, headers=headers
    )
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency-key-reused"
    assert await admin_conn.fetchval("select count(*) from api_keys") == 1


async def test_keys_are_per_tenant_and_without_a_key_each_post_creates(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("a@a.test", "A")
    b = await api.signup_verified("b@b.test", "B")
    body = {"name": "x", "scopes": ["users:read"]}
    for who in (a, b):
        r = await api.client.post(
            "/v1/api-keys", json=body, headers={**who["auth"], "Idempotency-Key": "same"}
        )
        assert r.status_code == 201
        assert "idempotent-replayed" not in r.headers
    for _ in range(2):
        assert (
            await api.client.post("/v1/api-keys", json=body, headers=a["auth"])
        ).status_code == 201
    assert await admin_conn.fetchval("select count(*) from api_keys") == 4


async def test_a_failed_request_does_not_burn_its_key(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    headers = {**owner["auth"], "Idempotency-Key": "retry-me"}
    r = await api.client.post(
        "/v1/users", json={"email": "owner@acme.test", "role": "agent"}, headers=headers
    )
    assert r.status_code == 409
    r = await api.client.post(
        "/v1/users", json={"email": "owner@acme.test", "role": "agent"}, headers=headers
    )
    assert r.status_code == 409
    assert await admin_conn.fetchval("select count(*) from idempotency_keys") == 0


async def test_an_overlong_key_is_a_clear_error(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/api-keys",
        json={"name": "x", "scopes": ["users:read"]},
        headers={**owner["auth"], "Idempotency-Key": "k" * 300},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid-idempotency-key"

"""Bad input gets a clear problem+json answer and changes nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import asyncpg
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from tests.conftest import Api, MailCatcher

GOOD = {"company_name": "Acme", "email": "owner@acme.test", "password": "Tr0ub4dor&3x"}


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        t: await conn.fetchval(f"select count(*) from {t}")  # noqa: S608
        for t in ("tenants", "users", "api_keys", "email_tokens", "outbox", "mail_outbox")
    }


def _is_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"].startswith("/problems/")
    return body


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b'{"company_name": "Acme", "email": ', 400, None),
        (json.dumps({**GOOD, "email": 42}).encode(), 422, "email"),
        (json.dumps({**GOOD, "company_name": ["x"]}).encode(), 422, "company_name"),
        (json.dumps({**GOOD, "plan": "enterprise"}).encode(), 422, "plan"),
        (
            json.dumps({"email": "owner@acme.test", "password": "Tr0ub4dor&3x"}).encode(),
            422,
            "company_name",
        ),
        (json.dumps({**GOOD, "email": "not-an-email"}).encode(), 422, "email"),
    ],
    ids=[
        "malformed-json",
        "wrong-type",
        "wrong-type-list",
        "unknown-field",
        "missing-field",
        "bad-email",
    ],
)
async def test_signup_rejects_bad_bodies_naming_the_field(
    api: Api, admin_conn: asyncpg.Connection, content: bytes, status: int, field: str | None
) -> None:
    before = await _counts(admin_conn)
    r = await api.client.post(
        "/v1/signup", content=content, headers={"content-type": "application/json"}
    )
    body = _is_problem(r, status)
    if field:
        assert field in [e["field"] for e in body["errors"]], body
        assert field in body["detail"]
    assert await _counts(admin_conn) == before


async def test_oversized_body_is_refused_with_413(api: Api, admin_conn: asyncpg.Connection) -> None:
    before = await _counts(admin_conn)
    big = json.dumps({**GOOD, "company_name": "x" * (api.settings.max_body_bytes + 10)})
    r = await api.client.post(
        "/v1/signup", content=big, headers={"content-type": "application/json"}
    )
    _is_problem(r, 413)
    assert await _counts(admin_conn) == before


async def test_duplicate_email_is_a_conflict_whatever_its_case(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    r = await api.client.post("/v1/signup", json=GOOD)
    assert r.status_code == 201
    before = await _counts(admin_conn)
    r = await api.client.post(
        "/v1/signup", json={**GOOD, "company_name": "Other", "email": "OWNER@acme.test"}
    )
    body = _is_problem(r, 409)
    assert body["code"] == "email-taken"
    assert await _counts(admin_conn) == before


@pytest.mark.parametrize(
    "password", ["short1A!", "abababababababababab", "Password123", "ownerOWNER123!"]
)
async def test_weak_passwords_are_refused(
    api: Api, admin_conn: asyncpg.Connection, password: str
) -> None:
    before = await _counts(admin_conn)
    r = await api.client.post("/v1/signup", json={**GOOD, "password": password})
    body = _is_problem(r, 422)
    assert body["code"] == "weak-password"
    assert body["errors"][0]["field"] == "password"
    assert await _counts(admin_conn) == before


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_bad_access_tokens_are_refused(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    claims = jwt.decode(owner["access_token"], api.resources.auth.keys._verify_set).claims
    now = int(time.time())
    own_kid = jwt.decode(owner["access_token"], api.resources.auth.keys._verify_set).header["kid"]
    stranger = ECKey.generate_key("P-256", parameters={"kid": own_kid})

    def signed(key: ECKey, **changes: Any) -> str:
        header = {"alg": "ES256", "typ": "at+jwt", "kid": own_kid}
        return jwt.encode(header, {**claims, **changes}, key)

    forged = signed(stranger)
    alg_none = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}."
    our_key = api.resources.auth.keys._keys[-1].key
    expired = signed(our_key, iat=now - 3600, exp=now - 1800)
    wrong_audience = signed(our_key, aud="someone-else")
    wrong_issuer = signed(our_key, iss="https://evil.test")
    wrong_type = jwt.encode({"alg": "ES256", "kid": own_kid}, claims, our_key)
    hs256 = jwt.encode(
        {"alg": "HS256", "typ": "at+jwt"}, claims, OctKey.import_key("s" * 32), algorithms=["HS256"]
    )
    for token in (
        forged,
        alg_none,
        expired,
        wrong_audience,
        wrong_issuer,
        wrong_type,
        hs256,
        "garbage",
        owner["access_token"] + "x",
    ):
        r = await api.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        _is_problem(r, 401)
    # The genuine token still works.
    r = await api.client.get("/v1/me", headers=owner["auth"])
    assert r.status_code == 200


async def test_missing_credentials_are_401(api: Api) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        _is_problem(await api.client.get("/v1/users", headers=headers), 401)


async def test_revoked_api_key_is_refused_at_once(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["users:read"]}, headers=owner["auth"]
    )
    key = r.json()
    key_auth = {"Authorization": f"Bearer {key['secret']}"}
    assert (await api.client.get("/v1/users", headers=key_auth)).status_code == 200
    r = await api.client.delete(f"/v1/api-keys/{key['id']}", headers=owner["auth"])
    assert r.status_code == 200
    assert r.json()["revoked_at"]
    _is_problem(await api.client.get("/v1/users", headers=key_auth), 401)
    # A key with the right id but the wrong secret is refused too.
    other = key["secret"][:-4] + "AAAA"
    _is_problem(
        await api.client.get("/v1/users", headers={"Authorization": f"Bearer {other}"}), 401
    )


async def test_a_verification_link_works_once(api: Api, admin_conn: asyncpg.Connection) -> None:
    r = await api.client.post("/v1/signup", json=GOOD)
    assert r.status_code == 201
    token = MailCatcher.token_in(await api.mail.wait_for(GOOD["email"], "Verify"))
    assert (
        await api.client.post("/v1/auth/verify-email", json={"token": token})
    ).status_code == 200
    before = await _counts(admin_conn)
    audit_before = await admin_conn.fetchval("select count(*) from audit_log")
    body = _is_problem(await api.client.post("/v1/auth/verify-email", json={"token": token}), 400)
    assert "already been used" in body["detail"]
    for bad in (
        "nonsense",
        token[:-3] + "abc",
        "sbe_" + uuid.uuid4().hex + "_" + uuid.uuid4().hex + "_" + "x" * 43,
    ):
        _is_problem(await api.client.post("/v1/auth/verify-email", json={"token": bad}), 400)
    assert await _counts(admin_conn) == before
    assert await admin_conn.fetchval("select count(*) from audit_log") == audit_before


async def test_wrong_password_and_unknown_email_get_the_same_answer(api: Api) -> None:
    await api.signup_verified("owner@acme.test")
    wrong = await api.client.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Wr0ng-password!"}
    )
    unknown = await api.client.post(
        "/v1/auth/login", json={"email": "nobody@acme.test", "password": "Wr0ng-password!"}
    )
    assert _is_problem(wrong, 401)["detail"] == _is_problem(unknown, 401)["detail"]


async def test_bad_pagination_and_path_ids_are_clear_errors(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    for path in (
        "/v1/users?limit=0",
        "/v1/users?limit=1000",
        "/v1/users?limit=abc",
        "/v1/users?starting_after=nope",
    ):
        r = await api.client.get(path, headers=owner["auth"])
        assert r.status_code in (400, 422), (path, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.client.get("/v1/users/not-a-uuid", headers=owner["auth"])
    assert r.status_code in (400, 404, 422)
    assert r.headers["content-type"].startswith("application/problem+json")

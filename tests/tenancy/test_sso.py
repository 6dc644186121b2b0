"""Single sign-on with OpenID Connect, against a real local provider (oidc-provider-mock): the
tenant configures it, users sign in through it (created just in time), and everything that
should be refused is."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from oidc_provider_mock import run_server_in_thread

from runtime.db import tenant_tx
from runtime.embedded import free_port
from tenancy.credentials import hash_secret
from tenancy.errors import InvalidCredentials, InvalidInput
from tenancy.models import TenantId
from tenancy.sso import oidc
from tenancy.vault import Vault
from tests.conftest import Api, MailCatcher

CLIENT_ID = "switchboard-acme"
CLIENT_SECRET = "idp-Cl1ent-secret-7f3a9"
CALLBACK = "http://switchboard.test/v1/sso/callback"
OWNER_PASSWORD = "Corr3ct-Horse-9"


@pytest.fixture
def idp() -> Iterator[str]:
    """A real OpenID provider on a free port; its issuer URL."""
    port = free_port()
    with run_server_in_thread(port=port, require_nonce=True):
        yield f"http://localhost:{port}"


# --- helpers ----------------------------------------------------------------------------------


async def _idp_user(idp: str, email: str, *, verified: bool = True, name: str = "") -> None:
    async with httpx.AsyncClient() as c:
        r = await c.put(
            f"{idp}/users/{email}",
            json={"email": email, "email_verified": verified, "name": name or email},
        )
        assert r.status_code == 204, r.text


async def _configure(api: Api, auth: dict[str, str], idp: str, **changes: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "issuer": idp,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allowed_email_domains": ["acme.test"],
    }
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return await api.client.put("/v1/sso", json=body, headers=auth)


async def _start(api: Api, tenant_id: str) -> str:
    """Call start; return the provider URL it redirects to, after checking its parameters."""
    r = await api.client.get(f"/v1/sso/{tenant_id}/start")
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    query = parse_qs(urlsplit(location).query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["nonce"][0]) >= 32
    assert query["state"][0].startswith(uuid.UUID(tenant_id).hex + ".")
    return location


async def _authorize(location: str, sub: str) -> str:
    """The user picks `sub` at the provider; return where the provider sends the browser."""
    async with httpx.AsyncClient() as browser:
        r = await browser.post(location, data={"sub": sub})
    assert r.status_code == 302, r.text
    back: str = r.headers["location"]
    assert back.startswith(CALLBACK + "?"), back
    return back


async def _sign_in(api: Api, idp: str, tenant_id: str, email: str) -> httpx.Response:
    location = await _start(api, tenant_id)
    assert location.startswith(f"{idp}/oauth2/authorize?")
    return await api.client.get(await _authorize(location, email))


def _problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    if code is not None:
        assert body["code"] == code, body
    return body


def _auth(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _users_named(admin: asyncpg.Connection, email: str) -> list[asyncpg.Record]:
    return await admin.fetch("select * from users where lower(email) = lower($1)", email)


async def _audit_actions(admin: asyncpg.Connection, tenant_id: str) -> list[str]:
    rows = await admin.fetch(
        "select action from audit_log where tenant_id = $1 order by at, id", uuid.UUID(tenant_id)
    )
    return [r["action"] for r in rows]


# --- signing in -------------------------------------------------------------------------------


async def test_an_agent_signs_in_through_the_identity_provider_and_again_as_the_same_user(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _configure(api, owner["auth"], idp)
    assert r.status_code == 200, r.text
    config = r.json()
    assert config["issuer"] == idp
    assert config["default_role"] == "agent"
    assert config["redirect_uri"] == CALLBACK
    assert config["start_url"] == f"http://switchboard.test/v1/sso/{owner['tenant_id']}/start"
    await _idp_user(idp, "ann@acme.test", name="Ann Agent")

    r = await _sign_in(api, idp, owner["tenant_id"], "ann@acme.test")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    tokens = r.json()
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
    me = (await api.client.get("/v1/me", headers=_auth(tokens))).json()
    assert me["role"] == "agent"
    assert me["tenant_id"] == owner["tenant_id"]
    user = (await api.client.get(f"/v1/users/{me['actor_id']}", headers=owner["auth"])).json()
    assert user["email"] == "ann@acme.test"
    assert user["name"] == "Ann Agent"
    assert user["status"] == "active"
    assert user["email_verified_at"] is not None
    (row,) = await _users_named(admin_conn, "ann@acme.test")
    assert row["password_hash"] is None
    # The refresh token works like any other.
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text

    r = await _sign_in(api, idp, owner["tenant_id"], "ann@acme.test")
    assert r.status_code == 200, r.text
    again = (await api.client.get("/v1/me", headers=_auth(r.json()))).json()
    assert again["actor_id"] == me["actor_id"]
    assert len(await _users_named(admin_conn, "ann@acme.test")) == 1
    actions = await _audit_actions(admin_conn, owner["tenant_id"])
    assert actions.count("auth.sso_login") == 2
    assert actions.count("user.created") == 1
    created = await admin_conn.fetch(
        "select subject from outbox where subject = $1",
        f"tenant.{owner['tenant_id']}.user.{me['actor_id']}.created",
    )
    assert len(created) == 1


async def test_an_address_outside_the_allowed_domains_is_refused_and_no_user_is_created(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    await _idp_user(idp, "eve@elsewhere.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "eve@elsewhere.test")
    _problem(r, 403, "sso-domain-not-allowed")
    assert await _users_named(admin_conn, "eve@elsewhere.test") == []
    assert "auth.sso_login_failed" in await _audit_actions(admin_conn, owner["tenant_id"])
    # A look-alike domain is not the allowed one either.
    await _idp_user(idp, "mallory@evilacme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "mallory@evilacme.test")
    _problem(r, 403, "sso-domain-not-allowed")
    assert await _users_named(admin_conn, "mallory@evilacme.test") == []


async def test_an_address_the_provider_has_not_verified_is_refused(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    await _idp_user(idp, "new@acme.test", verified=False)
    r = await _sign_in(api, idp, owner["tenant_id"], "new@acme.test")
    _problem(r, 403, "sso-email-unverified")
    assert await _users_named(admin_conn, "new@acme.test") == []


async def test_a_replayed_unknown_or_expired_state_is_a_400_and_signs_nobody_in(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    await _idp_user(idp, "ann@acme.test")
    back = await _authorize(await _start(api, owner["tenant_id"]), "ann@acme.test")
    assert (await api.client.get(back)).status_code == 200
    sessions = await admin_conn.fetchval("select count(*) from refresh_tokens")

    _problem(await api.client.get(back), 400, "invalid-token")
    state = parse_qs(urlsplit(back).query)["state"][0]
    tenant_hex, secret = state.split(".")
    for forged in (
        f"{tenant_hex}.{'A' * len(secret)}",
        f"{uuid.uuid4().hex}.{secret}",
        "not-a-state",
    ):
        r = await api.client.get("/v1/sso/callback", params={"code": "x", "state": forged})
        _problem(r, 400, "invalid-token")
    _problem(await api.client.get("/v1/sso/callback"), 400, "invalid-token")

    # A sign-in left for more than ten minutes has expired.
    await _idp_user(idp, "bob@acme.test")
    back = await _authorize(await _start(api, owner["tenant_id"]), "bob@acme.test")
    await admin_conn.execute(
        "update sso_logins set expires_at = now() - interval '1 second' where used_at is null"
    )
    _problem(await api.client.get(back), 400, "invalid-token")
    assert await _users_named(admin_conn, "bob@acme.test") == []
    assert await admin_conn.fetchval("select count(*) from refresh_tokens") == sessions
    # Only hashes of the state's random part are stored.
    stored = await admin_conn.fetch("select state_hash from sso_logins")
    assert stored
    assert all(secret.encode() not in bytes(r["state_hash"]) for r in stored)


async def test_the_provider_refusing_the_sign_in_spends_the_state(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    location = await _start(api, owner["tenant_id"])
    async with httpx.AsyncClient() as browser:
        r = await browser.post(location, data={"action": "deny"})
    assert r.status_code == 302, r.text
    back = r.headers["location"]
    assert "error=access_denied" in back
    # RFC 6749 (4.1.2.1) has the provider send the state back with an error; this provider
    # leaves it out, and without a state there is nothing to spend.
    _problem(await api.client.get(back), 400, "invalid-token")
    state = parse_qs(urlsplit(location).query)["state"][0]
    back = f"{back}&{urlencode({'state': state})}"
    _problem(await api.client.get(back), 401, "sso-denied")
    _problem(await api.client.get(back), 400, "invalid-token")
    assert "auth.sso_login_failed" in await _audit_actions(admin_conn, owner["tenant_id"])


async def test_an_address_of_another_tenant_or_a_disabled_user_is_refused(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    other = await api.signup_verified("carol@acme.test", "Carol's Own Company")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    await _idp_user(idp, "carol@acme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "carol@acme.test")
    _problem(r, 403, "sso-email-in-another-tenant")
    (carol,) = await _users_named(admin_conn, "carol@acme.test")
    assert str(carol["tenant_id"]) == other["tenant_id"]

    await _idp_user(idp, "ann@acme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "ann@acme.test")
    ann_id = (await api.client.get("/v1/me", headers=_auth(r.json()))).json()["actor_id"]
    r = await api.client.patch(
        f"/v1/users/{ann_id}", json={"status": "disabled"}, headers=owner["auth"]
    )
    assert r.status_code == 200, r.text
    r = await _sign_in(api, idp, owner["tenant_id"], "ann@acme.test")
    _problem(r, 403, "user-disabled")


async def test_the_provider_cannot_sign_anyone_in_as_an_owner(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    await _idp_user(idp, "owner@acme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "owner@acme.test")
    _problem(r, 403, "sso-owner-not-allowed")
    assert await admin_conn.fetchval("select count(*) from refresh_tokens") == 1


async def test_an_invited_user_who_signs_in_with_the_provider_keeps_the_invited_role(
    api: Api, idp: str
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    assert (await _configure(api, owner["auth"], idp)).status_code == 200
    r = await api.client.post(
        "/v1/users", json={"email": "sup@acme.test", "role": "supervisor"}, headers=owner["auth"]
    )
    assert r.status_code == 201, r.text
    await _idp_user(idp, "sup@acme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "sup@acme.test")
    assert r.status_code == 200, r.text
    me = (await api.client.get("/v1/me", headers=_auth(r.json()))).json()
    assert me["role"] == "supervisor"
    user = (await api.client.get(f"/v1/users/{me['actor_id']}", headers=owner["auth"])).json()
    assert user["status"] == "active"


async def test_users_get_the_configured_default_role(api: Api, idp: str) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _configure(api, owner["auth"], idp, default_role="supervisor")
    assert r.status_code == 200, r.text
    await _idp_user(idp, "ann@acme.test")
    r = await _sign_in(api, idp, owner["tenant_id"], "ann@acme.test")
    assert (await api.client.get("/v1/me", headers=_auth(r.json()))).json()["role"] == "supervisor"


# --- password sign-in -------------------------------------------------------------------------


async def test_password_sign_in_is_refused_when_turned_off_but_owners_keep_it(
    api: Api, idp: str
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/users", json={"email": "agent@acme.test", "role": "agent"}, headers=owner["auth"]
    )
    token = MailCatcher.token_in(await api.mail.wait_for("agent@acme.test", "invited"))
    r = await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-1"}
    )
    assert r.status_code == 200, r.text
    agent = {"email": "agent@acme.test", "password": "Calls-Passw0rd-1"}
    assert (await api.client.post("/v1/auth/login", json=agent)).status_code == 200

    r = await _configure(api, owner["auth"], idp, password_login=False)
    assert r.status_code == 200, r.text
    assert r.json()["password_login"] is False
    problem = _problem(
        await api.client.post("/v1/auth/login", json=agent), 403, "password-login-disabled"
    )
    assert f"/v1/sso/{owner['tenant_id']}/start" in problem["detail"]
    # A wrong password still gets the ordinary answer: the refusal reveals nothing to guessers.
    r = await api.client.post("/v1/auth/login", json={**agent, "password": "Wrong-Passw0rd-1"})
    _problem(r, 401, "invalid-credentials")
    # Owners keep a break-glass password sign-in.
    r = await api.client.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": OWNER_PASSWORD}
    )
    assert r.status_code == 200, r.text

    # Changing a setting without resending the secret keeps it.
    r = await _configure(api, owner["auth"], idp, client_secret=..., password_login=True)
    assert r.status_code == 200, r.text
    assert r.json()["has_client_secret"] is True
    assert (await api.client.post("/v1/auth/login", json=agent)).status_code == 200

    # Turning single sign-on off opens password sign-in again.
    r = await _configure(api, owner["auth"], idp, password_login=False)
    assert r.status_code == 200, r.text
    assert (await api.client.delete("/v1/sso", headers=owner["auth"])).status_code == 204
    assert (await api.client.post("/v1/auth/login", json=agent)).status_code == 200
    _problem(await api.client.get("/v1/sso", headers=owner["auth"]), 404)
    _problem(await api.client.get(f"/v1/sso/{owner['tenant_id']}/start"), 404)


# --- the ID token -----------------------------------------------------------------------------


def _sign(key: RSAKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": "https://idp.example.com",
        "sub": "user-1",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": "the-nonce-of-this-sign-in",
        "email": "ann@acme.test",
        "email_verified": True,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, body, key)


def _validate(token: str, keys: list[RSAKey], **overrides: Any) -> Any:
    args: dict[str, Any] = {
        "jwks": {"keys": [k.as_dict(private=False) for k in keys]},
        "issuer": "https://idp.example.com",
        "client_id": CLIENT_ID,
        "algorithms": ["RS256"],
        "nonce_hash": hash_secret("the-nonce-of-this-sign-in"),
        **overrides,
    }
    return oidc.validate_id_token(token, **args)


def test_id_tokens_with_a_foreign_signature_or_wrong_claims_are_refused() -> None:
    provider = RSAKey.generate_key(2048, parameters={"kid": "provider"})
    forger = RSAKey.generate_key(2048, parameters={"kid": "provider"})
    identity = _validate(_sign(provider), [provider])
    assert identity.email == "ann@acme.test"
    assert identity.email_verified is True

    hour_ago = int(time.time()) - 3600
    refused = {
        "another key": _sign(forger),
        "another audience": _sign(provider, aud="someone-else"),
        "another issuer": _sign(provider, iss="https://evil.example.com"),
        "expired": _sign(provider, iat=hour_ago - 300, exp=hour_ago),
        "another nonce": _sign(provider, nonce="a-nonce-from-elsewhere"),
        "no nonce": _sign(provider, nonce=None),
        "no expiry": _sign(provider, exp=None),
        "unsigned": _unsigned(),
    }
    for reason, token in refused.items():
        try:
            _validate(token, [provider])
        except InvalidCredentials:
            continue
        pytest.fail(f"accepted a token with {reason}")
    # HMAC with a key the attacker chooses is never an accepted algorithm.
    with pytest.raises(InvalidCredentials):
        _validate(_sign(provider), [provider], algorithms=["HS256"])


def _unsigned() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": "https://idp.example.com",
        "sub": "user-1",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "nonce": "the-nonce-of-this-sign-in",
    }
    return f"{part({'alg': 'none'})}.{part(claims)}."


async def test_a_real_id_token_issued_to_another_client_is_refused(idp: str) -> None:
    nonce = "nonce-for-another-client-0001"
    async with httpx.AsyncClient() as browser:
        r = await browser.post(
            f"{idp}/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": "another-app",
                "redirect_uri": "http://another.test/cb",
                "scope": "openid email",
                "state": "state-of-another-app",
                "nonce": nonce,
            },
            data={"sub": "ann@acme.test"},
        )
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        r = await browser.post(
            f"{idp}/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": "http://another.test/cb",
            },
            auth=("another-app", "its-secret"),
        )
        id_token = r.json()["id_token"]
        jwks = (await browser.get(f"{idp}/jwks")).json()
    args: dict[str, Any] = {
        "jwks": jwks,
        "issuer": idp,
        "algorithms": ["RS256"],
        "nonce_hash": hash_secret(nonce),
    }
    assert oidc.validate_id_token(id_token, client_id="another-app", **args).subject
    with pytest.raises(InvalidCredentials):
        oidc.validate_id_token(id_token, client_id=CLIENT_ID, **args)


# --- configuration ----------------------------------------------------------------------------


async def test_the_client_secret_is_sealed_at_rest_and_never_returned(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await _configure(api, owner["auth"], idp)
    assert r.status_code == 200, r.text
    assert CLIENT_SECRET not in r.text
    assert r.json()["has_client_secret"] is True
    r = await api.client.get("/v1/sso", headers=owner["auth"])
    assert r.status_code == 200
    assert CLIENT_SECRET not in r.text
    assert "client_secret" not in r.json()

    tenant_id = TenantId(uuid.UUID(owner["tenant_id"]))
    sealed = await admin_conn.fetchval(
        "select client_secret from sso_configs where tenant_id = $1", tenant_id
    )
    assert CLIENT_SECRET.encode() not in bytes(sealed)
    async with tenant_tx(api.pool, tenant_id) as conn:
        vault = Vault(api.settings.master_key_bytes)
        plain = await vault.unseal(conn, tenant_id, bytes(sealed), purpose="sso.client_secret")
    assert plain == CLIENT_SECRET
    # Nor is it in the audit log or the events.
    audit = await admin_conn.fetch("select details::text as d from audit_log")
    assert all(CLIENT_SECRET not in row["d"] for row in audit)
    events = await admin_conn.fetch("select payload from outbox")
    assert all(CLIENT_SECRET.encode() not in bytes(row["payload"]) for row in events)
    assert await admin_conn.fetchval(
        "select count(*) from outbox where subject = $1", f"tenant.{tenant_id}.sso.configured"
    )
    # The PKCE verifier of a pending sign-in is sealed too, and is the one the challenge sent
    # to the provider was made from.
    location = await _start(api, owner["tenant_id"])
    verifier = await admin_conn.fetchval("select code_verifier from sso_logins")
    async with tenant_tx(api.pool, tenant_id) as conn:
        plain = await vault.unseal(conn, tenant_id, bytes(verifier), purpose="sso.code_verifier")
    assert 43 <= len(plain) <= 128
    assert plain.encode() not in bytes(verifier)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(plain.encode()).digest()).rstrip(b"=")
    assert parse_qs(urlsplit(location).query)["code_challenge"] == [challenge.decode()]


async def test_another_tenant_cannot_read_or_change_the_sso_set_up(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    a = await api.signup_verified("alice@acme.test", "Tenant A")
    b = await api.signup_verified("bob@b.test", "Tenant B")
    assert (await _configure(api, a["auth"], idp)).status_code == 200
    before = [dict(r) for r in await admin_conn.fetch("select * from sso_configs")]

    _problem(await api.client.get("/v1/sso", headers=b["auth"]), 404)
    _problem(await api.client.delete("/v1/sso", headers=b["auth"]), 404)
    # B setting up its own provider leaves A's alone.
    r = await _configure(api, b["auth"], idp, client_id="b-app", allowed_email_domains=["b.test"])
    assert r.status_code == 200, r.text
    after = {
        str(r["tenant_id"]): dict(r) for r in await admin_conn.fetch("select * from sso_configs")
    }
    assert after[a["tenant_id"]] == before[0]
    assert after[b["tenant_id"]]["client_id"] == "b-app"
    r = await api.client.get("/v1/sso", headers=a["auth"])
    assert r.json()["client_id"] == CLIENT_ID
    assert r.json()["allowed_email_domains"] == ["acme.test"]

    # Within A, only owners and admins change it.
    r = await api.client.post(
        "/v1/users", json={"email": "agent@acme.test", "role": "agent"}, headers=a["auth"]
    )
    token = MailCatcher.token_in(await api.mail.wait_for("agent@acme.test", "invited"))
    r = await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-1"}
    )
    agent = _auth(r.json())
    _problem(await _configure(api, agent, idp, password_login=False), 403)
    _problem(await api.client.delete("/v1/sso", headers=agent), 403)
    assert (await api.client.get("/v1/sso", headers=a["auth"])).json()["password_login"] is True


@contextlib.contextmanager
def _serve_json(path: str, document: dict[str, Any]) -> Iterator[str]:
    """A plain HTTP server answering `path` with `document`; its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == path
            body = json.dumps(document if found else {}).encode()
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


async def test_bad_configurations_are_refused_naming_the_field(
    api: Api, idp: str, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    async with httpx.AsyncClient() as c:
        document = (await c.get(f"{idp}/.well-known/openid-configuration")).json()
    # The impostor serves the real provider's document, which names the real issuer.
    with _serve_json("/.well-known/openid-configuration", document) as impostor:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"issuer": f"http://127.0.0.1:{free_port()}"}, "issuer"),
            ({"issuer": impostor}, "issuer"),
            ({"issuer": "ftp://idp.example.com"}, "issuer"),
            ({"issuer": f"{idp}/not-here"}, "issuer"),
            ({"default_role": "owner"}, "default_role"),
            ({"allowed_email_domains": []}, "allowed_email_domains"),
            ({"allowed_email_domains": ["Acme.test"]}, "allowed_email_domains"),
            ({"allowed_email_domains": ["*.acme.test"]}, "allowed_email_domains"),
            ({"client_secret": ...}, "client_secret"),
            ({"client_secret": ""}, "client_secret"),
        ]
        for changes, field in cases:
            r = await _configure(api, owner["auth"], idp, **changes)
            problem = _problem(r, 422)
            assert str(problem["errors"][0]["field"]).split("[")[0] == field, (changes, problem)
    assert await admin_conn.fetchval("select count(*) from sso_configs") == 0
    _problem(await api.client.get(f"/v1/sso/{owner['tenant_id']}/start"), 404)
    # The same document served from its own issuer is fine.
    assert (await _configure(api, owner["auth"], idp)).status_code == 200


async def test_outside_test_mode_the_issuer_must_be_https_and_public() -> None:
    for issuer in ("http://idp.example.com", "https://127.0.0.1", "https://localhost:8443"):
        with pytest.raises(InvalidInput) as refused:
            await oidc.discover(issuer, allow_insecure=False)
        assert refused.value.extra["field"] == "issuer"

"""Invitations, password reset, session rotation, roles, OAuth clients, signing-key rotation."""

from __future__ import annotations

import base64

import asyncpg

from tests.conftest import Api, MailCatcher


async def test_invited_agent_sets_a_password_and_gets_agent_permissions(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/users",
        json={"email": "agent@acme.test", "role": "agent", "name": "Ann"},
        headers=owner["auth"],
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "invited"
    message = await api.mail.wait_for("agent@acme.test", "invited")
    token = MailCatcher.token_in(message)
    r = await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-1"}
    )
    assert r.status_code == 200, r.text
    agent_auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await api.client.get("/v1/me", headers=agent_auth)
    assert r.json()["role"] == "agent"
    assert (await api.client.get("/v1/users", headers=agent_auth)).status_code == 403
    assert (await api.client.get("/v1/tenant", headers=agent_auth)).status_code == 200
    # The invitation link is spent.
    r = await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Calls-Passw0rd-2"}
    )
    assert r.status_code == 400


async def test_password_reset_changes_the_password_and_ends_sessions(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post("/v1/auth/password-reset", json={"email": "owner@acme.test"})
    assert r.status_code == 202
    # Unknown addresses get the same answer and no mail.
    r = await api.client.post("/v1/auth/password-reset", json={"email": "ghost@acme.test"})
    assert r.status_code == 202
    token = MailCatcher.token_in(await api.mail.wait_for("owner@acme.test", "Reset"))
    r = await api.client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "weak"}
    )
    assert r.status_code == 422
    r = await api.client.post(
        "/v1/auth/password-reset/confirm",
        json={"token": token, "new_password": "Brand-New-Passw0rd"},
    )
    assert r.status_code == 204, r.text
    old = await api.client.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Corr3ct-Horse-9"}
    )
    assert old.status_code == 401
    new = await api.client.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Brand-New-Passw0rd"}
    )
    assert new.status_code == 200
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": owner["refresh_token"]})
    assert r.status_code == 401
    assert not [m for m in api.mail.messages if "ghost" in str(m["To"])]


async def test_a_reused_refresh_token_ends_the_whole_session(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    first = owner["refresh_token"]
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": first})
    second = r.json()["refresh_token"]
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 401
    # The thief's replay also kills the legitimate successor.
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": second})
    assert r.status_code == 401


async def test_the_last_owner_cannot_be_demoted_and_disabled_users_cannot_sign_in(
    api: Api,
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.patch(
        f"/v1/users/{owner['user_id']}", json={"role": "admin"}, headers=owner["auth"]
    )
    assert r.status_code == 409
    r = await api.client.post(
        "/v1/users", json={"email": "sup@acme.test", "role": "supervisor"}, headers=owner["auth"]
    )
    token = MailCatcher.token_in(await api.mail.wait_for("sup@acme.test", "invited"))
    r = await api.client.post(
        "/v1/auth/accept-invitation", json={"token": token, "password": "Superv1sor-pass"}
    )
    sup = r.json()
    sup_id = (
        await api.client.get("/v1/me", headers={"Authorization": f"Bearer {sup['access_token']}"})
    ).json()["actor_id"]
    r = await api.client.patch(
        f"/v1/users/{sup_id}", json={"status": "disabled"}, headers=owner["auth"]
    )
    assert r.status_code == 200
    assert r.json()["status"] == "disabled"
    r = await api.client.post(
        "/v1/auth/login", json={"email": "sup@acme.test", "password": "Superv1sor-pass"}
    )
    assert r.status_code == 401
    r = await api.client.post("/v1/auth/refresh", json={"refresh_token": sup["refresh_token"]})
    assert r.status_code == 401


async def test_oauth_client_credentials_grant(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    r = await api.client.post(
        "/v1/oauth-clients",
        json={"name": "wfm", "scopes": ["users:read", "tenant:read"]},
        headers=owner["auth"],
    )
    assert r.status_code == 201
    client = r.json()
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    r = await api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "users:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["scope"] == "users:read"
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await api.client.get("/v1/users", headers=auth)).status_code == 200
    assert (await api.client.get("/v1/tenant", headers=auth)).status_code == 403
    for form in (
        {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": "wrong-secret-wrong-secret",
        },
        {
            "grant_type": "password",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "scope": "audit:read",
        },
    ):
        r = await api.client.post("/oauth/token", data=form)
        assert r.status_code in (400, 401, 422), r.text
        assert r.json()["error"] in ("invalid_client", "unsupported_grant_type", "invalid_scope")
    r = await api.client.delete(f"/v1/oauth-clients/{client['id']}", headers=owner["auth"])
    assert r.status_code == 200
    r = await api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 401


async def test_rotated_signing_keys_keep_old_tokens_valid_and_are_published(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    owner = await api.signup_verified("owner@acme.test")
    before = (await api.client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(before) == 1
    assert "d" not in before[0]
    new_kid = await api.resources.auth.rotate_keys()
    after = (await api.client.get("/.well-known/jwks.json")).json()["keys"]
    assert {k["kid"] for k in after} == {before[0]["kid"], new_kid}
    assert (await api.client.get("/v1/me", headers=owner["auth"])).status_code == 200
    r = await api.client.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Corr3ct-Horse-9"}
    )
    from joserfc import jws

    assert jws.extract_compact(r.json()["access_token"].encode()).headers()["kid"] == new_kid
    # Private keys are sealed at rest.
    stored = await admin_conn.fetch("select sealed, private_jwk from signing_keys")
    assert all(r["sealed"] and b'"d"' not in r["private_jwk"] for r in stored)


async def test_tenant_can_be_read_and_renamed_by_its_owner(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test", "Acme")
    r = await api.client.patch("/v1/tenant", json={"name": "Acme Care"}, headers=owner["auth"])
    assert r.status_code == 200
    assert r.json()["name"] == "Acme Care"
    r = await api.client.patch("/v1/tenant", json={"name": ""}, headers=owner["auth"])
    assert r.status_code == 422
    r = await api.client.get("/v1/tenant", headers=owner["auth"])
    assert r.json()["name"] == "Acme Care"
    assert r.json()["status"] == "active"

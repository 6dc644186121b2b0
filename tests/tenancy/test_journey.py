"""The whole sign-up-to-API journey over HTTP, with mail through a real SMTP server."""

from __future__ import annotations

from tests.conftest import Api, MailCatcher


async def test_signup_verify_login_api_key_refresh_logout_journey(api: Api) -> None:
    c = api.client
    r = await c.post(
        "/v1/signup",
        json={
            "company_name": "Acme Support",
            "email": "owner@acme.test",
            "password": "Tr0ub4dor&3x",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending_verification"

    # Until the address is verified, signing in is refused.
    r = await c.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Tr0ub4dor&3x"}
    )
    assert r.status_code == 403
    assert r.json()["code"] == "email-unverified"

    message = await api.mail.wait_for("owner@acme.test", "Verify")
    assert "http://switchboard.test/verify-email?token=" in MailCatcher.body(message)
    token = MailCatcher.token_in(message)
    r = await c.post("/v1/auth/verify-email", json={"token": token})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"

    r = await c.post(
        "/v1/auth/login", json={"email": "owner@acme.test", "password": "Tr0ub4dor&3x"}
    )
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer"
    user_auth = {"Authorization": f"Bearer {tokens['access_token']}"}

    r = await c.post(
        "/v1/api-keys", json={"name": "crm sync", "scopes": ["users:read"]}, headers=user_auth
    )
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["secret"].startswith("sbk_")

    key_auth = {"Authorization": f"Bearer {key['secret']}"}
    r = await c.get("/v1/users", headers=key_auth)
    assert r.status_code == 200, r.text
    assert [u["email"] for u in r.json()["data"]] == ["owner@acme.test"]
    # The key's scopes bound it: it cannot create keys.
    r = await c.post("/v1/api-keys", json={"name": "x", "scopes": ["users:read"]}, headers=key_auth)
    assert r.status_code == 403

    r = await c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    r = await c.get("/v1/me", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert r.status_code == 200
    assert r.json()["role"] == "owner"

    r = await c.post("/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert r.status_code == 204
    r = await c.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")

    # The audit log saw the security-relevant steps, with the caller's address.
    r = await c.get("/v1/audit-log", headers=user_auth)
    actions = [e["action"] for e in r.json()["data"]]
    for expected in (
        "tenant.signup",
        "tenant.verified",
        "auth.login",
        "api_key.created",
        "auth.logout",
    ):
        assert expected in actions
    assert {e["source_ip"] for e in r.json()["data"]} == {"203.0.113.7"}

"""OpenAPI, probes, rate limits, pagination."""

from __future__ import annotations

from tests.conftest import Api, running_api


async def test_openapi_lists_every_route_with_auth_and_error_responses(api: Api) -> None:
    r = await api.client.get("/schema/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for path in (
        "/v1/signup",
        "/v1/auth/login",
        "/v1/users",
        "/v1/users/{user_id}",
        "/v1/api-keys",
        "/v1/api-keys/{key_id}",
        "/v1/oauth-clients",
        "/oauth/token",
        "/v1/audit-log",
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
    ):
        assert path in paths, path
    public = {"/v1/signup", "/v1/sso/{tenant_id}/start", "/v1/sso/callback"}
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "422" in op["responses"] or method == "get", (method, path)
            if not path.startswith("/v1/") or path in public or path.startswith("/v1/auth/"):
                assert "security" not in op, (method, path)
                continue
            assert op.get("security") == [{"bearerAuth": []}], (method, path)
            for status in ("401", "403", "404", "422", "429"):
                assert status in op["responses"], (method, path, status)
    assert "bearerAuth" in spec["components"]["securitySchemes"]


async def test_readyz_reports_postgres_and_nats(api: Api) -> None:
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "checks": {"postgres": True, "nats": True}}
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}


async def test_per_ip_rate_limit_answers_429_with_retry_after(services, database, smtp) -> None:  # type: ignore[no-untyped-def]
    mail, port = smtp
    async with running_api(services, database, mail, port, ip_rate=1.0, ip_burst=3) as api:
        statuses = [
            (await api.client.post("/v1/auth/login", json={})).status_code for _ in range(5)
        ]
        assert statuses[:3] == [422, 422, 422]
        r = await api.client.post("/v1/auth/login", json={})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"].startswith("application/problem+json")
        # Probes are never limited.
        assert (await api.client.get("/healthz")).status_code == 200


async def test_per_tenant_rate_limit(services, database, smtp) -> None:  # type: ignore[no-untyped-def]
    mail, port = smtp
    async with running_api(services, database, mail, port, tenant_rate=1.0, tenant_burst=2) as api:
        owner = await api.signup_verified("owner@acme.test")
        codes = [
            (await api.client.get("/v1/me", headers=owner["auth"])).status_code for _ in range(4)
        ]
        assert codes[:2] == [200, 200]
        assert codes[-1] == 429


async def test_cursor_pagination_walks_every_item_once(api: Api) -> None:
    owner = await api.signup_verified("owner@acme.test")
    for i in range(5):
        r = await api.client.post(
            "/v1/api-keys", json={"name": f"k{i}", "scopes": ["users:read"]}, headers=owner["auth"]
        )
        assert r.status_code == 201
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2} | ({"starting_after": after} if after else {})
        page = (await api.client.get("/v1/api-keys", params=params, headers=owner["auth"])).json()
        seen += [k["name"] for k in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == [f"k{i}" for i in range(5)]

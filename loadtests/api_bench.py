"""Authenticated tenant-scoped GET (JWT check + RLS query) next to a bare litestar hello-world.

Starts its own PostgreSQL and nats-server, runs `switchboard api` and the baseline app as
separate single-process servers, and drives both with wrk in alternating rounds.

    .venv/bin/python loadtests/api_bench.py [--seconds 10] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.embedded import EmbeddedNats, EmbeddedPostgres, free_port  # noqa: E402
from runtime.migrate import APP_ROLE, migrate  # noqa: E402

BIN = Path(sys.executable).parent


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses\n{out}")

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    return {"rps": rps, "p50": pct("50"), "p99": pct("99")}


async def prepare(pg: EmbeddedPostgres, password: str) -> None:
    await migrate(
        pg.superuser_dsn,
        ROOT / "switchboard" / "migrations",
        app_password=password,
        database="bench",
    )


def signup_and_login(base: str, pg_dsn: str) -> str:
    email = f"bench-{secrets.token_hex(3)}@bench.test"
    password = "Bench-Passw0rd-1"  # noqa: S105
    r = httpx.post(
        f"{base}/v1/signup", json={"company_name": "Bench", "email": email, "password": password}
    )
    r.raise_for_status()

    async def activate() -> None:
        # No SMTP in the benchmark: mark the tenant verified directly as the superuser.
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute("update tenants set status = 'active', verified_at = now()")
        await conn.close()

    asyncio.run(activate())
    r = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", help="comma-separated subset: hello,me,tenant (for profiling)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    pg = EmbeddedPostgres(tmp / "pg")
    nats = EmbeddedNats(tmp / "nats")
    asyncio.run(pg.start())
    asyncio.run(nats.start())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        password = secrets.token_urlsafe(16)
        asyncio.run(prepare(pg, password))
        api_port, hello_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(
            {
                "SWITCHBOARD_DATABASE_URL": f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{pg.port}/bench",
                "SWITCHBOARD_NATS_URL": nats.url,
                "SWITCHBOARD_HTTP_PORT": str(api_port),
                "SWITCHBOARD_MASTER_KEY": secrets.token_hex(32),
                "SWITCHBOARD_IP_RATE": "1000000",
                "SWITCHBOARD_IP_BURST": "1000000",
                "SWITCHBOARD_TENANT_RATE": "1000000",
                "SWITCHBOARD_TENANT_BURST": "1000000",
                "SWITCHBOARD_LOG_LEVEL": "WARNING",
            }
        )
        procs.append(subprocess.Popen([str(BIN / "switchboard"), "api"], env=env))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "loadtests" / "hello_app.py"), str(hello_port)]
            )
        )
        api, hello = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{hello_port}"
        wait_http(f"{api}/healthz")
        wait_http(f"{hello}/hello")
        token = signup_and_login(api, pg.superuser_dsn.rsplit("/", 1)[0] + "/bench")
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api}/v1/tenant", headers=auth).status_code == 200
        # Warm both up.
        wrk(f"{hello}/hello", 2, args.connections, {})
        wrk(f"{api}/v1/tenant", 2, args.connections, auth)
        targets = [
            ("hello-world (bare litestar+msgspec)", f"{hello}/hello", {}),
            ("GET /v1/me (JWT check only)", f"{api}/v1/me", auth),
            ("GET /v1/tenant (JWT check + RLS query)", f"{api}/v1/tenant", auth),
        ]
        if args.only:
            keep = set(args.only.split(","))
            targets = [
                t
                for t, short in zip(targets, ("hello", "me", "tenant"), strict=True)
                if short in keep
            ]
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, url, headers in targets:
                results[name].append(wrk(url, args.seconds, args.connections, headers))
        base = median([r["rps"] for r in next(iter(results.values()))])
        print(
            f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} alternating rounds, "
            "medians"
        )
        print("| endpoint | req/s | p50 ms | p99 ms | x hello-world |")
        print("|---|---|---|---|---|")
        for name, runs in results.items():
            rps = median([r["rps"] for r in runs])
            print(
                f"| {name} | {rps:.0f} | {median([r['p50'] for r in runs]):.2f} "
                f"| {median([r['p99'] for r in runs]):.2f} | {rps / base:.2f} |"
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        asyncio.run(nats.stop())
        asyncio.run(pg.destroy())
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

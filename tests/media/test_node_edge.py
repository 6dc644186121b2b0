"""The media node at the network edge: torture messages, scanners, and calls still served."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import asyncpg

from tests.conftest import Api
from tests.media.sipp import run_sipp, scenario
from tests.media.test_node import NUMBER, listen_calls, provision, running_node, settled

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "testdata" / "rfc4475").resolve()
SVTOOLS = Path(sys.executable).parent


def _udp_exchange(port: int, data: bytes, wait: float = 0.3) -> list[bytes]:
    """Send one datagram and collect whatever comes back within `wait` seconds."""
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(wait)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            while True:
                replies.append(sock.recvfrom(65535)[0])
        except TimeoutError:
            pass
    return replies


def _tcp_exchange(port: int, data: bytes, wait: float = 0.3) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        received = b""
        try:
            while chunk := sock.recv(65535):
                received += chunk
        except TimeoutError:
            pass
        return received


def _status(reply: bytes) -> int | None:
    if not reply.startswith(b"SIP/2.0 "):
        return None
    return int(reply[8:11])


async def _a_call_still_works(api: Api, running: object, tmp_path: Path, name: str) -> None:
    from switchboard.media_role import RunningNode

    assert isinstance(running, RunningNode)
    result = await run_sipp(
        f"127.0.0.1:{running.node.sip_ports['udp']}",
        scenario("hold_resume.xml", tmp_path / name),
        tmp_path / name,
        service=NUMBER.lstrip("+"),
    )
    assert result.ok, result.explain()


async def test_the_rfc4475_corpus_over_udp_and_tcp_never_starts_a_call_or_stops_the_node(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    tenant = await provision(api, admin_conn)
    events, sub = await listen_calls(api, tenant.id)
    files = sorted(CORPUS.glob("*.dat"))
    assert len(files) == 50
    (tmp_path / "after").mkdir()
    async with running_node(api) as running:
        port = running.node.sip_ports["udp"]
        statuses: dict[str, list[int | None]] = {}
        for path in files:
            data = path.read_bytes()
            replies = await asyncio.to_thread(_udp_exchange, port, data)
            statuses[path.name] = [_status(r) for r in replies]
            await asyncio.to_thread(_tcp_exchange, port, data)
        # The torture messages come from 127.0.0.1 (a listed source) to numbers nobody owns,
        # so none of them may become a call; a malformed request never gets a 2xx.
        for name in ("badinv01.dat", "clerr.dat", "ncl.dat", "badaspec.dat", "ltgtruri.dat"):
            assert all(s is None or s >= 400 for s in statuses[name]), (name, statuses[name])
        await _a_call_still_works(api, running, tmp_path, "after")
        await settled(running)
    await sub.unsubscribe()
    started = events.of("call.started")
    assert [e["to_number"] for e in started] == [NUMBER]


async def test_sipvicious_finds_no_users_and_the_node_keeps_serving(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await provision(api, admin_conn)
    for name in ("svmap", "svwar-register", "svwar-invite", "after"):
        (tmp_path / name).mkdir()
    async with running_node(api) as running:
        port = running.node.sip_ports["udp"]
        target = f"udp://127.0.0.1:{port}"

        async def run(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            return out.decode(errors="replace")

        svmap = await run(str(SVTOOLS / "sipvicious_svmap"), "-p", str(port), "127.0.0.1")
        register = await run(
            str(SVTOOLS / "sipvicious_svwar"), "-e", "100-120,12125550101", "--force", target
        )
        invite = await run(
            str(SVTOOLS / "sipvicious_svwar"),
            "-m",
            "INVITE",
            "-e",
            "12125550100-12125550103",
            "--force",
            target,
        )
        # sipvicious announces itself as "friendly-scanner": the node drops it unanswered,
        # so it sees no SIP device and no extension.
        assert "12125550101" not in register, register
        assert "12125550101" not in invite, invite
        assert "Found nothing" in register or "| Extension" not in register, register
        assert running.node.endpoint is not None
        assert running.node.endpoint.stats.scanners_dropped > 0
        assert "SIP Device" not in svmap or "127.0.0.1:" not in svmap.split("SIP Device")[1], svmap
        await _a_call_still_works(api, running, tmp_path, "after")
        await settled(running)

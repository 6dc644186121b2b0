"""The media node at the network edge: torture messages, scanners, and calls still served."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import asyncpg

from runtime.embedded import free_port
from tests.conftest import Api
from tests.media.sip.test_endpoint import self_signed
from tests.media.sipp import run_sipp, scenario
from tests.media.test_node import NUMBER, listen_calls, provision, running_node, settled

CORPUS = (Path(__file__).parents[2] / ".." / "shared" / "testdata" / "rfc4475").resolve()
SVTOOLS = Path(sys.executable).parent
re_nonce = re.compile(r'nonce="[^"]*"')


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


def _invite(port: int, dialed: str, call_id: str, local_port: int) -> bytes:
    return (
        f"INVITE sip:{dialed}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:{local_port};branch=z9hG4bK-{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.2>;tag={call_id}\r\n"
        f"To: <sip:{dialed}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}@127.0.0.2\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:probe@127.0.0.2:{local_port}>\r\n"
        "User-Agent: Linphone/5.2\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _shape(reply: bytes) -> list[str]:
    """A response with everything that differs per request (tags, nonces, ids) blanked."""
    lines = reply.decode().split("\r\n")
    shape = []
    for line in lines:
        name = line.split(":", 1)[0]
        if name in ("Via", "From", "To", "Call-ID"):
            shape.append(name)
        elif name == "WWW-Authenticate":
            shape.append(re_nonce.sub('nonce="…"', line))
        else:
            shape.append(line)
    return shape


async def test_a_stranger_gets_the_same_challenge_for_a_real_number_and_for_nobody(
    api: Api, admin_conn: asyncpg.Connection
) -> None:
    await provision(api, admin_conn)
    async with running_node(api) as running:
        port = running.node.sip_ports["udp"]

        def ask(dialed: str, call_id: str) -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.2", 0))
                sock.settimeout(3)
                sock.sendto(
                    _invite(port, dialed, call_id, sock.getsockname()[1]), ("127.0.0.1", port)
                )
                data = sock.recvfrom(65535)[0]
                while data.startswith(b"SIP/2.0 100 "):
                    data = sock.recvfrom(65535)[0]
                return data

        real = await asyncio.to_thread(ask, NUMBER.lstrip("+"), "known1")
        nobody = await asyncio.to_thread(ask, "12125550199", "unknown1")
        assert real.startswith(b"SIP/2.0 401 ")
        assert _shape(real) == _shape(nobody)
        assert running.node.calls == {}


async def test_the_node_serves_sip_over_tls_from_its_settings(
    api: Api, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    certificate = self_signed(tmp_path)
    tls_port = free_port()
    async with running_node(
        api,
        settings_overrides={
            "sip_transports": ["udp", "tcp", "tls"],
            "sip_tls_port": tls_port,
            "sip_tls_cert": str(tmp_path / "cert.pem"),
            "sip_tls_key": str(tmp_path / "key.pem"),
        },
    ) as running:
        assert running.node.sip_ports["tls"] == tls_port
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=certificate.client, server_hostname="127.0.0.1"
        )
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(
            (
                f"OPTIONS sip:ping@127.0.0.1:{tls_port};transport=tls SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bK-tls-1;rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t1\r\n"
                "To: <sip:ping@127.0.0.1>\r\nCall-ID: tls-ping@127.0.0.1\r\n"
                "CSeq: 1 OPTIONS\r\nUser-Agent: Carrier/2\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status.startswith(b"SIP/2.0 200 ")

"""`switchboard dev` from a fresh data directory: ready, usable, and gone cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runtime.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(extra)
    return env


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _sip_options(port: int) -> bytes:
    """Ask the dev media node an out-of-dialog OPTIONS over UDP; its status line and all."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-dev-ping;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=dev1\r\n"
            f"To: <sip:ping@127.0.0.1:{port}>\r\nCall-ID: dev-ping@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), ("127.0.0.1", port))
        data, _ = sock.recvfrom(65535)
        return data


def test_dev_starts_everything_serves_the_api_and_ctrl_c_leaves_no_process(
    tmp_path: Path,
) -> None:
    port = free_port()
    sip_port = free_port()
    log = (tmp_path / "dev.log").open("w+")
    proc = subprocess.Popen(
        [SWITCHBOARD, "dev", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=_clean_env(SWITCHBOARD_LOG_FORMAT="text", SWITCHBOARD_SIP_PORT=str(sip_port)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        log.seek(0)
        output = log.read()
        assert ready is not None, output
        assert ready.status_code == 200, output
        assert ready.json()["checks"] == {"postgres": True, "nats": True}
        assert "Switchboard dev is running" in output
        assert f":{port}" in output
        assert f"udp 127.0.0.1:{sip_port}" in output
        assert _sip_options(sip_port).startswith(b"SIP/2.0 200 ")

        # The mail has no SMTP server here: the verification link is printed.
        r = httpx.post(
            f"{base}/v1/signup",
            json={"company_name": "Dev Co", "email": "dev@dev.test", "password": "Dev-Passw0rd-1"},
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 20
        while "verify-email?token=" not in output and time.monotonic() < deadline:
            time.sleep(0.2)
            log.seek(0)
            output = log.read()
        assert "verify-email?token=" in output
        assert httpx.get(f"{base}/verify-email").status_code == 200

        family = _descendants(proc.pid)
        assert len(family) >= 2, "expected embedded postgres and nats-server children"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert [p for p in family if _alive(p)] == []
        log.seek(0)
        assert "Switchboard dev stopped." in log.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_a_bad_setting_stops_start_up_naming_it() -> None:
    r = subprocess.run(
        [SWITCHBOARD, "dev"],
        env=_clean_env(SWITCHBOARD_HTTP_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "SWITCHBOARD_HTTP_PORT" in r.stderr

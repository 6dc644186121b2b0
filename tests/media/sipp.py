"""Running SIPp (Debian's sip-tester) as the carrier or the far end, from tests."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PCAP_DIR = Path("/usr/share/sip-tester")


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if found is None:
        raise RuntimeError("SIPp is not installed: run scripts/install (Debian package sip-tester)")
    return found


def scenario(name: str, work: Path, **substitutions: str) -> Path:
    """A scenario file from tests/media/scenarios with @NAME@ placeholders filled in."""
    text = (SCENARIOS / name).read_text()
    substitutions.setdefault("PCAP_DIR", str(PCAP_DIR))
    for key, value in substitutions.items():
        text = text.replace(f"@{key}@", value)
    assert "@" not in text.replace("@[", "").replace("]@", ""), f"unfilled placeholder in {name}"
    path = work / name
    path.write_text(text)
    return path


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    errors: str
    messages: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        return (
            f"sipp exit {self.returncode}\n--- errors\n{self.errors[-4000:]}\n"
            f"--- stderr\n{self.stderr[-2000:]}\n--- stdout\n{self.stdout[-2000:]}"
        )


async def run_sipp(
    target: str,
    scenario_file: Path,
    work: Path,
    *,
    service: str,
    calls: int = 1,
    rate: float = 1.0,
    limit: int | None = None,
    local_ip: str = "127.0.0.1",
    media_port: int | None = None,
    local_port: int | None = None,
    transport: str = "u1",
    timeout: float = 60.0,
    extra: tuple[str, ...] = (),
    server: bool = False,
) -> SippResult:
    """Run SIPp to completion (or `timeout`), tracing messages and errors into `work`."""
    name = scenario_file.stem
    args = [
        sipp_binary(),
        *([] if server else [target]),
        "-sf",
        str(scenario_file),
        "-m",
        str(calls),
        "-i",
        local_ip,
        "-t",
        transport,
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(work / f"{name}.errors"),
        "-trace_msg",
        "-message_file",
        str(work / f"{name}.messages"),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-max_recv_loops",
        "1000",
    ]
    if not server:
        args += ["-s", service, "-r", str(rate), "-rp", "1000"]
        if limit is not None:
            args += ["-l", str(limit)]
    if media_port is not None:
        args += ["-mp", str(media_port)]
    if local_port is not None:
        args += ["-p", str(local_port)]
    args += list(extra)
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=work,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 30)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    errors = work / f"{name}.errors"
    messages = work / f"{name}.messages"
    return SippResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        errors=errors.read_text(errors="replace") if errors.exists() else "",
        messages=messages.read_text(errors="replace") if messages.exists() else "",
    )


async def start_sipp_server(
    scenario_file: Path, work: Path, *, port: int, media_port: int, calls: int = 1
) -> asyncio.subprocess.Process:
    """SIPp as the far end (UAS), listening on 127.0.0.1:`port`, until `calls` calls ended."""
    name = scenario_file.stem
    return await asyncio.create_subprocess_exec(
        sipp_binary(),
        "-sf",
        str(scenario_file),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(media_port),
        "-m",
        str(calls),
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(work / f"{name}.errors"),
        "-trace_msg",
        "-message_file",
        str(work / f"{name}.messages"),
        # A retransmitted final response is re-ACKed by the far end, possibly after its next
        # request: that is correct SIP, not a reason to abort. Duplicates are counted by tests.
        "-default_behaviors",
        "all,-abortunexp",
        cwd=work,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

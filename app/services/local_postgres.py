"""A throwaway PostgreSQL server: initdb in a temp dir, a free port, stopped by its PID.

Integration tests and ``edgewise bench cdc`` need a real server with ``wal_level=logical``
so that change data capture is exercised end to end, yet they must not depend on a server
someone happened to install and configure. So each cluster is created from scratch,
listens only on 127.0.0.1 and on a unix socket in its own directory, and is stopped by its
PID, never by process name, so that nothing else on the machine is touched.

PostgreSQL refuses to run as root. When running as root (containers, CI), initdb and
postgres run as the ``postgres`` system user and the cluster directory is given to that
user. The cluster lives in a short private directory under the system temp dir because
pytest's per-test directories sit below a root-only ``0700`` directory the server user
cannot enter and because unix socket paths are limited to ~100 bytes; the server log goes
to ``<tmpdir>/postgres.log``, where it is kept for a post-mortem.

If the binaries are missing, :class:`PostgresUnavailable` is raised: whoever needs
PostgreSQL fails loudly rather than being skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgewise.app.services.processes import ManagedProcess, free_port

SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "fsync": "off",  # a test cluster need not survive a power cut; commits stay synchronous
    "full_page_writes": "off",
    "max_connections": "50",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
"""Settings of every test cluster; ``synchronous_commit`` is left on, on purpose."""

SUPERUSER = "postgres"
"""Database superuser created by initdb; authentication is ``trust`` (local test cluster)."""

class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, postgres) could not be found or started."""


def find_postgres_bin_dir() -> Path:
    """Locate the directory holding matching ``initdb`` and ``postgres`` binaries.

    PATH wins (it may point at a chosen version); Debian keeps them out of PATH in
    ``/usr/lib/postgresql/<major>/bin``, where the newest major is taken.
    """
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
        reverse=True,
    )
    candidates.extend(debian)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found: need initdb and postgres on PATH or in "
        "/usr/lib/postgresql/<version>/bin (Debian/Ubuntu: apt-get install postgresql)"
    )


free_tcp_port = free_port  # the name the fixtures and tests import


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root, and PostgreSQL refuses root: a 'postgres' system user is needed"
        ) from None


def _as_account(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that drop root privileges to the server account."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _accepts_connections(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when the server completes a startup handshake (not merely a TCP accept).

    A postmaster accepts TCP connections while still recovering and then answers
    "the database system is starting up"; only an AuthenticationOk ('R') means ready.
    """
    params = f"user\0{SUPERUSER}\0database\0postgres\0\0".encode()
    startup = struct.pack("!ii", 8 + len(params), 196608) + params
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(startup)
            reply = sock.recv(1)
            if reply == b"R":
                sock.sendall(b"X\0\0\0\4")
                return True
            return False
    except OSError:
        return False


class PostgresServer(ManagedProcess):
    """A running test cluster; stop it with :meth:`stop`, or use it as a context manager."""

    name = "postgres"
    start_error = PostgresUnavailable
    stop_signal = signal.SIGINT  # fast shutdown
    stop_timeout = 15.0

    def __init__(
        self, *, port: int, data_dir: Path, socket_dir: Path, log_path: Path, bin_dir: Path,
        settings: dict[str, str], account: pwd.struct_passwd | None,
        cluster_dir: Path | None, host: str = "127.0.0.1",
    ) -> None:
        super().__init__(log_path, host, port)
        self.data_dir = data_dir
        self.socket_dir = socket_dir
        self.bin_dir = bin_dir
        self.settings = settings
        self.database = "postgres"
        self.user = SUPERUSER
        self._account = account
        self._cluster_dir = cluster_dir

    @property
    def dsn(self) -> str:
        """libpq/asyncpg connection URL over TCP (trust authentication, no password)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def ready(self) -> bool:
        return _accepts_connections(self.host, self.port)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop, then start again on the same port and data dir (crash/resume tests)."""
        self.stop()
        self.launch(timeout)

    def close(self) -> None:
        """Stop the server and delete its cluster directory; the log file is kept."""
        self.stop()
        if self._cluster_dir is not None:
            shutil.rmtree(self._cluster_dir, ignore_errors=True)
            self._cluster_dir = None

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def launch(self, timeout: float) -> None:
        """Start the postmaster and wait until it completes a startup handshake."""
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p",
                   str(self.port), "-k", str(self.socket_dir)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        self.spawn(command, cwd=self.socket_dir, **_as_account(self._account))
        self.wait_ready(timeout)


def _initdb(bin_dir: Path, data_dir: Path, log_path: Path, account: Any) -> None:
    """Create a fresh cluster: UTF-8, C locale, trust auth, no fsync while creating."""
    command: Sequence[str] = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]
    with open(log_path, "ab") as log:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            check=False,
            **_as_account(account),
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise PostgresUnavailable(f"initdb failed with code {result.returncode}:\n{tail}")


def start_postgres(
    tmpdir: str | os.PathLike[str],
    *,
    settings: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    attempts: int = 3,
) -> PostgresServer:
    """Create a cluster and start it on a free port; returns once it accepts connections.

    ``settings`` are added to (and override) :data:`SERVER_SETTINGS`. A port the OS gave us
    can be taken by someone else before postgres binds it, so the start is retried on a new
    port up to ``attempts`` times.
    """
    bin_dir = find_postgres_bin_dir()
    account = _server_account()
    log_path = Path(tmpdir) / "postgres.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cluster_dir = Path(tempfile.mkdtemp(prefix="ewpg-"))
    if account is not None:
        os.chown(cluster_dir, account.pw_uid, account.pw_gid)
    data_dir = cluster_dir / "data"
    try:
        _initdb(bin_dir, data_dir, log_path, account)
        last_error: PostgresUnavailable | None = None
        for _ in range(attempts):
            server = PostgresServer(
                port=free_tcp_port(), data_dir=data_dir, socket_dir=cluster_dir,
                log_path=log_path, bin_dir=bin_dir,
                settings={**SERVER_SETTINGS, **(settings or {})}, account=account,
                cluster_dir=cluster_dir,
            )
            try:
                server.launch(timeout)
                return server
            except PostgresUnavailable as error:
                last_error = error
        assert last_error is not None
        raise last_error
    except BaseException:
        shutil.rmtree(cluster_dir, ignore_errors=True)
        raise

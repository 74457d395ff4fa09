"""Child processes edgewise starts (brokers, workers, edges): started tied to us, stopped by PID.

Every helper process is stopped through its own PID (never by name), and on Linux the kernel
kills it when its parent dies, so a crashed or SIGKILLed edgewise leaves no orphan behind.
"""

from __future__ import annotations

import atexit
import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children: the kernel SIGKILLs them when the parent dies (Linux).

    SIGKILL, not SIGTERM: the children we start keep nothing that needs a clean exit
    (Tansu is memory-only), and Tansu takes seconds to honour SIGTERM.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def stop_process(
    process: subprocess.Popen[bytes] | None, timeout: float = 10.0, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` to the process by PID, wait, and SIGKILL it if it has not exited in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def log_tail(path: Path, lines: int = 30, missing: str = "(no log)") -> str:
    """The last lines of a child's log file, for error messages about a failed start."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return missing
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bind to 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts_tcp(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ManagedProcess:
    """The one base of the child processes edgewise starts: spawned tied to us (new session,
    killed by the kernel with its parent), ready when :meth:`ready` says so, stopped by PID
    (also at interpreter exit), its log's tail in every error.

    A subclass says how to start (``start()`` calling :meth:`spawn` and :meth:`wait_ready`)
    and when it is ready; ``stop_signal`` is the polite signal it honours.
    """

    name = "process"
    start_error: type[Exception] = RuntimeError
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0

    def __init__(self, log_path: Path | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.log_path = log_path
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)  # a run that dies before teardown leaves no process

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None when it is stopped."""
        return self.process.pid if self.is_running else None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """Whether the process serves yet; by default, that it accepts TCP on its port."""
        return accepts_tcp(self.host, self.port)

    def spawn(self, command: list[str], **popen: Any) -> None:
        """Start ``command`` with its output appended to the log (or discarded)."""
        if self.is_running:
            raise self.start_error(f"{self.name} already running as PID {self.pid}")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # The kernel's parent-death signal fires when the *thread* that forked exits: only
        # the main thread lives as long as the process (a restart from asyncio.to_thread
        # would be killed when its worker thread ends). Elsewhere, atexit and stop() remain.
        tie = threading.current_thread() is threading.main_thread()
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward
                preexec_fn=die_with_parent if tie else None, **popen,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def wait_ready(self, timeout: float, poll: float = 0.05) -> None:
        """Block until :meth:`ready`; raise ``start_error`` with the log if it exits first
        or does not become ready within ``timeout`` (then it is stopped)."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise self.start_error(
                    f"{self.name} exited with {code} (port {self.port}); log:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(poll)
        self.stop()
        raise self.start_error(f"{self.name} was not ready on {self.host}:{self.port} within "
                               f"{timeout:.0f}s; log:\n{self.log_tail()}")

    def stop(self, timeout: float | None = None) -> None:
        """The polite signal by PID, then SIGKILL if it has not exited within ``timeout``."""
        process, self.process = self.process, None
        stop_process(process, self.stop_timeout if timeout is None else timeout,
                     self.stop_signal)

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would."""
        process, self.process = self.process, None
        stop_process(process, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log, for error messages that explain a failed start."""
        return log_tail(self.log_path, lines) if self.log_path else "(no log kept)"

    def __exit__(self, *exc: object) -> None:
        self.stop()

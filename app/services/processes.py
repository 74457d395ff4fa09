"""Child processes edgewise starts (brokers, workers, edges): started tied to us, stopped by PID.

Every helper process is stopped through its own PID (never by name), and on Linux the kernel
kills it when its parent dies, so a crashed or SIGKILLed edgewise leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
from pathlib import Path

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

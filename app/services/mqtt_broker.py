"""A local MQTT broker for the demo and the tests: mosquitto when installed, else amqtt.

mosquitto runs as a child process from a config written to a work directory, on a free
port, and is stopped by its PID; it keeps its port and its persistence file across
``stop()``/``start()``, so a test can take it away and bring the *same* broker back
(persistent sessions and queued QoS 1 messages included). Without mosquitto the demo runs
amqtt inside this process, on a thread of its own.

Durability: the edge deletes a message from its spool on the broker's PUBACK, so the
broker must not lose what it acknowledged. mosquitto is told to save its store after every
change (``autosave_on_changes true`` with ``autosave_interval 1``), so a SIGKILLed mosquitto
loses nothing it acknowledged (the file is written whole at each save, so the cost grows
with what is queued; see the README). ``save_every_change=False`` is mosquitto's time-based
saving, once a second: a kill loses up to a second of acknowledged messages. amqtt keeps
sessions and queued messages in memory only: it is **not durable**, a restart loses what
it had acknowledged and not yet delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgewise.app.services.processes import ManagedProcess, free_port

DEFAULT_BINARY = "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
#: QoS 1 messages mosquitto queues per offline persistent session (its default, 1000, would
#: drop messages for a bridge that is down for a few seconds of a busy fleet).
MAX_QUEUED_MESSAGES = 1_000_000


class MosquittoNotInstalledError(RuntimeError):
    """The mosquitto binary is missing; install the `mosquitto` system package."""


class MosquittoStartError(RuntimeError):
    """mosquitto exited or never accepted connections; the message carries its log."""


def find_mosquitto(binary: str | Path | None = None) -> Path:
    """Locate the broker binary, or explain how to get it."""
    candidates = [str(binary)] if binary else [DEFAULT_BINARY, "mosquitto"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    raise MosquittoNotInstalledError(
        f"mosquitto not found (looked for {', '.join(candidates)}); "
        "install it with `apt-get install mosquitto`"
    )


class MosquittoBroker(ManagedProcess):
    """One mosquitto process listening on 127.0.0.1, restartable on the same port."""

    name = "mosquitto"
    start_error = MosquittoStartError

    def __init__(self, workdir: str | Path, *, binary: str | Path | None = None,
                 save_every_change: bool = True) -> None:
        self.binary = find_mosquitto(binary)
        self.save_every_change = save_every_change
        self.workdir = Path(workdir)
        super().__init__(self.workdir / "mosquitto.log", HOST)  # port chosen on first start
        self.config_path = self.workdir / "mosquitto.conf"
        self.persistence_dir = self.workdir / "data"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "persistence_file mosquitto.db",
            # with autosave_on_changes, the interval counts changes: save after every one
            f"autosave_on_changes {'true' if self.save_every_change else 'false'}",
            "autosave_interval 1",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to the `mosquitto` user, which cannot write the
            # persistence file in our temp dir; tell it to stay root.
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker (same port and persistence as before) and wait until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir.mkdir(exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        self._write_config()
        self.spawn([str(self.binary), "-c", str(self.config_path)])
        self.wait_ready(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (SIGTERM: it saves its persistence file) and start again on the same port with
        the same persistence."""
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.url}, pid={self.pid})"


class AmqttBroker:
    """amqtt on its own thread and event loop, so it serves whatever the caller's loop does."""

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        from amqtt.broker import Broker

        async def main() -> None:
            config: dict[str, Any] = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                            {"allow_anonymous": True}},
            }
            broker = Broker(config)
            await broker.start()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
            await broker.shutdown()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # handed to start() through self._error
            self._error = exc
            ready.set()
        finally:
            self._loop.close()

    def start(self, timeout: float = 10.0) -> None:
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        self.port = self.port or free_port(self.host)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name="amqtt-broker")
        self._thread.start()
        if not ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"amqtt did not start on port {self.port}: {self._error}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._thread = None


@contextlib.contextmanager
def local_mqtt_broker(workdir: Path) -> Iterator[tuple[str, str]]:
    """(url, implementation) of a broker started here: mosquitto, or amqtt without it."""
    try:
        mosquitto = MosquittoBroker(workdir)
    except MosquittoNotInstalledError:
        amqtt = AmqttBroker()
        amqtt.start()
        try:
            yield amqtt.url, "amqtt"
        finally:
            amqtt.stop()
        return
    with mosquitto:
        yield mosquitto.url, "mosquitto"

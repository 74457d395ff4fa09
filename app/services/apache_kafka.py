"""Apache Kafka in KRaft mode (no ZooKeeper): one node or a cluster, started from Maven jars.

The broker's classpath is resolved once by Maven from ``deploy/kafka/broker/pom.xml`` into a
cache directory, and every later start is offline. Each node is one JVM acting as broker and
controller, on ports the OS picked, with its storage formatted in a temporary directory that
is removed when the cluster stops: nothing survives, so nodes are stopped with SIGKILL (a node
whose peers are gone waits for a quorum on SIGTERM, and a clean shutdown saves nothing here).
"""

from __future__ import annotations

import base64
import fcntl
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgewise.app.services.broker_ready import wait_for_broker
from edgewise.app.services.processes import ManagedProcess, free_port, log_tail

KAFKA_VERSION = "4.3.1"
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
DEFAULT_CACHE = Path("~/.cache/edgewise/kafka")
READY_LINE = "Kafka Server started"
#: Small heap and the quick JIT tier: test brokers carry little data and start often.
JVM_OPTIONS = ("-Xms128m", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Xshare:auto", "-Djava.awt.headless=true")
COMPLETE = ".complete"


class KafkaError(RuntimeError):
    """Apache Kafka could not be resolved, started or reached."""


def require_tools(*tools: str) -> None:
    """Fail with one line naming what to install when a tool is not on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise KafkaError(f"Apache Kafka needs {' and '.join(missing)} on PATH: "
                         "apt-get install openjdk-17-jre-headless maven (or make sysdeps)")


def kafka_classpath(cache_root: Path = DEFAULT_CACHE, version: str = KAFKA_VERSION,
                    pom: Path = DEPLOY_DIR / "broker" / "pom.xml") -> Path:
    """The directory of the broker's jars, resolved by Maven when the cache lacks it."""
    return maven_classpath(cache_root.expanduser() / version, pom, "kafka_2.13-*.jar",
                           {"kafka.version": version}, f"Apache Kafka {version}")


def maven_classpath(target: Path, pom: Path, expected: str, properties: dict[str, str],
                    what: str) -> Path:
    """``target``, filled with the jars ``pom`` depends on, by Maven when it is not yet.

    Resolution goes to a scratch directory renamed into place, under a lock, so that two
    processes resolving at once (or one interrupted) never leave a half-filled cache behind.
    Maven is asked offline first (a warm local repository needs no network), then online.
    ``expected`` is a glob that must match a resolved jar.
    """
    if (target / COMPLETE).exists():
        return target
    require_tools("java", "mvn")
    if not pom.exists():
        raise KafkaError(f"the pom {pom} is missing: {what} is resolved from a source "
                         "checkout of edgewise")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).exists():
            return target
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        defines = [f"-D{name}={value}" for name, value in properties.items()]
        command = ["mvn", "-q", "-B", "-f", str(pom), *defines,
                   "dependency:copy-dependencies", f"-DoutputDirectory={scratch}"]
        for attempt in (["-o"], []):
            result = subprocess.run([*command[:1], *attempt, *command[1:]],
                                    capture_output=True, text=True, check=False)
            if result.returncode == 0 and any(scratch.glob(expected)):
                break
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise KafkaError(f"mvn could not resolve {what}: " + " | ".join(tail))
        (scratch / COMPLETE).touch()
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    return target


def new_cluster_id(draw: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A random KRaft cluster id: 22 characters of URL-safe base64, never starting with ``-``.

    Kafka's own ids avoid a leading dash for the same reason: ``kafka-storage format -t -x…``
    reads the id as an option and stops (one start in 64 failed so before this).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(draw().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def node_properties(node_id: int, port: int, controller_port: int, voters: str,
                    data_dir: Path, nodes: int) -> str:
    """``server.properties`` of one combined broker+controller node.

    Replicated like production when there are three nodes or more (replication 3, two
    in sync for a write); the dedupe buffer is shrunk because the default 128 MB does not fit
    the small heap; group joins are not delayed and brokers are fenced within seconds, so
    tests see rebalances and failovers quickly.
    """
    replicas = min(3, nodes)
    in_sync = 2 if nodes >= 3 else 1
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node_id}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={in_sync}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=4",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={in_sync}",
        "transaction.state.log.num.partitions=4",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={in_sync}",
        "group.initial.rebalance.delay.ms=0",
        "broker.session.timeout.ms=4000",
        "broker.heartbeat.interval.ms=500",
        "log.segment.bytes=16777216",
        "log.cleaner.dedupe.buffer.size=8388608",
        "",
    ])


class KafkaNode(ManagedProcess):
    """One KRaft node (broker and controller in one JVM), ready once its log says so."""

    start_error = KafkaError
    stop_signal = signal.SIGKILL
    stop_timeout = 10.0

    def __init__(self, node_id: int, directory: Path, port: int, controller_port: int) -> None:
        super().__init__(directory / "stdout.log", "127.0.0.1", port)
        self.name = f"Kafka node {node_id}"
        self.node_id = node_id
        self.directory = directory
        self.controller_port = controller_port
        self._starts_seen = 0

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    def java(self, classpath: Path, main: str, *args: str) -> list[str]:
        """The JVM command running ``main`` on the broker classpath."""
        return ["java", *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.directory}", "-cp", f"{classpath}/*", main, *args]

    def starts_logged(self) -> int:
        try:
            return (self.directory / "server.log").read_text(errors="replace").count(READY_LINE)
        except OSError:
            return 0

    def ready(self) -> bool:
        """Ready when the log shows one more start than before this spawn (restarts append)."""
        return self.starts_logged() > self._starts_seen

    def launch(self, classpath: Path) -> None:
        """Spawn the node; :meth:`wait_ready` then waits for it."""
        self._starts_seen = self.starts_logged()
        self.spawn(self.java(classpath, "kafka.Kafka", str(self.properties)))

    def log_tail(self, lines: int = 30) -> str:
        """The JVM's own output, then the broker's log (where Kafka writes its errors)."""
        server = log_tail(self.directory / "server.log", lines, missing="(no server.log)")
        return f"{super().log_tail(lines)}\n{server}"


class KafkaCluster:
    """``nodes`` KRaft nodes on free ports in a temporary directory; ``nodes=1`` is one broker.

    Every node votes in the controller quorum, so a three-node cluster survives the loss of
    any one node. :meth:`kill_node` and :meth:`restart_node` are the chaos handles.
    """

    def __init__(self, nodes: int = 1, cache_root: Path = DEFAULT_CACHE,
                 version: str = KAFKA_VERSION, workdir: Path | None = None) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.size = nodes
        self.cache_root = cache_root
        self.version = version
        self._workdir = workdir
        self._own_workdir = False
        self.nodes: list[KafkaNode] = []
        self.classpath: Path | None = None
        self.cluster_id = ""
        self.started_in = 0.0

    @property
    def bootstrap(self) -> str:
        """host:port,host:port for raw Kafka clients."""
        return ",".join(f"{n.host}:{n.port}" for n in self.nodes)

    @property
    def url(self) -> str:
        """Faust broker URL (``;`` between brokers)."""
        return "kafka://" + ";".join(f"{n.host}:{n.port}" for n in self.nodes)

    @property
    def pids(self) -> list[int | None]:
        return [n.pid for n in self.nodes]

    @property
    def is_running(self) -> bool:
        return bool(self.nodes) and all(n.is_running for n in self.nodes)

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Resolve the classpath, format every node's storage, start them all, wait until
        each logs its start and the cluster answers a metadata request."""
        if self.nodes:
            return self
        began = time.monotonic()
        self.classpath = kafka_classpath(self.cache_root, self.version)
        require_tools("java")
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="edgewise-kafka-"))
            self._own_workdir = True
        ports = [free_port() for _ in range(2 * self.size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[self.size + i]}" for i in range(self.size))
        self.cluster_id = new_cluster_id()
        for i in range(self.size):
            directory = self._workdir / f"node{i + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            node = KafkaNode(i + 1, directory, ports[i], ports[self.size + i])
            node.properties.write_text(node_properties(
                i + 1, node.port, node.controller_port, voters, directory / "data", self.size))
            self.nodes.append(node)
        try:
            with ThreadPoolExecutor(max_workers=self.size) as pool:
                list(pool.map(self._format, self.nodes))  # each is a JVM of ~1.3 s
            for node in self.nodes:
                node.launch(self.classpath)
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            wait_for_broker(self.bootstrap, max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _format(self, node: KafkaNode) -> None:
        assert self.classpath is not None
        command = node.java(self.classpath, "kafka.tools.StorageTool", "format",
                            f"--cluster-id={self.cluster_id}", "-c", str(node.properties))
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                check=False)
        if result.returncode != 0:
            raise KafkaError(f"formatting {node.name}'s storage failed: "
                             f"{(result.stdout + result.stderr).strip()[-500:]}")

    def kill_node(self, index: int) -> None:
        """SIGKILL one node by PID, as a crash would; its storage stays for a restart."""
        self.nodes[index].kill()

    def restart_node(self, index: int, timeout: float = 60.0) -> None:
        """Start a killed node again on its ports and storage, and wait until it is up."""
        assert self.classpath is not None, "start() first"
        node = self.nodes[index]
        node.launch(self.classpath)
        node.wait_ready(timeout)

    def stop(self) -> None:
        """SIGKILL every node at once by PID (see the module docstring), remove the storage."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGKILL)
        for node in self.nodes:
            node.stop()
        self.nodes = []
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

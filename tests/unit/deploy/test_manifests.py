"""deploy/ agrees with the code: every stage is deployed, every EDGEWISE_* variable is a real
setting with a valid value, commands parse with edgewise's own parser, ports match, and the
autoscaler reads the lag metric and consumer group edgewise really has.

There is no container engine on these machines: the Dockerfile is checked by parsing its
instructions, the compose file and the manifests with PyYAML (``docker compose config`` and
``kubectl kustomize`` too where those clients work).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from edgewise.app.cli.main import build_parser
from edgewise.app.core.metrics import StageMetrics
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames
from edgewise.app.run.factory import STAGE_MODULES, app_id_for
from edgewise.app.services.apache_kafka import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = f"edgewise:{PYPROJECT['project']['version']}"
#: Values filled in where the image starts (the entrypoint) or by the cluster (downward API).
PLACEHOLDERS = {"EDGEWISE_WEB_HOST": "container-ip"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    joined, pending = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage(dockerfile_instructions()):
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    return env


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def kubernetes_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in kubernetes_docs() if d["kind"] == kind]


def expand_defaults(value: str) -> str:
    """Compose's ``${NAME:-default}`` with its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def assert_real_settings(env: dict[str, Any], where: str) -> None:
    """Every EDGEWISE_* name is a field, and its value passes the field's validation."""
    values = {}
    for name, value in env.items():
        if not name.startswith("EDGEWISE_"):
            continue
        field = name.removeprefix("EDGEWISE_").lower()
        assert field in Settings.model_fields, f"{where}: {name} is not a setting"
        value = expand_defaults(str(value))
        if PLACEHOLDERS.get(name) != value:
            values[field] = value
    Settings(**values)  # raises with the field's reason when a value is invalid


def worker_stages(argv: list[str]) -> list[str]:
    """The stages an ``edgewise ...`` command line runs, parsed by edgewise's own parser."""
    args = build_parser().parse_args(argv)
    return list(args.stage) if args.command == "worker" else []


def web_port() -> int:
    return int(dockerfile_env()["EDGEWISE_WEB_PORT"])


def exported_metrics() -> dict[str, set[str]]:
    """The metric names a worker exports (as Prometheus sees them) and their labels."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    names: dict[str, set[str]] = {}
    for collector in vars(StageMetrics()).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            for suffix in suffixes[family.type]:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


# --- Dockerfile ---------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_and_runs_as_a_user_not_root() -> None:
    instructions = dockerfile_instructions()
    froms = [args for op, args in instructions if op == "FROM"]
    assert len(froms) >= 2, froms
    build_name = froms[0].split()[-1]
    last = final_stage(instructions)
    copies = [args for op, args in last if op == "COPY"]
    assert any(c.startswith(f"--from={build_name} ") for c in copies), copies
    users = [args for op, args in last if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    requires = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    base = re.search(r"python:(\d+\.\d+)", froms[-1])
    assert base and tuple(map(int, base.group(1).split("."))) >= tuple(
        map(int, requires.split("."))), froms[-1]


def test_dockerfile_installs_only_the_runtime_extras_at_the_pinned_versions() -> None:
    runs = [args for op, args in dockerfile_instructions() if op == "RUN" and "pip install" in args]
    assert len(runs) == 1, runs
    extras = re.search(r"\.\[([a-z,]+)\]", runs[0])
    assert extras, runs[0]
    chosen = set(extras.group(1).split(","))
    assert chosen == {"cdc", "edge", "onnx", "rocksdb"}, chosen  # never the test extra
    assert chosen <= set(PYPROJECT["project"]["optional-dependencies"])
    assert "-c deploy/constraints.txt" in runs[0]


def test_dockerfile_copies_what_exists_and_exposes_the_views_port() -> None:
    instructions = dockerfile_instructions()
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), source
    exposed = [args for op, args in final_stage(instructions) if op == "EXPOSE"]
    assert exposed == [str(web_port())]
    assert_real_settings(dockerfile_env(), "Dockerfile")
    entry = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    script = json.loads(entry[-1])[0]
    copied = {shlex.split(args)[-1]: shlex.split(args)[0] for op, args in instructions
              if op == "COPY" and not args.startswith("--from")}
    source = ROOT / copied[script]  # the entrypoint is a script of ours, copied in
    assert PLACEHOLDERS["EDGEWISE_WEB_HOST"] in source.read_text()


# --- docker compose -----------------------------------------------------------------------

def edgewise_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == IMAGE}


def test_compose_runs_kafka_in_kraft_mode_on_three_brokers() -> None:
    services = compose()["services"]
    kafkas = {n: s for n, s in services.items() if s.get("image", "").startswith("apache/kafka")}
    assert len(kafkas) == 3, sorted(kafkas)
    ids = set()
    for name, service in kafkas.items():
        assert service["image"] == f"apache/kafka:{KAFKA_VERSION}", service["image"]
        env = service["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert {v.split("@")[1].split(":")[0] for v in voters} == set(kafkas)
        assert f"//{name}:" in env["KAFKA_ADVERTISED_LISTENERS"]
        ids.add(env["KAFKA_NODE_ID"])
    assert len(ids) == 3
    broker = Settings(broker=edgewise_services()["score"]["environment"]["EDGEWISE_BROKER"])
    assert {h.split(":")[0] for h in broker.broker.split("://", 1)[1].split(";")} == set(kafkas)


def test_compose_has_the_cluster_services() -> None:
    services = compose()["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    postgres = [s for s in services.values() if s.get("image", "").startswith("postgres")]
    assert len(postgres) == 1 and "wal_level=logical" in postgres[0]["command"]
    for image in ("eclipse-mosquitto", "minio/minio", "prom/prometheus"):
        assert any(i.startswith(image) for i in images.values()), image
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).is_file(), source


def test_compose_runs_every_stage_as_its_own_service_the_bridge_and_edges() -> None:
    deployed: dict[str, list[str]] = {}
    commands = {}
    for name, service in edgewise_services().items():
        commands[name] = build_parser().parse_args(service["command"]).command
        stages = worker_stages(service["command"])
        for stage in stages:
            deployed.setdefault(stage, []).append(name)
        if len(stages) > 1:
            assert set(stages) == {"review", "correct"}, (name, stages)
        assert_real_settings(service.get("environment", {}), name)
    assert set(deployed) == set(STAGE_MODULES), set(STAGE_MODULES) ^ set(deployed)
    assert "bridge" in commands.values()
    assert list(commands.values()).count("edge") >= 2
    assert edgewise_services()["score"]["deploy"]["replicas"] > 1


def test_compose_prometheus_scrapes_every_worker_at_the_views_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == web_port()
    workers = {n for n, s in edgewise_services().items() if worker_stages(s["command"])}
    assert set(sd["names"]) == workers
    for service in edgewise_services().values():
        assert service["environment"]["EDGEWISE_WEB_PORT"] == str(web_port())


def test_compose_config_where_a_docker_client_with_compose_exists() -> None:
    """``docker compose config`` validates the file where the compose plugin is installed;
    on these machines the docker client has no compose plugin and no engine, so the file's
    references (anchors, dependencies) are checked here instead."""
    docker = shutil.which("docker")
    has_compose = docker is not None and subprocess.run(
        [docker, "compose", "version"], capture_output=True).returncode == 0
    if has_compose:
        done = subprocess.run([docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"),
                               "config", "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    services = compose()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("./", "/")):
                assert source in compose()["volumes"], (name, source)


# --- Kubernetes ---------------------------------------------------------------------------

def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in of_kind("Deployment")}


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def stages_of(deployment: dict[str, Any]) -> list[str]:
    return worker_stages(container_of(deployment)["args"])


def matches(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_kubernetes_has_a_deployment_per_stage() -> None:
    deployed: dict[str, str] = {}
    for name, deployment in deployments().items():
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items(), name
        container = container_of(deployment)
        assert container["image"] == IMAGE
        stages = stages_of(deployment)
        for stage in stages:
            assert stage not in deployed, (stage, name, deployed.get(stage))
            deployed[stage] = name
        if len(stages) > 1:
            assert set(stages) == {"review", "correct"}, (name, stages)
        if stages:
            (port,) = container["ports"]
            assert port["containerPort"] == web_port()
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(web_port())
        security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] != 0
    assert set(deployed) == set(STAGE_MODULES), set(STAGE_MODULES) ^ set(deployed)
    assert any(container_of(d)["args"] == ["bridge"] for d in deployments().values())


def test_kubernetes_settings_are_real_and_the_references_resolve() -> None:
    (configmap,) = of_kind("ConfigMap")
    (secret,) = of_kind("Secret")
    assert_real_settings(configmap["data"], "ConfigMap")
    assert_real_settings(secret["stringData"], "Secret")
    assert not set(configmap["data"]) & set(secret["stringData"])
    assert configmap["data"]["EDGEWISE_WEB_PORT"] == str(web_port())
    for name, deployment in deployments().items():
        refs = container_of(deployment)["envFrom"]
        assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in refs, name
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in refs, name
        for variable in container_of(deployment).get("env", []):
            assert variable["name"].removeprefix("EDGEWISE_").lower() in Settings.model_fields


def test_kubernetes_views_service_pdb_and_hpa_point_at_deployments() -> None:
    services = of_kind("Service")
    assert any(s["metadata"]["name"] == "edgewise-views" for s in services)
    for service in services:
        targets = [d for d in deployments().values() if matches(service["spec"]["selector"], d)]
        assert targets and all(stages_of(d) for d in targets), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["port"] == web_port() and port["targetPort"] == "views"
    pdbs = of_kind("PodDisruptionBudget")
    assert pdbs
    for pdb in pdbs:
        (target,) = [d for d in deployments().values()
                     if matches(pdb["spec"]["selector"]["matchLabels"], d)]
        if "minAvailable" in pdb["spec"]:
            assert pdb["spec"]["minAvailable"] < target["spec"]["replicas"]
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind("ScaledObject")}
    hpas = of_kind("HorizontalPodAutoscaler")
    assert hpas
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments() and target not in scaled, target
        assert hpa["spec"]["maxReplicas"] <= Settings(
            partitions=int(of_kind("ConfigMap")[0]["data"]["EDGEWISE_PARTITIONS"])).partitions


def test_keda_scales_score_on_the_lag_of_its_consumer_group() -> None:
    (scaled,) = of_kind("ScaledObject")
    target = deployments()[scaled["spec"]["scaleTargetRef"]["name"]]
    settings = Settings(**{k.removeprefix("EDGEWISE_").lower(): v
                           for k, v in of_kind("ConfigMap")[0]["data"].items()})
    group = app_id_for(settings, stages_of(target))
    samples = TopicNames(settings.topic_prefix).samples
    assert stages_of(target) == ["score"]
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert triggers["kafka"]["consumerGroup"] == group
    assert triggers["kafka"]["topic"] == samples
    assert set(triggers["kafka"]["bootstrapServers"].split(",")) == set(
        settings.broker.split("://", 1)[1].split(";"))
    query = triggers["prometheus"]["query"]
    metric = StageMetrics().consumer_lag._name
    assert re.search(rf"\b{metric}\{{", query), query
    labels = dict(re.findall(r'(\w+)="([^"]*)"', query))
    assert labels == {"group": group, "topic": samples}
    assert set(labels) <= exported_metrics()[metric]
    assert triggers["prometheus"]["threshold"] == triggers["kafka"]["lagThreshold"]
    assert scaled["spec"]["maxReplicaCount"] <= settings.partitions


def test_kustomize_builds_the_manifests_where_kubectl_exists() -> None:
    (kustomization,) = yaml.safe_load_all((DEPLOY / "kubernetes" / "kustomization.yaml")
                                          .read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = subprocess.run([kubectl, "kustomize", str(DEPLOY / "kubernetes")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        built = [d for d in yaml.safe_load_all(done.stdout) if d]
        assert len(built) == len(kubernetes_docs())


# --- Prometheus in Kubernetes, Grafana ------------------------------------------------------

def test_grafana_dashboard_queries_only_metrics_edgewise_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "edgewise-dashboard.json").read_text())
    exported = exported_metrics()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert any(StageMetrics().consumer_lag._name in e for e in exprs)
    for expr in exprs:
        for name in re.findall(r"\b(edgewise_\w+)", expr):
            assert name in exported, (name, expr)
    kubernetes = yaml.safe_load((DEPLOY / "prometheus" / "kubernetes.yml").read_text())
    keep = kubernetes["scrape_configs"][0]["relabel_configs"]
    assert any(r.get("regex") == "edgewise" for r in keep)

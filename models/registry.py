"""The model registry: versioned artifacts in a directory, never pickle.

Layout: ``<root>/<name>/<version>/<artifact>`` beside ``meta.json`` (name, version, sha256,
the adapter that wrote the artifact and its file name, the kind of samples it scores, the
input schema of a tabular model, training-data summary, metrics, created_at). The artifact
is written and read by its adapter (``models.adapters``: skops by default, ONNX, or an
installed plug-in). Loading checks the sha256 first (a changed artifact is refused), then
hands the file to the adapter; skops builds only types on an allow-list. The sha256 sits
beside the artifact, so it catches corruption and careless edits, not an attacker who can
write both files; the type allow-list is what stops code from loading.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.records import SAMPLE_KINDS, TABULAR, known_kind
from edgewise.models.adapters import DEFAULT_ADAPTER, adapter_for, check_served
from edgewise.models.errors import RegistryError
from edgewise.models.skops_adapter import SkopsAdapter

ARTIFACT = SkopsAdapter.artifact  # the default adapter's, and every version's before adapters
META = "meta.json"
DEFAULT_KIND = "digits"
__all__ = ["ARTIFACT", "META", "ModelMeta", "ModelRegistry", "PromotionLog", "RegistryError",
           "read_decision", "record_decision"]


@dataclass(frozen=True)
class ModelMeta:
    """What the registry knows about one model version."""

    name: str
    version: int
    sha256: str
    created_at: float
    algorithm: str = ""
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    classes: list[int] = field(default_factory=list)
    adapter: str = DEFAULT_ADAPTER
    artifact: str = ARTIFACT
    kind: str = DEFAULT_KIND
    #: the features a tabular model reads (``InputSchema.to_dict``); None for image kinds
    input_schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schema(self) -> InputSchema | None:
        """The input schema, for a tabular model."""
        return None if self.input_schema is None else InputSchema.from_dict(self.input_schema)

    def features(self) -> int:
        """How many columns the model reads."""
        if self.input_schema is not None:
            return len(self.input_schema["features"])
        return math.prod(SAMPLE_KINDS[self.kind][0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRegistry:
    """Versioned models under one directory (local; the same layout serves S3 later)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and
                      (p / META).is_file())

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def register(
        self, name: str, model: Any, *, training_data: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None, algorithm: str = "",
        adapter: str = DEFAULT_ADAPTER, kind: str | None = None,
        input_schema: InputSchema | dict[str, Any] | None = None,
    ) -> ModelMeta:
        """Save ``model`` through ``adapter`` as the next version of ``name`` and return its
        metadata. ``kind`` and ``input_schema`` default to the model's own attributes of
        those names (a plug-in's model may say them), else digits; a tabular model needs a
        schema, and an image kind none."""
        kind, schema = _kind_and_schema(model, kind, input_schema)
        writer = adapter_for(adapter)
        version = self._next_version(name)
        folder = self.root / name / str(version)
        staging = self.root / name / f".staging-{version}-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=False)
        artifact = staging / writer.artifact
        features = len(schema) if schema is not None else math.prod(SAMPLE_KINDS[kind][0])
        writer.save(model, artifact, features)
        meta = ModelMeta(
            name=name, version=version, sha256=_sha256(artifact), created_at=time.time(),
            algorithm=algorithm or type(model).__name__, training_data=training_data or {},
            metrics=metrics or {}, classes=[int(c) for c in getattr(model, "classes_", [])],
            adapter=adapter, artifact=writer.artifact, kind=kind,
            input_schema=None if schema is None else schema.to_dict(),
        )
        (staging / META).write_text(json.dumps(meta.to_dict(), indent=2))
        os.rename(staging, folder)  # the version appears whole or not at all
        return meta

    def _next_version(self, name: str) -> int:
        """One past every numbered folder, finished or not (a crash never blocks a version)."""
        folder = self.root / name
        if not folder.is_dir():
            return 1
        return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) + 1

    def meta(self, name: str, version: int | None = None) -> ModelMeta:
        version = self.latest(name) if version is None else version
        if version is None:
            raise RegistryError(
                f"no model named '{name}' in {self.root}; train one: edgewise train {name}"
            )
        path = self.root / name / str(version) / META
        try:
            return ModelMeta(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise RegistryError(f"model {name} version {version} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"model {name} v{version} has unreadable metadata: {exc}") from None

    def artifact_path(self, meta: ModelMeta) -> Path:
        """Where a version's artifact lies (its file name comes from its metadata, which the
        adapter named: never a path of the metadata's choosing)."""
        if Path(meta.artifact).name != meta.artifact or meta.artifact in ("", META, ".", ".."):
            raise RegistryError(f"model {meta.name} v{meta.version}: artifact name "
                                f"{meta.artifact[:80]!r} is not a file name")
        return self.root / meta.name / str(meta.version) / meta.artifact

    def load(self, name: str, version: int | None = None) -> tuple[Any, ModelMeta]:
        """Load a verified model: the sha256 must match, then its adapter reads it (skops
        building trusted types only)."""
        meta = self.meta(name, version)
        artifact = self.artifact_path(meta)
        if not artifact.is_file():
            raise RegistryError(f"model {name} v{meta.version}: artifact {artifact} is missing")
        actual = _sha256(artifact)
        if actual != meta.sha256:
            raise RegistryError(
                f"model {name} v{meta.version} was tampered with: sha256 {actual[:12]}… "
                f"does not match the registered {meta.sha256[:12]}…"
            )
        what = f"model {name} v{meta.version}"
        try:
            model = adapter_for(meta.adapter).load(artifact)
        except RegistryError as exc:
            raise RegistryError(f"{what}: {exc}") from None
        except Exception as exc:  # a plug-in that fails on its own artifact
            raise RegistryError(f"{what}: adapter {meta.adapter} failed to load it: "
                                f"{type(exc).__name__}: {str(exc)[:200]}") from None
        return check_served(model, what), meta


def _kind_and_schema(model: Any, kind: str | None, schema: Any
                     ) -> tuple[str, InputSchema | None]:
    """The kind and schema to record: given, else the model's own, else digits."""
    kind = kind if kind is not None else getattr(model, "kind", DEFAULT_KIND)
    if schema is None:
        schema = getattr(model, "input_schema", None)
    if not isinstance(kind, str) or not known_kind(kind):
        raise RegistryError(f"unknown sample kind {str(kind)[:50]!r}")
    if isinstance(schema, dict):
        try:
            schema = InputSchema.from_dict(schema)
        except ValueError as exc:
            raise RegistryError(f"bad input schema: {exc}") from None
    if (kind == TABULAR) != (schema is not None):
        raise RegistryError("a tabular model needs an input schema, and only a tabular one")
    return kind, schema


PROMOTED = "promoted.json"
DECISION = "decision.json"
#: Promotions remembered per model (rollback walks back through them).
MAX_PROMOTIONS = 100


class PromotionLog:
    """Which version of a model is promoted (served), and the promotions before it.

    Kept in ``<root>/<name>/promoted.json``, replaced atomically. With no promotion yet the
    newest registered version is served, as before promotions existed; a candidate must
    therefore be registered only after the served version was pinned (``pin``).
    """

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.path = registry.root / name / PROMOTED

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": None, "history": [], "shadow": None}
        except ValueError as exc:
            raise RegistryError(f"{self.path} is unreadable: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("history"), list):
            raise RegistryError(f"{self.path} is not a promotion log")
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        doc["history"] = doc["history"][-MAX_PROMOTIONS:]
        staging = self.path.with_name(f".{PROMOTED}.{os.getpid()}")
        staging.write_text(json.dumps(doc, indent=2))
        os.replace(staging, self.path)

    def served(self) -> int | None:
        """The promoted version, or the newest registered one when none was promoted."""
        version = self._read()["version"]
        return int(version) if version is not None else self.registry.latest(self.name)

    def history(self) -> list[dict[str, Any]]:
        return list(self._read()["history"])

    def pin(self) -> int | None:
        """Record the version served now as promoted, if nothing was promoted yet."""
        doc = self._read()
        if doc["version"] is None and self.registry.latest(self.name) is not None:
            return self.promote(int(self.registry.latest(self.name)), "served before "
                                "promotions were recorded")
        return self.served()

    def promote(self, version: int, reason: str) -> int:
        """Serve ``version`` from now on (it must load: sha256 and types checked)."""
        self.registry.load(self.name, version)
        doc = self._read()
        doc["version"] = int(version)
        doc["history"].append({"version": int(version), "at": time.time(), "reason": reason})
        self._write(doc)
        return int(version)

    def shadow(self) -> dict[str, Any] | None:
        """The candidate scored in shadow beside the served version, if one is:
        ``{"version", "against", "since", "samples"}``."""
        entry = self._read().get("shadow")
        return dict(entry) if isinstance(entry, dict) else None

    def start_shadow(self, version: int, samples: int) -> None:
        """Have score workers score ``version`` beside the served one for ``samples``
        samples (it must load: sha256 and types checked); its predictions go nowhere."""
        self.registry.load(self.name, version)
        doc = self._read()
        doc["shadow"] = {"version": int(version), "against": self.served(),
                         "since": time.time(), "samples": int(samples)}
        self._write(doc)

    def end_shadow(self, version: int) -> bool:
        """Stop scoring ``version`` in shadow (a later candidate's shadow stays); True if
        it was the one."""
        doc = self._read()
        entry = doc.get("shadow")
        if not isinstance(entry, dict) or entry.get("version") != int(version):
            return False
        doc["shadow"] = None
        self._write(doc)
        return True

    def rollback(self, reason: str = "rollback") -> int:
        """Serve again the version promoted before the current one."""
        doc = self._read()
        current = doc["version"]
        earlier = [h["version"] for h in doc["history"] if h["version"] != current]
        if current is None or not earlier:
            raise RegistryError(f"model {self.name}: no earlier promoted version to roll "
                                "back to")
        return self.promote(int(earlier[-1]), reason)


def record_decision(registry: ModelRegistry, name: str, version: int,
                    decision: dict[str, Any]) -> None:
    """Keep what was decided about a version (promoted or rejected, why, on which data and
    figures) beside its metadata, which stays as registered."""
    path = registry.root / name / str(version) / DECISION
    staging = path.with_name(f".{DECISION}.{os.getpid()}")
    staging.write_text(json.dumps(decision, indent=2))
    os.replace(staging, path)


def read_decision(registry: ModelRegistry, name: str, version: int) -> dict[str, Any] | None:
    """What was decided about a version, if anything."""
    try:
        return json.loads((registry.root / name / str(version) / DECISION).read_text())
    except (FileNotFoundError, ValueError):
        return None

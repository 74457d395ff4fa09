"""The model registry: versioned artifacts in a directory, saved with skops, never pickle.

Layout: ``<root>/<name>/<version>/model.skops`` beside ``meta.json`` (name, version,
sha256, training-data summary, metrics, created_at). Loading checks the sha256 first (a
changed artifact is refused) and then lets skops build only types on our allow-list. The
sha256 sits beside the artifact, so it catches corruption and careless edits, not an
attacker who can write both files; the type allow-list is what stops code from loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import skops.io as sio

ARTIFACT = "model.skops"
META = "meta.json"

#: Types skops may build beyond the ones it trusts by default, by exact name. Nothing
#: callable (``builtins.eval``, numpy ufuncs, functions) is ever on this list.
TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})


class RegistryError(RuntimeError):
    """A model is missing, tampered with, or built from types we do not trust."""


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    ) -> ModelMeta:
        """Save ``model`` as the next version of ``name`` and return its metadata."""
        version = self._next_version(name)
        folder = self.root / name / str(version)
        staging = self.root / name / f".staging-{version}-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=False)
        artifact = staging / ARTIFACT
        sio.dump(model, artifact)
        meta = ModelMeta(
            name=name, version=version, sha256=_sha256(artifact), created_at=time.time(),
            algorithm=algorithm or type(model).__name__, training_data=training_data or {},
            metrics=metrics or {}, classes=[int(c) for c in getattr(model, "classes_", [])],
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

    def load(self, name: str, version: int | None = None) -> tuple[Any, ModelMeta]:
        """Load a verified model: sha256 must match and every type must be trusted."""
        meta = self.meta(name, version)
        artifact = self.root / name / str(meta.version) / ARTIFACT
        if not artifact.is_file():
            raise RegistryError(f"model {name} v{meta.version}: artifact {artifact} is missing")
        actual = _sha256(artifact)
        if actual != meta.sha256:
            raise RegistryError(
                f"model {name} v{meta.version} was tampered with: sha256 {actual[:12]}… "
                f"does not match the registered {meta.sha256[:12]}…"
            )
        try:
            untrusted = sio.get_untrusted_types(file=artifact)
        except Exception as exc:  # skops raises assorted errors on corrupt archives
            raise RegistryError(f"model {name} v{meta.version} is unreadable: {exc}") from None
        refused = [t for t in untrusted if t not in TRUSTED_TYPES]
        if refused:
            raise RegistryError(
                f"model {name} v{meta.version} needs untrusted types: {', '.join(refused)}"
            )
        model = sio.load(artifact, trusted=untrusted)
        return model, meta


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

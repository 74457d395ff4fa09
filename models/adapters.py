"""Model adapters: how a registered version's artifact is written and served, whatever
library made the model. The registry records which adapter wrote each version
(``ModelMeta.adapter``) and loads it through the same one; the score stage only ever sees
what an adapter serves.

Built in: ``skops`` (scikit-learn estimators, loaded with a type allow-list, never pickle)
and ``onnx`` (scikit-learn models exported with skl2onnx, served by onnxruntime). More come
from any installed package, by entry point in the group ``edgewise.models``::

    [project.entry-points."edgewise.models"]
    centroid = "my_models.centroid:CentroidAdapter"

The entry point names a class (or any callable taking no arguments) whose instances have

- ``artifact: str``: the artifact's file name in the version folder (``model.bin``);
- ``save(model, path, features)``: write a fitted ``model`` reading ``features`` columns;
- ``load(path) -> served model``: read it back, after the registry checked its sha256.

A served model has ``classes_`` (the class labels, whole numbers, in the order of the
columns of ``predict_proba``) and ``predict_proba(rows)``: rows is an (n, features) float
array (NaN: missing, for the tabular kind), the answer (n, len(classes_)) probabilities. It
may also have ``kind`` and ``input_schema`` (an ``InputSchema`` or its dict): registering
takes them when none are given. The names ``skops`` and ``onnx`` stay the built-ins'. A
plug-in is code installed in the environment: it is trusted as that package is.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgewise.models.errors import RegistryError
from edgewise.models.onnx_adapter import OnnxAdapter
from edgewise.models.skops_adapter import SkopsAdapter

ENTRY_POINT_GROUP = "edgewise.models"
DEFAULT_ADAPTER = "skops"
log = logging.getLogger("edgewise.models")


@runtime_checkable
class ServedModel(Protocol):
    """What an adapter serves: class labels and batched probabilities."""

    classes_: Any

    def predict_proba(self, rows: np.ndarray) -> Any: ...


class ModelAdapter(Protocol):
    """How one format of model is written and read."""

    artifact: str

    def save(self, model: Any, path: Path, features: int) -> None: ...

    def load(self, path: Path) -> ServedModel: ...


BUILT_IN: dict[str, type[Any]] = {"skops": SkopsAdapter, "onnx": OnnxAdapter}


def installed_adapters() -> dict[str, Any]:
    """The adapters' entry points by name: the built-ins and every installed plug-in (a
    plug-in taking a built-in's name is ignored, and said so)."""
    found: dict[str, Any] = dict(BUILT_IN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in BUILT_IN:
            log.warning("models: ignoring the plug-in %s (%s): %r is a built-in adapter",
                        point.name, point.value, point.name)
            continue
        found.setdefault(point.name, point)
    return found


def adapter_for(name: str) -> ModelAdapter:
    """The adapter called ``name``, ready to use; RegistryError when none is installed."""
    known = installed_adapters()
    if name not in known:
        raise RegistryError(f"no model adapter {name!r} is installed (installed: "
                            f"{', '.join(sorted(known))}; plug-ins register in the entry "
                            f"point group {ENTRY_POINT_GROUP!r})")
    factory = known[name]
    try:
        if not isinstance(factory, type):
            factory = factory.load()
        adapter = factory()
    except Exception as exc:  # a broken plug-in: say which, never a traceback
        raise RegistryError(f"model adapter {name!r} does not load: "
                            f"{type(exc).__name__}: {exc}") from None
    artifact = getattr(adapter, "artifact", None)
    if (not isinstance(artifact, str) or not artifact or "/" in artifact
            or artifact.startswith(".") or artifact == "meta.json"):
        raise RegistryError(f"model adapter {name!r} names no usable artifact file "
                            f"({artifact!r})")
    return adapter


def check_served(model: Any, what: str) -> Any:
    """``model`` when it has class labels and ``predict_proba``; RegistryError otherwise."""
    if not callable(getattr(model, "predict_proba", None)) or getattr(
            model, "classes_", None) is None:
        raise RegistryError(f"{what} has no predict_proba and classes_: not a model the "
                            "score stage can serve")
    return model

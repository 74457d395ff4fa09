"""The ONNX adapter: a scikit-learn model exported with skl2onnx, served by onnxruntime.

An ONNX graph is data, not code, so loading one runs nothing of its author's. The export
keeps the class labels in the model's metadata (``edgewise.classes``) and the
probabilities as a plain (n, classes) tensor (no ZipMap), which is what ``predict_proba``
answers. onnxruntime runs one thread per call here: the worker shares its cores with the
broker and the other stages. Both libraries are imported only when an ONNX model is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgewise.models.errors import RegistryError

CLASSES_KEY = "edgewise.classes"
INPUT_NAME = "rows"


def export_onnx(model: Any, features: int) -> bytes:
    """The ONNX bytes of a fitted scikit-learn classifier (a pipeline too) reading
    ``features`` float columns, with its class labels recorded."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    classes = [int(c) for c in model.classes_]
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    graph = to_onnx(model, initial_types=[(INPUT_NAME, FloatTensorType([None, features]))],
                    options={id(final): {"zipmap": False}})
    entry = graph.metadata_props.add()
    entry.key, entry.value = CLASSES_KEY, ",".join(map(str, classes))
    return graph.SerializeToString()


class OnnxModel:
    """An onnxruntime session answering like a scikit-learn classifier."""

    def __init__(self, data: bytes, what: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, options,
                                                providers=["CPUExecutionProvider"])
            labels = self.session.get_modelmeta().custom_metadata_map[CLASSES_KEY]
            self.classes_ = np.array([int(c) for c in labels.split(",")], dtype=np.int64)
        except Exception as exc:  # not ONNX, or not exported by edgewise
            raise RegistryError(f"{what} is not a usable ONNX classifier: "
                                f"{type(exc).__name__}: {str(exc)[:200]}") from None
        self.input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        if "probabilities" not in outputs:
            raise RegistryError(f"{what} has no probabilities output (outputs: {outputs})")
        self.output = "probabilities"

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        [probs] = self.session.run([self.output], {self.input: rows})
        return probs


class OnnxAdapter:
    """scikit-learn models as ``model.onnx``."""

    artifact = "model.onnx"

    def save(self, model: Any, path: Path, features: int) -> None:
        path.write_bytes(export_onnx(model, features))

    def load(self, path: Path) -> OnnxModel:
        return OnnxModel(path.read_bytes(), str(path))

"""The input schema of a tabular model: its features, in the order the model reads them,
each with a type and whether it may be missing.

It is recorded with the model version in the registry (``ModelMeta.input_schema``), read
by the ingest endpoint to validate rows before they are accepted, and by the score stage
to refuse a batch the served model was not made for. A missing value travels as NaN (JSON
``null`` at the boundary): a feature that may not be missing refuses it, as do a whole
number that is not whole and a boolean that is neither 0 nor 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgewise.app.core.bounds import MAX_FEATURES, is_int
from edgewise.app.core.frames import BadInput

FEATURE_TYPES = ("number", "integer", "boolean")
#: Fields of an ingested row that are not features: a feature may not be called so.
RESERVED_NAMES = frozenset({"id", "device", "ts", "timestamp", "label"})
MAX_NAME_LENGTH = 100


@dataclass(frozen=True, slots=True)
class Feature:
    """One input column: its name, its type and whether it may be missing (null)."""

    name: str
    type: str = "number"
    missing: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "missing": self.missing}


@dataclass(frozen=True)
class InputSchema:
    """The features a tabular model reads, in order."""

    features: tuple[Feature, ...]
    required: np.ndarray = field(init=False, repr=False, compare=False)  # may not be missing
    whole: np.ndarray = field(init=False, repr=False, compare=False)  # integer or boolean
    flags: np.ndarray = field(init=False, repr=False, compare=False)  # boolean

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if not 1 <= len(names) <= MAX_FEATURES:
            raise ValueError(f"a schema has 1..{MAX_FEATURES} features, not {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError("a feature is named twice")
        for feature in self.features:
            if (not isinstance(feature.name, str) or not 1 <= len(feature.name) <= MAX_NAME_LENGTH
                    or not feature.name.isprintable()):
                raise ValueError(f"feature name {str(feature.name)[:120]!r} must be 1.."
                                 f"{MAX_NAME_LENGTH} printable characters")
            if feature.name in RESERVED_NAMES:
                raise ValueError(f"feature name {feature.name!r} is reserved for the row's "
                                 f"{feature.name} (reserved: {', '.join(sorted(RESERVED_NAMES))})")
            if feature.type not in FEATURE_TYPES:
                raise ValueError(f"feature {feature.name!r}: type {feature.type!r} is not one "
                                 f"of {', '.join(FEATURE_TYPES)}")
            if not isinstance(feature.missing, bool):
                raise ValueError(f"feature {feature.name!r}: missing must be true or false")
        object.__setattr__(self, "required", np.array([not f.missing for f in self.features]))
        object.__setattr__(self, "whole", np.array([f.type != "number" for f in self.features]))
        object.__setattr__(self, "flags", np.array([f.type == "boolean" for f in self.features]))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, doc: Any) -> InputSchema:
        """A schema from its JSON form; ValueError saying what is wrong."""
        if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
            raise ValueError("an input schema is an object with a list of features")
        features = []
        for entry in doc["features"]:
            if not isinstance(entry, dict) or set(entry) - {"name", "type", "missing"}:
                raise ValueError(f"a feature is {{name, type, missing}}, not {str(entry)[:120]}")
            features.append(Feature(entry.get("name"), entry.get("type", "number"),
                                    entry.get("missing", True)))
        return cls(tuple(features))

    def check_rows(self, rows: np.ndarray) -> None:
        """Rows (float32, NaN: missing) as this schema allows them: its width, no missing
        value where the feature may not be missing, whole numbers for integer features and
        0 or 1 for boolean ones. BadInput naming the first feature at fault."""
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise BadInput("wrong_shape", f"rows of {rows.shape[1:]} features, the model reads "
                                          f"{len(self.features)}")
        missing = np.isnan(rows)
        bad = missing & self.required
        if bad.any():
            raise BadInput("missing_not_allowed",
                           f"{self.features[int(np.nonzero(bad.any(axis=0))[0][0])].name} "
                           "may not be missing")
        if self.whole.any():
            present = np.where(missing, 0.0, rows)
            bad = self.whole & (present != np.round(present))
            bad |= self.flags & (present != 0) & (present != 1)
            if bad.any():
                feature = self.features[int(np.nonzero(bad.any(axis=0))[0][0])]
                what = "0 or 1" if feature.type == "boolean" else "a whole number"
                raise BadInput("bad_feature", f"{feature.name} must be {what}")


def check_schema_value(feature: Feature, value: Any) -> None:
    """One JSON value for ``feature``, for the message when a row's types are wrong."""
    if value is None:
        if not feature.missing:
            raise BadInput("missing_not_allowed", f"{feature.name} may not be missing")
        return
    if feature.type == "boolean":
        if not isinstance(value, bool):
            raise BadInput("bad_feature", f"{feature.name} must be true, false or null")
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("bad_feature", f"{feature.name} must be a number or null, not "
                                      f"{type(value).__name__}")
    if feature.type == "integer" and not (is_int(value) or float(value).is_integer()):
        raise BadInput("bad_feature", f"{feature.name} must be a whole number")

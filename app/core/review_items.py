"""Review items as they travel on the review topic: parsed and validated as dicts.

The review stage keeps them in its table and the image sink stores their pixels, so both
validate them the same way, here. The review topic is written by route and the image sink
only, but it is a topic like any other: anyone with access can write to it, so an item is
checked field by field (types, ranges, time, sizes) before either stage trusts it.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from edgewise.app.core.bounds import (
    DEFAULT_FUTURE_SKEW_SECONDS,
    MAX_FEATURES,
    MAX_LABEL,
    MAX_TOP_K,
    check_device,
    check_ids,
    check_model,
    check_size,
    check_time,
    is_int,
    is_number,
)
from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.records import SCHEMA_VERSION, TABULAR, ReviewItem

MAX_DIMS = 4
MAX_TEXT = 2000  # reason, image_url, kind: short texts a person reads
DEFAULT_MAX_BYTES = 4_000_000  # the settings' default


def _check_shape(doc: dict[str, Any]) -> None:
    """``shape`` must be 1-4 positive ints; with inline pixels, their product is the size.

    Checked here, not when the image is drawn: a bad shape once made numpy raise
    ValueError/TypeError deep inside the image sink and stop the stage.
    """
    shape = doc["shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or not all(is_int(n) and n > 0 for n in shape)):
        raise BadInput("bad_field", f"shape must be 1-{MAX_DIMS} positive ints, not "
                                    f"{str(shape)[:100]}")
    image_b64 = doc["image_b64"]
    if not isinstance(image_b64, str):
        raise BadInput("bad_field", "image_b64 must be a string")
    if image_b64:
        try:
            size = len(base64.b64decode(image_b64, validate=True))
        except (binascii.Error, ValueError):
            raise BadInput("bad_pixels", "image_b64 is not valid base64") from None
        if math.prod(shape) != size:
            raise BadInput("wrong_shape", f"{size} bytes do not fill shape {shape}")


def _check_row(doc: dict[str, Any]) -> None:
    """A tabular item carries its row (numbers, null where missing) and no image; the row
    fills ``shape``. Any other item carries no row."""
    row = doc.get("row")
    if doc.get("kind") != TABULAR:
        if row is not None:
            raise BadInput("bad_field", "only a tabular item carries a row")
        return
    if not isinstance(row, list) or not 1 <= len(row) <= MAX_FEATURES:
        raise BadInput("bad_field", f"a tabular item's row must be a list of 1..{MAX_FEATURES} "
                                    "numbers or nulls")
    if not all(v is None or is_number(v) for v in row):
        raise BadInput("bad_field", "a row's values must be finite numbers or null (missing)")
    if doc["shape"] != [len(row)] or doc["image_b64"]:
        raise BadInput("wrong_shape", f"a tabular item's shape is [{len(row)}], with no image")


def _check_label(value: Any, what: str, unknown_allowed: bool) -> None:
    if value is None and unknown_allowed:
        return
    if not is_int(value) or not 0 <= value <= MAX_LABEL:
        raise BadInput("bad_label", f"{what} must be a class number 0..{MAX_LABEL}, not "
                                    f"{str(value)[:50]}")


def _check_scores(doc: dict[str, Any]) -> None:
    """Confidence in 0..1, margin in -1..1, top-k a short list of (label, probability)."""
    confidence, margin = doc["confidence"], doc["margin"]
    if not is_number(confidence) or not 0.0 <= confidence <= 1.0:
        raise BadInput("out_of_range", f"confidence must be a number in 0..1, not "
                                       f"{str(confidence)[:50]}")
    if not is_number(margin) or not -1.0 <= margin <= 1.0:
        raise BadInput("out_of_range", f"margin must be a number in -1..1, not "
                                       f"{str(margin)[:50]}")
    top_k = doc["top_k"]
    if not isinstance(top_k, list) or len(top_k) > MAX_TOP_K:
        raise BadInput("bad_top_k", f"top_k must be a list of at most {MAX_TOP_K} pairs")
    for pair in top_k:
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadInput("bad_top_k", "top_k entries must be [label, probability]")
        _check_label(pair[0], "a top_k label", unknown_allowed=False)
        if not is_number(pair[1]) or not 0.0 <= pair[1] <= 1.0:
            raise BadInput("bad_top_k", "top_k probabilities must lie in 0..1")


def parse_review_item(
    raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES, *,
    future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> dict[str, Any]:
    """A review item as a dict, validated; BadInput otherwise."""
    check_size(raw, max_bytes)
    return check_review_item(json_object(raw, "review item"), future_skew=future_skew, now=now)


def check_review_item(
    doc: Any, *, future_skew: float = DEFAULT_FUTURE_SKEW_SECONDS, now: float | None = None,
) -> dict[str, Any]:
    """A parsed review item, validated field by field (its timestamp made a float, Faust's
    ``__faust`` marker dropped: ``doc`` is changed); BadInput otherwise."""
    if not isinstance(doc, dict):
        raise BadInput("bad_json", "review item is not a JSON object")
    doc.pop("__faust", None)
    missing = [f for f in ReviewItem._options.fields if f not in doc and
               f not in ReviewItem._options.defaults]
    if missing:
        raise BadInput("missing_field", ", ".join(sorted(missing)))
    schema = doc.get("schema", SCHEMA_VERSION)
    if not is_int(schema) or schema != SCHEMA_VERSION:
        raise BadInput("unknown_schema_version", f"schema {str(schema)[:50]}")
    if not isinstance(doc["id"], str):
        raise BadInput("bad_field", "id must be a string")
    check_ids([doc["id"]], "id")
    check_device(doc["device"])
    check_model(doc["model"], doc["model_version"])
    _check_label(doc["label"], "label", unknown_allowed=False)
    _check_label(doc.get("true_label"), "true_label", unknown_allowed=True)
    _check_scores(doc)
    doc["timestamp"] = check_time(doc["timestamp"], "timestamp", future_skew, now)
    for name in ("reason", "image_url", "kind"):
        value = doc.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise BadInput("bad_field", f"{name} must be a string of at most {MAX_TEXT}")
    _check_shape(doc)
    _check_row(doc)
    return doc

"""Review items as they travel on the review topic: parsed and validated as dicts.

The review stage keeps them in its table and the image sink stores their pixels, so both
validate them the same way, here.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from edgewise.app.core.frames import BadInput, json_object
from edgewise.app.core.records import ReviewItem

MAX_TIMESTAMP = 32_503_680_000.0  # 3000-01-01 UTC: later dates overflow datetime maths
MAX_DIMS = 4


def _is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` must not pass as a label)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(doc: dict[str, Any]) -> None:
    """``shape`` must be 1-4 positive ints; with inline pixels, their product is the size.

    Checked here, not when the image is drawn: a bad shape once made numpy raise
    ValueError/TypeError deep inside the image sink and stop the stage.
    """
    shape = doc["shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or not all(_is_int(n) and n > 0 for n in shape)):
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


def parse_review_item(raw: bytes) -> dict[str, Any]:
    """A review item as a dict, validated; BadInput otherwise."""
    doc = json_object(raw, "review item")
    doc.pop("__faust", None)
    missing = [f for f in ReviewItem._options.fields if f not in doc and
               f not in ReviewItem._options.defaults]
    if missing:
        raise BadInput("missing_field", ", ".join(sorted(missing)))
    if not isinstance(doc["id"], str) or not isinstance(doc["confidence"], int | float):
        raise BadInput("bad_field", "id must be a string and confidence a number")
    if not all(isinstance(doc[f], str) for f in ("device", "model")):
        raise BadInput("bad_field", "device and model must be strings")
    if not all(_is_int(doc[f]) for f in ("label", "model_version")):
        raise BadInput("bad_field", "label and model_version must be ints")
    ts = doc["timestamp"]
    if (not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts)
            or not 0 < ts < MAX_TIMESTAMP):
        raise BadInput("bad_field", f"timestamp must be seconds in (0, year 3000), not "
                                    f"{str(ts)[:50]}")
    _check_shape(doc)
    return doc

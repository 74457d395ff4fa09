"""The image a person reviews: a review item's pixels as a PNG.

Digits are 8x8 values in 0..16; they are stretched to 0..255 (exactly: ``v * 255 // 16``)
so that any image viewer shows them, and kept at their real size: the reviewer sees the
very pixels the model saw. Colour crops (faces) are stored as they came (BGR, as OpenCV
writes PNGs).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from edgewise.app.core.frames import BadInput
from edgewise.app.core.records import SAMPLE_KINDS


def pixels_png(pixels: np.ndarray, kind: str) -> bytes:
    """PNG of one sample's pixels, scaled from the kind's value range to 0..255."""
    from edgewise.models.faces import encode_png  # OpenCV is an extra: load it when needed

    image = np.asarray(pixels)
    if kind in SAMPLE_KINDS:
        _, low, high = SAMPLE_KINDS[kind]
        scaled = (image.astype(np.float64) - low) * 255.0 / (high - low)
        image = np.clip(np.floor(scaled + 1e-9), 0, 255).astype(np.uint8)
    return encode_png(np.ascontiguousarray(image.astype(np.uint8)))


def review_png(item: dict[str, Any]) -> bytes:
    """PNG of the pixels a review item carries inline (``image_b64`` and ``shape``)."""
    try:
        raw = base64.b64decode(item.get("image_b64") or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("bad_pixels", "image_b64 is not valid base64") from None
    shape = tuple(int(n) for n in item.get("shape") or ())
    if not raw or not shape or int(np.prod(shape)) != len(raw) or len(shape) not in (2, 3):
        raise BadInput("wrong_shape", f"{len(raw)} bytes do not fill shape {shape}")
    pixels = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    return pixels_png(pixels, str(item.get("kind") or "digits"))

"""Face detection for edge cameras, with OpenCV's bundled Haar cascade.

The edge camera stage needs a detector that runs on a small CPU, ships inside the
``opencv-python-headless`` wheel (nothing is downloaded at run time) and says how sure
it is, so that the route stage can send doubtful faces to people. A Haar cascade is all
three: ``detectMultiScale3(..., outputRejectLevels=True)`` reports, for each detection,
the summed weak-classifier votes of the cascade's final stage (its "level weight").

Confidence mapping
------------------
A window is accepted when the final-stage vote sum is above that stage's threshold
(-2.99 for ``haarcascade_frontalface_default.xml``). We take the *margin* above that
threshold and squash it with a logistic::

    margin     = level_weight - final_stage_threshold
    confidence = 1 / (1 + exp(-(margin - MARGIN_MIDPOINT) / MARGIN_SCALE))

with ``MARGIN_MIDPOINT = 4`` and ``MARGIN_SCALE = 1.5``. Measured on the sample portraits
used by the tests (astronaut, Grace Hopper): the clear frontal faces score 0.87-0.99; the
stray windows that only survive with ``min_neighbors=0`` or ``1`` score 0.07-0.36. The number is
monotonic in the cascade's own certainty, which is what routing needs; it is not a
calibrated probability. Should an OpenCV build report a detection that stopped before the
last stage (reject level below the number of stages), the confidence is further scaled by
the fraction of stages passed.

Thread safety: the cascade is loaded once per process and shared; OpenCV does not promise
that one ``CascadeClassifier`` may be used from several threads at once, so detection is
serialised by a lock (OpenCV already parallelises inside one call).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
MARGIN_MIDPOINT = 4.0
MARGIN_SCALE = 1.5
MIN_FRAME_SIDE = 24  # the cascade's training window is 24x24 pixels
MAX_FRAME_SIDE = 8192  # bounds the work one frame can cost; far above any camera we ingest

ChannelOrder = Literal["bgr", "rgb"]

_detect_lock = threading.Lock()


class FaceCascadeMissingError(RuntimeError):
    """The Haar cascade file is absent or unreadable: the OpenCV install is broken."""


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face: a box in frame pixels and the detector's confidence in [0, 1]."""

    x: int
    y: int
    w: int
    h: int
    confidence: float


@dataclass(frozen=True, slots=True)
class _LoadedCascade:
    classifier: cv2.CascadeClassifier
    stage_count: int
    final_stage_threshold: float


def cascade_path() -> Path:
    """Where the bundled frontal-face cascade lives inside the OpenCV wheel."""
    return Path(cv2.data.haarcascades) / CASCADE_FILE


@cache
def _load_cascade() -> _LoadedCascade:
    """Load the classifier and its final-stage threshold once per process."""
    path = cascade_path()
    if not path.is_file():
        raise FaceCascadeMissingError(
            f"Haar cascade not found at {path}; reinstall opencv-python-headless<5"
        )
    classifier = cv2.CascadeClassifier(str(path))
    if classifier.empty():
        raise FaceCascadeMissingError(f"OpenCV could not load the Haar cascade at {path}")
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        stages = storage.getNode("cascade").getNode("stages")
        stage_count = int(stages.size())
        if stage_count == 0:
            raise FaceCascadeMissingError(f"Haar cascade at {path} has no stages")
        threshold = float(stages.at(stage_count - 1).getNode("stageThreshold").real())
    finally:
        storage.release()
    return _LoadedCascade(classifier, stage_count, threshold)


def level_weight_to_confidence(
    level_weight: float, reject_level: int, stage_count: int, final_stage_threshold: float
) -> float:
    """Turn a cascade's final-stage vote into a confidence in [0, 1] (see module docstring)."""
    margin = level_weight - final_stage_threshold
    squashed = 1.0 / (1.0 + math.exp(-(margin - MARGIN_MIDPOINT) / MARGIN_SCALE))
    stages_passed = min(max(reject_level, 0), stage_count) / stage_count
    return min(max(squashed * stages_passed, 0.0), 1.0)


def _validate_frame(frame: object) -> np.ndarray:
    """Reject anything a camera would not send, before OpenCV turns it into a C++ error."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must have dtype uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"frame must have 1, 3 or 4 channels, got {frame.shape[2]}")
    if frame.ndim not in (2, 3):
        raise ValueError(f"frame must be 2-D (gray) or 3-D (colour), got shape {frame.shape}")
    height, width = frame.shape[:2]
    if min(height, width) < MIN_FRAME_SIDE:
        raise ValueError(f"frame is {width}x{height}; each side must be >= {MIN_FRAME_SIDE}")
    if max(height, width) > MAX_FRAME_SIDE:
        raise ValueError(f"frame is {width}x{height}; each side must be <= {MAX_FRAME_SIDE}")
    return frame


def to_gray(frame: np.ndarray, channel_order: ChannelOrder = "bgr") -> np.ndarray:
    """Collapse a validated frame to one 8-bit channel, which is what the cascade reads.

    The channel order only changes the luma weights slightly; detection works either way,
    but passing the right one keeps the gray image faithful.
    """
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    channels = frame.shape[2]
    if channels == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    if channels == 3:
        code = cv2.COLOR_BGR2GRAY if channel_order == "bgr" else cv2.COLOR_RGB2GRAY
    else:
        code = cv2.COLOR_BGRA2GRAY if channel_order == "bgr" else cv2.COLOR_RGBA2GRAY
    return cv2.cvtColor(np.ascontiguousarray(frame), code)


def detect_faces(
    frame: np.ndarray,
    *,
    channel_order: ChannelOrder = "bgr",
    scale_factor: float = 1.1,
    min_neighbors: int = 5,
    min_size: tuple[int, int] = (30, 30),
    equalize_histogram: bool = True,
) -> list[Face]:
    """Find frontal faces in one camera frame, most confident first.

    ``frame`` is uint8, either gray (H, W) / (H, W, 1) or colour (H, W, 3|4) in
    ``channel_order``. Histogram equalisation is on by default because edge cameras see
    poor, uneven light. ``min_neighbors`` trades recall for precision: the default of 5
    keeps lone spurious windows out. Raises ValueError for input a camera would not send.
    """
    _validate_frame(frame)
    if scale_factor <= 1.0:
        raise ValueError(f"scale_factor must be > 1.0, got {scale_factor}")
    if min_neighbors < 0:
        raise ValueError(f"min_neighbors must be >= 0, got {min_neighbors}")
    cascade = _load_cascade()
    gray = to_gray(frame, channel_order)
    if equalize_histogram:
        gray = cv2.equalizeHist(gray)
    with _detect_lock:
        boxes, levels, weights = cascade.classifier.detectMultiScale3(
            gray,
            scaleFactor=scale_factor,
            minNeighbors=min_neighbors,
            minSize=min_size,
            outputRejectLevels=True,
        )
    faces = [
        Face(
            x=int(box[0]),
            y=int(box[1]),
            w=int(box[2]),
            h=int(box[3]),
            confidence=level_weight_to_confidence(
                float(weight), int(level), cascade.stage_count, cascade.final_stage_threshold
            ),
        )
        for box, level, weight in zip(boxes, levels, weights, strict=True)
    ]
    faces.sort(key=lambda face: face.confidence, reverse=True)
    return faces


def crop_face(frame: np.ndarray, face: Face, *, margin: float = 0.0) -> np.ndarray:
    """Cut a face out of its frame, as an independent copy that is safe to keep.

    ``margin`` widens the box by that fraction of its size on each side (useful because
    Haar boxes are tight around the eyes and mouth); the box is clipped to the frame.
    """
    _validate_frame(frame)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if face.w <= 0 or face.h <= 0:
        raise ValueError(f"face box must have positive size, got {face.w}x{face.h}")
    pad_x, pad_y = round(face.w * margin), round(face.h * margin)
    height, width = frame.shape[:2]
    left, top = max(face.x - pad_x, 0), max(face.y - pad_y, 0)
    right = min(face.x + face.w + pad_x, width)
    bottom = min(face.y + face.h + pad_y, height)
    if right <= left or bottom <= top:
        raise ValueError(f"face box {face} lies outside the {width}x{height} frame")
    return frame[top:bottom, left:right].copy()


def encode_png(img: np.ndarray, *, channel_order: ChannelOrder = "bgr") -> bytes:
    """Encode an image losslessly for the wire or the object store.

    PNG keeps the exact pixels a reviewer will relabel. OpenCV writes colour as BGR, so an
    RGB image is reordered first to keep its colours right in any viewer.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array")
    if img.ndim not in (2, 3) or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-D or 3-D array, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must have 1, 3 or 4 channels, got {img.shape[2]}")
    if channel_order == "rgb" and img.ndim == 3 and img.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        img = cv2.cvtColor(img, code)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {img.shape} as PNG")
    return buffer.tobytes()

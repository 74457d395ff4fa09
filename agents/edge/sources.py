"""Where an edge's frames and samples come from: ``--source`` of ``edgewise edge``.

- ``camera:N``     OpenCV capture device N (a webcam), frame after frame;
- ``video:PATH``   a video file, once through;
- ``images:DIR``   the images of a directory in name order, once through;
- ``faces-sample`` two portraits that ship with the test dependencies (matplotlib's Grace
  Hopper, scikit-image's astronaut), over and over: a camera with faces, offline;
- ``digits``       scikit-learn's 8x8 digits, a share of them made harder, with their
  true labels: a micro-edge that knows the truth, so accuracy can be measured.

Frame sources hand out BGR uint8 images, as OpenCV captures them. Nothing is downloaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgewise.models.digits import digit_images, make_harder

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
SOURCES = "camera:N, video:PATH, images:DIR, faces-sample, digits"


class EdgeSourceError(ValueError):
    """The source cannot be opened; the message says what to do."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--source`` value."""

    kind: str  # camera, video, images, faces-sample, digits
    arg: str = ""

    @property
    def gives_frames(self) -> bool:
        return self.kind != "digits"


def parse_source(text: str) -> SourceSpec:
    """``camera:0`` → SourceSpec("camera", "0"); EdgeSourceError for anything else."""
    kind, _, arg = text.partition(":")
    if kind in ("digits", "faces-sample") and not arg:
        return SourceSpec(kind)
    if kind == "camera" and arg.isdigit():
        return SourceSpec(kind, arg)
    if kind in ("video", "images") and arg:
        return SourceSpec(kind, arg)
    raise EdgeSourceError(f"unknown source {text!r}; sources: {SOURCES}")


def _capture_frames(capture: cv2.VideoCapture, what: str, endless: bool) -> Iterator[np.ndarray]:
    if not capture.isOpened():
        raise EdgeSourceError(f"OpenCV cannot open {what}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                if endless:
                    raise EdgeSourceError(f"{what} stopped giving frames")
                return
            yield frame
    finally:
        capture.release()


def _directory_frames(folder: Path) -> Iterator[np.ndarray]:
    if not folder.is_dir():
        raise EdgeSourceError(f"images directory {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EdgeSourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    for path in files:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is not None:  # an unreadable file is skipped, as a camera skips a frame
            yield frame


def sample_portraits() -> list[np.ndarray]:
    """The offline face images, BGR: Grace Hopper (matplotlib) and the astronaut (skimage)."""
    portraits = []
    try:
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is not None:
            portraits.append(frame)
    except ImportError:
        pass
    try:
        from skimage import data

        portraits.append(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    except ImportError:
        pass
    if not portraits:
        raise EdgeSourceError("faces-sample needs matplotlib or scikit-image "
                              "(pip install 'edgewise[test]'), or use images:DIR")
    return portraits


def open_frames(spec: SourceSpec) -> Iterator[np.ndarray]:
    """Frames of a frame source (BGR uint8)."""
    if spec.kind == "camera":
        return _capture_frames(cv2.VideoCapture(int(spec.arg)), f"camera {spec.arg}", True)
    if spec.kind == "video":
        if not Path(spec.arg).is_file():
            raise EdgeSourceError(f"video file {spec.arg} does not exist")
        return _capture_frames(cv2.VideoCapture(spec.arg), f"video {spec.arg}", False)
    if spec.kind == "images":
        return _directory_frames(Path(spec.arg))
    if spec.kind == "faces-sample":
        return itertools.cycle(sample_portraits())
    raise EdgeSourceError(f"{spec.kind} is not a frame source")


class DigitSource:
    """Random bundled digits, ``hard_share`` of them made harder, with their true labels."""

    def __init__(self, hard_share: float, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.images, self.labels = digit_images()
        self.hard = make_harder(self.images, self.rng)
        self.hard_share = hard_share

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` digits: pixels (n, 8, 8) uint8 and labels (n,) int32."""
        pick = self.rng.integers(len(self.images), size=n)
        harder = self.rng.random(n) < self.hard_share
        pixels = np.where(harder[:, None, None], self.hard[pick], self.images[pick])
        return pixels.astype(np.uint8), self.labels[pick].astype(np.int32)

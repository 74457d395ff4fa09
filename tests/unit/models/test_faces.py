"""Face detection on the sample portraits that ship inside our test dependencies.

scikit-image's astronaut (Eileen Collins, RGB) and matplotlib's Grace Hopper (a JPEG
read by OpenCV as BGR) are clear frontal portraits with one face each; both files are
inside installed wheels, so nothing is downloaded.
"""

from __future__ import annotations

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data

from edgewise.models.faces import (
    Face,
    crop_face,
    detect_faces,
    encode_png,
    level_weight_to_confidence,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def grace_hopper_bgr() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert frame is not None, f"could not read {path}"
    return frame


def _centre_inside(face: Face, box: tuple[int, int, int, int]) -> bool:
    left, top, right, bottom = box
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    return left <= cx <= right and top <= cy <= bottom


def test_finds_the_astronaut_face(astronaut_rgb: np.ndarray) -> None:
    faces = detect_faces(astronaut_rgb, channel_order="rgb")
    assert len(faces) == 1
    face = faces[0]
    # Her face sits around x 180-270, y 65-160 in the 512x512 image.
    assert _centre_inside(face, (190, 80, 260, 150))
    assert 70 <= face.w <= 130
    assert face.confidence > 0.8


def test_finds_grace_hopper(grace_hopper_bgr: np.ndarray) -> None:
    faces = detect_faces(grace_hopper_bgr)
    assert len(faces) == 1
    face = faces[0]
    # Her face sits around x 155-380, y 100-330 in the 512x600 image.
    assert _centre_inside(face, (220, 170, 310, 260))
    assert 180 <= face.w <= 280
    assert face.confidence > 0.7


def test_grayscale_frames_are_accepted(grace_hopper_bgr: np.ndarray) -> None:
    gray = cv2.cvtColor(grace_hopper_bgr, cv2.COLOR_BGR2GRAY)
    assert len(detect_faces(gray)) == 1
    assert len(detect_faces(gray[:, :, np.newaxis])) == 1


def test_four_channel_frames_are_accepted(astronaut_rgb: np.ndarray) -> None:
    rgba = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2RGBA)
    assert len(detect_faces(rgba, channel_order="rgb")) == 1


@pytest.mark.parametrize("value", [0, 128, 255])
def test_no_face_in_a_blank_frame(value: int) -> None:
    frame = np.full((480, 640, 3), value, dtype=np.uint8)
    assert detect_faces(frame) == []


def test_no_face_in_noise() -> None:
    noise = np.random.default_rng(7).integers(0, 256, (480, 640), dtype=np.uint8)
    assert detect_faces(noise) == []


def test_weaker_detections_get_lower_confidence(astronaut_rgb: np.ndarray) -> None:
    # With min_neighbors=0 every raw window comes back; the grouped face must outrank them.
    raw = detect_faces(astronaut_rgb, channel_order="rgb", min_neighbors=0)
    assert len(raw) > 1
    assert all(0.0 <= face.confidence <= 1.0 for face in raw)
    confidences = [face.confidence for face in raw]
    assert confidences == sorted(confidences, reverse=True)
    assert confidences[-1] < confidences[0]


def test_confidence_mapping_is_monotonic_and_bounded() -> None:
    weights = [-50.0, -3.0, 0.0, 1.0, 3.0, 6.0, 50.0]
    confidences = [level_weight_to_confidence(w, 25, 25, -2.99) for w in weights]
    assert confidences == sorted(confidences)
    assert confidences[0] >= 0.0 and confidences[-1] <= 1.0
    assert level_weight_to_confidence(1.01, 25, 25, -2.99) == pytest.approx(0.5)
    # A window that stopped before the last stage is trusted proportionally less.
    assert level_weight_to_confidence(6.0, 20, 25, -2.99) < level_weight_to_confidence(
        6.0, 25, 25, -2.99
    )


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ([[0, 1], [2, 3]], "numpy array"),
        (np.zeros((100, 100), dtype=np.float32), "uint8"),
        (np.zeros((100, 100, 3), dtype=np.int64), "uint8"),
        (np.zeros(10_000, dtype=np.uint8), "2-D"),
        (np.zeros((2, 100, 100, 3), dtype=np.uint8), "2-D"),
        (np.zeros((100, 100, 2), dtype=np.uint8), "channels"),
        (np.zeros((0, 0), dtype=np.uint8), ">= 24"),
        (np.zeros((10, 400), dtype=np.uint8), ">= 24"),
        (np.zeros((24, 9000), dtype=np.uint8), "<= 8192"),
    ],
)
def test_bad_frames_raise_a_clear_value_error(frame: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_faces(frame)  # type: ignore[arg-type]


def test_bad_parameters_raise_value_error(astronaut_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="scale_factor"):
        detect_faces(astronaut_rgb, scale_factor=1.0)
    with pytest.raises(ValueError, match="min_neighbors"):
        detect_faces(astronaut_rgb, min_neighbors=-1)


def test_face_is_frozen() -> None:
    face = Face(1, 2, 3, 4, 0.5)
    with pytest.raises(AttributeError):
        face.x = 5  # type: ignore[misc]


def test_crop_face_is_a_copy_of_the_box(grace_hopper_bgr: np.ndarray) -> None:
    face = Face(x=10, y=20, w=30, h=40, confidence=0.9)
    crop = crop_face(grace_hopper_bgr, face)
    assert crop.shape == (40, 30, 3)
    np.testing.assert_array_equal(crop, grace_hopper_bgr[20:60, 10:40])
    crop[:] = 0
    assert grace_hopper_bgr[20:60, 10:40].any(), "crop must not alias the frame"


def test_crop_face_margin_is_clipped_to_the_frame(grace_hopper_bgr: np.ndarray) -> None:
    height, width = grace_hopper_bgr.shape[:2]
    corner = Face(x=0, y=0, w=50, h=50, confidence=0.9)
    assert crop_face(grace_hopper_bgr, corner, margin=0.2).shape == (60, 60, 3)
    edge = Face(x=width - 40, y=height - 40, w=40, h=40, confidence=0.9)
    assert crop_face(grace_hopper_bgr, edge, margin=0.5).shape == (60, 60, 3)


def test_crop_face_rejects_boxes_outside_the_frame(grace_hopper_bgr: np.ndarray) -> None:
    with pytest.raises(ValueError, match="outside"):
        crop_face(grace_hopper_bgr, Face(x=5000, y=5000, w=10, h=10, confidence=0.5))
    with pytest.raises(ValueError, match="positive size"):
        crop_face(grace_hopper_bgr, Face(x=0, y=0, w=0, h=10, confidence=0.5))
    with pytest.raises(ValueError, match="margin"):
        crop_face(grace_hopper_bgr, Face(x=0, y=0, w=10, h=10, confidence=0.5), margin=-1)


def test_encode_png_round_trips_a_detected_face(grace_hopper_bgr: np.ndarray) -> None:
    face = detect_faces(grace_hopper_bgr)[0]
    crop = crop_face(grace_hopper_bgr, face)
    png = encode_png(crop)
    assert png.startswith(PNG_SIGNATURE)
    decoded = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, crop)


def test_encode_png_keeps_rgb_colours(astronaut_rgb: np.ndarray) -> None:
    png = encode_png(astronaut_rgb, channel_order="rgb")
    decoded_bgr = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded_bgr[:, :, ::-1], astronaut_rgb)


def test_encode_png_grayscale() -> None:
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    decoded = cv2.imdecode(np.frombuffer(encode_png(gray), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, gray)


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((0, 0), dtype=np.uint8),
        np.zeros((8, 8), dtype=np.float64),
        np.zeros((8, 8, 2), dtype=np.uint8),
        "not an image",
    ],
)
def test_encode_png_rejects_bad_images(img: object) -> None:
    with pytest.raises(ValueError):
        encode_png(img)  # type: ignore[arg-type]

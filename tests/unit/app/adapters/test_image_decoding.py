"""Images from outside: the header read and held to the pixel limit before decoding, the
decoded size the header's, cut-short and forged files refused with their reasons, and any
bytes at all refused as BadInput, never a crash; camera frames and images as 8x8 digits."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.app.adapters.image_decoding import decode_gray, frame_to_digit, image_header
from edgewise.app.core.frames import BadInput

LIMIT = 4096 * 4096


def encoded(extension: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, image)
    assert ok
    return buffer.tobytes()


def gradient(width: int, height: int, channels: int = 0) -> np.ndarray:
    image = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
    return np.dstack([image] * channels) if channels else image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


@pytest.mark.parametrize("extension,kind,channels", [
    (".png", "png", 0), (".png", "png", 3), (".jpg", "jpeg", 0), (".jpg", "jpeg", 3),
    (".bmp", "bmp", 3), (".webp", "webp", 3), (".pgm", "pnm", 0), (".ppm", "pnm", 3)])
def test_every_format_states_its_size_and_decodes_to_it(extension: str, kind: str,
                                                        channels: int) -> None:
    data = encoded(extension, gradient(37, 23, channels))
    header = image_header(data)
    assert (header.format, header.width, header.height) == (kind, 37, 23)
    gray = decode_gray(data, LIMIT)
    assert gray.shape == (23, 37) and gray.dtype == np.uint8
    if extension in (".png", ".pgm") and not channels:
        assert np.array_equal(gray, gradient(37, 23))  # lossless, gray: the very pixels


def test_a_canvas_over_the_limit_is_refused_before_it_is_decoded() -> None:
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    bomb = (b"\x89PNG\r\n\x1a\n" + header
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100_001 * 64)) + png_chunk(b"IEND", b""))
    started = time.perf_counter()
    with pytest.raises(BadInput) as refused:
        decode_gray(bomb, LIMIT)
    assert refused.value.reason == "too_many_pixels" and "100000x100000" in refused.value.detail
    assert time.perf_counter() - started < 0.05
    with pytest.raises(BadInput, match="too_many_pixels"):
        decode_gray(encoded(".jpg", gradient(300, 200)), 300 * 200 - 1)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_an_image_cut_short_is_corrupt(extension: str) -> None:
    data = encoded(extension, gradient(64, 64, 3))
    for cut in (len(data) // 2, len(data) - 20):
        with pytest.raises(BadInput) as refused:
            decode_gray(data[:cut], LIMIT)
        assert refused.value.reason == "corrupt_image", refused.value


def test_a_header_that_lies_about_the_size_is_corrupt() -> None:
    data = bytearray(encoded(".png", gradient(40, 30)))
    data[16:24] = struct.pack(">II", 41, 30)  # IHDR's width, its CRC now wrong
    with pytest.raises(BadInput, match="corrupt_image"):
        decode_gray(bytes(data), LIMIT)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"GIF89a" + bytes(40), "unsupported_format"),
    (b"hello, this is text", "unsupported_format"), (b"\x89PNG\r\n\x1a\n", "corrupt_image"),
    (b"\xff\xd8\xff\xe0\x00\x01", "corrupt_image"), (b"BM" + bytes(10), "corrupt_image"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8Z", "corrupt_image"), (b"P5\n# no size\n", "corrupt_image"),
    (b"P5 0 7 255\n", "corrupt_image")])
def test_what_is_not_an_image_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as refused:
        decode_gray(data, LIMIT)
    assert refused.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\x00\x00\x00\x00WEBP",
                        b"P5 ", b"P6\n"]), st.binary(max_size=300))
def test_any_bytes_are_an_image_or_bad_input(prefix: bytes, body: bytes) -> None:
    try:
        gray = decode_gray(prefix + body, 10_000)
    except BadInput as refused:
        assert refused.reason in {"empty", "unsupported_format", "corrupt_image",
                                  "too_many_pixels"}
    else:
        assert gray.dtype == np.uint8 and gray.ndim == 2 and gray.size <= 10_000


'''"$(cat /tmp/digit_test.py)"'''

def test_a_digit_sized_image_comes_back_as_the_digit_it_was() -> None:
    digit = np.random.default_rng(1).integers(0, 17, (8, 8)).astype(np.uint8)
    image = cv2.resize((digit.astype(np.uint16) * 255 // 16).astype(np.uint8), (32, 32),
                       interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(frame_to_digit(decode_gray(encoded(".png", image), LIMIT)), digit)

"""The refs stage under ``test_context()`` on images in the image directory: references in
every form become digit samples with the pixels and labels of their images, and a missing,
oversize, escaping, corrupt or oversized-canvas image, a bucket not configured or a
message that is no reference is dead-lettered with its reason while the stage goes on."""

from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest

from edgewise.agents import refs
from edgewise.models.digits import digit_images
from tests.fixtures.stages import StageRun, build_stage, drive, next_value

MAX_OBJECT = 20_000


def digit_image(digit: np.ndarray, side: int = 32) -> np.ndarray:
    """A digit (0..16) as a gray picture of ``side`` pixels, as a scanner would send it."""
    return cv2.resize((digit.astype(np.uint16) * 255 // 16).astype(np.uint8), (side, side),
                      interpolation=cv2.INTER_NEAREST)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def huge_canvas() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture
def stage(tmp_path: Path) -> tuple[StageRun, Path, np.ndarray, np.ndarray]:
    images = tmp_path / "images"
    (images / "digits").mkdir(parents=True)
    pixels, labels = digit_images()
    for i in range(6):
        (images / "digits" / f"{i}.png").write_bytes(png(digit_image(pixels[i])))
    (images / "digits" / "0.png.json").write_text(orjson.dumps({"label": str(labels[0])})
                                                   .decode())  # the local store's metadata
    (images / "broken.png").write_bytes(png(digit_image(pixels[0]))[:150])
    (images / "noise.png").write_bytes(os.urandom(500))
    (images / "big.png").write_bytes(png(np.random.default_rng(1).integers(
        0, 256, (200, 200), dtype=np.uint8)))
    (images / "canvas.png").write_bytes(huge_canvas())
    (images / "bad-label.png").write_bytes(png(digit_image(pixels[1])))
    (images / "bad-label.png.json").write_text('{"label": "seven"}')
    (tmp_path / "secret.png").write_bytes(png(digit_image(pixels[2])))
    (images / "link.png").symlink_to(tmp_path / "secret.png")
    run = build_stage(refs.register, "edgewise.refs", tmp_path, ["unit-samples"],
                      refs_max_object_bytes=MAX_OBJECT, refs_max_pixels=512 * 512,
                      refs_buckets="images", refs_device="scanner")
    assert len(png(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8))) \
        > MAX_OBJECT
    return run, images, pixels, labels


async def test_references_become_digit_samples_and_bad_ones_dead_letters(
        stage: tuple[StageRun, Path, np.ndarray, np.ndarray]) -> None:
    run, images, pixels, labels = stage
    good: list[tuple[bytes, list[tuple[str, int, int]]]] = [
        (b"digits/0.png", [("file:digits/0.png", 0, int(labels[0]))]),
        (b"digits/1.png\ndigits/2.png\n", [("file:digits/1.png", 1, -1),
                                           ("file:digits/2.png", 2, -1)]),
        (orjson.dumps({"url": "file:digits/3.png", "id": "scan-3", "label": 7,
                       "device": "desk"}), [("scan-3", 3, 7)]),
        (orjson.dumps(["digits/4.png", {"url": "digits/./5.png", "label": 5}]),
         [("file:digits/4.png", 4, -1), ("file:digits/5.png", 5, 5)]),
    ]
    hostile: list[tuple[bytes, str]] = [
        (b"digits/missing.png", "object_missing"),
        (b"digits", "object_missing"),  # a directory
        (b"broken.png", "corrupt_image"),
        (b"noise.png", "unsupported_format"),
        (b"big.png", "object_too_large"),
        (b"canvas.png", "too_many_pixels"),
        (b"bad-label.png", "bad_label"),
        (b"link.png", "outside_image_dir"),
        (b"../secret.png", "outside_image_dir"),
        (b"s3://elsewhere/a.png", "bucket_not_allowed"),
        (orjson.dumps({"url": "digits/0.png", "size": 3}), "unknown_field"),
        (b"\xff\xfe", "bad_utf8"),
        (b"", "empty"),
    ]
    messages: list[tuple[bytes, str | None]] = []
    for (data, _), (bad, reason) in zip(good * 4, hostile, strict=False):
        messages += [(data, None), (bad, reason)]
    expected = iter([want for data, want in good * 4])

    async def sampled(_: bytes) -> None:
        batch = run.ctx.boundary.samples(await next_value(run.outputs["unit-samples"]))
        want = next(expected)
        assert batch.kind == "digits" and batch.pixels.shape == (len(want), 8, 8)
        assert batch.ids == [sample_id for sample_id, _, _ in want]
        assert batch.device == ("desk" if batch.ids == ["scan-3"] else "scanner")
        for i, (_, index, label) in enumerate(want):
            assert np.array_equal(batch.pixels[i], pixels[index])  # lossless, 4x4 blocks
            assert batch.labels[i] == label

    async with run.agent.test_context() as agent:
        await drive(run, agent, "refs", messages, sampled)
    assert run.reasons == Counter(reason for _, reason in hostile)


async def test_an_s3_test_event_and_removals_are_ignored_without_a_dead_letter(
        stage: tuple[StageRun, Path, np.ndarray, np.ndarray]) -> None:
    run, *_ = stage
    quiet: list[Any] = [{"Service": "Amazon S3", "Event": "s3:TestEvent"}, {"Records": [
        {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "images"},
                                                     "object": {"key": "a.png"}}}]}]
    async with run.agent.test_context() as agent:
        for doc in quiet:
            await agent.put(orjson.dumps(doc))
        await agent.put(b"noise.png")  # its dead letter comes after the quiet ones' turn
        letter = orjson.loads(await next_value(run.dead))
    assert letter["reason"] == "unsupported_format"
    assert run.ctx.metrics.events_out.labels("refs")._value.get() == 0

"""The digit simulator: batch sizes, ids, devices in turn, labels, pixels, hard share."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.agents.simulate import DigitSimulator
from edgewise.app.core.records import SAMPLE_KINDS
from edgewise.app.core.wire import decode_sample_batch, encode_sample_batch
from edgewise.models.digits import digit_images, make_harder

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def originals() -> set[bytes]:
    """Every bundled digit image, as bytes, to tell plain samples from harder ones."""
    images, _ = digit_images()
    return {image.tobytes() for image in images}


def share_not_original(simulator: DigitSimulator, originals: set[bytes], samples: int) -> float:
    batch = simulator.next_batch(samples, now=T0)
    return float(np.mean([image.tobytes() not in originals for image in batch.pixels]))


def test_batches_have_the_set_size_or_the_asked_one() -> None:
    simulator = DigitSimulator(devices=2, batch_size=8, hard_share=0.2, seed=1)
    assert len(simulator.next_batch()) == 8
    batch = simulator.next_batch(size=3, now=T0)
    assert len(batch) == 3
    assert batch.pixels.shape == (3, 8, 8)
    assert batch.labels.shape == batch.timestamps.shape == (3,)
    assert batch.timestamps.tolist() == [T0] * 3


def test_devices_take_turns() -> None:
    simulator = DigitSimulator(devices=3, batch_size=2, hard_share=0.0, seed=1)
    devices = [simulator.next_batch().device for _ in range(7)]
    assert devices == ["device-000", "device-001", "device-002"] * 2 + ["device-000"]


def test_ids_are_unique_across_batches_and_devices() -> None:
    simulator = DigitSimulator(devices=3, batch_size=5, hard_share=0.2, seed=1, run="r1")
    batches = [simulator.next_batch() for _ in range(9)]
    every_id = [sid for batch in batches for sid in batch.ids]
    assert len(every_id) == len(set(every_id)) == 45
    assert batches[0].ids[0] == "device-000-r1-0"
    assert batches[3].ids[0] == "device-000-r1-5"  # the device's sequence carries on
    assert all(sid.startswith(batch.device) for batch in batches for sid in batch.ids)


def test_two_runs_do_not_share_ids() -> None:
    first = DigitSimulator(devices=1, batch_size=4, hard_share=0.0, seed=1)
    second = DigitSimulator(devices=1, batch_size=4, hard_share=0.0, seed=1)
    assert first.run != second.run
    assert not set(first.next_batch().ids) & set(second.next_batch().ids)


def test_labels_and_pixels_are_valid_digits() -> None:
    simulator = DigitSimulator(devices=2, batch_size=200, hard_share=0.5, seed=2)
    batch = simulator.next_batch(now=T0)
    assert batch.kind == "digits"
    assert batch.labels.dtype == np.int32 and batch.pixels.dtype == np.uint8
    assert set(batch.labels.tolist()) <= set(range(10))
    assert len(set(batch.labels.tolist())) == 10
    _, low, high = SAMPLE_KINDS["digits"]
    assert low <= batch.pixels.min() and batch.pixels.max() <= high


def test_batches_pass_the_wire_gate() -> None:
    simulator = DigitSimulator(devices=2, batch_size=32, hard_share=0.5, seed=3)
    batch = simulator.next_batch()
    back = decode_sample_batch(encode_sample_batch(batch), 1_000_000, 4096)
    assert back.ids == batch.ids
    np.testing.assert_array_equal(back.pixels, batch.pixels)


def test_hard_share_zero_sends_only_original_digits(originals: set[bytes]) -> None:
    simulator = DigitSimulator(devices=1, batch_size=1, hard_share=0.0, seed=4)
    assert share_not_original(simulator, originals, 500) == 0.0


def test_hard_share_one_sends_only_harder_digits(originals: set[bytes]) -> None:
    simulator = DigitSimulator(devices=1, batch_size=1, hard_share=1.0, seed=4)
    assert share_not_original(simulator, originals, 500) > 0.95


def test_hard_share_is_roughly_respected(originals: set[bytes]) -> None:
    simulator = DigitSimulator(devices=1, batch_size=1, hard_share=0.3, seed=5)
    assert 0.22 < share_not_original(simulator, originals, 2000) < 0.38


def test_same_label_goes_with_the_harder_image() -> None:
    """A harder sample is the same digit made worse: its truth must not change."""
    simulator = DigitSimulator(devices=1, batch_size=1, hard_share=1.0, seed=6)
    _, labels = digit_images()
    by_label: dict[bytes, set[int]] = {}
    for image, label in zip(simulator.hard, labels, strict=True):
        by_label.setdefault(image.tobytes(), set()).add(int(label))
    batch = simulator.next_batch(300)
    for image, label in zip(batch.pixels, batch.labels, strict=True):
        assert int(label) in by_label[image.tobytes()]


def test_make_harder_changes_images_but_keeps_the_range() -> None:
    images, _ = digit_images()
    sample = images[:200]
    harder = make_harder(sample, np.random.default_rng(0))
    assert harder.shape == sample.shape and harder.dtype == np.uint8
    assert harder.max() <= 16
    changed = (harder != sample).any(axis=(1, 2))
    assert changed.mean() > 0.95
    np.testing.assert_array_equal(sample, images[:200])  # the input is not modified

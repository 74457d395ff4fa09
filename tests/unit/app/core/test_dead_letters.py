"""The one dead-letter path: the original kept whole when it fits, cut with its length and
sha256 when not; every letter under the limit; logged once per stage and reason; counted."""

from __future__ import annotations

import base64
import hashlib
import logging

import orjson
import pytest

from edgewise.app.core.dead_letters import DeadLetterPath, encode_dead_letter
from edgewise.app.core.frames import BadInput
from edgewise.app.core.metrics import StageMetrics

LIMIT = 10_000


def test_a_small_original_is_kept_whole() -> None:
    value = encode_dead_letter("score", "bad_json", "not json", b"{nope", "t", b"k", LIMIT)
    doc = orjson.loads(value)
    assert base64.b64decode(doc["original_b64"]) == b"{nope"
    assert doc["truncated"] is False and doc["original_length"] == 5
    assert doc["original_sha256"] == hashlib.sha256(b"{nope").hexdigest()
    assert base64.b64decode(doc["key_b64"]) == b"k"


@pytest.mark.parametrize("size", [LIMIT // 2, LIMIT, 10 * LIMIT])
def test_a_large_original_is_cut_to_fit_with_its_identity(size: int) -> None:
    original = bytes(range(256)) * (size // 256 + 1)
    value = encode_dead_letter("bridge", "oversize", "x" * 10_000, original, "s" * 5_000,
                               b"k" * 5_000, LIMIT)
    assert len(value) <= LIMIT
    doc = orjson.loads(value)
    kept = base64.b64decode(doc["original_b64"])
    assert doc["truncated"] is True and 0 < len(kept) < len(original)
    assert original.startswith(kept)
    assert doc["original_length"] == len(original)
    assert doc["original_sha256"] == hashlib.sha256(original).hexdigest()


def test_the_path_counts_every_letter_and_logs_each_reason_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = StageMetrics()
    path = DeadLetterPath("p-dead-letters", LIMIT, metrics)
    with caplog.at_level(logging.WARNING, logger="edgewise"):
        for _ in range(3):
            key, value = path.letter("route", BadInput("nan", "NaN label"), b"raw", "p-preds")
        path.letter("route", ValueError("boom"), b"raw", "p-preds")
        path.letter("score", BadInput("nan", "NaN pixel"), b"raw", "p-samples")
    assert key == b"route" and orjson.loads(value)["reason"] == "nan"
    assert len(caplog.records) == 3  # (route, nan), (route, ValueError), (score, nan)
    text = metrics.exposition().decode()
    assert 'edgewise_dead_letters_total{reason="nan",stage="route"} 3.0' in text
    assert 'edgewise_dead_letters_total{reason="ValueError",stage="route"} 1.0' in text
    assert metrics.totals.dead_letters == 5

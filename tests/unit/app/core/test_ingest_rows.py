"""Bodies of ``POST /api/ingest``: JSON rows, arrays and NDJSON held to a schema, packed per
device, and every way a body can be wrong refused with its reason."""

from __future__ import annotations

import itertools
import time

import numpy as np
import orjson
import pytest

from edgewise.app.core.frames import BadInput
from edgewise.app.core.ingest_rows import body_format, frames_within, parse_ingest
from edgewise.app.core.input_schema import Feature, InputSchema

SCHEMA = InputSchema((Feature("temp"), Feature("humidity"), Feature("count", "integer", False)))
NOW = time.time()


def parse(body: bytes | object, content_type: str = "application/json", max_rows: int = 10
          ) -> object:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    counter = itertools.count()
    return parse_ingest(data, content_type, SCHEMA, max_rows=max_rows, default_device="http",
                        new_id=lambda: f"gen-{next(counter)}", now=NOW)


def row(**changes: object) -> dict[str, object]:
    return {"temp": 21.5, "humidity": None, "count": 3, **changes}


def reason(body: bytes | object, content_type: str = "application/json") -> str:
    with pytest.raises(BadInput) as caught:
        parse(body, content_type)
    return caught.value.reason


def test_one_row_an_array_and_ndjson() -> None:
    one = parse(row())
    assert one.ids == ["gen-0"] and one.batches[0].device == "http"
    values = one.batches[0].pixels
    assert values.dtype == np.float32 and values[0, 0] == 21.5 and np.isnan(values[0, 1])
    rows = [row(id="a", device="d1", ts=NOW - 5, label=2), row(id="b", device="d2"),
            row(id="c", device="d1", timestamp=NOW - 1)]
    many = parse(rows)
    assert many.ids == ["a", "b", "c"]
    assert [(b.device, b.ids) for b in many.batches] == [("d1", ["a", "c"]), ("d2", ["b"])]
    assert many.batches[0].labels.tolist() == [2, -1]
    assert many.batches[0].timestamps.tolist() == [NOW - 5, NOW - 1]
    ndjson = b"\n".join(orjson.dumps(r) for r in rows) + b"\n\n"
    assert parse(ndjson, "application/x-ndjson; charset=utf-8").ids == ["a", "b", "c"]


@pytest.mark.parametrize("body,why", [
    (b"", "empty"), (b"{", "bad_json"), (b"\xff\xfe{}", "bad_json"), (b"42", "bad_json"),
    (b'{"temp": NaN}', "bad_json"), (b'{"temp": 1e400}', "bad_json"), ([], "empty_batch"),
    ([row(), 3], "bad_row"), ({"temp": 1, "count": 2}, "missing_field"),
    (row(pressure=3), "unknown_field"), (row(temp="21"), "bad_feature"),
    (row(temp=True), "bad_feature"), (row(temp=[1]), "bad_feature"),
    (row(temp={"v": 1}), "bad_feature"), (row(count=None), "missing_not_allowed"),
    (row(count=2.5), "bad_feature"), (row(temp=1e39), "out_of_range"),
    (row(id=7), "bad_id"), (row(id=""), "bad_id"), (row(id="a\x00"), "bad_id"),
    ([row(id="x"), row(id="x")], "duplicate_ids"), (row(device=""), "bad_device"),
    (row(device=3), "bad_device"), (row(ts="now"), "bad_timestamp"),
    (row(ts=True), "bad_timestamp"), (row(ts=100.0), "bad_timestamp"),
    (row(ts=NOW + 3600), "future_timestamp"), (row(ts=NOW, timestamp=NOW), "bad_timestamp"),
    (row(label=-1), "bad_label"), (row(label=1.5), "bad_label"), (row(label="2"), "bad_label"),
    ([row()] * 11, "too_many_rows"),
])
def test_bad_bodies_are_refused_with_their_reason(body: object, why: str) -> None:
    assert reason(body) == why


def test_ndjson_lines_are_rows_and_counted_before_they_are_parsed() -> None:
    assert reason(b'{"temp": 1}\n[1]', "application/x-ndjson") == "missing_field"
    assert reason(b"{}\n{", "application/x-ndjson") == "bad_json"
    assert reason(b"{}\n" * 11, "application/x-ndjson") == "too_many_rows"


@pytest.mark.parametrize("content_type", [
    "", "text/plain", "application/xml", "multipart/form-data; boundary=x",
    "application/json; charset=latin-1", "application/x-www-form-urlencoded"])
def test_other_media_types_and_charsets_are_unsupported(content_type: str) -> None:
    with pytest.raises(BadInput) as caught:
        body_format(content_type)
    assert caught.value.reason == "unsupported_media_type"


def test_a_large_request_leaves_in_frames_within_the_limits() -> None:
    batch = parse([row(id=f"r{i}") for i in range(10)]).batches[0]
    assert [len(b) for b in frames_within(batch, 4, 10**6)] == [4, 4, 2]
    assert [len(b) for b in frames_within(batch, 100, 300)] == [3, 3, 3, 1]
    parts = frames_within(batch, 4, 10**6)
    assert [i for b in parts for i in b.ids] == batch.ids
    assert np.array_equal(np.concatenate([b.pixels for b in parts]), batch.pixels,
                          equal_nan=True)

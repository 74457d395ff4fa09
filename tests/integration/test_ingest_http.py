"""POST /api/ingest on a real worker (ingest_http, score, route, review, aggregate and
evaluate: one worker for the module, on an embedded broker of the module's own):
hypothesis throws over 1,000 hostile bodies at it over one kept-alive connection and each
is answered 4xx with its reason (the 400s are dead-lettered with their bodies, nothing is
accepted, the worker stays up); 1,000 valid rows with a fifth of their values missing come
back as exactly one prediction each, are counted once in the windows and the evaluation,
and the uncertain ones wait for review with their row; an
ONNX export and a plug-in model (installed with pip, found by its entry point) are
promoted and served by the same score stage; and with the broker gone, requests are
answered 503 and 429 with Retry-After. The broker is stopped by the last test."""

from __future__ import annotations

import asyncio
import collections
import http.client
import importlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewise.app.cli.generate import encode_rows, row_source
from edgewise.app.core.input_schema import InputSchema
from edgewise.app.core.records import TABULAR
from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import TopicNames, create_topics, topic_specs
from edgewise.app.core.wire import decode_prediction_batch
from edgewise.app.services.embedded_broker import EmbeddedBroker
from edgewise.models import tabular
from edgewise.models.adapters import adapter_for
from edgewise.models.registry import ModelRegistry, PromotionLog
from tests.fixtures.kafka import WorkerProcess, consume_until, env_for, start_worker, wait_until
from tests.fixtures.plugins import install_plugin, on_path

pytestmark = pytest.mark.integration

TOKEN = "ingest-token"
MAX_BYTES = 65_536
MAX_ROWS = 50
MAX_IN_FLIGHT = 60  # one request of MAX_ROWS waiting, and a second is one too many
ACK_TIMEOUT = 2.0
REQUIRED = "alcohol"
HOSTILE_BODIES = 1200
STAGES = ["ingest_http", "score", "route", "review", "aggregate", "evaluate"]


@dataclass
class Pipeline:
    broker: EmbeddedBroker
    worker: WorkerProcess
    names: TopicNames
    registry: ModelRegistry
    schema: InputSchema
    trained: tabular.TrainedTabular
    plugin_site: Path
    client: Client


class Client:
    """One kept-alive HTTP connection to the worker (opened again when the server closed
    it, as it may after refusing a body it did not read)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes, content_type: str | None = "application/json",
             token: str | None = TOKEN, path: str = "/api/ingest"
             ) -> tuple[int, dict[str, str], Any]:
        headers = {"Content-Length": str(len(body))}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(2):
            try:
                self.connection.request("POST", path, body=body, headers=headers)
                response = self.connection.getresponse()
                answer = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.connection.close()
                return response.status, dict(response.getheaders()), orjson.loads(answer)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, unique_prefix_module: str
             ) -> Iterator[Pipeline]:
    work = tmp_path_factory.mktemp("ingest")
    registry = ModelRegistry(work / "models")
    trained = tabular.train_tabular(tabular.bundled("wine", 0.2), trees=40,
                                    required=(REQUIRED,))
    registry.register("tabular", trained.model, training_data=trained.training_data,
                      kind=TABULAR, input_schema=trained.schema)
    PromotionLog(registry, "tabular").pin()
    site = install_plugin(work)
    prefix = unique_prefix_module
    settings = Settings(models_dir=registry.root, data_dir=work / "data", topic_prefix=prefix,
                        app_id=prefix, partitions=4)
    with EmbeddedBroker(log_path=work / "tansu.log") as broker:
        create_topics(broker.bootstrap, topic_specs(
            settings, [f"{prefix}-{'-'.join(sorted(STAGES))}"]))
        env = env_for(settings, broker.url, prefix, model_name="tabular", api_token=TOKEN,
                      ingest_max_bytes=MAX_BYTES, ingest_max_rows=MAX_ROWS,
                      ingest_max_in_flight_rows=MAX_IN_FLIGHT,
                      ingest_ack_timeout_seconds=ACK_TIMEOUT, ingest_retry_after_seconds=2,
                      shutdown_seconds=4, tumbling_seconds=60, windows_kept=10)
        env["PYTHONPATH"] = str(site)
        worker = start_worker(env, STAGES, work / "worker.log")
        try:
            client = Client(worker.port)
            wait_until("the ingest producer connected", lambda: worker.get(
                "/api/ingest")["connected"], timeout=30)
            yield Pipeline(broker, worker, TopicNames(prefix), registry, trained.schema,
                           trained, site, client)
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def unique_prefix_module() -> str:
    return f"ti{uuid.uuid4().hex[:8]}"


# -- hostile bodies ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    body: bytes
    status: int
    reason: str
    content_type: str | None = "application/json"
    token: str | None = TOKEN


NAMES = tabular.bundled("wine", 0.0).names
GOOD = dict(zip(NAMES, tabular.bundled("wine", 0.0).x[0].tolist(), strict=True))
counter = iter(range(10**9))


def good_row(**changes: Any) -> dict[str, Any]:
    return {**GOOD, "id": f"hostile-{next(counter)}", **changes}


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def parsed_reason(body: bytes, otherwise: str) -> str:
    """bad_json when the JSON itself is refused (too deep, not UTF-8), else ``otherwise``."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return "bad_json"
    return otherwise


feature = st.sampled_from(NAMES)
wrong_values = st.one_of(st.text(max_size=12), st.booleans(),
                         st.lists(st.integers(-2**63, 2**63 - 1), max_size=3),
                         st.dictionaries(st.text(max_size=4), st.integers(-9, 9), max_size=2))
reserved = set(NAMES) | {"id", "device", "ts", "timestamp", "label"}


@st.composite
def hostile_body(draw: st.DrawFn, kind: int) -> Hostile:
    """A body of one of the kinds of hostility, and the answer it must get."""
    if kind == 0:
        return Hostile(dumps(good_row(**{draw(feature): draw(wrong_values)})), 400,
                       "bad_feature")
    if kind == 1:
        row = good_row()
        del row[draw(feature)]
        return Hostile(dumps(row), 400, "missing_field")
    if kind == 2:
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in reserved))
        return Hostile(dumps(good_row(**{key: 1})), 400, "unknown_field")
    if kind == 3:
        return Hostile(dumps([good_row(), good_row(**{REQUIRED: None})]), 400,
                       "missing_not_allowed")
    if kind == 4:  # NaN and infinities are not JSON
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400",
                                      b"nan", b"inf"]))
        body = dumps(good_row(**{draw(feature): "@@"})).replace(b'"@@"', token)
        return Hostile(body, 400, "bad_json")
    if kind == 5:  # numbers no float32 holds
        if draw(st.booleans()):
            value = draw(st.floats(3.5e38, 1e308)) * draw(st.sampled_from([1, -1]))
            return Hostile(dumps(good_row(**{draw(feature): value})), 400, "out_of_range")
        digits = b"1" + b"0" * draw(st.integers(39, 300))
        body = dumps(good_row(**{draw(feature): "@@"})).replace(b'"@@"', digits)
        return Hostile(body, 400, "out_of_range")
    if kind == 6:  # deep nesting, of the body or of one value
        depth = draw(st.integers(2, 3000))
        if draw(st.booleans()):
            body = b"[" * depth + b"]" * depth
            return Hostile(body, 400, parsed_reason(body, "bad_row"))
        body = dumps(good_row(**{draw(feature): "@@"})).replace(
            b'"@@"', b"[" * depth + b"]" * depth)
        return Hostile(body, 400, parsed_reason(body, "bad_feature"))
    if kind == 7:  # not UTF-8
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80",
                                    b"\xc0\xaf", b"\xfe\xfe"]))
        body = dumps(good_row(id="@@")).replace(b"@@", bad + draw(st.binary(max_size=8)))
        return Hostile(body, 400, "bad_json")
    if kind == 8:
        return Hostile(b"[" + b" " * (MAX_BYTES + draw(st.integers(0, 40_000))) + b"]", 413,
                       "oversize")
    if kind == 9:
        return Hostile(dumps([good_row() for _ in range(MAX_ROWS + draw(st.integers(1, 10)))]),
                       413, "too_many_rows")
    if kind == 10:
        content_type = draw(st.sampled_from([
            None, "", "text/plain", "application/xml", "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x", "application/json; charset=latin-1",
            "image/png", "application/octet-stream", "text/json"]))
        return Hostile(dumps(good_row()), 415, "unsupported_media_type", content_type)
    if kind == 11:  # a good body without the token, or with another
        token = draw(st.sampled_from([None, "wrong", TOKEN + "x", ""]))
        return Hostile(dumps(good_row()), 401, "unauthorized", token=token or None)
    if kind == 12:
        value = draw(st.sampled_from([7, "", "x" * 201, "nul\x00", ["a"], "tab\there"]))
        return Hostile(dumps(good_row(id=value)), 400, "bad_id")
    if kind == 13:
        value = draw(st.sampled_from(["", 7, "x" * 201, None, "bell\x07"]))
        return Hostile(dumps(good_row(device=value)), 400, "bad_device")
    if kind == 14:
        value, why = draw(st.sampled_from([("now", "bad_timestamp"), (True, "bad_timestamp"),
                                          (100.0, "bad_timestamp"),
                                          (time.time() + 86_400, "future_timestamp")]))
        return Hostile(dumps(good_row(ts=value)), 400, why)
    if kind == 15:
        value = draw(st.sampled_from([-1, 1.5, "2", 10**7, [1], True]))
        return Hostile(dumps(good_row(label=value)), 400, "bad_label")
    if kind == 16:
        body, why = draw(st.sampled_from([
            (b"", "empty"), (b"42", "bad_json"), (b'"row"', "bad_json"), (b"null", "bad_json"),
            (b"[]", "empty_batch"), (b"[1, 2]", "bad_row"), (b"{", "bad_json"),
            (b'{"a": 1,}', "bad_json")]))
        return Hostile(body, 400, why)
    ndjson = [dumps(good_row()) for _ in range(draw(st.integers(0, 3)))]
    line, why = draw(st.sampled_from([(b"[1]", "bad_row"), (b"{", "bad_json"),
                                      (dumps({"id": "x"}), "missing_field")]))
    return Hostile(b"\n".join([*ndjson, line]), 400, why, "application/x-ndjson")


KINDS = 18
hostile_bodies = st.one_of([hostile_body(kind) for kind in range(KINDS)])


def test_hostile_bodies_are_each_refused_with_their_reason(pipeline: Pipeline) -> None:
    answered: collections.Counter[tuple[int, str]] = collections.Counter()

    @settings(max_examples=HOSTILE_BODIES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(hostile_bodies)
    def refused(case: Hostile) -> None:
        status, _, answer = pipeline.client.post(case.body, case.content_type, case.token)
        assert (status, answer.get("error")) == (case.status, case.reason), \
            (case.body[:200], case.content_type, answer)
        assert answer["detail"], answer
        answered[(status, case.reason)] += 1

    refused()
    assert sum(answered.values()) >= 1000 and len(answered) == 18, answered  # every reason
    assert {status for status, _ in answered} == {400, 401, 413, 415}
    assert pipeline.worker.get("/healthz")["status"] == "ok"
    refused_400 = sum(n for (status, _), n in answered.items() if status == 400)
    letters = asyncio.run(consume_until(
        pipeline.broker.bootstrap, pipeline.names.dead_letters,
        lambda records: len(records) >= refused_400, timeout=30))
    by_reason = collections.Counter(orjson.loads(r.value)["reason"] for r in letters)
    assert sum(by_reason.values()) == refused_400
    assert by_reason == {r: n for (s, r), n in answered.items() if s == 400}
    accepted = pipeline.worker.get("/metrics")
    assert 'edgewise_ingest_requests_total{reason="accepted"' not in accepted


# -- valid rows --------------------------------------------------------------------------------


def predictions_of(pipeline: Pipeline, ids: set[str], timeout: float = 60.0
                   ) -> tuple[collections.Counter[str], list[Any]]:
    """How many predictions each id has on the predictions topic, once all of ``ids`` do,
    and the prediction batches."""
    def decoded(records: list[Any]) -> list[Any]:
        return [decode_prediction_batch(r.value, 10**8) for r in records]

    records = asyncio.run(consume_until(
        pipeline.broker.bootstrap, pipeline.names.predictions,
        lambda recs: ids <= {i for b in decoded(recs) for i in b.ids}, timeout=timeout))
    return collections.Counter(i for b in decoded(records) for i in b.ids), decoded(records)


def send_rows(pipeline: Pipeline, rows: list[dict[str, Any]]) -> list[str]:
    """Rows as JSON arrays, NDJSON and single rows; every request answered 202."""
    ids: list[str] = []
    chunks = [rows[i:i + MAX_ROWS] for i in range(0, len(rows), MAX_ROWS)]
    for k, chunk in enumerate(chunks):
        if k % 4 == 3:  # one row per request
            for row in chunk:
                status, _, answer = pipeline.client.post(dumps(row))
                assert status == 202, answer
                ids += answer["ids"]
            continue
        body, content_type = encode_rows(chunk, "ndjson" if k % 2 else "json")
        status, _, answer = pipeline.client.post(body, content_type)
        assert status == 202 and answer["accepted"] == len(chunk), answer
        ids += answer["ids"]
    return ids


def test_valid_rows_with_missing_values_are_predicted_once_each(pipeline: Pipeline) -> None:
    rows = list(zip(range(1000), row_source(pipeline.schema, tabular.bundled("wine", 0.0), 0.2,
                                            seed=5, run="valid", devices=6), strict=False))
    rows = [row for _, row in rows]
    ids = send_rows(pipeline, rows)
    assert ids == [r["id"] for r in rows]
    missing = np.mean([[r[n] is None for n in pipeline.schema.names[1:]] for r in rows])
    assert 0.17 < missing < 0.23
    counts, batches = predictions_of(pipeline, set(ids))
    assert set(counts) == set(ids) and set(counts.values()) == {1}, "one prediction per row"
    assert {(b.kind, b.model, b.model_version) for b in batches} == {(TABULAR, "tabular", 1)}
    assert any(np.isnan(b.pixels).any() for b in batches)

    def evaluated() -> Any:
        model = pipeline.worker.get("/api/evaluation")["models"].get("tabular:1")
        return model if model and model["cumulative"]["count"] == len(ids) else None

    model = wait_until("every row evaluated once", evaluated, timeout=30)
    assert model["cumulative"]["accuracy"] > 0.7

    def windowed() -> int:
        total = 0
        for device in pipeline.worker.get("/api/devices")["devices"]:
            view = pipeline.worker.get(f"/api/devices/{device['device']}/windows")
            total += sum(w["total"]["count"] for w in view["current"] + view["closed"])
        return total

    wait_until("every row counted once in the windows", lambda: windowed() == len(ids),
               timeout=30)
    items = pipeline.worker.get("/api/review?limit=1000")["items"]
    assert items and all(item["kind"] == TABULAR and item["image_b64"] == "" for item in items)
    assert all(len(item["row"]) == len(pipeline.schema) for item in items)
    assert any(None in item["row"] for item in items)


# -- adapters: ONNX and a plug-in, served by the same score stage -------------------------------


def serve_and_score(pipeline: Pipeline, version: int, run: str) -> tuple[Any, list[Any]]:
    """Promote ``version``, then send rows until they come back scored by it."""
    PromotionLog(pipeline.registry, "tabular").promote(version, "test")
    source = row_source(pipeline.schema, tabular.bundled("wine", 0.0), 0.2, seed=version,
                        run=run, devices=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = [next(source) for _ in range(MAX_ROWS)]
        ids = set(send_rows(pipeline, rows))
        _, batches = predictions_of(pipeline, ids)
        ours = [b for b in batches if set(b.ids) & ids and b.model_version == version]
        if ours and {i for b in ours for i in b.ids} >= ids:
            return rows, ours
        time.sleep(0.5)
    raise AssertionError(f"version {version} did not score rows within 30 s")


def test_an_onnx_export_and_a_plugin_model_are_served_by_the_same_score_stage(
        pipeline: Pipeline) -> None:
    model = pipeline.trained.model
    onnx = pipeline.registry.register("tabular", model, adapter="onnx", kind=TABULAR,
                                      input_schema=pipeline.schema)
    _, scored = serve_and_score(pipeline, onnx.version, "onnx")
    for batch in scored:
        assert np.array_equal(batch.labels, model.predict(batch.pixels)), "ONNX = sklearn"

    with on_path(pipeline.plugin_site):
        adapter = adapter_for("centroid")  # found through its entry point
        centroid = importlib.import_module(type(adapter).__module__)
        plugin_model = centroid.CentroidModel.fit(
            pipeline.trained.x_test, pipeline.trained.y_test, pipeline.schema.to_dict())
        plugin = pipeline.registry.register("tabular", plugin_model, adapter="centroid")
        assert (plugin.adapter, plugin.kind, plugin.artifact) == (
            "centroid", TABULAR, "centroids.json")
        _, scored = serve_and_score(pipeline, plugin.version, "plugin")
        for batch in scored:
            expected = plugin_model.classes_[plugin_model.predict_proba(batch.pixels).argmax(1)]
            assert np.array_equal(batch.labels, expected), "the plug-in's own answer"
    served = [m for m in pipeline.worker.get("/api/models")["models"] if m["promoted"]]
    assert [(m["version"], m["adapter"]) for m in served] == [(plugin.version, "centroid")]


# -- the broker away: 503 and 429 with Retry-After (last: it stops the broker) ---------------


def test_without_the_broker_requests_are_answered_503_and_429(pipeline: Pipeline) -> None:
    source = row_source(pipeline.schema, tabular.bundled("wine", 0.0), 0.2, seed=9,
                        run="outage", devices=1)
    first_body = dumps([next(source) for _ in range(MAX_ROWS)])
    second_body = dumps([next(source) for _ in range(MAX_ROWS)])
    pipeline.broker.stop()
    first: dict[str, Any] = {}

    def waiting_for_the_ack() -> None:
        started = time.monotonic()
        first["answer"] = Client(pipeline.worker.port).post(first_body)
        first["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=waiting_for_the_ack)
    thread.start()
    wait_until("the first request waits for its acknowledgement",
               lambda: pipeline.worker.get("/api/ingest")["in_flight"] > 0, timeout=5,
               interval=0.05)
    status, headers, answer = Client(pipeline.worker.port).post(second_body)
    assert (status, answer["error"]) == (429, "saturated"), answer
    assert int(headers["Retry-After"]) >= 1
    thread.join(timeout=ACK_TIMEOUT + 10)
    status, headers, answer = first["answer"]
    assert (status, answer["error"]) == (503, "not_acknowledged"), answer
    assert int(headers["Retry-After"]) >= 1 and first["seconds"] < ACK_TIMEOUT + 3
    started = time.monotonic()
    status, headers, answer = pipeline.client.post(second_body)
    assert (status, answer["error"]) == (503, "broker_unavailable"), answer
    assert int(headers["Retry-After"]) >= 1 and time.monotonic() - started < 1.0
    assert pipeline.worker.get("/healthz")["status"] == "ok"

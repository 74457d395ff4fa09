"""The peer of ``bench pipeline``: the same hub stages written the way Faust's examples do,
one event per sample (JSON), one ``predict_proba`` per row, a windowed table updated per
event. Run as its own process: ``python -m edgewise.app.bench.per_event BROKER PREFIX
MODELS WEB_PORT``; ``/progress`` says how many samples its last stages have handled.
"""

from __future__ import annotations

import sys
from typing import Any

import faust
import numpy as np

from edgewise.app.core.settings import load_settings
from edgewise.app.run.runner import run_app_until_stopped
from edgewise.models.registry import ModelRegistry

WINDOW_SECONDS = 10.0
LOW_CONFIDENCE = 0.6


def per_event_app(broker: str, prefix: str, models: str, web_port: int) -> faust.App:
    """Score, route, review, aggregate and evaluate, per event, on ``<prefix>-*`` topics."""
    app = faust.App(f"{prefix}-peer", broker=broker.replace("kafka://", "edgewise://", 1),
                    store="memory://", web_port=web_port, web_host="127.0.0.1",
                    web_bind="127.0.0.1", consumer_auto_offset_reset="earliest",
                    topic_partitions=8, autodiscover=False, web_in_thread=False)
    app.edgewise_fetch_wait_ms = 20  # read by edgewise's transport
    model, _ = ModelRegistry(models).load("digits")
    samples = app.topic(f"{prefix}-samples", value_serializer="json")
    predictions = app.topic(f"{prefix}-predictions", value_serializer="json")
    review = app.topic(f"{prefix}-review", value_serializer="json")
    review_table = app.Table("peer_review", default=dict)
    windows = app.Table("peer_windows", default=int).tumbling(WINDOW_SECONDS, expires=60.0)
    accuracy = app.Table("peer_accuracy", default=int)
    progress = {"aggregate": 0, "evaluate": 0}

    @app.agent(samples)
    async def score(stream: Any) -> None:
        async for sample in stream:
            probs = model.predict_proba(np.asarray(sample["pixels"], np.float64)[None, :])[0]
            label = int(np.argmax(probs))
            await predictions.send(key=sample["device"], value={
                "id": sample["id"], "device": sample["device"], "label": label,
                "confidence": float(probs[label]), "true": sample["label"]})

    @app.agent(predictions)
    async def route(stream: Any) -> None:
        async for prediction in stream:
            if prediction["confidence"] < LOW_CONFIDENCE:
                await review.send(key=prediction["id"], value=prediction)

    @app.agent(review)
    async def keep_review(stream: Any) -> None:
        async for item in stream:
            review_table[item["id"]] = item

    @app.agent(predictions)
    async def aggregate(stream: Any) -> None:
        async for prediction in stream:  # keyed by device already: no repartition
            windows[prediction["device"]] += 1
            progress["aggregate"] += 1

    @app.agent(predictions)
    async def evaluate(stream: Any) -> None:
        async for prediction in stream:
            accuracy[f"{prediction['device']}:seen"] += 1
            accuracy[f"{prediction['device']}:correct"] += int(
                prediction["label"] == prediction["true"])
            progress["evaluate"] += 1

    @app.page("/progress")
    async def show_progress(web: Any, request: Any) -> Any:
        return web.json(progress)

    return app


def main(argv: list[str]) -> None:
    broker, prefix, models, port = argv
    app = per_event_app(broker, prefix, models, int(port))
    sys.argv = [sys.argv[0], "worker"]
    run_app_until_stopped(app, load_settings(None, log_level="warning"))


if __name__ == "__main__":
    main(sys.argv[1:])

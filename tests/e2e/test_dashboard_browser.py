"""The dashboard and the correction station in headless Chromium, against a real worker on
the embedded broker with simulated devices: live figures change without a reload and match
the JSON views; a correction by key press and one by click reach the corrections table and
leave the queue; undo takes the last one back. Screenshots are saved with the test output."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgewise.app.core.settings import Settings
from edgewise.app.core.topics import create_topics, topic_specs
from edgewise.app.services.embedded_broker import EmbeddedBroker
from tests.fixtures.kafka import WorkerProcess, env_for, start_worker, wait_until

pytestmark = pytest.mark.e2e

STAGES = ["simulate", "score", "route", "review", "correct", "aggregate", "evaluate"]
TOKEN = "browser-token"


def get(worker: WorkerProcess, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_js(page: Any, expression: str, errors: list[str], arg: Any = None) -> None:
    """Wait for a condition in the page; on timeout say what the page showed."""
    try:
        page.wait_for_function(expression, arg=arg, timeout=20_000)
    except Exception as exc:
        shown = page.evaluate("[document.getElementById('message')?.textContent,"
                              " document.getElementById('workers')?.textContent,"
                              " JSON.stringify(document.body.dataset)]")
        raise AssertionError(f"{expression} ({arg!r}) never held: page {shown}, "
                             f"errors {errors}") from exc


def pending_ids(worker: WorkerProcess) -> set[str]:
    return {i["id"] for i in get(worker, "/api/fleet/review?limit=500")["items"]}


def corrected_count(worker: WorkerProcess) -> int:
    return get(worker, "/api/dashboard")["corrections"]["corrected"]


def test_dashboard_and_correction_station_in_chromium(
    chromium: Any, embedded_broker: EmbeddedBroker, models_dir: Path, tmp_path: Path,
    unique_prefix: str,
) -> None:
    settings = Settings(models_dir=models_dir, data_dir=tmp_path, topic_prefix=unique_prefix,
                        app_id=unique_prefix, partitions=4)
    create_topics(embedded_broker.bootstrap, topic_specs(
        settings, [f"{unique_prefix}-{'-'.join(sorted(STAGES))}"]))
    env = env_for(settings, embedded_broker.url, unique_prefix, rate=80, devices=3,
                  batch_size=8, hard_share=0.5, api_token=TOKEN)
    worker = start_worker(env, STAGES, tmp_path / "worker.log")
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)
    refusals: list[tuple[int, str]] = []  # HTTP answers >= 400, checked by URL below
    page.on("response", lambda r: refusals.append((r.status, r.url)) if r.status >= 400
            else None)
    base = f"http://127.0.0.1:{worker.port}"
    try:
        wait_until("samples scored", lambda: get(worker, "/api/dashboard")["fleet"]["predictions"])

        # the dashboard: live without reload, its numbers those of the JSON view
        page.goto(base + "/")
        page.evaluate("window.loadedOnce = true")
        page.wait_for_function("Number(document.body.dataset.updates || 0) >= 1")
        first = page.inner_text("#predictions")
        page.wait_for_function(
            "text => document.getElementById('predictions').textContent !== text", arg=first,
            timeout=20_000)
        assert page.evaluate("window.loadedOnce === true"), "the page reloaded"
        view = get(worker, "/api/dashboard")
        assert page.inner_text("#devices") == str(view["fleet"]["devices"]) == "3"
        rows = page.eval_on_selector_all("#device-table tbody tr",
                                         "rows => rows.map(r => r.dataset.device)")
        assert rows == [d["device"] for d in view["devices"]]
        sparks = page.eval_on_selector_all(
            "#device-table tbody tr", "rows => rows.map(r => [r.querySelectorAll('.spark i')"
            ".length, Number(r.querySelector('.spark').dataset.total)])")
        assert all(bars == 10 for bars, _ in sparks) and any(n > 0 for _, n in sparks), sparks
        assert all(sum(d["current"]["confidence_histogram"]) == d["current"]["count"]
                   for d in view["devices"] if d.get("current"))
        assert page.locator("#labels-chart rect").count() >= 5
        assert page.locator("#confidence-chart rect").count() == 11
        assert "1/1 workers answered" in page.inner_text("#workers")
        group = f"{unique_prefix}-{'-'.join(sorted(STAGES))}"
        page.wait_for_selector(f"#lag tr[data-group='{group}']")
        shown_lag = page.eval_on_selector_all(
            "#lag tbody tr", "rows => rows.map(r => [r.dataset.group, r.children[1].textContent])")
        lag_view = get(worker, "/api/dashboard")["consumer_lag"]["groups"]
        assert shown_lag == [[g, str(len(v["partitions"]))] for g, v in lag_view.items()]
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # the station: the token typed once, a key press corrects the sample shown
        page.goto(base + "/review")
        page.fill("#token", TOKEN)
        page.press("#token", "Enter")  # a change: stored, and the field lets go of the keys
        wait_js(page, "document.body.dataset.current", errors)
        shown = page.evaluate("document.body.dataset.current")
        assert page.inner_text("#item-id") == shown
        assert page.evaluate("document.getElementById('image').naturalWidth") >= 0
        page.keyboard.press("7")
        wait_js(page, "want => document.body.dataset.lastCorrection === want", errors,
                f"{shown}:7")
        wait_until("the key press corrected", lambda: corrected_count(worker) == 1)
        wait_until("the corrected item left the queue", lambda: shown not in pending_ids(worker))

        # a click corrects the next one; undo takes it back into the queue
        page.wait_for_function("old => document.body.dataset.current &&"
                               " document.body.dataset.current !== old", arg=shown)
        clicked = page.evaluate("document.body.dataset.current")
        page.click("#keys button[data-label='2']")
        wait_js(page, "want => document.body.dataset.lastCorrection === want", errors,
                f"{clicked}:2")
        wait_until("the click corrected", lambda: corrected_count(worker) == 2)
        wait_until("gone from the queue", lambda: clicked not in pending_ids(worker))
        page.screenshot(path=str(tmp_path / "station.png"), full_page=True)
        page.keyboard.press("u")
        wait_js(page, "want => document.body.dataset.lastUndo === want", errors, clicked)
        wait_until("undo counted", lambda: corrected_count(worker) == 1)
        wait_until("the item back in the queue", lambda: clicked in pending_ids(worker))
        assert page.inner_text("#item-id") == clicked  # shown again, to be labelled anew
        model = get(worker, "/api/dashboard")["accuracy"]["corrections"]["digits:1"]
        assert model["count"] == 1
        page.wait_for_function("document.getElementById('corrected').textContent === '1'")

        # the models card: the served version, and a rollback with nothing to go back to
        page.goto(base + "/")
        page.wait_for_selector("#versions tr[data-model-version='1']")
        assert "served" in page.inner_text("#versions tr[data-model-version='1']")
        page.click("#rollback")
        page.wait_for_function("document.getElementById('model-message').textContent"
                               ".includes('409')")
        assert not errors, errors
        # expected: the rollback above (409); an image asked for just as its item left the
        # queue (404); nothing else
        unexpected = [(status, url) for status, url in refusals
                      if not (status == 409 and url.endswith("/api/models/rollback"))
                      and not (status == 404 and url.endswith("/image"))]
        assert not unexpected, unexpected
    finally:
        page.close()
        worker.stop()

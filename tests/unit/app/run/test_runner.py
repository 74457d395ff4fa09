"""The worker's stop: which apps it settles before Faust stops them."""

from __future__ import annotations

import faust

from edgewise.app.run.runner import BoundedShutdownWorker, worker_apps


def test_a_stop_settles_the_worker_s_own_app() -> None:
    # Faust keeps the worker's app out of ``worker.services``: reading only the services
    # settled nothing, and a stop then waited for buffers and committed late
    app = faust.App("stop-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    worker = BoundedShutdownWorker(app, quiet=True, redirect_stdouts=False)
    assert worker_apps(worker) == [app]

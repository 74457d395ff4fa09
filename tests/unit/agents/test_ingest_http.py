"""ingest_http's gate: 503 while the broker is away or failed lately, 429 while too many
rows wait for acknowledgements, each with a Retry-After in whole seconds."""

from __future__ import annotations

from edgewise.agents.ingest_http import IngestGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_answers_503_then_429_then_lets_requests_in() -> None:
    clock = Clock()
    gate = IngestGate(max_in_flight=150, retry_after=1.5, clock=clock)
    status, body, headers = gate.refused(10)  # type: ignore[misc]
    assert (status, body["error"], headers) == (503, "broker_unavailable",
                                                {"Retry-After": "2"})
    gate.connected = True
    assert gate.refused(10) is None
    with gate.holding(100):
        assert gate.refused(50) is None
        status, body, headers = gate.refused(51)  # type: ignore[misc]
        assert (status, body["error"], headers["Retry-After"]) == (429, "saturated", "2")
    with gate.holding(0):
        assert gate.refused(10_000) is None  # a lone request is never starved
    gate.failed()
    clock.now += 1.0
    status, body, headers = gate.refused(1)  # type: ignore[misc]
    assert (status, headers["Retry-After"]) == (503, "1")
    clock.now += 0.6
    assert gate.refused(1) is None and gate.in_flight == 0

"""SIGTERM stops the demo within 10 s while simulated devices offer 20,000 samples/s, with
exit status 0 and no process of its own left behind (broker, mosquitto, edges)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.kafka import EDGEWISE

pytestmark = pytest.mark.e2e

STOP_WITHIN_SECONDS = 10.0


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_under_load_stops_the_demo_quickly_and_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env.update(EDGEWISE_DATA_DIR=str(tmp_path / "data"),
               EDGEWISE_MODELS_DIR=str(tmp_path / "models"), EDGEWISE_RATE="20000",
               EDGEWISE_DEVICES="8")
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([EDGEWISE, "demo"], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "predictions" not in log.read_text():
            assert demo.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(15.0)  # well behind by now: 20,000/s is more than one worker keeps up with
        family = children_of(demo.pid)
        assert family, "the demo should have started its broker and edges"
        demo.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = demo.wait(STOP_WITHIN_SECONDS + 20)
        took = time.monotonic() - started
    finally:
        if demo.poll() is None:
            demo.kill()
    time.sleep(1.0)  # the kernel's parent-death signal reaches the children
    left = sorted(pid for pid in family if alive(pid))
    print(f"\nSIGTERM at 20,000 samples/s offered: stopped in {took:.1f}s, exit {code}")
    assert code == 0, log.read_text()[-3000:]
    assert took <= STOP_WITHIN_SECONDS, log.read_text()[-3000:]
    assert not left, f"processes left behind: {left}"

"""A worker of the stages that never load a model starts without scikit-learn, SciPy or
skops (seconds of imports on a small machine, paid again by every restarted replica)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from edgewise.app.cli import main  # the CLI builds every subcommand's parser
from edgewise.app.core.settings import load_settings
from edgewise.app.run.factory import create_app
settings = load_settings(broker="kafka://127.0.0.1:1", data_dir=sys.argv[1],
                         broker_profile="kafka")
create_app(settings, ["route", "review", "aggregate", "evaluate"], web_port=6066)
heavy = sorted(m for m in ("sklearn", "scipy", "skops") if m in sys.modules)
print(",".join(heavy))
"""


def test_table_and_route_stages_start_without_the_model_libraries(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"imported at start: {done.stdout.strip()}"

"""A wheel built from the tree, installed in a fresh virtual environment, imports every module
and runs the ``edgewise`` command: a package (or the dashboard's files) missing from
pyproject's lists would be missing from the wheel, silently, while the editable install still
found it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from edgewise.app.run.dashboard_views import STATIC_FILES
from tests.unit.test_layers import MODULES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, timeout: float = 180.0) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_installs_every_module(tmp_path: Path) -> None:
    source = tmp_path / "source"  # the tree alone: no build/ left over from an earlier build
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".edgewise", ".*_cache"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
         str(source)], cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("edgewise-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n for n in names if n.endswith(".py")}
    missing = sorted(
        p for p in (m.replace(".", "/") for m in MODULES)
        if f"{p}.py" not in in_wheel and f"{p}/__init__.py" not in in_wheel)
    assert not missing, f"modules missing from the wheel: {missing}"
    assert all(n.startswith(("edgewise/", "edgewise-")) for n in names), "a second top name"
    pages = {f"edgewise/app/run/static/{name}" for name in STATIC_FILES}
    assert pages <= names, f"the dashboard's files missing from the wheel: {pages - names}"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path)
    # the dependencies come from the suite's environment, as plain paths: its .pth files
    # (among them the editable install of this tree) are not read
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=tmp_path).strip()
    (Path(site) / "suite-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    check = (
        "import importlib, sys\n"
        f"modules = {sorted(MODULES)!r}\n"
        "for name in modules:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)\n"
        "from importlib.metadata import entry_points\n"
        "[transport] = entry_points(group='faust.transports', name='edgewise')\n"
        "transport.load()\n"
        "print(len(modules))\n"
    )
    count = run([str(python), "-c", check, site], cwd=tmp_path)
    assert int(count) == len(MODULES)
    config = run([str(venv / "bin" / "edgewise"), "config", "--json"], cwd=tmp_path)
    assert '"broker"' in config

"""The layering of docs/architecture.md, checked by import-linter (contracts in pyproject.toml):
the library never imports the application, the application's layers keep their order, and no
sibling modules import each other in a cycle (imports inside functions included)."""
from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import galaxalign

ROOT = Path(__file__).resolve().parents[1]
APPLICATION = {"galaxalign.training", "galaxalign.grids", "galaxalign.serve", "galaxalign.cli", "galaxalign.__main__"}


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_library_module_is_under_the_contract():
    # A new top-level module is either application (named above) or library, and then the
    # "library never imports the application" contract must list it.
    forbidden = next(c for c in contracts() if c["type"] == "forbidden")
    assert set(forbidden["forbidden_modules"]) == APPLICATION - {"galaxalign.__main__"}
    top = {f"galaxalign.{m.name}" for m in pkgutil.iter_modules(galaxalign.__path__)}
    assert top - APPLICATION == set(forbidden["source_modules"])


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # --no-cache: the cache folder would be shared by parallel test workers and stale across branches
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

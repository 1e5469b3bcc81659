"""Writes survive crashes: a kill between the two renames of a folder swap leaves a loadable index,
and temporaries of killed writes are removed by the next write to the same place."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galaxalign import runtime
from galaxalign.runtime import atomic_path, recover_path, stale_temporaries

SRC = str(Path(runtime.__file__).resolve().parents[1])


def small_index(out: Path, n: int, seed: int = 0) -> Path:
    from galaxalign.search.build import build_index

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pd.DataFrame({"id": [f"g{i}" for i in range(n)], "label": np.arange(n) % 3, "source": ["x.h5#0"] * n})
    return build_index(vectors, table, out, kind="exact", progress=False)


def run_killed_between_the_renames(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a process that dies (os._exit, as kill -9: no clean-up runs) at the second rename."""
    script = textwrap.dedent(
        """
        import os
        from galaxalign import runtime
        runtime._exchange = lambda a, b: False  # the two-rename swap, as where no atomic exchange exists
        real_replace, calls = os.replace, []
        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                os._exit(9)  # killed after final -> .final.old, before tmp -> final
            return real_replace(src, dst)
        os.replace = replace
        """
    ) + textwrap.dedent(code)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_a_crash_between_the_two_renames_leaves_a_loadable_index(tmp_path):
    from galaxalign.search.index import SearchIndex

    index_dir = small_index(tmp_path / "index", n=20)
    proc = run_killed_between_the_renames(f"""
import numpy as np, pandas as pd
from galaxalign.search.build import build_index
v = np.eye(8, dtype=np.float32)[np.arange(30) % 8]
t = pd.DataFrame({{"id": [f"n{{i}}" for i in range(30)], "label": [0] * 30, "source": ["y.h5#0"] * 30}})
build_index(v, t, {str(index_dir)!r}, kind="exact", progress=False)
""")
    assert proc.returncode == 9, proc.stderr
    assert not index_dir.exists()  # the crash left no folder under the expected name ...
    index = SearchIndex.load(index_dir)  # ... and opening it recovers the previous version
    assert len(index) == 20 and index.table["id"].iloc[0] == "g0"
    assert not (tmp_path / ".index.old").exists()
    # The next write replaces it cleanly and removes the killed writer's temporary.
    small_index(index_dir, n=25, seed=1)
    assert len(SearchIndex.load(index_dir)) == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_crash_between_the_renames_of_a_model_export_is_recovered(tmp_path, make_model):
    from galaxalign.inference import load_model

    model_dir = make_model(tmp_path / "model")
    proc = run_killed_between_the_renames(f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from conftest import write_model
write_model(__import__("pathlib").Path({str(model_dir)!r}))
""")
    assert proc.returncode == 9, proc.stderr
    assert not model_dir.exists()
    model, taxonomy = load_model(model_dir)
    assert taxonomy.name == "galaxy10_decals" and (model_dir / "model.safetensors").is_file()


def test_a_folder_replaced_by_atomic_exchange_has_no_missing_moment(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "a.txt").write_text("old")
    seen = []
    real = runtime._exchange

    def spy(a, b):
        ok = real(a, b)
        seen.append((ok, final.is_dir()))
        return ok

    runtime._exchange = spy
    try:
        with atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "b.txt").write_text("new")
    finally:
        runtime._exchange = real
    if not seen[0][0]:
        pytest.skip("this filesystem has no atomic exchange (renameat2); the two-rename path is tested above")
    assert seen == [(True, True)] and (final / "b.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recovery_drops_a_leftover_old_copy_once_the_new_one_is_in_place(tmp_path):
    (tmp_path / "index").mkdir()
    (tmp_path / ".index.old").mkdir()
    assert recover_path(tmp_path / "index") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_writes_are_removed_on_the_next_write(tmp_path):
    host = runtime._HOST
    final = tmp_path / "last.pt"
    killed_file = tmp_path / f".last.pt.{host}-{dead_pid()}-0a1b2c3d.tmp"
    killed_file.write_bytes(b"x" * 1000)
    killed_dir = tmp_path / f".last.pt.{host}-{dead_pid()}-ffff0000.tmp"  # a killed folder write
    killed_dir.mkdir()
    (killed_dir / "index.faiss").write_bytes(b"y")
    old_style = tmp_path / ".last.pt.ab_cd123.tmp"  # named by an earlier version (no writer recorded)
    old_style.write_bytes(b"z")
    hour_ago = time.time() - 3600
    os.utime(old_style, (hour_ago, hour_ago))
    live = tmp_path / f".last.pt.{host}-{os.getppid()}-12345678.tmp"  # a running writer's: kept
    live.write_bytes(b"w")
    recent_old_style = tmp_path / ".last.pt.zz_zz999.tmp"  # could still be written: kept
    recent_old_style.write_bytes(b"v")
    other = tmp_path / f".last.pt.b.{host}-{dead_pid()}-00000000.tmp"  # belongs to 'last.pt.b', not ours
    other.write_bytes(b"u")
    assert stale_temporaries(final) == sorted([killed_file, killed_dir, old_style])
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", live.name, recent_old_style.name, other.name])


def test_a_temporary_from_another_machine_is_stale_only_when_old(tmp_path):
    final = tmp_path / "shard-00001.parquet"
    foreign = tmp_path / ".shard-00001.parquet.othermachine-123-abcdef12.tmp"
    foreign.write_bytes(b"x")
    assert stale_temporaries(final) == []
    day_ago = time.time() - runtime.STALE_FOREIGN_SECONDS - 10
    os.utime(foreign, (day_ago, day_ago))
    assert stale_temporaries(final) == [foreign]

"""`galaxalign embed | index | search` end to end on a tiny model and a hand-written survey."""
from __future__ import annotations

import json

import numpy as np
import pytest

from galaxalign.cli import main
from galaxalign.search.embed import read_embeddings
from galaxalign.search.index import SearchIndex


def search(capsys, fx, *args):
    rc = main(["search", "--index", str(fx["index"]), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_embed_index_search_commands(tmp_path, capsys, make_survey, make_model):
    survey = make_survey(tmp_path / "s.h5", n=30)
    model = make_model(tmp_path / "m")
    assert main(["embed", "--checkpoint", str(model), "--data", str(survey), "--out", str(tmp_path / "emb"),
                 "--shard-size", "8", "--batch-size", "4", "--no-progress"]) == 0
    assert main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), "--kind", "hnsw",
                 "--param", "ef_search=32", "--no-progress"]) == 0
    index = SearchIndex.load(tmp_path / "idx")
    assert (len(index), index.kind, index.info["params"]["ef_search"]) == (30, "hnsw", 32)
    assert index.checkpoint == str(model) and index.info["data_source"] == str(survey)
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--id", "s-4", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


def test_embed_resumes_after_a_kill_and_matches_a_straight_run(tmp_path, monkeypatch, capsys, make_survey, make_model):
    from galaxalign.search import embed as embed_mod

    survey = make_survey(tmp_path / "s.h5", n=30)
    model = make_model(tmp_path / "m")
    real = embed_mod.model_embedder
    embedded: list[str] = []

    def counting(*a, kill_at=None, **kw):
        inner = real(*a, **kw)

        def embed(part, on_batch):
            if kill_at is not None and part["id"].iloc[0] == kill_at:
                raise KeyboardInterrupt  # the job dies after shards 0 and 1 are on disk
            embedded.extend(part["id"])
            return inner(part, on_batch)

        return embed

    args = ["embed", "--checkpoint", str(model), "--data", str(survey), "--shard-size", "8", "--no-progress"]
    monkeypatch.setattr(embed_mod, "model_embedder", lambda *a, **kw: counting(*a, kill_at="s-16", **kw))
    assert main(args + ["--out", str(tmp_path / "emb")]) == 130
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert [s["index"] for s in manifest["shards"]] == [0, 1] and not manifest["complete"]
    embedded.clear()
    monkeypatch.setattr(embed_mod, "model_embedder", counting)
    assert main(args + ["--out", str(tmp_path / "emb")]) == 0
    assert embedded == [f"s-{i}" for i in range(16, 30)]  # only shards 2 and 3
    assert main(args + ["--out", str(tmp_path / "straight")]) == 0
    t1, v1, _ = read_embeddings(tmp_path / "emb")
    t2, v2, _ = read_embeddings(tmp_path / "straight")
    assert t1["id"].tolist() == t2["id"].tolist()
    np.testing.assert_allclose(v1, v2, atol=1e-6)


def test_search_by_id_prints_a_ranked_table(capsys, fx):
    rc, out, _ = search(capsys, fx, "--id", "survey-5", "-k", "3")
    lines = out.strip().splitlines()
    assert rc == 0 and lines[0] == "query id: survey-5" and lines[1].split()[:3] == ["rank", "id", "score"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]
    assert "survey.h5#" in lines[2]


def test_search_by_image_uses_the_checkpoint_recorded_in_the_index(capsys, fx, tmp_path, png_bytes):
    from galaxalign.datasets import read_image

    path = tmp_path / "q.png"
    path.write_bytes(png_bytes(read_image(fx["catalog"].iloc[21])))
    rc, out, _ = search(capsys, fx, "--image", str(path), "-k", "3", "--json")
    data = json.loads(out)
    assert rc == 0 and data["results"][0]["id"] == "survey-21"
    assert data["results"][0]["label_name"] == "Merging Galaxies"


@pytest.mark.parametrize("args", [["--text", "edge-on disk with a bulge"],
                                  ["--symbol", "smooth-or-featured_featured-or-disk,disk-edge-on_yes"]])
def test_search_by_text_and_symbol(capsys, fx, args):
    rc, out, _ = search(capsys, fx, *args, "-k", "4", "--json", "--checkpoint", str(fx["model"]))
    results = json.loads(out)["results"]
    assert rc == 0 and len(results) == 4 and len({r["id"] for r in results}) == 4


def test_search_by_sketch(capsys, fx, tmp_path, png_bytes):
    sketch = np.zeros((100, 100, 3), np.uint8)
    sketch[45:55, 10:90] = 255
    (tmp_path / "s.png").write_bytes(png_bytes(sketch))
    rc, out, _ = search(capsys, fx, "--sketch", str(tmp_path / "s.png"), "--json", "-k", "2")
    assert rc == 0 and len(json.loads(out)["results"]) == 2


def test_search_errors_are_one_clear_line(capsys, fx, tmp_path):
    rc, _, err = search(capsys, fx, "--id", "nope")
    assert rc == 1 and "unknown galaxy id 'nope'" in err
    rc, _, err = search(capsys, fx, "--symbol", "bar_sometimes")
    assert rc == 1 and "unknown Galaxy Zoo answer(s) ['bar_sometimes']" in err
    (tmp_path / "x.png").write_text("not an image")
    rc, _, err = search(capsys, fx, "--image", str(tmp_path / "x.png"))
    assert rc == 1 and "x.png: not an image file" in err
    rc = main(["search", "--index", str(tmp_path / "missing"), "--id", "a"])
    assert rc == 1 and "no such index folder" in capsys.readouterr().err
    rc = main(["index", "--embeddings", str(fx["embeddings"]), "--out", str(tmp_path / "i"), "--param", "bogus"])
    assert rc == 1 and "expected NAME=VALUE" in capsys.readouterr().err


def test_serve_without_demo_says_run_make_demo(tmp_path, capsys):
    assert main(["serve", "--demo-dir", str(tmp_path)]) == 1
    assert "run `make demo` first" in capsys.readouterr().err


def test_demo_index_is_built_once_from_the_demo_report(tmp_path, fx):
    from galaxalign.search.demo_index import ensure_demo_index

    report = {"dataset": {"path": str(fx["survey"])},
              "runs": [{"method": "image_only", "label_fraction": 1.0, "checkpoint": "elsewhere"},
                       {"method": "galaxalign", "label_fraction": 0.1, "checkpoint": "small"},
                       {"method": "galaxalign", "label_fraction": 1.0, "checkpoint": str(fx["model"])}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    index_dir, checkpoint = ensure_demo_index(tmp_path, progress=False)
    assert checkpoint == str(fx["model"]) and index_dir == tmp_path / "search" / "index"
    index = SearchIndex.load(index_dir)
    assert len(index) == 60 and index.checkpoint == str(fx["model"])
    stamp = (index_dir / "index.faiss").stat().st_mtime_ns
    assert ensure_demo_index(tmp_path, progress=False)[0] == index_dir
    assert (index_dir / "index.faiss").stat().st_mtime_ns == stamp  # cached: not rebuilt


def test_torchrun_ranks_split_the_shards_and_match_one_process(tmp_path, fx):
    import os
    import subprocess
    import sys

    args = ["--checkpoint", str(fx["model"]), "--data", str(fx["survey"]), "--shard-size", "8", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "galaxalign", "embed", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").glob("manifest*")) == ["manifest.json"]
    table, vectors, manifest = read_embeddings(tmp_path / "two")
    assert manifest["complete"] and manifest["num_shards"] == 8
    one_table, one_vectors, _ = read_embeddings(fx["embeddings"])
    assert table["id"].tolist() == one_table["id"].tolist()
    np.testing.assert_allclose(vectors, one_vectors, atol=1e-5)

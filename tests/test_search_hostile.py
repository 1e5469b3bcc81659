"""The index against hostile parameters and conditions: a sharded index gives back its vectors,
out-of-range parameters are refused before faiss sees them, a full disk is one line and leaves the
previous index in place."""
from __future__ import annotations

import errno

import numpy as np
import pytest
from fastapi.testclient import TestClient

from galaxalign.cli import main
from galaxalign.search import query as q
from galaxalign.search.build import build_index_from_embeddings
from galaxalign.search.index import SearchIndex


@pytest.fixture(scope="module")
def sharded(fx, tmp_path_factory):
    """The fixture's embeddings as 2-shard indexes of each kind that stores flat vectors."""
    root = tmp_path_factory.mktemp("sharded")
    return {kind: build_index_from_embeddings(fx["embeddings"], root / kind, kind=kind, shards=2, progress=False,
                                              params={"nlist": 2} if kind == "ivf" else None)
            for kind in ("exact", "hnsw", "ivf")}


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_a_sharded_index_gives_back_the_stored_vectors(fx, sharded, kind):
    whole, parts = SearchIndex.load(fx["index"]), SearchIndex.load(sharded[kind])
    rows = [0, 31, 59, 7, 30]  # both shards, out of order
    np.testing.assert_allclose(parts.vectors(rows), whole.vectors(rows), atol=1e-6)
    assert [h.id for h in q.query_id(parts, "survey-3", 5)] == [h.id for h in q.query_id(whole, "survey-3", 5)]


def test_a_sharded_index_still_reads_vectors_after_adding_and_removing(fx, sharded):
    index = SearchIndex.load(sharded["exact"])
    new = np.random.default_rng(0).normal(size=(2, index.dim)).astype(np.float32)
    import pandas as pd

    index.add(new, pd.DataFrame({"id": ["new-a", "new-b"], "label": [1, 2], "source": ["a", "b"]}))
    index.remove(["survey-40"])
    np.testing.assert_allclose(index.vector("new-b"), new[1] / np.linalg.norm(new[1]), atol=1e-6)
    assert [h.id for h in q.query_id(index, "new-a", 1, include_self=True)] == ["new-a"]


def test_search_id_and_features_on_a_sharded_index(sharded, fx, capsys):
    assert main(["search", "--index", str(sharded["exact"]), "--id", "survey-3", "-k", "3", "--json"]) == 0
    assert main(["search", "--index", str(sharded["exact"]), "--features", "smooth-or-featured_smooth",
                 "--checkpoint", str(fx["model"]), "-k", "3", "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_the_service_answers_id_symbol_and_feature_searches_on_a_sharded_index(sharded, fx):
    from galaxalign.serve import create_app

    with TestClient(create_app(sharded["exact"], model=fx["loaded_model"]), raise_server_exceptions=False) as c:
        assert c.get("/api/search/id/survey-3", params={"k": 3}).status_code == 200
        assert c.post("/api/search/symbol", json={"answers": ["smooth-or-featured_smooth"], "k": 3}).status_code == 200
        r = c.get("/api/search/features", params={"answers": "smooth-or-featured_smooth", "k": 3})
        assert r.status_code == 200 and len(r.json()["results"]) == 3


# -- parameters --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, param, words", [
    ("hnsw", "M=0", "M=0: must be an integer from 2 to 512"),
    ("hnsw", "ef_search=-3", "ef_search=-3"),
    ("ivf", "nlist=-1", "nlist=-1: must be an integer from 1"),
    ("ivf", "nprobe=1e400", "nprobe=inf"),
    ("ivf", "nprobe=0", "nprobe=0"),
    ("ivf", "nlist=2.5", "nlist=2.5"),
    ("ivfpq", "target_recall=1.5", "target_recall=1.5"),
])
def test_index_parameters_out_of_range_are_one_line_and_leave_no_temporary(fx, tmp_path, capsys, kind, param, words):
    out = tmp_path / "idx"
    code = main(["index", "--embeddings", str(fx["embeddings"]), "--out", str(out), "--kind", kind,
                 "--param", param, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and words in err, err
    assert list(tmp_path.iterdir()) == []  # no index, no temporary folder


def test_search_time_parameters_are_checked_too(fx):
    with pytest.raises(ValueError, match="nprobe=-2"):
        SearchIndex.load(fx["index"], search_params={"nprobe": -2})


# -- a full disk -------------------------------------------------------------------------------------------
def test_a_full_disk_during_an_index_rebuild_is_one_line_and_keeps_the_old_index(fx, tmp_path, capsys, monkeypatch):
    out = build_index_from_embeddings(fx["embeddings"], tmp_path / "idx", kind="exact", progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import faiss

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faiss, "write_index", full)
    code = main(["index", "--embeddings", str(fx["embeddings"]), "--out", str(out), "--kind", "exact", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left on device" in err and f"MB needed at {out}" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous index, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary left
    assert len(SearchIndex.load(out)) == 60

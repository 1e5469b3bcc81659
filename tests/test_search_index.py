"""faiss index: build/load round trip, search quality per kind, agreement checks."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from galaxalign.search.index import (
    INFO_FILE,
    TABLE_FILE,
    IndexMismatchError,
    SearchIndex,
    UnknownGalaxyError,
    resolve_params,
)
from galaxalign.search.build import build_index, choose_kind


def clustered(n=2000, dim=16, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    x = centers[labels] + 0.3 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    table = pd.DataFrame({"id": [f"g{i:05d}" for i in range(n)], "label": labels % 10,
                          "source": [f"survey.h5#{i}" for i in range(n)], "redshift": rng.random(n)})
    return x, table


@pytest.fixture(scope="module")
def data():
    return clustered()


def test_auto_kind_grows_with_catalog_size():
    assert choose_kind(1_000) == "exact"
    assert choose_kind(1_000_000) == "ivfpq"  # IVF-PQ + exact re-ranking (docs/scale.md)
    assert choose_kind(50_000_000) == "ivfpq"


def test_exact_index_round_trip_finds_each_vector_first(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "idx", kind="exact", info={"checkpoint": "model.pt"}, progress=False)
    index = SearchIndex.load(out)
    assert (len(index), index.dim, index.kind, index.checkpoint) == (2000, 16, "exact", "model.pt")
    hits = index.search(x[123], k=5)
    assert hits[0].id == "g00123" and hits[0].rank == 1 and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert hits[0].source == "survey.h5#123" and hits[0].label == int(table.label[123])
    np.testing.assert_allclose(index.vector("g00123"), x[123], atol=1e-6)
    assert index.record("g00123")["redshift"] == pytest.approx(table.redshift[123])


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivfpq"])
def test_approximate_kinds_agree_with_exact_search(tmp_path, data, kind):
    x, table = data
    exact = SearchIndex.load(build_index(x, table, tmp_path / "exact", kind="exact", progress=False))
    approx = SearchIndex.load(build_index(x, table, tmp_path / kind, kind=kind, progress=False))
    queries = x[:50]
    _, truth = exact.search_vectors(queries, 10)
    _, found = approx.search_vectors(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.9, f"{kind} recall@10 {recall:.3f}"
    np.testing.assert_allclose(approx.vector("g00010"), x[10], atol=1e-5)  # stored vectors stay exact


def test_exclude_drops_the_query_galaxy(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "idx", kind="exact", progress=False))
    hits = index.search(x[7], k=3, exclude=["g00007"])
    assert len(hits) == 3 and "g00007" not in [h.id for h in hits]


def test_unnormalised_input_is_normalised(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(5 * x, table, tmp_path / "idx", kind="exact", progress=False))
    assert index.search(x[3], k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_unknown_id_is_a_clear_error(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "idx", kind="exact", progress=False))
    with pytest.raises(UnknownGalaxyError, match="unknown galaxy id 'nope'"):
        index.vector("nope")


def test_query_of_wrong_dimension_is_refused(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "idx", kind="exact", progress=False))
    with pytest.raises(ValueError, match="dimension 8 does not match the index dimension 16"):
        index.search(np.ones(8, np.float32))


def test_table_with_other_row_count_is_detected_on_load(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "idx", kind="exact", progress=False)
    table.iloc[:-1].to_parquet(out / TABLE_FILE, index=False)
    with pytest.raises(IndexMismatchError, match="holds 2000 vectors but table.parquet has 1999 rows"):
        SearchIndex.load(out)


def test_info_with_other_dim_is_detected_on_load(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "idx", kind="exact", progress=False)
    info = json.loads((out / INFO_FILE).read_text())
    (out / INFO_FILE).write_text(json.dumps({**info, "dim": 32}))
    with pytest.raises(IndexMismatchError, match="dim=32 but the faiss index has dimension 16"):
        SearchIndex.load(out)


def test_missing_part_names_the_file(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "idx", kind="exact", progress=False)
    (out / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="index.faiss: missing"):
        SearchIndex.load(out)


def test_rebuild_replaces_the_folder_atomically(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "idx", kind="exact", progress=False)
    build_index(x[:100], table.iloc[:100], out, kind="exact", progress=False)
    assert len(SearchIndex.load(out)) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary left behind


def test_bad_inputs_are_refused(tmp_path, data):
    x, table = data
    with pytest.raises(IndexMismatchError, match="1999 rows but there are 2000 embeddings"):
        build_index(x, table.iloc[:-1], tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="duplicate ids"):
        build_index(x[:2], pd.DataFrame({"id": ["a", "a"], "label": [0, 1], "source": ["", ""]}), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="unknown index kind 'kd'"):
        build_index(x, table, tmp_path / "c", kind="kd", progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve_params("hnsw", 10, 16, {"nprobe": 3})
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_index(bad, table, tmp_path / "d", progress=False)

"""Survey-scale index features on small data: shards, filters, add/remove, calibration, pagination."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from galaxalign.search.difficulty import dataset_difficulty, recall_at_k
from galaxalign.search.filters import CatalogFilter, FilterError, parse_filter
from galaxalign.search.build import build_index, choose_kind
from galaxalign.search.index import STORE_FILE, SearchIndex
from galaxalign.search.shards import shard_bounds, shard_file
from galaxalign.search.tuning import exact_top_k


def catalog(n=3000, dim=32, clusters=30, seed=0, start=0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    x = centers[labels] + 0.5 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    table = pd.DataFrame({
        "id": [f"g{i:06d}" for i in range(start, start + n)], "label": labels % 10,
        "source": [f"s.h5#{i}" for i in range(start, start + n)],
        "mag_r": rng.uniform(14, 20, n), "redshift": rng.uniform(0, 0.3, n),
        "ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
    })
    return x, table


@pytest.fixture(scope="module")
def data():
    return catalog()


def exact_rows(x, queries, k, mask=None):
    rows = np.arange(len(x)) if mask is None else np.flatnonzero(mask)
    _, found = exact_top_k(x[rows], queries, k)
    return rows[found]


# -- auto parameters -------------------------------------------------------------------------------
def test_auto_calibrates_nprobe_to_reach_its_recall_target(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "ivf", kind="ivf", progress=False))
    cal = index.info["calibration"]
    assert index.params["nprobe"] == cal["tried"][-1][0] and cal["reached"]
    assert cal["tried"][-1][1] >= 0.98 and all(r < 0.98 for _, r in cal["tried"][:-1])
    # and on fresh queries it holds up (not only on the calibration sample)
    q, _ = catalog(200, seed=5)
    _, found = index.search_vectors(q, 10)
    assert recall_at_k(found, exact_rows(x, q, 10)) >= 0.95


def test_nlist_grows_with_the_catalog():
    from galaxalign.search.faiss_index import resolve_params

    small, large = resolve_params("ivf", 100_000, 64)["nlist"], resolve_params("ivf", 10_000_000, 64)["nlist"]
    assert large > 8 * small and resolve_params("ivfpq", 10_000_000, 256)["pq_m"] == 256
    assert choose_kind(50_000) == "exact" and choose_kind(2_000_000) == "ivfpq" and choose_kind(10**7) == "ivfpq"


def test_ivfpq_reranks_exactly_from_the_memory_mapped_store(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "pq", kind="ivfpq", params={"nlist": 16}, progress=False)
    assert (out / STORE_FILE).stat().st_size == x.nbytes
    index = SearchIndex.load(out)
    assert isinstance(index.store.data, np.memmap)
    scores, rows = index.search_vectors(x[:20], 10)
    # re-ranked scores are exact inner products, not PQ approximations
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", x[:20], x[rows]), atol=1e-5)
    assert recall_at_k(rows, exact_rows(x, x[:20], 10)) >= 0.9
    np.testing.assert_array_equal(index.vector("g000007"), x[7])


# -- filters ---------------------------------------------------------------------------------------
def test_filters_return_only_matching_galaxies_and_the_right_ones(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "ivf", kind="ivf", progress=False))
    where = CatalogFilter(ranges={"mag_r": (16.0, 17.0), "redshift": (None, 0.2)}, classes=[1, 2, 3])
    mask = where.mask(table)
    assert 0 < mask.sum() < 0.1 * len(table)
    q = x[:30]
    _, rows = index.search_vectors(q, 10, where=where)
    assert mask[rows[rows >= 0]].all()
    assert recall_at_k(rows, exact_rows(x, q, 10, mask)) >= 0.95  # selective filter: probes widen


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_every_kind_applies_filters_through_faiss(tmp_path, data, kind):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / kind, kind=kind, params={"nlist": 16} if kind == "ivfpq" else None, progress=False))
    where = {"cone": [180.0, 0.0, 40.0]}
    mask = parse_filter(where).mask(table)
    _, rows = index.search_vectors(x[:20], 10, where=where)
    assert (rows >= 0).all() and mask[rows].all()
    assert recall_at_k(rows, exact_rows(x, x[:20], 10, mask)) >= 0.9


def test_filter_text_form_and_errors(data):
    _, table = data
    f = parse_filter("mag_r=15:16.5; class=2,3 ;cone=10,20,5")
    assert f.ranges == {"mag_r": (15.0, 16.5)} and f.classes == ["2", "3"] and f.cone == (10.0, 20.0, 5.0)
    assert parse_filter("redshift=:0.1").ranges == {"redshift": (None, 0.1)}
    expected = (table.mag_r.between(15, 16.5) & table.label.isin([2, 3])).to_numpy()
    assert not (f.mask(table) & ~expected).any()
    with pytest.raises(FilterError, match="unknown column 'mag_g'"):
        parse_filter("mag_g=1:2").mask(table)
    with pytest.raises(FilterError, match="min 3.0 is above max 1.0"):
        parse_filter("redshift=3:1").mask(table)
    with pytest.raises(FilterError, match="class 'cD'"):
        CatalogFilter(classes=["cD"]).mask(table, ["round", "disk"])


def test_filter_matching_nothing_returns_no_hits(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "e", kind="exact", progress=False))
    assert index.search(x[0], 5, where="mag_r=30:31") == []


# -- growth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "ivf", "ivfpq"])
def test_add_and_remove_without_rebuild_survive_save_and_load(tmp_path, data, kind):
    x, table = data
    out = build_index(x, table, tmp_path / kind, kind=kind, params={"nlist": 16} if kind != "exact" else None, progress=False)
    index = SearchIndex.load(out)
    new_x, new_table = catalog(200, seed=7, start=len(x))
    keys = index.add(new_x, new_table)
    assert len(index) == 3200 and keys[0] == 3000
    hit = index.search(new_x[5], 1)[0]
    assert hit.id == "g003005" and hit.score == pytest.approx(1.0, abs=1e-4)
    assert index.remove(["g000010", "g003005"]) == 2
    assert len(index) == 3198
    assert "g003005" not in [h.id for h in index.search(new_x[5], 5)]
    index.save()
    again = SearchIndex.load(out)
    assert len(again) == 3198 and json.loads((out / "index.json").read_text())["count"] == 3198
    assert again.search(new_x[6], 1)[0].id == "g003006"
    assert again.search(x[11], 1)[0].id == "g000011"
    np.testing.assert_allclose(again.vector("g003007"), new_x[7], atol=1e-5)
    with pytest.raises(KeyError):
        again.row_of("g000010")


def test_adding_an_existing_id_is_refused(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "e", kind="exact", progress=False))
    with pytest.raises(ValueError, match="id 'g000001' is already in the index"):
        index.add(x[1:2], table.iloc[1:2])


def test_hnsw_removal_says_why_it_cannot(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x[:500], table.iloc[:500], tmp_path / "h", kind="hnsw", progress=False))
    with pytest.raises(ValueError, match="HNSW graphs cannot drop nodes"):
        index.remove(["g000001"])
    assert len(index) == 500


# -- shards ----------------------------------------------------------------------------------------
def test_sharded_index_fans_out_and_merges_like_one_index(tmp_path, data):
    x, table = data
    one = SearchIndex.load(build_index(x, table, tmp_path / "one", kind="exact", progress=False))
    out = build_index(x, table, tmp_path / "four", kind="exact", shards=4, progress=False)
    assert [shard_file(out, s).is_file() for s in range(4)] == [True] * 4
    four = SearchIndex.load(out)
    assert len(four) == len(x) and four.index.count() == 4
    s1, r1 = one.search_vectors(x[:25], 10)
    s4, r4 = four.search_vectors(x[:25], 10)
    np.testing.assert_array_equal(r1, r4)  # exact shards merged = exact search over everything
    np.testing.assert_allclose(s1, s4, atol=1e-6)


def test_sharded_ivf_shares_one_quantizer_and_takes_filters_adds_removals(tmp_path, data):
    x, table = data
    out = build_index(x, table, tmp_path / "ivf", kind="ivf", shards=3, progress=False)
    index = SearchIndex.load(out)
    import faiss

    cents = [faiss.extract_index_ivf(faiss.downcast_index(index.index.at(s))).quantizer.reconstruct_n(0, 4) for s in range(3)]
    np.testing.assert_array_equal(cents[0], cents[2])
    _, rows = index.search_vectors(x[:20], 10)
    assert recall_at_k(rows, exact_rows(x, x[:20], 10)) >= 0.95
    mask = parse_filter("redshift=0.1:0.2").mask(table)
    _, rows = index.search_vectors(x[:20], 10, where="redshift=0.1:0.2")
    assert mask[rows[rows >= 0]].all()
    new_x, new_table = catalog(50, seed=3, start=len(x))
    index.add(new_x, new_table)
    index.remove(["g000000"])
    index.save()
    again = SearchIndex.load(out)
    assert len(again) == len(x) + 49 and again.search(new_x[0], 1)[0].id == "g003000"
    assert again.index.at(2).ntotal == shard_bounds(len(x), 3)[2][1] - shard_bounds(len(x), 3)[2][0] + 50


# -- pagination, difficulty ------------------------------------------------------------------------
def test_offset_pages_continue_the_ranking(tmp_path, data):
    x, table = data
    index = SearchIndex.load(build_index(x, table, tmp_path / "e", kind="exact", progress=False))
    full = index.search(x[0], 30)
    page2 = index.search(x[0], 10, offset=10)
    assert [h.id for h in page2] == [h.id for h in full[10:20]] and page2[0].rank == 11


def test_difficulty_tells_tight_clusters_from_diffuse_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(400, 32))  # more clusters than the 63 lists: each list holds whole ones
    tight = centers[rng.integers(0, 400, 4000)] + 0.02 * rng.normal(size=(4000, 32))
    diffuse = rng.normal(size=(4000, 32))
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    easy, hard = dataset_difficulty(norm(tight), 100), dataset_difficulty(norm(diffuse), 100)
    assert easy["ivf_nprobe1_recall_at_10"] > 0.9 > 0.5 > hard["ivf_nprobe1_recall_at_10"]
    assert easy["rc_1"] > 10 * hard["rc_1"] and hard["rc_1"] < 2


def test_a_shard_filled_elsewhere_from_the_trained_file_joins_the_index(tmp_path, data):
    from galaxalign.search.shards import TRAINED_FILE, combine, fill_shard, read_shards

    x, table = data
    out = build_index(x[:2000], table.iloc[:2000], tmp_path / "ivf", kind="ivf", shards=2, progress=False)
    trained = out / "shards" / TRAINED_FILE
    assert trained.is_file()
    # "another machine": fills a third shard with the rest of the catalog under its global keys
    third = fill_shard(trained, x[2000:], np.arange(2000, len(x)))
    import faiss

    two = read_shards(out, 2, x.shape[1])
    merged = combine([faiss.downcast_index(two.at(i)) for i in range(2)] + [third], x.shape[1])
    for ivf in [faiss.extract_index_ivf(faiss.downcast_index(merged.at(i))) for i in range(3)]:
        ivf.nprobe = 8
    _, keys = merged.search(x[2500:2510], 1)
    assert (keys[:, 0] == np.arange(2500, 2510)).all()

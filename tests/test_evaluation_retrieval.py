"""Similarity-search metrics on rankings worked out by hand."""
import time

import numpy as np
import pytest

from galaxalign.evaluation.retrieval import rank_gallery, retrieval_metrics


def _ranked_gallery(labels_in_rank_order):
    """Unit vectors whose cosine to the query (1, 0) falls with position: rank i is position i."""
    ang = np.linspace(0.05, 1.5, len(labels_in_rank_order))
    return np.stack([np.cos(ang), np.sin(ang)], axis=1), np.array(labels_in_rank_order)


def test_map_precision_recall_on_a_known_ranking():
    g, gl = _ranked_gallery([0, 1, 0, 1, 1, 0, 1])
    m = retrieval_metrics(np.array([[1.0, 0.0]]), [0], g, gl)
    # relevant at ranks 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3
    assert m["map"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert m["map_at_10"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)  # R = 3 < 10
    assert m["precision_at_1"] == 1.0
    assert m["precision_at_5"] == pytest.approx(2 / 5)
    assert m["precision_at_10"] == pytest.approx(3 / 10)  # gallery shorter than 10: misses count
    assert m["recall_at_10"] == 1.0


def test_map_at_10_normalises_by_min_10_and_r():
    # 12 relevant items, the top 10 all relevant: AP@10 = 1 although 2 relevant lie beyond rank 10
    g, gl = _ranked_gallery([0] * 10 + [1, 1, 0, 0])
    r = rank_gallery(np.array([[1.0, 0.0]]), [0], g, gl)
    assert r.ap_at_10[0] == pytest.approx(1.0)
    assert r.recall_at_10[0] == pytest.approx(10 / 12)
    assert r.ap[0] == pytest.approx((10 + 11 / 13 + 12 / 14) / 12)


def test_query_is_excluded_from_its_own_ranking():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 40)
    ids = [f"g{i}" for i in range(40)]
    without = retrieval_metrics(x, labels, x, labels)
    with_excl = retrieval_metrics(x, labels, x, labels, query_ids=ids, gallery_ids=ids)
    assert without["precision_at_1"] == 1.0  # every query finds itself first
    assert with_excl["precision_at_1"] < 0.6  # random vectors: about 1/4 once self is gone
    r = rank_gallery(x, labels, x, labels, query_ids=ids, gallery_ids=ids)
    assert not (r.top_indices == np.arange(40)[:, None]).any()
    assert (r.num_relevant == np.bincount(labels)[labels] - 1).all()


def test_queries_without_relevant_items_are_left_out_and_counted():
    g, gl = _ranked_gallery([0, 0, 1])
    m = retrieval_metrics(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 5], g, gl)
    assert m["n_queries"] == 1 and m["n_queries_without_relevant"] == 1
    assert m["map"] == 1.0


def test_block_boundaries_do_not_change_results():
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(50, 8)), rng.normal(size=(300, 8))
    ql, gl = rng.integers(0, 3, 50), rng.integers(0, 3, 300)
    a = rank_gallery(q, ql, g, gl, block=7)
    b = rank_gallery(q, ql, g, gl, block=1000)
    np.testing.assert_allclose(a.ap, b.ap)
    assert (a.top_indices == b.top_indices).all()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="query dim"):
        retrieval_metrics(np.ones((2, 3)), [0, 1], np.ones((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="gallery: 2 embeddings"):
        retrieval_metrics(np.ones((2, 3)), [0, 1], np.ones((2, 3)), [0, 1, 2])


def test_2000_queries_by_20000_gallery_is_fast():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2000, 64)).astype(np.float32)
    g = rng.normal(size=(20000, 64)).astype(np.float32)
    t0 = time.perf_counter()
    m = retrieval_metrics(q, rng.integers(0, 10, 2000), g, rng.integers(0, 10, 20000))
    elapsed = time.perf_counter() - t0
    assert 0.05 < m["map"] < 0.2  # chance level is ~0.1 for 10 balanced classes
    assert elapsed < 60  # ~10 s on one loaded shared core; a non-vectorised loop takes minutes

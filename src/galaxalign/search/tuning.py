"""Choose an index's search knob (nprobe, ef_search) from its own data, not a constant.

Right after a build, ``calibrate`` draws database vectors as queries, finds their exact top-k
(faiss brute force, a chunk of the base at a time, merged with faiss's ``ResultHeap``), then tries
growing values of the knob and keeps the smallest whose recall@k reaches the target. A query's own
entry is left out of both lists (a database vector always finds itself). The chosen value and the
measured recall go into index.json, so the figure behind the choice is on record.
"""
from __future__ import annotations

import numpy as np

from galaxalign.search.difficulty import recall_at_k

# OUR CHOICE: 256 calibration queries (recall measured to about +-0.01), values 1, 2, 3, 4, 6, 8, ...
CALIBRATION_QUERIES = 256
PLATEAU = 0.003  # recall gained over two steps below which widening the search stops
KNOB_VALUES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096)


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, keys: np.ndarray | None = None,
                chunk: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` over ``base`` (may be memory-mapped); ids are
    ``keys[row]`` (row numbers without ``keys``)."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    for start in range(0, len(base), chunk):
        part = np.ascontiguousarray(base[start : start + chunk], dtype=np.float32)
        d, i = faiss.knn(q, part, min(k, len(part)), metric=faiss.METRIC_INNER_PRODUCT)
        ids = i + start if keys is None else np.where(i >= 0, np.asarray(keys)[np.maximum(i + start, 0)], -1)
        if d.shape[1] < k:
            d = np.pad(d, ((0, 0), (0, k - d.shape[1])), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - ids.shape[1])), constant_values=-1)
        heap.add_result(np.ascontiguousarray(d, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    heap.finalize()
    return heap.D, heap.I


def calibrate(search, base: np.ndarray, keys: np.ndarray, knob: str, target: float, limit: int,
              k: int = 10, queries: int = CALIBRATION_QUERIES, seed: int = 0) -> dict:
    """The smallest ``knob`` value (<= ``limit``) with recall@``k`` >= ``target``.

    ``search(queries, k, value) -> rows/keys (Q, k)`` runs the index with the knob at ``value``;
    ``base``/``keys`` are the indexed vectors and their keys. Returns ``{knob, "calibration": {...}}``.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(base), min(queries, len(base)), replace=False))
    q = np.ascontiguousarray(base[rows], dtype=np.float32)
    own = np.asarray(keys)[rows]
    _, truth = exact_top_k(base, q, k + 1, keys)
    truth = np.array([[t for t in tr if t != o][:k] for tr, o in zip(truth, own)])
    tried = []
    chosen = None
    for value in [v for v in KNOB_VALUES if v <= limit] or [limit]:
        found = search(q, k + 1, value)
        found = np.array([([f for f in fo if f != o] + [-1] * k)[:k] for fo, o in zip(found, own)])
        rec = recall_at_k(found, truth, k)
        tried.append([value, round(rec, 4)])
        if rec >= target:
            chosen = value
            break
        if len(tried) >= 3 and tried[-1][1] - tried[-3][1] < PLATEAU:
            break  # recall has stopped rising (e.g. PQ codes, not the lists, limit it): widening costs only
    if chosen is None:
        # the target is out of reach: the smallest value within PLATEAU of the best recall seen
        best = max(r for _, r in tried)
        chosen = next(v for v, r in tried if r >= best - PLATEAU)
    return {knob: int(chosen), "calibration": {"target_recall_at_10": target, "queries": int(len(q)),
                                               "tried": tried, "reached": bool(tried[-1][1] >= target)}}

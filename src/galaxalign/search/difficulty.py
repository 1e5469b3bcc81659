"""How hard a set of embeddings is for approximate search, in the field's two standard measures.

- **Relative contrast** (He, Kumar & Chang 2012): mean distance from a query to a random database
  vector over its distance to the nearest (and to the 10th nearest) one. Near 1: every point is
  about as far as every other and no index can prune; large: neighbours stand out.
- **IVF nprobe=1 recall@10**: an IVF-Flat index with sqrt(N) lists (the classic setting, 1000 at
  1M), probing one list. Tight, well separated clusters score near 1 (a benchmark on them cannot tell a good index
  from a lucky one); real embeddings score far lower.
"""
from __future__ import annotations

import numpy as np


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean fraction of the true top ``k`` found among the returned top ``k`` (ids; -1 never counts)."""
    found, truth = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def relative_contrast(base: np.ndarray, queries: np.ndarray, k: int = 10, sample: int = 2000, seed: int = 0) -> dict:
    """``{"rc_1", "rc_10"}``: mean random distance / distance to the 1st and ``k``-th neighbour (L2)."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    d2, _ = index.search(queries, k)
    rng = np.random.default_rng(seed)
    rand = base[rng.integers(0, len(base), sample)]
    # mean over (query, random vector) pairs of the L2 distance
    g = queries @ rand.T
    qn = (queries**2).sum(1)[:, None]
    rn = (rand**2).sum(1)[None, :]
    mean_d = float(np.sqrt(np.maximum(qn + rn - 2 * g, 0)).mean())
    nn = np.sqrt(np.maximum(d2, 1e-12))
    return {"rc_1": round(mean_d / float(nn[:, 0].mean()), 3), f"rc_{k}": round(mean_d / float(nn[:, k - 1].mean()), 3)}


def dataset_difficulty(base: np.ndarray, queries: np.ndarray | int = 200, k: int = 10, seed: int = 0,
                       truth: np.ndarray | None = None) -> dict:
    """Relative contrast and IVF nprobe=1 recall@``k`` of ``base`` (N, D) for ``queries``.

    ``queries`` an int: that many database vectors serve as queries, and each one's own entry is
    left out of its ground truth and results (a database vector always finds itself).
    """
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    self_queries = isinstance(queries, (int, np.integer))
    if self_queries:
        rows = np.random.default_rng(seed).choice(len(base), min(int(queries), len(base)), replace=False)
        q = base[rows]
    else:
        q = np.ascontiguousarray(queries, dtype=np.float32)
    extra = 1 if self_queries else 0
    if truth is None:
        exact = faiss.IndexFlatIP(base.shape[1])
        exact.add(base)
        _, truth = exact.search(q, k + extra)
    nlist = int(max(1, min(np.sqrt(len(base)), len(base) // 39)))
    quantizer = faiss.IndexFlatIP(base.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(base if len(base) <= 64 * nlist else base[np.random.default_rng(seed).choice(len(base), 64 * nlist, replace=False)])
    ivf.add(base)
    ivf.nprobe = 1
    _, found = ivf.search(q, k + extra)
    if self_queries:
        truth = np.array([[t for t in tr if t != r][:k] for tr, r in zip(truth, rows)])
        found = np.array([([f for f in fo if f != r] + [-1] * k)[:k] for fo, r in zip(found, rows)])
    out = {"ivf_nlist": int(nlist), "ivf_nprobe1_recall_at_10": round(recall_at_k(found, truth, k), 4)}
    if self_queries:
        # relative contrast with the query's own entry excluded: drop it from the base
        keep = np.ones(len(base), bool)
        keep[rows] = False
        out.update(relative_contrast(base[keep], q, k=k, seed=seed))
    else:
        out.update(relative_contrast(base, q, k=k, seed=seed))
    return out

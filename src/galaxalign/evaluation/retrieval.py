"""Similarity-search metrics: every query ranks the whole gallery by cosine similarity.

Relevant = same class as the query. A gallery item that *is* the query (same id) is removed from
its ranking, which matters when the gallery and the queries are the same set. Queries are scored in
blocks, so 2,000 queries x 20,000 gallery images stay within a few hundred MB and a few seconds.

Definitions (R = number of relevant gallery items of a query, rel_i = 1 if rank i is relevant):
- AP      = (1/R) * sum_i P@i * rel_i over the full ranking; mAP = mean over queries.
- AP@10   = sum_{i<=10} P@i * rel_i / min(10, R); mAP@10 its mean.
  # OUR CHOICE: AP truncated at 10 normalised by min(10, R), so a perfect top 10 scores 1 even when
  # R > 10 (the paper reports mAP@10 without defining it).
- P@k     = (relevant in the top k) / k.
- R@10    = (relevant in the top 10) / R.
Queries with no relevant gallery item (R = 0) have no defined AP; they are left out of every mean
and counted in ``n_queries_without_relevant``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)
MAP_AT = 10  # OUR CHOICE: the k of mAP@k and R@k, as in the paper's tables (mAP@10)


@dataclass
class RetrievalResult:
    """Per-query scores (NaN where R = 0) plus each query's top gallery indices, for plots."""

    ap: np.ndarray
    ap_at_10: np.ndarray
    precision_at: dict[int, np.ndarray]
    recall_at_10: np.ndarray
    num_relevant: np.ndarray
    top_indices: np.ndarray  # (Q, top_n) gallery indices, best first
    ks: tuple[int, ...] = field(default=DEFAULT_KS)

    @property
    def valid(self) -> np.ndarray:
        return self.num_relevant > 0

    def summary(self) -> dict:
        v = self.valid
        out = {
            "n_queries": int(v.sum()),
            "n_queries_without_relevant": int((~v).sum()),
            "map": _mean(self.ap[v]),
            "map_at_10": _mean(self.ap_at_10[v]),
        }
        for k in self.ks:
            out[f"precision_at_{k}"] = _mean(self.precision_at[k][v])
        out["recall_at_10"] = _mean(self.recall_at_10[v])
        return out

    def per_query(self) -> dict[str, np.ndarray]:
        """Per-query arrays of the valid queries (the bootstrap resamples these)."""
        v = self.valid
        d = {"map": self.ap[v], "map_at_10": self.ap_at_10[v], "recall_at_10": self.recall_at_10[v]}
        for k in self.ks:
            d[f"precision_at_{k}"] = self.precision_at[k][v]
        return d


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if x.size else None


def _check(emb: np.ndarray, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(emb, dtype=np.float32)
    labels = np.asarray(labels)
    if emb.ndim != 2:
        raise ValueError(f"{what} embeddings must be 2-D (N, D), got shape {emb.shape}")
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"{what}: {emb.shape[0]} embeddings but labels of shape {labels.shape}")
    return emb, labels


def rank_gallery(
    query_emb: np.ndarray,
    query_labels,
    gallery_emb: np.ndarray,
    gallery_labels,
    query_ids: Sequence | None = None,
    gallery_ids: Sequence | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    top_n: int = 10,
    block: int = 256,
) -> RetrievalResult:
    """Rank the gallery for every query and score the rankings (embeddings L2-normalised upstream).

    ``query_ids``/``gallery_ids``: when given, a gallery item whose id equals the query's id is
    excluded from that query's ranking (pass the same ids when the gallery is the query set).
    """
    q, ql = _check(query_emb, query_labels, "query")
    g, gl = _check(gallery_emb, gallery_labels, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("pass both query_ids and gallery_ids (for query exclusion) or neither")
    ks = tuple(sorted(set(int(k) for k in ks)))
    G = g.shape[0]
    if G == 0:
        raise ValueError("the gallery is empty")
    exclude = None
    if query_ids is not None:
        gid = np.asarray(gallery_ids).astype(str)
        qid = np.asarray(query_ids).astype(str)
        if gid.shape != (G,) or qid.shape != (q.shape[0],):
            raise ValueError("query_ids/gallery_ids must have one id per embedding")
        pos = {v: i for i, v in enumerate(gid)}
        exclude = np.array([pos.get(v, -1) for v in qid], dtype=np.int64)

    Q = q.shape[0]
    ap = np.zeros(Q)
    ap10 = np.zeros(Q)
    r10 = np.zeros(Q)
    pk = {k: np.zeros(Q) for k in ks}
    nrel = np.zeros(Q, dtype=np.int64)
    top = np.full((Q, min(top_n, G)), -1, dtype=np.int64)
    ranks = np.arange(1, G + 1, dtype=np.float64)
    for s in range(0, Q, block):
        e = min(Q, s + block)
        sim = q[s:e] @ g.T
        rel_all = ql[s:e, None] == gl[None, :]
        if exclude is not None:
            rows = np.nonzero(exclude[s:e] >= 0)[0]
            sim[rows, exclude[s:e][rows]] = -np.inf  # ranked last and never relevant
            rel_all[rows, exclude[s:e][rows]] = False
        order = np.argsort(-sim, axis=1, kind="stable")
        rel = np.take_along_axis(rel_all, order, axis=1)
        R = rel.sum(axis=1)
        hits = np.cumsum(rel, axis=1)
        prec = hits / ranks[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[s:e] = (prec * rel).sum(axis=1) / R
            d = min(MAP_AT, G)
            ap10[s:e] = (prec[:, :d] * rel[:, :d]).sum(axis=1) / np.minimum(MAP_AT, R)
            r10[s:e] = hits[:, d - 1] / R
        for k in ks:
            pk[k][s:e] = hits[:, min(k, G) - 1] / k
        nrel[s:e] = R
        top[s:e] = order[:, : top.shape[1]]
    bad = nrel == 0
    for arr in (ap, ap10, r10, *pk.values()):
        arr[bad] = np.nan
    return RetrievalResult(ap, ap10, pk, r10, nrel, top, ks)


def retrieval_metrics(*args, **kwargs) -> dict:
    """Mean metrics as a JSON-safe dict; see :func:`rank_gallery` for the arguments."""
    return rank_gallery(*args, **kwargs).summary()

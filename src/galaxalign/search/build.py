"""Build an index folder: check the embeddings and id table, pick the kind, train, fill, calibrate.

:func:`build_index` is the one entry (``galaxalign index`` calls it through
:func:`build_index_from_embeddings`); :mod:`galaxalign.search.index` re-exports it beside
:class:`~galaxalign.search.index.SearchIndex`, which loads, searches and grows what this writes.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from galaxalign.runtime import atomic_path
from galaxalign.search.faiss_index import (
    SEARCH_KNOB,
    add_in_chunks,
    empty_index,
    resolve_params,
    set_search_params,
    train_index,
)
from galaxalign.search.index import SearchIndex
from galaxalign.search.records import (
    CHUNK,
    INDEX_FORMAT,
    KEY_COLUMN,
    STORE_FILE,
    IndexMismatchError,
    as_matrix,
    id_table,
    normalize_rows,
)
from galaxalign.search.store import VectorStore

# OUR CHOICE: exact search (IndexFlatIP) up to 100k vectors: brute force there costs a few ms per
# query on one core and has perfect recall. Beyond, IVF-PQ with 4-bit fast-scan codes (D/2 bytes
# per vector) whose short list is re-ranked exactly from the memory-mapped float store: on
# bench/bench_index.py's data (a mixture fitted to real embeddings, 200k x 256) it reached recall@10
# 0.986 at 19x exact search where IVF-Flat needed 4x the probes and reached 8.5x. IVF-Flat stays
# available (`--kind ivf`). See docs/scale.md.
AUTO_EXACT_MAX = 100_000
AUTO_IVF_MAX = 0  # no size range picks IVF-Flat by default any more


def choose_kind(count: int) -> str:
    """The index kind ``auto`` picks for a catalog of ``count`` vectors."""
    if count <= AUTO_EXACT_MAX:
        return "exact"
    if count <= AUTO_IVF_MAX:
        return "ivf"
    return "ivfpq"  # IVF-PQ fast-scan, re-ranked from the memory-mapped exact vectors


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` itself when its rows are unit length (checked a chunk at a time), else normalised."""
    for start in range(0, len(x), CHUNK):
        if np.abs(np.linalg.norm(x[start : start + CHUNK], axis=1) - 1).max(initial=0) > 1e-3:
            # Cosine similarity is the search score; tolerate unnormalised input by normalising here.
            return normalize_rows(x)
    return x


def create_faiss_index(kind: str, vectors: np.ndarray, params: dict, seed: int = 0, progress: bool = False,
                       keys: np.ndarray | None = None):
    """Build (train and fill) a faiss inner-product index of ``kind`` over ``vectors`` (N, D)."""
    index = empty_index(kind, vectors.shape[1], params)
    train_index(index, kind, vectors, params, seed=seed)
    set_search_params(index, kind, params)
    add_in_chunks(index, vectors, np.arange(len(vectors)) if keys is None else keys, progress)
    return index


def build_index(
    vectors: np.ndarray,
    table: pd.DataFrame,
    out_dir: str | Path,
    kind: str = "auto",
    params: dict | None = None,
    info: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    shards: int = 1,
) -> Path:
    """Index ``vectors`` (N, D) whose row i is described by ``table`` row i; save to ``out_dir``.

    ``info`` adds provenance to index.json (``checkpoint``, ``embeddings``, ``taxonomy``, ...).
    ``shards`` > 1 builds the index in that many shards from one trained quantizer (see
    :mod:`galaxalign.search.shards`); queries fan out to every shard and merge. Knobs left None
    (nprobe, ef_search) are calibrated on the data. The folder is written atomically: a crash
    leaves the previous index (or none), never half of one.
    """
    x = as_matrix(vectors, what="embeddings")
    n, dim = x.shape
    if n == 0:
        raise ValueError("embeddings: no vectors to index")
    if len(table) != n:
        raise IndexMismatchError(f"id table has {len(table)} rows but there are {n} embeddings")
    if int(shards) < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    t = id_table(table)
    x = _unit_rows(x)
    kind = choose_kind(n) if kind == "auto" else kind
    p = resolve_params(kind, n, dim, params)
    keys = np.arange(n, dtype=np.int64)
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        store = VectorStore(VectorStore.write(tmp / STORE_FILE, x), dim) if kind == "ivfpq" else None
        if int(shards) > 1:
            from galaxalign.search.shards import build_shards

            index = build_shards(kind, x, keys, p, int(shards), seed=seed, progress=progress, folder=tmp)
        else:
            index = create_faiss_index(kind, x, p, seed=seed, progress=progress, keys=keys)
        seconds = time.perf_counter() - t0
        meta = {"format": INDEX_FORMAT, "version": 2, "kind": kind, "dim": int(dim), "count": int(n),
                "metric": "inner_product", "params": p, "build_seconds": round(seconds, 3),
                "shards": int(shards), **(info or {})}
        built = SearchIndex(index, t.assign(**{KEY_COLUMN: keys}), meta, store=store)
        knob = SEARCH_KNOB.get(kind)
        if knob and p.get(knob) is None:
            t1 = time.perf_counter()
            built.calibrate(x, seed=seed)
            built.info["calibration_seconds"] = round(time.perf_counter() - t1, 3)
        built._write(tmp)
    return out_dir


def build_index_from_embeddings(
    embeddings_dir: str | Path,
    out_dir: str | Path,
    kind: str = "auto",
    params: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    shards: int = 1,
) -> Path:
    """Index the Parquet shards written by :func:`galaxalign.search.embed.embed_survey`."""
    from galaxalign.search.embed import read_embeddings

    table, vectors, manifest = read_embeddings(embeddings_dir)
    info = {
        "checkpoint": manifest.get("checkpoint"),
        "data_source": manifest.get("data_source"),
        "taxonomy": manifest.get("taxonomy"),
        "modality": manifest.get("modality", "image"),
        "embeddings": str(Path(embeddings_dir).resolve()),
    }
    return build_index(vectors, table, out_dir, kind=kind, params=params, info=info, seed=seed, progress=progress,
                       shards=shards)

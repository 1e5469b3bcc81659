"""faiss indexes over survey embeddings: build, save atomically, load with agreement checks.

An index folder holds ``index.faiss`` (the faiss index, inner product on L2-normalised vectors,
i.e. cosine similarity), ``table.parquet`` (index row -> id, label, source, metadata) and
``index.json`` (kind, dim, count, params, model checkpoint, embeddings folder). Loading checks that
the three agree, so a table from one run never silently labels the hits of another.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from galaxalign.runtime import atomic_path, recover_path

INDEX_FILE = "index.faiss"
TABLE_FILE = "table.parquet"
INFO_FILE = "index.json"
INDEX_FORMAT = "galaxalign-index"
KINDS = ("exact", "hnsw", "ivf", "ivfpq")

# OUR CHOICE: exact search (IndexFlatIP) up to 200k vectors: brute force there costs a few ms per
# query on one core and has perfect recall. IVF-Flat up to 5M: in bench/bench_index.py (1M clustered
# vectors, D=128, one core) it builds in ~10 s and reaches recall@10 >= 0.95 at ~100x the exact
# queries/s, where HNSW took ~13 min to build and reached 0.98 at ~9x. IVF-PQ beyond 5M, where
# the full float32 vectors (>= 2.5 GB at D=128) stop fitting comfortably.
AUTO_EXACT_MAX = 200_000
AUTO_IVF_MAX = 5_000_000

# OUR CHOICE of defaults; each reaches recall@10 >= 0.95 in bench/bench_index.py (1M clustered vectors).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": None, "nprobe": 16},  # nlist None -> ~4*sqrt(N), clamped
    "ivfpq": {"nlist": None, "nprobe": 16, "pq_m": None, "pq_bits": 8, "refine_k_factor": 8},
}


class IndexMismatchError(ValueError):
    """The index folder's parts disagree (count, dim, kind); the message names the files."""


class UnknownGalaxyError(KeyError):
    """A galaxy id that is not in the index."""


@dataclass(frozen=True)
class Hit:
    """One search result: where it sits in the index and what the catalog says about it."""

    rank: int
    id: str
    score: float
    label: int
    label_name: str
    source: str
    row: int

    def to_dict(self) -> dict:
        return asdict(self)


def choose_kind(count: int) -> str:
    """The index kind ``auto`` picks for a catalog of ``count`` vectors."""
    if count <= AUTO_EXACT_MAX:
        return "exact"
    if count <= AUTO_IVF_MAX:
        return "ivf"
    return "ivfpq"


def _as_matrix(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what}: dimension {x.shape[1]} does not match the index dimension {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (inner product then equals cosine similarity); zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def resolve_params(kind: str, count: int, dim: int, params: dict | None = None) -> dict:
    """Fill the defaults of ``kind`` that depend on the catalog size and dimension."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {('auto',) + KINDS}")
    p = dict(DEFAULT_PARAMS[kind])
    unknown = set(params or {}) - set(p)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for index kind {kind!r}; known: {sorted(p)}")
    p.update(params or {})
    if kind in ("ivf", "ivfpq"):
        if p["nlist"] is None:
            # OUR CHOICE: ~sqrt(N) lists (1000 at 1M), at least 39 training points per list (faiss's minimum).
            p["nlist"] = int(max(1, min(math.sqrt(count), count // 39, 65536)))
        p["nlist"] = int(max(1, min(p["nlist"], count)))
        p["nprobe"] = int(max(1, min(p["nprobe"], p["nlist"])))
    if kind == "ivfpq":
        if p["pq_m"] is None:
            # OUR CHOICE: 4 dimensions per sub-quantizer (D/4 bytes per vector at 8 bits), then the
            # short list (k * refine_k_factor) is re-ranked with exact scores.
            p["pq_m"] = next(m for m in (dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
        if dim % int(p["pq_m"]):
            raise ValueError(f"ivfpq: pq_m={p['pq_m']} must divide the dimension {dim}")
    return p


def create_faiss_index(kind: str, vectors: np.ndarray, params: dict, seed: int = 0, progress: bool = False):
    """Build (train and fill) a faiss inner-product index of ``kind`` over ``vectors`` (N, D)."""
    import faiss

    n, dim = vectors.shape
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["M"]), ip)
        index.hnsw.efConstruction = int(params["ef_construction"])
        index.hnsw.efSearch = int(params["ef_search"])
    elif kind in ("ivf", "ivfpq"):
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, int(params["nlist"]), ip)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, int(params["nlist"]), int(params["pq_m"]), int(params["pq_bits"]), ip)
        index.own_fields = True
        quantizer.this.disown()  # the IVF index now owns (and frees) its quantizer
        # OUR CHOICE: train k-means on 64 points per list (faiss asks for >= 39): enough for stable
        # centroids, and training stays seconds, not minutes, at 1M vectors.
        n_train = min(n, 64 * int(params["nlist"]))
        rng = np.random.default_rng(seed)
        train = vectors if n_train >= n else vectors[np.sort(rng.choice(n, n_train, replace=False))]
        index.cp.seed = seed
        if kind == "ivfpq" and len(train) < 2 ** int(params["pq_bits"]):
            raise ValueError(f"ivfpq needs at least {2 ** int(params['pq_bits'])} vectors to train, got {len(train)}; use --kind exact")
        index.train(train)
        index.nprobe = int(params["nprobe"])
        if kind == "ivfpq" and int(params.get("refine_k_factor") or 0) > 1:
            # Re-rank the PQ short list with the exact vectors: recall of exact scores at PQ speed.
            index = faiss.IndexRefineFlat(index)
            index.k_factor = float(params["refine_k_factor"])
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    _add_in_chunks(index, vectors, progress)
    return index


def _add_in_chunks(index, vectors: np.ndarray, progress: bool, chunk: int = 65536) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=len(vectors), desc="index", unit="vec", disable=not progress) as bar:
        for start in range(0, len(vectors), chunk):
            part = vectors[start : start + chunk]
            index.add(part)
            bar.update(len(part))


def _set_search_params(index, kind: str, params: dict) -> None:
    import faiss

    if kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])
    elif kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(params["nprobe"])
        if kind == "ivfpq" and isinstance(index, faiss.IndexRefine):
            index.k_factor = float(params.get("refine_k_factor") or 1)


def _table_from(table: pd.DataFrame) -> pd.DataFrame:
    for col in ("id", "label", "source"):
        if col not in table.columns:
            raise ValueError(f"id table: missing required column {col!r} (has {list(table.columns)})")
    t = table.drop(columns=[c for c in ("embedding",) if c in table.columns]).reset_index(drop=True)
    t["id"] = t["id"].astype(str)
    dup = t["id"][t["id"].duplicated()]
    if len(dup):
        raise ValueError(f"id table: duplicate ids, e.g. {dup.iloc[0]!r} ({len(dup)} duplicates)")
    t["label"] = t["label"].fillna(-1).astype("int64")
    t["source"] = t["source"].astype(str)
    return t


def build_index(
    vectors: np.ndarray,
    table: pd.DataFrame,
    out_dir: str | Path,
    kind: str = "auto",
    params: dict | None = None,
    info: dict | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Index ``vectors`` (N, D) whose row i is described by ``table`` row i; save to ``out_dir``.

    ``info`` adds provenance to index.json (``checkpoint``, ``embeddings``, ``taxonomy``, ...).
    The folder is written atomically: a crash leaves the previous index (or none), never half of one.
    """
    x = _as_matrix(vectors, what="embeddings")
    n, dim = x.shape
    if n == 0:
        raise ValueError("embeddings: no vectors to index")
    if len(table) != n:
        raise IndexMismatchError(f"id table has {len(table)} rows but there are {n} embeddings")
    t = _table_from(table)
    norms = np.linalg.norm(x, axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        # Cosine similarity is the search score; tolerate unnormalised input by normalising here.
        x = normalize_rows(x)
    kind = choose_kind(n) if kind == "auto" else kind
    p = resolve_params(kind, n, dim, params)
    t0 = time.perf_counter()
    index = create_faiss_index(kind, x, p, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    meta = {
        "format": INDEX_FORMAT,
        "version": 1,
        "kind": kind,
        "dim": int(dim),
        "count": int(n),
        "metric": "inner_product",
        "params": p,
        "build_seconds": round(seconds, 3),
        **(info or {}),
    }
    import faiss

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        t.to_parquet(tmp / TABLE_FILE, index=False)
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out_dir


def build_index_from_embeddings(
    embeddings_dir: str | Path,
    out_dir: str | Path,
    kind: str = "auto",
    params: dict | None = None,
    seed: int = 0,
    progress: bool = True,
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
    return build_index(vectors, table, out_dir, kind=kind, params=params, info=info, seed=seed, progress=progress)


class SearchIndex:
    """A loaded index folder: the faiss index, its id table and its metadata, checked to agree."""

    def __init__(self, index, table: pd.DataFrame, info: dict, path: Path | None = None, class_names: Sequence[str] | None = None):
        self.index = index
        self.table = table
        self.info = info
        self.path = path
        self.class_names = list(class_names) if class_names is not None else _class_names_from(info)
        self._row_of = {str(i): r for r, i in enumerate(table["id"].tolist())}
        self._check()

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, search_params: dict | None = None) -> "SearchIndex":
        """Open an index folder; raise :class:`IndexMismatchError` when its parts disagree."""
        import faiss

        path = Path(path)
        recover_path(path)  # a crash in the middle of replacing this folder: bring the last version back
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index folder (build one with `galaxalign index`)")
        for name in (INDEX_FILE, TABLE_FILE, INFO_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name}: missing; {path} is not a complete index folder")
        try:
            info = json.loads((path / INFO_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path / INFO_FILE}: not valid JSON: {exc}") from None
        if info.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path / INFO_FILE}: format is {info.get('format')!r}, expected {INDEX_FORMAT!r}")
        try:
            index = faiss.read_index(str(path / INDEX_FILE))
        except RuntimeError as exc:
            raise ValueError(f"{path / INDEX_FILE}: faiss cannot read it: {str(exc).strip().splitlines()[-1]}") from None
        table = pd.read_parquet(path / TABLE_FILE)
        if search_params:
            info = {**info, "params": {**info.get("params", {}), **search_params}}
        _set_search_params(index, info.get("kind", ""), info.get("params", {}))
        if info.get("kind") in ("ivf", "ivfpq"):
            # Row -> list position map, so vector() can reconstruct by row (8 bytes per vector).
            faiss.extract_index_ivf(index).make_direct_map()
        return cls(index, table, info, path)

    def _check(self) -> None:
        where = str(self.path) if self.path else "index"
        n_index, n_table = int(self.index.ntotal), len(self.table)
        n_info, d_info, d_index = self.info.get("count"), self.info.get("dim"), int(self.index.d)
        if n_index != n_table:
            raise IndexMismatchError(
                f"{where}: the faiss index holds {n_index} vectors but {TABLE_FILE} has {n_table} rows; "
                "they come from different builds, rebuild with `galaxalign index`"
            )
        if n_info is not None and int(n_info) != n_index:
            raise IndexMismatchError(f"{where}: {INFO_FILE} says count={n_info} but the faiss index holds {n_index} vectors")
        if d_info is not None and int(d_info) != d_index:
            raise IndexMismatchError(f"{where}: {INFO_FILE} says dim={d_info} but the faiss index has dimension {d_index}")
        for col in ("id", "label", "source"):
            if col not in self.table.columns:
                raise IndexMismatchError(f"{where}: {TABLE_FILE} lacks column {col!r}")

    # -- facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", "exact"))

    @property
    def checkpoint(self) -> str | None:
        return self.info.get("checkpoint")

    def label_name(self, label: int) -> str:
        if 0 <= label < len(self.class_names):
            return self.class_names[label]
        return "unknown" if label < 0 else str(label)

    def row_of(self, galaxy_id: str) -> int:
        try:
            return self._row_of[str(galaxy_id)]
        except KeyError:
            raise UnknownGalaxyError(f"unknown galaxy id {galaxy_id!r}: not in this index ({len(self)} galaxies)") from None

    def record(self, galaxy_id: str) -> dict:
        """The id-table row of a galaxy as a plain dict."""
        return _jsonable(self.table.iloc[self.row_of(galaxy_id)].to_dict())

    def vector(self, galaxy_id: str) -> np.ndarray:
        """The stored embedding of a galaxy (exact for every kind but a refine-less IVF-PQ)."""
        import faiss

        row = self.row_of(galaxy_id)
        if self.kind in ("exact", "hnsw", "ivf") or isinstance(self.index, faiss.IndexRefine):
            return self.index.reconstruct(row)  # flat storage (or the refine stage's): exact
        shards = self.info.get("embeddings")
        if shards and Path(shards).is_dir():
            from galaxalign.search.embed import read_embedding_rows

            return read_embedding_rows(shards, [row])[0]
        return normalize_rows(self.index.reconstruct(row)[None])[0]  # PQ codes: approximate

    # -- search ----------------------------------------------------------------------------------
    def search_vectors(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Raw faiss search: (scores (Q,k), rows (Q,k)); rows are -1 where fewer than k exist."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = normalize_rows(_as_matrix(queries, self.dim, what="query"))
        return self.index.search(q, min(int(k), len(self)))

    def search(self, query: np.ndarray, k: int = 10, exclude: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` galaxies nearest (cosine) to one query vector, best first."""
        skip = {str(e) for e in exclude}
        scores, rows = self.search_vectors(query, k + len(skip))
        hits: list[Hit] = []
        ids = self.table["id"].to_numpy()
        labels = self.table["label"].to_numpy()
        sources = self.table["source"].to_numpy()
        for score, row in zip(scores[0], rows[0]):
            if row < 0 or str(ids[row]) in skip:
                continue
            label = int(labels[row])
            hits.append(Hit(len(hits) + 1, str(ids[row]), float(score), label, self.label_name(label), str(sources[row]), int(row)))
            if len(hits) == k:
                break
        return hits


def _class_names_from(info: dict) -> list[str]:
    tax = info.get("taxonomy")
    if isinstance(tax, dict):
        return [c["name"] for c in tax.get("classes", [])]
    if isinstance(tax, str):
        try:
            from galaxalign.taxonomy import load_taxonomy

            return load_taxonomy(tax).class_names
        except (FileNotFoundError, ValueError):
            return []
    return []


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out

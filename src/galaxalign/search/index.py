"""faiss indexes over survey embeddings: build, save atomically, load with agreement checks.

An index folder holds ``index.faiss`` (the faiss index, inner product on L2-normalised vectors,
i.e. cosine similarity; ``shards/`` instead when built in shards), ``table.parquet`` (index row ->
key, id, label, source, metadata), ``index.json`` (kind, dim, count, params, model checkpoint,
embeddings folder) and, for IVF-PQ, ``vectors.f32`` (the exact vectors, memory-mapped for re-ranking). Loading checks that
the three agree, so a table from one run never silently labels the hits of another.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from galaxalign.runtime import atomic_path, recover_path
from galaxalign.search.faiss_index import (  # noqa: F401  (re-exported: the index API's one front door)
    DEFAULT_PARAMS,
    KINDS,
    SEARCH_KNOB,
    add_in_chunks,
    auto_nlist,
    empty_index,
    ivf_parts,
    resolve_params,
    search_parameters,
    set_search_params,
    train_index,
)
from galaxalign.search.filters import CatalogFilter, id_selector, parse_filter
from galaxalign.search.store import VectorStore

from galaxalign.search.records import (  # noqa: F401  (re-exported: the index API's one front door)
    CHUNK,
    INDEX_FILE,
    INDEX_FORMAT,
    INFO_FILE,
    KEY_COLUMN,
    STORE_FILE,
    TABLE_FILE,
    Hit,
    IndexMismatchError,
    UnknownGalaxyError,
    as_matrix,
    class_names_from,
    id_table,
    index_taxonomy,
    jsonable,
    normalize_rows,
)


class SearchIndex:
    """A loaded index folder: the faiss index, its id table and its metadata, checked to agree.

    Galaxies live in faiss under int64 keys (the table's hidden ``key`` column; row numbers in
    folders written before keys existed), so :meth:`add` and :meth:`remove` change a live index
    without a rebuild, and :meth:`save` writes it back atomically.
    """

    def __init__(self, index, table: pd.DataFrame, info: dict, path: Path | None = None,
                 class_names: Sequence[str] | None = None, store: VectorStore | None = None):
        self.index = index
        keys = table[KEY_COLUMN].to_numpy(np.int64) if KEY_COLUMN in table.columns else np.arange(len(table), dtype=np.int64)
        self.table = table.drop(columns=[KEY_COLUMN]) if KEY_COLUMN in table.columns else table
        self._keys = keys
        if len(keys) > 1 and not (np.diff(keys) > 0).all():
            raise IndexMismatchError(f"{path or 'index'}: the keys of {TABLE_FILE} are not strictly increasing")
        self.info = info
        self.path = path
        self.store = store
        self.class_names = list(class_names) if class_names is not None else class_names_from(info)
        self._ids: pd.Index | None = None
        self._hit_columns: tuple | None = None
        self._shard_keys: list[np.ndarray] | None = None
        # Bumped by every change that can change a search's results (add, remove, calibrate):
        # caches of results (the service's) key on it, so they never serve a stale answer.
        self.generation = 0
        self._check()

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, search_params: dict | None = None) -> "SearchIndex":
        """Open an index folder; raise :class:`IndexMismatchError` when its parts disagree.

        ``milvus://URI#COLLECTION`` opens a Milvus collection instead (:mod:`galaxalign.search.milvus_index`)."""
        if isinstance(path, str) and path.startswith("milvus:"):
            from galaxalign.search.milvus_index import open_milvus_index

            return open_milvus_index(path, search_params)
        import faiss

        path = Path(path)
        recover_path(path)  # a crash in the middle of replacing this folder: bring the last version back
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such index folder (build one with `galaxalign index`)")
        for name in (TABLE_FILE, INFO_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name}: missing; {path} is not a complete index folder")
        try:
            info = json.loads((path / INFO_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path / INFO_FILE}: not valid JSON: {exc}") from None
        if info.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path / INFO_FILE}: format is {info.get('format')!r}, expected {INDEX_FORMAT!r}")
        if int(info.get("shards") or 1) > 1:
            from galaxalign.search.shards import read_shards

            index = read_shards(path, int(info["shards"]), int(info.get("dim") or 0))
        else:
            if not (path / INDEX_FILE).is_file():
                raise FileNotFoundError(f"{path / INDEX_FILE}: missing; {path} is not a complete index folder")
            index = _read_faiss(path / INDEX_FILE)
        table = pd.read_parquet(path / TABLE_FILE)
        if search_params:
            from galaxalign.search.faiss_index import check_param

            search_params = {name: check_param(name, value) for name, value in search_params.items()}
            info = {**info, "params": {**info.get("params", {}), **search_params}}
        set_search_params(index, info.get("kind", ""), info.get("params", {}))
        if info.get("kind") in ("ivf", "ivfpq") and KEY_COLUMN not in table.columns:
            # Folder from before keys: row -> list position map, so vector() can reconstruct by row.
            faiss.extract_index_ivf(index).make_direct_map()
        store = None
        if (path / STORE_FILE).is_file():
            store = VectorStore(path / STORE_FILE, int(info.get("dim") or index.d))
        return cls(index, table, info, path, store=store)

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
        if self.store is not None and len(self._keys) and len(self.store) <= int(self._keys[-1]):
            raise IndexMismatchError(f"{where}: {STORE_FILE} has {len(self.store)} rows but the table uses key {self._keys[-1]}")

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
    def params(self) -> dict:
        return dict(self.info.get("params") or {})

    @property
    def checkpoint(self) -> str | None:
        return self.info.get("checkpoint")

    def label_name(self, label: int) -> str:
        if 0 <= label < len(self.class_names):
            return self.class_names[label]
        return "unknown" if label < 0 else str(label)

    def row_of(self, galaxy_id: str) -> int:
        if self._ids is None:
            self._ids = pd.Index(self.table["id"].astype(str))
        try:
            return int(self._ids.get_loc(str(galaxy_id)))
        except KeyError:
            raise UnknownGalaxyError(f"unknown galaxy id {galaxy_id!r}: not in this index ({len(self)} galaxies)") from None

    def record(self, galaxy_id: str) -> dict:
        """The id-table row of a galaxy as a plain dict."""
        return jsonable(self.table.iloc[self.row_of(galaxy_id)].to_dict())

    def vector(self, galaxy_id: str) -> np.ndarray:
        """The stored embedding of a galaxy (exact for every kind but a refine-less IVF-PQ)."""
        return self.vectors([self.row_of(galaxy_id)])[0]

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """(len(rows), dim) stored embeddings of table rows, one batched read (see :meth:`vector`)."""
        import faiss

        keys = self._keys[np.asarray(rows, dtype=np.int64)].astype(np.int64)
        if len(keys) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.store is not None:
            return np.array(self.store.rows(keys))
        if self.kind in ("exact", "hnsw", "ivf") or isinstance(self.index, faiss.IndexRefine):
            return self._reconstruct(keys)  # flat storage: exact
        shards = self.info.get("embeddings")
        if shards and Path(shards).is_dir():
            from galaxalign.search.embed import read_embedding_rows

            return np.asarray(read_embedding_rows(shards, keys.tolist()), dtype=np.float32)
        return normalize_rows(self._reconstruct(keys))  # PQ codes: approximate

    def _reconstruct(self, keys: np.ndarray) -> np.ndarray:
        """faiss's stored vectors of ``keys``; a sharded index reads each from the shard holding it."""
        import faiss

        if not isinstance(self.index, faiss.IndexShards):
            return np.asarray(self.index.reconstruct_batch(keys), dtype=np.float32)
        from galaxalign.search.shards import reconstruct, shard_keys

        if self._shard_keys is None:  # which keys each shard holds, listed once per change
            self._shard_keys = [np.sort(shard_keys(self.index.at(s))) for s in range(self.index.count())]
        return reconstruct(self.index, keys, self._shard_keys)

    # -- search ----------------------------------------------------------------------------------
    def _search_keys(self, q: np.ndarray, k: int, params: dict | None = None, selector=None,
                     widen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """faiss search (then re-ranking from the store): (scores, keys), keys -1 where none."""
        p = {**self.params, **(params or {})}
        fetch = k * max(1, int(p.get("rerank_factor") or 1)) if self.store is not None else k
        fetch = max(1, min(fetch, len(self)))
        if selector is None and not params:
            scores, keys = self.index.search(q, fetch)
        else:
            scores, keys = self.index.search(q, fetch, params=search_parameters(self.index, self.kind, p, selector, widen))
        if self.store is not None:
            scores, keys = self.store.rerank(q, keys, k)
        if keys.shape[1] < k:
            keys = np.pad(keys, ((0, 0), (0, k - keys.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        return scores[:, :k], keys[:, :k]

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Table rows of faiss keys (-1 stays -1)."""
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._keys, keys), 0, max(len(self._keys) - 1, 0))
        ok = (keys >= 0) & (len(self._keys) > 0)
        ok &= self._keys[pos] == keys if len(self._keys) else False
        return np.where(ok, pos, -1)

    def search_vectors(self, queries: np.ndarray, k: int = 10, where: CatalogFilter | dict | str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: (scores (Q,k), table rows (Q,k)); rows are -1 where fewer than k exist.

        ``where``: a :class:`~galaxalign.search.filters.CatalogFilter` (or its dict / text form);
        faiss then scans only the rows it selects (``IDSelectorBitmap`` in the search parameters).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = normalize_rows(as_matrix(queries, self.dim, what="query"))
        selector, widen = None, 1.0
        f = parse_filter(where)
        if f is not None and not f.is_empty():
            mask = f.mask(self.table, self.class_names)
            chosen = self._keys[mask]
            if len(chosen) == 0:
                return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
            selector, _bitmap = id_selector(chosen, int(self._keys[-1]) + 1)
            widen = len(self) / len(chosen)
            k = min(k, len(chosen))
        scores, keys = self._search_keys(q, min(int(k), len(self)), selector=selector, widen=widen)
        return scores, self.rows_of_keys(keys)

    def search(self, query: np.ndarray, k: int = 10, exclude: Iterable[str] = (), where=None,
               offset: int = 0) -> list[Hit]:
        """The ``k`` galaxies nearest (cosine) to one query vector, best first, after the first
        ``offset`` (pagination: ranks continue from ``offset + 1``)."""
        if offset < 0:
            raise ValueError(f"offset must be at least 0, got {offset}")
        skip = {str(e) for e in exclude}
        scores, rows = self.search_vectors(query, k + offset + len(skip), where=where)
        valid = rows[0] >= 0
        return self.hits(rows[0][valid], scores[0][valid], k=k, offset=offset, exclude=skip)

    def hits(self, rows: np.ndarray, scores: np.ndarray, k: int | None = None, offset: int = 0,
             exclude: Iterable[str] = ()) -> list[Hit]:
        """Ranked table ``rows`` (best first) with their ``scores`` as hits: the ``k`` after the first
        ``offset`` not in ``exclude`` (ids), ranks continuing from ``offset + 1``."""
        rows = np.asarray(rows, dtype=np.int64)
        skip = {str(e) for e in exclude}
        k = len(rows) if k is None else int(k)
        # one vectorised read per column for the candidates (not one pandas lookup per cell)
        if self._hit_columns is None:  # the arrays behind the columns, looked up once per table
            self._hit_columns = tuple(self.table[c].array for c in ("id", "label", "source"))
        id_col, label_col, source_col = self._hit_columns
        ids = [str(v) for v in id_col.take(rows).tolist()]
        labels = label_col.take(rows).tolist()
        sources = [str(v) for v in source_col.take(rows).tolist()]
        hits: list[Hit] = []
        seen = 0
        for i, row in enumerate(rows.tolist()):
            if ids[i] in skip:
                continue
            seen += 1
            if seen <= offset:
                continue
            label = int(labels[i])
            hits.append(Hit(offset + len(hits) + 1, ids[i], float(scores[i]), label, self.label_name(label), sources[i], row))
            if len(hits) == k:
                break
        return hits

    # -- tuning ----------------------------------------------------------------------------------
    def calibrate(self, vectors: np.ndarray | None = None, target: float | None = None, seed: int = 0) -> dict:
        """Set the search knob (nprobe / ef_search) to the smallest value reaching the target
        recall@10 on this index's own vectors (``vectors``: the indexed rows in key order)."""
        from galaxalign.search.tuning import calibrate

        knob = SEARCH_KNOB.get(self.kind)
        if knob is None:
            return {}
        base = vectors if vectors is not None else (self.store.data if self.store is not None else None)
        if base is None:
            raise ValueError("calibrate: pass the indexed vectors (this index keeps no vector store)")
        target = float(target if target is not None else self.params.get("target_recall") or 0.95)
        limit = max(ivf.nlist for ivf in ivf_parts(self.index)) if knob == "nprobe" else 4096
        keys = self._keys if len(base) == len(self._keys) else np.arange(len(base))
        tuned = calibrate(lambda q, k, v: self._search_keys(q, k, {knob: v})[1], base, keys, knob, target, limit, seed=seed)
        self.info.setdefault("params", {})[knob] = tuned[knob]
        self.info["calibration"] = tuned["calibration"]
        set_search_params(self.index, self.kind, self.params)
        self.generation += 1
        return tuned

    # -- growth ----------------------------------------------------------------------------------
    def add(self, vectors: np.ndarray, table: pd.DataFrame) -> np.ndarray:
        """Add galaxies (a survey's next data release) without a rebuild; returns their keys.

        IVF lists keep their trained centroids: fine while new galaxies look like the old ones;
        rebuild when the catalog has grown several-fold or changed character. Call :meth:`save`
        to write the grown index back.
        """
        x = as_matrix(vectors, self.dim, what="new embeddings")
        if len(table) != len(x):
            raise IndexMismatchError(f"new galaxies: {len(table)} table rows but {len(x)} embeddings")
        t = id_table(table)
        clash = t["id"][t["id"].isin(self.table["id"].astype(str))]
        if len(clash):
            raise ValueError(f"new galaxies: id {clash.iloc[0]!r} is already in the index ({len(clash)} such ids)")
        x = normalize_rows(x)
        next_key = int(self._keys[-1]) + 1 if len(self._keys) else 0
        if self.store is not None:
            next_key = max(next_key, len(self.store))
        keys = np.arange(next_key, next_key + len(x), dtype=np.int64)
        target = self.index
        import faiss

        if isinstance(target, faiss.IndexShards):
            target = faiss.downcast_index(target.at(target.count() - 1))  # new galaxies: the last shard
        try:
            target.add_with_ids(x, keys)
        except RuntimeError as exc:
            raise ValueError(f"this {self.kind} index cannot take new galaxies ({_faiss_message(exc)}); "
                             "it was built before keys existed: rebuild it with `galaxalign index`") from None
        if isinstance(self.index, faiss.IndexShards):
            self.index.syncWithSubIndexes()
        if self.store is not None:
            stored = self.store.append(x)
            assert stored[0] == keys[0], "vector store and keys out of step"
        self.table = pd.concat([self.table, t], ignore_index=True)
        self._keys = np.concatenate([self._keys, keys])
        self._ids = self._hit_columns = self._shard_keys = None
        self.info["count"] = len(self)
        self.generation += 1
        return keys

    def remove(self, galaxy_ids: Iterable[str]) -> int:
        """Remove galaxies by id without a rebuild; returns how many were removed."""
        import faiss

        rows = np.array(sorted({self.row_of(g) for g in galaxy_ids}), dtype=np.int64)
        if len(rows) == 0:
            return 0
        keys = self._keys[rows]
        parts = [faiss.downcast_index(self.index.at(i)) for i in range(self.index.count())] \
            if isinstance(self.index, faiss.IndexShards) else [self.index]
        removed = 0
        for part in parts:
            try:
                removed += int(part.remove_ids(faiss.IDSelectorArray(len(keys), faiss.swig_ptr(keys))))
            except RuntimeError as exc:
                raise ValueError(f"this {self.kind} index cannot remove galaxies ({_faiss_message(exc)}); "
                                 "HNSW graphs cannot drop nodes: rebuild without them, or use kind exact/ivf/ivfpq") from None
        if isinstance(self.index, faiss.IndexShards):
            self.index.syncWithSubIndexes()
        if removed != len(keys):
            raise IndexMismatchError(f"removed {removed} vectors from faiss for {len(keys)} galaxies; the index is inconsistent")
        keep = np.ones(len(self.table), dtype=bool)
        keep[rows] = False
        self.table = self.table[keep].reset_index(drop=True)
        self._keys = self._keys[keep]
        self._ids = self._hit_columns = self._shard_keys = None
        self.info["count"] = len(self)
        self.generation += 1
        return removed

    def save(self, path: str | Path | None = None) -> Path:
        """Write the index folder (atomically) to ``path`` or where it was loaded from."""
        out = Path(path) if path is not None else self.path
        if out is None:
            raise ValueError("save: no path given and the index was not loaded from a folder")
        with atomic_path(out) as tmp:
            tmp.mkdir(parents=True)
            self._write(tmp)
        self.path = out
        if self.store is not None:
            self.store = VectorStore(out / STORE_FILE, self.dim)
        return out

    def _write(self, folder: Path) -> None:
        import faiss

        if self.store is not None and self.store.path.resolve() != (folder / STORE_FILE).resolve():
            try:
                os.link(self.store.path, folder / STORE_FILE)  # the store is append-only: share its bytes
            except OSError:
                shutil.copyfile(self.store.path, folder / STORE_FILE)
        if isinstance(self.index, faiss.IndexShards):
            from galaxalign.search.shards import write_shards

            write_shards(self.index, folder, trained=self.path / "shards" / "trained.faiss" if self.path else None)
            self.info["shards"] = int(self.index.count())
        else:
            faiss.write_index(self.index, str(folder / INDEX_FILE))
            self.info["shards"] = 1
        self.table.assign(**{KEY_COLUMN: self._keys}).to_parquet(folder / TABLE_FILE, index=False)
        self.info["count"] = len(self)
        (folder / INFO_FILE).write_text(json.dumps(self.info, indent=2, default=str) + "\n")


def _read_faiss(path: Path):
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: faiss cannot read it: {_faiss_message(exc)}") from None


def _faiss_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[-1]

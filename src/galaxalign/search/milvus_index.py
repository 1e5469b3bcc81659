"""A search index kept in Milvus: the same queries as a faiss index folder, on an engine that scales out.

A Milvus collection written by :func:`build_milvus_index` (``galaxalign index --backend milvus``)
holds, per galaxy, its int64 key (primary key), ``id``, ``label``, ``source``, its decision-tree path
(``answers``, when the catalog carries per-galaxy answers), its unit embedding, the numeric catalog
columns as scalar fields (``ra``, ``dec``, ``redshift``, ``mag_r`` ...; the filters run on them
inside Milvus) and every other catalog column in one JSON field ``meta``. The index's provenance
(index.json's content: model checkpoint, taxonomy, parameters) lives in the collection's
properties. :class:`MilvusIndex` answers :class:`~galaxalign.search.index.SearchIndex`'s interface
from it, so ``galaxalign search``, ``galaxalign serve``, the page and the Python API run unchanged
on ``--index milvus://URI#COLLECTION`` (see :func:`parse_milvus_spec`).

Where a faiss index speaks of table *rows*, a Milvus index speaks of keys: ``search_vectors``
returns keys, ``hits`` and ``vectors`` take them, and ``Hit.row`` is the galaxy's key.

The collection's make-up and the filter expressions are in :mod:`galaxalign.search.milvus_schema`;
writing one (atomically, behind an alias) and moving between faiss and Milvus in
:mod:`galaxalign.search.milvus_build`.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from galaxalign.search.filters import CatalogFilter, _in_cone, parse_filter
from galaxalign.search.index import SearchIndex
from galaxalign.search.records import (
    INDEX_FORMAT,
    Hit,
    IndexMismatchError,
    UnknownGalaxyError,
    as_matrix as _as_matrix,
    class_names_from as _class_names_from,
    id_table as _table_from,
    jsonable as _jsonable,
    normalize_rows,
)
from galaxalign.search.milvus_records import StoredAnswers, export_collection
from galaxalign.search.milvus_schema import (
    _taxonomy_signature,
    COMPLETE_PROPERTY,
    DEFAULT_COLLECTION,
    INFO_PROPERTY,
    INSERT_BATCH,
    KNOB_LIMIT,
    MAX_TOPK,
    NEXT_KEY_PROPERTY,
    READ_BATCH,
    RECORD_CACHE,
    SEARCH_KNOB,
    UNCALIBRATED,
    VECTOR_FIELD,
    Layout,
    MilvusCollectionError,
    _count,
    _galaxy_paths,
    _quote,
    _rows,
    connect,
    filter_expression,
    milvus_spec,
    parse_milvus_spec,
)


# -- the index -------------------------------------------------------------------------------------
class MilvusIndex(SearchIndex):
    """A GalaxAlign collection in Milvus behind :class:`SearchIndex`'s interface (rows are keys).

    Open with ``SearchIndex.load("milvus://URI#COLLECTION")`` or :meth:`open`. Changes (``add``,
    ``remove``) go to Milvus at once; ``save`` only flushes.
    """

    searches_over_network = True  # every search is a request to Milvus (the service runs it off the event loop)

    def __init__(self, client, uri: str, collection: str, info: dict):
        self.client, self.uri, self.collection = client, uri, collection
        self.info = info
        self.path = None
        self.store = None
        self.class_names = _class_names_from(info)
        self.layout = Layout.from_dict(info.get("layout") or {})
        self.generation = 0
        self._count = _count(client, collection)
        self._records_cache: OrderedDict = OrderedDict()
        self._selectivity: OrderedDict = OrderedDict()
        self._table_cache: tuple | None = None
        self._hit_columns = None
        self._ids = None

    @property
    def spec(self) -> str:
        return milvus_spec(self.uri, self.collection)

    def __repr__(self) -> str:
        return f"MilvusIndex({self.spec!r}, {len(self)} galaxies, {self.info.get('index_type')})"

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, uri: str, collection: str = DEFAULT_COLLECTION, token: str | None = None,
             search_params: dict | None = None) -> "MilvusIndex":
        """Open a collection written by :func:`build_milvus_index`; errors name the URI and collection."""
        client = connect(uri, token)
        where = f"Milvus collection {collection!r} at {uri}"
        if not client.has_collection(collection):
            names = sorted(c for c in client.list_collections() if "__" not in c)
            aliases = client.list_aliases().get("aliases", [])
            raise MilvusCollectionError(f"{where}: no such collection (there: {sorted(set(names) | set(aliases)) or 'none'}); "
                                        "build one with `galaxalign index --backend milvus`")
        d = client.describe_collection(collection)
        props = d.get("properties") or {}
        if INFO_PROPERTY not in props:
            raise MilvusCollectionError(f"{where}: not a GalaxAlign index (no {INFO_PROPERTY} property); "
                                        "build one with `galaxalign index --backend milvus`")
        if props.get(COMPLETE_PROPERTY) != "1":
            raise MilvusCollectionError(f"{where}: an unfinished build (no completion mark); rebuild it")
        try:
            info = json.loads(props[INFO_PROPERTY])
        except json.JSONDecodeError as exc:
            raise IndexMismatchError(f"{where}: its {INFO_PROPERTY} property is not valid JSON: {exc}") from None
        if info.get("format") != INDEX_FORMAT:
            raise IndexMismatchError(f"{where}: format is {info.get('format')!r}, expected {INDEX_FORMAT!r}")
        vec = next((f for f in d.get("fields", []) if f.get("name") == VECTOR_FIELD), None)
        dim = int((vec or {}).get("params", {}).get("dim") or 0)
        if vec is None or dim != int(info.get("dim") or -1):
            raise IndexMismatchError(f"{where}: {INFO_PROPERTY} says dim={info.get('dim')} but the "
                                     f"{VECTOR_FIELD!r} field has dimension {dim or 'none'}")
        if search_params:
            info = {**info, "params": {**info.get("params", {}), **search_params}}
        return cls(client, uri, collection, info)

    def check_compatible(self, dim: int, taxonomy, what: str = "new galaxies") -> None:
        """Raise IndexMismatchError unless ``dim`` and ``taxonomy`` match this collection's model."""
        if int(dim) != self.dim:
            raise IndexMismatchError(f"{what}: embeddings of dimension {dim}, but Milvus collection {self.collection!r} "
                                     f"at {self.uri} holds dimension {self.dim} (model {self.checkpoint}): another model")
        mine, theirs = _taxonomy_signature(self.info.get("taxonomy")), _taxonomy_signature(taxonomy)
        if mine and theirs and mine != theirs:
            raise IndexMismatchError(f"{what}: taxonomy {theirs[0]!r} with classes {list(theirs[1])}, but Milvus collection "
                                     f"{self.collection!r} at {self.uri} was built with taxonomy {mine[0]!r} "
                                     f"(classes {list(mine[1])})")

    # -- facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._count)

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def kind(self) -> str:
        return f"milvus {self.info.get('index_type', '')}".strip()

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(keys, dtype=np.int64)

    def _query(self, expr: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kw = {"limit": limit} if limit is not None else {}
        return self.client.query(self.collection, filter=expr, output_fields=fields, **kw)

    def _keys_of_ids(self, ids: Sequence[str]) -> dict:
        out: dict = {}
        ids = [str(i) for i in ids]
        for start in range(0, len(ids), READ_BATCH):
            part = ids[start:start + READ_BATCH]
            for r in self._query(f"id in [{', '.join(_quote(i) for i in part)}]", ["key", "id"]):
                out[str(r["id"])] = int(r["key"])
        return out

    def row_of(self, galaxy_id: str) -> int:
        key = self._keys_of_ids([galaxy_id]).get(str(galaxy_id))
        if key is None:
            raise UnknownGalaxyError(f"unknown galaxy id {galaxy_id!r}: not in Milvus collection "
                                     f"{self.collection!r} ({len(self)} galaxies)")
        return key

    def _scalar_fields(self) -> list[str]:
        return ["key", "id", "label", "source", "meta", *(["answers"] if self.layout.answers else []),
                *self.layout.typed.values()]

    def _to_record(self, r: dict) -> dict:
        rec = {"id": str(r["id"]), "label": int(r["label"]), "source": str(r["source"])}
        by_field = {f: c for c, f in self.layout.typed.items()}
        for field, column in by_field.items():
            v = r.get(field)
            rec[column] = float("nan") if v is None else v
        rec.update(r.get("meta") or {})
        for column in self.layout.numeric:  # JSON has no NaN: a missing number comes back as one
            if column in rec and rec[column] is None:
                rec[column] = float("nan")
        order = [c for c in self.layout.order if c in rec]
        return {**{c: rec[c] for c in order}, **{c: v for c, v in rec.items() if c not in order}}

    def record(self, galaxy_id: str) -> dict:
        rows = self._query(f"id == {_quote(galaxy_id)}", self._scalar_fields())
        if not rows:
            self.row_of(galaxy_id)  # raises UnknownGalaxyError
        return _jsonable(self._to_record(rows[0]))

    def vector(self, galaxy_id: str) -> np.ndarray:
        return self.vectors([self.row_of(galaxy_id)])[0]

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """(len(rows), dim) stored embeddings of galaxies by key (exact: Milvus keeps the floats)."""
        keys = [int(k) for k in np.asarray(rows, dtype=np.int64).tolist()]
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        found: dict = {}
        for start in range(0, len(keys), READ_BATCH):
            part = keys[start:start + READ_BATCH]
            for r in self.client.get(self.collection, ids=part, output_fields=[VECTOR_FIELD]):
                found[int(r["key"])] = r[VECTOR_FIELD]
        missing = [k for k in keys if k not in found]
        if missing:
            raise UnknownGalaxyError(f"key {missing[0]} is not in Milvus collection {self.collection!r}")
        return np.asarray([found[k] for k in keys], dtype=np.float32)

    def _remember(self, key: int, r: dict) -> None:
        ans = r.get("answers")
        self._records_cache[key] = {"id": str(r["id"]), "label": int(r["label"]), "source": str(r["source"]),
                                    "answers": tuple(a for a in str(ans).split(",") if a) if ans is not None else None}
        self._records_cache.move_to_end(key)
        while len(self._records_cache) > RECORD_CACHE:
            self._records_cache.popitem(last=False)

    def _hit_fields(self) -> list[str]:
        return ["id", "label", "source", *(["answers"] if self.layout.answers else [])]

    def _records(self, keys: Sequence[int]) -> list[dict]:
        """id, label, source, answers of galaxies by key (from the hits' cache, else one read)."""
        missing = [k for k in keys if k not in self._records_cache]
        for start in range(0, len(missing), READ_BATCH):
            for r in self.client.get(self.collection, ids=missing[start:start + READ_BATCH], output_fields=self._hit_fields()):
                self._remember(int(r["key"]), r)
        out = []
        for k in keys:
            rec = self._records_cache.get(k)
            if rec is None:
                raise UnknownGalaxyError(f"key {k} is not in Milvus collection {self.collection!r}")
            out.append(rec)
        return out

    def stored_answers(self):
        """The per-galaxy answers (``search.galaxy_answers.index_answers``), or None without them."""
        if not self.layout.answers:
            return None
        from galaxalign import answers as A
        from galaxalign.search.query import index_taxonomy

        tax = index_taxonomy(self)
        return StoredAnswers(self, A._tree_of(tax))

    # -- filters ---------------------------------------------------------------------------------

    def filter_expression(self, f: CatalogFilter | None) -> str:
        """The Milvus boolean expression of a catalog filter (:func:`milvus_schema.filter_expression`)."""
        return filter_expression(f, self.layout, self.class_names)

    # -- search ----------------------------------------------------------------------------------
    def _search_params(self, params: dict | None = None, widen: float = 1.0) -> dict:
        p = {**self.params, **(params or {})}
        knob = SEARCH_KNOB.get(self.info.get("index_type"))
        sp: dict = {}
        if knob:
            value = int(p.get(knob) or UNCALIBRATED[knob])
            if widen > 1:
                value = int(math.ceil(value * widen))
            if knob == "nprobe":
                value = min(value, int(p.get("nlist") or value))
            sp[knob] = max(1, min(value, KNOB_LIMIT))
        return {"metric_type": "IP", "params": sp}

    def _run(self, q: np.ndarray, limit: int, expr: str, params: dict | None = None, widen: float = 1.0,
             fields: list[str] | None = None) -> list:
        return self.client.search(self.collection, data=[row for row in q], limit=int(limit), filter=expr,
                                  search_params=self._search_params(params, widen),
                                  output_fields=fields if fields is not None else self._hit_fields())

    def _matching(self, expr: str) -> int:
        """How many galaxies ``expr`` selects (cached per index generation)."""
        key = (self.generation, expr)
        if key not in self._selectivity:
            self._selectivity[key] = int(self._query(expr, ["count(*)"])[0]["count(*)"])
            while len(self._selectivity) > 1024:
                self._selectivity.popitem(last=False)
        return self._selectivity[key]

    def _search_keys(self, q: np.ndarray, k: int, params: dict | None = None, selector=None,
                     widen: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(scores, keys) of an unfiltered search with search knobs ``params`` (calibration, bench)."""
        return self._search_expr(np.ascontiguousarray(q, np.float32), k, "", None, params, widen)

    def _search_expr(self, q: np.ndarray, k: int, expr: str, cone, params=None, widen: float = 1.0):
        k = max(1, min(int(k), MAX_TOPK))
        scores = np.full((len(q), k), -np.inf, np.float32)
        keys = np.full((len(q), k), -1, np.int64)
        if cone is None:
            for i, hits in enumerate(self._run(q, k, expr, params, widen)):
                for j, h in enumerate(hits[:k]):
                    self._remember(int(h["key"]), h["entity"])
                    scores[i, j], keys[i, j] = h["distance"], h["key"]
            return scores, keys
        # a cone: the bounding box in the expression, then the exact angular cut on what comes back,
        # fetching deeper while the cut leaves fewer than k and more could match
        fields = self._hit_fields() + [self.layout.typed.get(c) for c in ("ra", "dec") if c in self.layout.typed]
        if any(c not in self.layout.typed for c in ("ra", "dec")):
            fields.append("meta")
        for i in range(len(q)):
            fetch = min(MAX_TOPK, 2 * k)
            while True:
                hits = self._run(q[i:i + 1], fetch, expr, params, widen, fields)[0]
                pos = pd.DataFrame({c: [(h["entity"].get(self.layout.typed[c]) if c in self.layout.typed
                                         else (h["entity"].get("meta") or {}).get(c)) for h in hits]
                                    for c in ("ra", "dec")}, dtype="float64")
                inside = _in_cone(pos, *cone) if len(hits) else np.zeros(0, bool)
                kept = [h for h, ok in zip(hits, inside) if ok]
                if len(kept) >= k or len(hits) < fetch or fetch >= MAX_TOPK:
                    break
                fetch = min(MAX_TOPK, fetch * 4)
            for j, h in enumerate(kept[:k]):
                self._remember(int(h["key"]), h["entity"])
                scores[i, j], keys[i, j] = h["distance"], h["key"]
        return scores, keys

    def search_vectors(self, queries: np.ndarray, k: int = 10, where: CatalogFilter | dict | str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: (scores (Q,k), keys (Q,k)); keys are -1 where fewer than k exist.

        ``where`` becomes a Milvus boolean expression (:meth:`filter_expression`); the search knob
        widens by 1 / selectivity, as for faiss, so a selective filter still finds k matches."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = normalize_rows(_as_matrix(queries, self.dim, what="query"))
        f = parse_filter(where)
        expr = self.filter_expression(f)
        widen = 1.0
        if expr:
            matching = self._matching(expr)
            if matching == 0 or len(self) == 0:
                return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
            widen = len(self) / matching
        return self._search_expr(q, min(int(k), max(len(self), 1)), expr, f.cone if f is not None else None, widen=widen)

    def hits(self, rows: np.ndarray, scores: np.ndarray, k: int | None = None, offset: int = 0,
             exclude: Iterable[str] = ()) -> list[Hit]:
        """Ranked keys (best first) with their scores as hits (see :meth:`SearchIndex.hits`)."""
        keys = [int(r) for r in np.asarray(rows, dtype=np.int64).tolist()]
        skip = {str(e) for e in exclude}
        k = len(keys) if k is None else int(k)
        hits: list[Hit] = []
        seen = 0
        for key, score, rec in zip(keys, np.asarray(scores).tolist(), self._records(keys)):
            if rec["id"] in skip:
                continue
            seen += 1
            if seen <= offset:
                continue
            hits.append(Hit(offset + len(hits) + 1, rec["id"], float(score), rec["label"], self.label_name(rec["label"]),
                            rec["source"], key))
            if len(hits) == k:
                break
        return hits

    # -- tuning ----------------------------------------------------------------------------------
    def calibrate(self, vectors: np.ndarray | None = None, target: float | None = None, seed: int = 0) -> dict:
        """Set the search knob (nprobe / ef / search_list) to the smallest value reaching the target
        recall@10 (``vectors``: the indexed vectors in key order, keys 0..N-1)."""
        from galaxalign.search.tuning import calibrate

        knob = SEARCH_KNOB.get(self.info.get("index_type"))
        if knob is None:
            return {}
        if vectors is None:
            raise ValueError("calibrate: pass the indexed vectors (Milvus keeps them, but reading them all back is "
                             "the caller's choice)")
        target = float(target if target is not None else self.params.get("target_recall") or 0.95)
        limit = int(self.params.get("nlist") or KNOB_LIMIT) if knob == "nprobe" else KNOB_LIMIT
        tuned = calibrate(lambda q, k, v: self._search_keys(q, k, {knob: v})[1], vectors, np.arange(len(vectors)),
                          knob, target, limit, seed=seed)
        self.info.setdefault("params", {})[knob] = tuned[knob]
        self.info["calibration"] = tuned["calibration"]
        self.generation += 1
        return tuned

    # -- growth ----------------------------------------------------------------------------------
    def _props(self) -> dict:
        return self.client.describe_collection(self.collection).get("properties") or {}

    def add(self, vectors: np.ndarray, table: pd.DataFrame) -> np.ndarray:
        """Add galaxies without a rebuild (Milvus indexes new segments as they fill); returns their keys."""
        x = _as_matrix(vectors, self.dim, what="new embeddings")
        if len(table) != len(x):
            raise IndexMismatchError(f"new galaxies: {len(table)} table rows but {len(x)} embeddings")
        t = _table_from(table)
        clash = self._keys_of_ids(t["id"].tolist())
        if clash:
            first = next(iter(clash))
            raise ValueError(f"new galaxies: id {first!r} is already in the index ({len(clash)} such ids)")
        from galaxalign.search.query import index_taxonomy

        paths = _galaxy_paths(t, index_taxonomy(self)) if self.layout.answers else None
        if self.layout.answers and paths is None:
            raise ValueError(f"new galaxies: Milvus collection {self.collection!r} stores each galaxy's answers, "
                             "but the new catalog rows carry none")
        x = normalize_rows(x)
        first_key = int(self._props().get(NEXT_KEY_PROPERTY) or self._count)
        keys = np.arange(first_key, first_key + len(x), dtype=np.int64)
        # reserve the keys first: a failed insert leaves a gap, never two galaxies under one key
        self.client.alter_collection_properties(self.collection, properties={NEXT_KEY_PROPERTY: str(first_key + len(x))})
        for start in range(0, len(x), INSERT_BATCH):
            stop = min(len(x), start + INSERT_BATCH)
            self.client.insert(self.collection, _rows(t.iloc[start:stop], x[start:stop], keys[start:stop], self.layout,
                                                      paths[start:stop] if paths else None))
        self.client.flush(self.collection)
        self._changed()
        return keys

    def remove(self, galaxy_ids: Iterable[str]) -> int:
        """Remove galaxies by id without a rebuild; returns how many were removed."""
        ids = list(dict.fromkeys(str(g) for g in galaxy_ids))
        if not ids:
            return 0
        keys = self._keys_of_ids(ids)
        missing = [g for g in ids if g not in keys]
        if missing:
            raise UnknownGalaxyError(f"unknown galaxy id {missing[0]!r}: not in Milvus collection {self.collection!r} "
                                     f"({len(missing)} of {len(ids)} ids unknown; nothing removed)")
        self.client.delete(self.collection, ids=list(keys.values()))
        self.client.flush(self.collection)
        for key in keys.values():
            self._records_cache.pop(key, None)
        self._changed()
        return len(keys)

    def _changed(self) -> None:
        self._count = _count(self.client, self.collection)
        self.info["count"] = self._count
        self._table_cache = None
        self.generation += 1

    def save(self, path=None):
        """Milvus keeps every change already; this flushes and returns the index's address."""
        if path is not None and str(path) != self.spec:
            raise ValueError(f"save: a Milvus index lives in its collection ({self.spec}); to copy it into a faiss "
                             "folder use `galaxalign index --from-index milvus://...`")
        self.client.flush(self.collection)
        return self.spec

    # -- the whole catalog -----------------------------------------------------------------------
    def export(self, vectors: bool = True, batch: int = 4096) -> tuple[pd.DataFrame, np.ndarray | None]:
        """Every galaxy (key order): its catalog row and, with ``vectors``, its embedding. O(N) reads."""
        return export_collection(self, vectors, batch)

    @property
    def table(self) -> pd.DataFrame:
        """The catalog as a DataFrame, read from Milvus on first use after each change: for browsing
        and notebooks. Searches never need it (hits read their rows by key)."""
        if self._table_cache is None or self._table_cache[0] != self.generation:
            self._table_cache = (self.generation, self.export(vectors=False)[0])
        return self._table_cache[1]


def open_milvus_index(spec: str, search_params: dict | None = None) -> MilvusIndex:
    """``SearchIndex.load``'s route for ``milvus://`` addresses."""
    uri, collection = parse_milvus_spec(spec)
    return MilvusIndex.open(uri, collection, search_params=search_params)

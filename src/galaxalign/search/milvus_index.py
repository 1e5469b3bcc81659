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

Nothing half-written: a build fills a fresh collection ``<name>__<stamp>``, builds its vector index,
waits until every row is indexed, checks the row count, marks it complete (the collection property
``galaxalign.complete``) and only then points the alias ``<name>`` at it (``alter_alias``: one
atomic switch); the collection it replaces is dropped after the switch. A build that fails or is
killed leaves at most an unaliased, unmarked ``<name>__<stamp>`` collection that nothing opens
(:meth:`MilvusIndex.open` refuses a collection without the mark; :func:`drop_unfinished` removes them).
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from galaxalign.search.faiss_index import auto_nlist
from galaxalign.search.filters import CatalogFilter, FilterError, _in_cone, parse_filter
from galaxalign.search.index import (
    INDEX_FORMAT,
    Hit,
    IndexMismatchError,
    SearchIndex,
    UnknownGalaxyError,
    _as_matrix,
    _class_names_from,
    _jsonable,
    _table_from,
    normalize_rows,
)

SCHEME = "milvus://"
DEFAULT_COLLECTION = "galaxalign"
TOKEN_ENV = "GALAXALIGN_MILVUS_TOKEN"  # "user:password" or an API key; never a command-line argument
INFO_PROPERTY = "galaxalign.info"
COMPLETE_PROPERTY = "galaxalign.complete"
NEXT_KEY_PROPERTY = "galaxalign.next_key"
VECTOR_FIELD = "embedding"
CORE_FIELDS = ("key", "id", "label", "source", "answers", "meta", VECTOR_FIELD)
# OUR CHOICE: ids and sources up to 4,096 bytes (folder catalogs' ids are relative paths), at most 32
# numeric catalog columns as typed scalar fields (Milvus allows 64 fields; the rest go to ``meta``,
# where filters still reach them, more slowly), rows written 2,000 at a time (a few MB per request,
# under gRPC's 64 MB limit at D=1024 with metadata), metadata of hits kept for 100,000 galaxies.
MAX_STRING = 4096
MAX_TYPED_COLUMNS = 32
INSERT_BATCH = 2_000
READ_BATCH = 1_000
RECORD_CACHE = 100_000
# Milvus caps a search's limit (topk) and offset + limit at 16,384.
MAX_TOPK = 16_384

# OUR CHOICE of index types (docs/search.md, "Milvus"): exact (FLAT) up to 100k galaxies, as faiss
# ``auto``. Beyond, Milvus Lite (a local file) builds IVF_FLAT (its other choices, HNSW and IVF_SQ8,
# are faiss underneath too; IVF-Flat builds fastest there) with faiss ``auto``'s 4*sqrt(N) lists;
# a Milvus server builds HNSW (M 32) up to 20M galaxies (all in the query nodes' memory, ~1.3 KB
# per galaxy) and DISKANN beyond (PQ codes in memory, the graph and full vectors on NVMe; the
# 10^8-10^9 setting of docs/scale.md). The search knob (nprobe / ef / search_list) is calibrated
# on the data after the build, as for faiss, to recall@10 >= target_recall.
MILVUS_EXACT_MAX = 100_000
MILVUS_HNSW_MAX = 20_000_000
LOCAL_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
SERVER_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN")
MILVUS_DEFAULT_PARAMS = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": None, "nprobe": None, "target_recall": 0.98},
    "IVF_SQ8": {"nlist": None, "nprobe": None, "target_recall": 0.98},
    "IVF_PQ": {"nlist": None, "m": None, "nbits": 8, "nprobe": None, "target_recall": 0.98},
    "HNSW": {"M": 32, "efConstruction": 200, "ef": None, "target_recall": 0.98},
    "HNSW_SQ": {"M": 32, "efConstruction": 200, "ef": None, "target_recall": 0.98},
    "DISKANN": {"search_list": None, "target_recall": 0.98},
}
BUILD_KEYS = {"nlist", "m", "nbits", "M", "efConstruction"}
SEARCH_KNOB = {"IVF_FLAT": "nprobe", "IVF_SQ8": "nprobe", "IVF_PQ": "nprobe", "HNSW": "ef", "HNSW_SQ": "ef",
               "DISKANN": "search_list"}
UNCALIBRATED = {"nprobe": 16, "ef": 64, "search_list": 100}
KNOB_LIMIT = 4096
MAX_DOUBLE = 1.7976931348623157e308
NOTHING = "key < 0"  # an expression no galaxy matches (keys start at 0)


class MilvusConnectionError(ConnectionError):
    """The Milvus URI cannot be reached or refuses the credentials; the message names the URI."""


class MilvusCollectionError(FileNotFoundError):
    """No (complete) GalaxAlign collection of that name at the URI; the message names both."""


# -- addresses and connections ---------------------------------------------------------------------
def is_milvus_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith("milvus:")


def parse_milvus_spec(spec: str) -> tuple[str, str]:
    """``milvus://URI[#COLLECTION]`` -> (uri, collection).

    ``milvus://./survey.db#galaxies`` is a Milvus Lite file (any path ending ``.db``);
    ``milvus://host:19530#galaxies`` and ``milvus://https://host:443#galaxies`` a server. The
    collection defaults to ``galaxalign``; a token comes from the environment (``TOKEN_ENV``).
    """
    if not is_milvus_spec(spec):
        raise ValueError(f"{spec!r}: not a Milvus index address; expected milvus://URI[#COLLECTION]")
    rest = spec[len(SCHEME):] if spec.startswith(SCHEME) else spec[len("milvus:"):]
    uri, _, collection = rest.partition("#")
    if not uri:
        raise ValueError(f"{spec!r}: no URI after milvus://; e.g. milvus://./survey.db#galaxies or milvus://host:19530")
    if "://" not in uri and not uri.endswith(".db"):
        uri = "http://" + uri
    return uri, collection or DEFAULT_COLLECTION


def milvus_spec(uri: str, collection: str) -> str:
    return f"{SCHEME}{uri}#{collection}"


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite file (run in this process) rather than a server."""
    return "://" not in uri


def check_collection_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", name or ""):
        raise ValueError(f"Milvus collection name {name!r}: use letters, digits and _ (not starting with a digit)")
    if "__" in name:
        raise ValueError(f"Milvus collection name {name!r}: '__' is reserved for build collections")
    return name


def connect(uri: str, token: str | None = None, timeout: float = 10.0):
    """A ``MilvusClient`` for ``uri`` (token: argument, else ``$GALAXALIGN_MILVUS_TOKEN``); an
    unreachable server or refused token is a :class:`MilvusConnectionError` naming the URI."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
        raise ImportError(f"the Milvus backend needs pymilvus (and milvus-lite for local files): {exc}") from None
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if is_local(uri):
        parent = os.path.dirname(os.path.abspath(uri))
        if not os.path.isdir(parent):
            raise MilvusConnectionError(f"Milvus Lite file {uri}: its folder {parent} does not exist")
    try:
        client = MilvusClient(uri=uri, token=token, timeout=timeout)
        client.list_collections()  # a round trip: the credentials are checked here, not on first search
    except MilvusException as exc:
        raise connection_error(uri, exc) from None
    return client


def connection_error(uri: str, exc) -> Exception:
    """The error to raise for a failed connection to ``uri``: a refused token says so and names the
    variable it came from; anything else says the server cannot be reached."""
    message = str(getattr(exc, "message", "") or exc)
    code = getattr(exc, "code", None)
    if code in (1800, 16) or re.search(r"auth|credential|token|permission|denied|unauthenticated", message, re.I):
        return MilvusConnectionError(f"Milvus at {uri} refused the credentials (set ${TOKEN_ENV} to "
                                     f"'user:password' or an API key): {message}")
    return MilvusConnectionError(f"Milvus at {uri} cannot be reached: {message}")


def _quote(value: str) -> str:
    """A Milvus expression string literal (double quotes; backslash and quote escaped)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_name(column: str, taken: set) -> str | None:
    """The scalar field a numeric catalog column becomes (its own name when Milvus allows it)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", column) and column not in CORE_FIELDS and column not in taken:
        return column
    return None


# -- choosing the index ----------------------------------------------------------------------------
def choose_milvus_index(count: int, local: bool) -> str:
    """The Milvus index type ``auto`` picks for ``count`` galaxies (see ``MILVUS_EXACT_MAX``)."""
    if count <= MILVUS_EXACT_MAX:
        return "FLAT"
    if local:
        return "IVF_FLAT"
    return "HNSW" if count <= MILVUS_HNSW_MAX else "DISKANN"


def resolve_milvus_params(index_type: str, count: int, dim: int, params: dict | None, local: bool) -> dict:
    """Fill the defaults of ``index_type`` that depend on the catalog size and dimension."""
    allowed = LOCAL_INDEX_TYPES if local else SERVER_INDEX_TYPES
    if index_type not in allowed:
        where = "Milvus Lite (a local file)" if local else "a Milvus server"
        raise ValueError(f"Milvus index type {index_type!r} is not available on {where}; choose auto or one of {allowed}")
    p = dict(MILVUS_DEFAULT_PARAMS[index_type])
    unknown = set(params or {}) - set(p)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for Milvus index type {index_type}; known: {sorted(p)}")
    p.update(params or {})
    if "nlist" in p:
        p["nlist"] = int(max(1, min(p["nlist"] or auto_nlist("ivf", count), count, 65536)))
    if index_type == "IVF_PQ" and p["m"] is None:
        p["m"] = next(m for m in (dim // 2, dim // 4, dim, 1) if m >= 1 and dim % m == 0)  # 8-bit codes: D/2 bytes
    return p


def _index_params(client, index_type: str, p: dict):
    ip = client.prepare_index_params()
    ip.add_index(VECTOR_FIELD, index_type=index_type, metric_type="IP",
                 params={k: int(v) for k, v in p.items() if k in BUILD_KEYS})
    return ip


# -- the schema of a catalog -----------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each catalog column lives in the collection: ``typed`` numeric columns -> scalar field,
    ``meta``: the rest (in the JSON field), ``numeric``: every numeric column (filterable)."""

    typed: dict
    meta: tuple
    numeric: tuple
    answers: bool
    integer: tuple = ()   # typed columns of integers (INT64 fields; the rest DOUBLE)
    order: tuple = ()     # the catalog's column order

    def to_dict(self) -> dict:
        return {"typed": self.typed, "meta": list(self.meta), "numeric": list(self.numeric), "answers": self.answers,
                "integer": list(self.integer), "order": list(self.order)}

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(dict(d.get("typed") or {}), tuple(d.get("meta") or ()), tuple(d.get("numeric") or ()),
                   bool(d.get("answers")), tuple(d.get("integer") or ()), tuple(d.get("order") or ()))

    def ref(self, column: str) -> str:
        """The expression that reads ``column`` (a scalar field, or a key of ``meta``)."""
        if column in self.typed:
            return self.typed[column]
        return f"meta[{_quote(column)}]"


def catalog_layout(table: pd.DataFrame, answers: bool) -> Layout:
    extra = [c for c in table.columns if c not in ("id", "label", "source")]
    numeric = [c for c in extra if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
    # sky position and the usual cuts first, then the catalog's order
    first = [c for c in numeric if c in ("ra", "dec", "redshift") or c.startswith("mag")]
    typed: dict = {}
    for c in first + [c for c in numeric if c not in first]:
        if len(typed) >= MAX_TYPED_COLUMNS:
            break
        name = _field_name(c, set(typed.values()))
        if name:
            typed[c] = name
    integer = tuple(c for c in typed if pd.api.types.is_integer_dtype(table[c]))
    return Layout(typed, tuple(c for c in extra if c not in typed), tuple(numeric), answers, integer,
                  tuple(table.columns))


def _schema(client, dim: int, layout: Layout, description: str):
    from pymilvus import DataType

    s = client.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    s.add_field("key", DataType.INT64, is_primary=True)
    s.add_field("id", DataType.VARCHAR, max_length=MAX_STRING)
    s.add_field("label", DataType.INT64)
    s.add_field("source", DataType.VARCHAR, max_length=MAX_STRING)
    if layout.answers:
        s.add_field("answers", DataType.VARCHAR, max_length=MAX_STRING)
    for column, field in layout.typed.items():
        s.add_field(field, DataType.INT64 if column in layout.integer else DataType.DOUBLE, nullable=True)
    s.add_field("meta", DataType.JSON)
    s.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(dim))
    return s


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _rows(table: pd.DataFrame, vectors: np.ndarray, keys: np.ndarray, layout: Layout, paths) -> list[dict]:
    """Milvus rows of galaxies (``paths``: each galaxy's answers, or None)."""
    cols = {c: table[c].tolist() for c in table.columns}
    out = []
    for i in range(len(table)):
        for what in ("id", "source"):
            if len(str(cols[what][i]).encode("utf-8")) > MAX_STRING:
                raise ValueError(f"galaxy {cols['id'][i]!r}: its {what} is over {MAX_STRING} bytes")
        row = {"key": int(keys[i]), "id": str(cols["id"][i]), "label": int(cols["label"][i]),
               "source": str(cols["source"][i]), VECTOR_FIELD: vectors[i],
               "meta": {c: _plain(cols[c][i]) for c in layout.meta if c in cols}}
        for c, field in layout.typed.items():
            v = _plain(cols[c][i]) if c in cols else None
            row[field] = None if v is None else (int(v) if c in layout.integer else float(v))
        if layout.answers:
            row["answers"] = ",".join(paths[i]) if paths is not None else ""
        out.append(row)
    return out


def _galaxy_paths(table: pd.DataFrame, taxonomy) -> list[tuple[str, ...]] | None:
    """Each galaxy's decision-tree path (``search.galaxy_answers``), or None without answers."""
    from galaxalign.search.galaxy_answers import compute_index_answers

    known = compute_index_answers(table, taxonomy)
    if known is None:
        return None
    return [known.paths[c] for c in known.codes.tolist()]


def _load_taxonomy(info: dict):
    data = info.get("taxonomy")
    if data is None:
        return None
    from galaxalign.taxonomy import load_taxonomy

    try:
        return load_taxonomy(data)
    except (FileNotFoundError, ValueError):
        return None


# -- building ----------------------------------------------------------------------------------------
def build_milvus_index(vectors: np.ndarray, table: pd.DataFrame, uri: str, collection: str = DEFAULT_COLLECTION,
                       kind: str = "auto", params: dict | None = None, info: dict | None = None, seed: int = 0,
                       progress: bool = True, token: str | None = None) -> str:
    """Write ``vectors`` (N, D) described by ``table`` into the Milvus collection ``collection`` at
    ``uri`` (replacing it atomically, see the module docstring); returns its ``milvus://`` address.

    ``kind``: ``auto`` (``choose_milvus_index``) or a Milvus index type; ``params`` override its
    defaults; knobs left None are calibrated on the data."""
    from galaxalign.search.build import _unit_rows

    check_collection_name(collection)
    x = _as_matrix(vectors, what="embeddings")
    n, dim = x.shape
    if n == 0:
        raise ValueError("embeddings: no vectors to index")
    if len(table) != n:
        raise IndexMismatchError(f"id table has {len(table)} rows but there are {n} embeddings")
    t = _table_from(table)
    x = _unit_rows(x)
    local = is_local(uri)
    index_type = choose_milvus_index(n, local) if kind in ("auto", None) else str(kind).upper()
    p = resolve_milvus_params(index_type, n, dim, params, local)
    meta = {"format": INDEX_FORMAT, "version": 2, "kind": "milvus", "index_type": index_type, "dim": int(dim),
            "metric": "inner_product", "params": p, **(info or {})}
    paths = _galaxy_paths(t, _load_taxonomy(meta))
    layout = catalog_layout(t, paths is not None)
    meta["layout"] = layout.to_dict()
    client = connect(uri, token)
    staging = f"{collection}__{time.strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    try:
        client.create_collection(staging, schema=_schema(client, dim, layout, f"GalaxAlign index (building {collection})"),
                                 index_params=_index_params(client, index_type, p), consistency_level="Strong",
                                 properties={INFO_PROPERTY: json.dumps(meta, default=str), NEXT_KEY_PROPERTY: str(n)})
        from tqdm.auto import tqdm

        keys = np.arange(n, dtype=np.int64)
        with tqdm(total=n, desc="milvus", unit="vec", disable=not progress) as bar:
            for start in range(0, n, INSERT_BATCH):
                stop = min(n, start + INSERT_BATCH)
                client.insert(staging, _rows(t.iloc[start:stop], np.ascontiguousarray(x[start:stop], np.float32),
                                             keys[start:stop], layout, paths[start:stop] if paths else None))
                bar.update(stop - start)
        client.flush(staging)
        _wait_indexed(client, staging, n)
        _check_count(client, staging, n)
        meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        built = MilvusIndex(client, uri, staging, meta, complete_check=False)
        knob = SEARCH_KNOB.get(index_type)
        if knob and p.get(knob) is None:
            t1 = time.perf_counter()
            built.calibrate(x, seed=seed)
            built.info["calibration_seconds"] = round(time.perf_counter() - t1, 3)
        meta = built.info
        meta["count"] = int(n)
        client.alter_collection_properties(staging, properties={INFO_PROPERTY: json.dumps(meta, default=str),
                                                                 COMPLETE_PROPERTY: "1"})
        _switch_alias(client, collection, staging)
    except BaseException:
        try:
            if client.has_collection(staging) and staging not in _aliased(client, collection):
                client.drop_collection(staging)
        except Exception:  # the original error matters more; drop_unfinished cleans up later
            pass
        raise
    return milvus_spec(uri, collection)


def _wait_indexed(client, name: str, n: int, timeout: float = 24 * 3600) -> None:
    """Block until the vector index covers every row (builds run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        d = client.describe_index(name, VECTOR_FIELD) or {}
        pending = d.get("pending_index_rows")
        if str(d.get("state", "")).lower() == "failed":
            raise RuntimeError(f"Milvus collection {name}: the vector index build failed: {d.get('index_state_fail_reason')}")
        if pending in (0, None) and int(d.get("indexed_rows", n) or 0) >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Milvus collection {name}: the vector index is not built after {timeout:.0f} s")
        time.sleep(0.2)


def _count(client, name: str) -> int:
    return int(client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])


def _check_count(client, name: str, n: int) -> None:
    got = _count(client, name)
    if got != n:
        raise IndexMismatchError(f"Milvus collection {name}: holds {got} galaxies after writing {n}")


def _aliased(client, alias: str) -> set:
    """The collection ``alias`` points at (empty when it is no alias)."""
    if alias not in (client.list_aliases().get("aliases") or []):
        return set()
    return {client.describe_alias(alias)["collection_name"]}


def _switch_alias(client, alias: str, target: str) -> None:
    """Point ``alias`` at ``target`` atomically, then drop the collection it pointed at before."""
    old = _aliased(client, alias)
    if old:
        client.alter_alias(target, alias)
    else:
        if client.has_collection(alias) and alias not in client.list_aliases().get("aliases", []):
            raise MilvusCollectionError(f"a collection named {alias!r} that no GalaxAlign build wrote already exists; "
                                        "choose another --collection or drop it")
        client.create_alias(target, alias)
    for name in old - {target}:
        client.drop_collection(name)


def drop_unfinished(uri: str, collection: str, token: str | None = None) -> list[str]:
    """Drop the staging collections ``<collection>__*`` of builds that never finished (no alias
    points at them); returns their names. Do not run it while a build of that name is running."""
    client = connect(uri, token)
    live = _aliased(client, collection)
    gone = [c for c in client.list_collections() if c.startswith(collection + "__") and c not in live]
    for name in gone:
        client.drop_collection(name)
    return gone


def build_milvus_from_embeddings(embeddings_dir, uri: str, collection: str = DEFAULT_COLLECTION, kind: str = "auto",
                                 params: dict | None = None, seed: int = 0, progress: bool = True) -> str:
    """Index the Parquet shards of ``galaxalign embed`` into Milvus (as ``build_index_from_embeddings``)."""
    from pathlib import Path

    from galaxalign.search.embed import read_embeddings

    table, vectors, manifest = read_embeddings(embeddings_dir)
    info = {"checkpoint": manifest.get("checkpoint"), "data_source": manifest.get("data_source"),
            "taxonomy": manifest.get("taxonomy"), "modality": manifest.get("modality", "image"),
            "embeddings": str(Path(embeddings_dir).resolve())}
    return build_milvus_index(vectors, table, uri, collection, kind=kind, params=params, info=info, seed=seed,
                              progress=progress)


def milvus_from_faiss(index_dir, uri: str, collection: str = DEFAULT_COLLECTION, kind: str = "auto",
                      params: dict | None = None, seed: int = 0, progress: bool = True) -> str:
    """Move a faiss index folder to Milvus: its exact vectors (the store, flat storage, or the
    embeddings it was built from), its id table and its provenance."""
    index = SearchIndex.load(index_dir)
    vectors = index.vectors(np.arange(len(index)))
    info = {k: v for k, v in index.info.items()
            if k in ("checkpoint", "data_source", "taxonomy", "modality", "embeddings")}
    info["from_index"] = str(index_dir)
    return build_milvus_index(vectors, index.table, uri, collection, kind=kind, params=params, info=info, seed=seed,
                              progress=progress)


def faiss_from_milvus(spec: str, out_dir, kind: str = "auto", params: dict | None = None, seed: int = 0,
                      progress: bool = True):
    """Move a Milvus collection back to a faiss index folder (vectors, catalog columns, provenance)."""
    from galaxalign.search.build import build_index

    index = SearchIndex.load(spec)
    table, vectors = index.export()
    info = {k: v for k, v in index.info.items()
            if k in ("checkpoint", "data_source", "taxonomy", "modality", "embeddings")}
    info["from_index"] = spec
    return build_index(vectors, table, out_dir, kind=kind, params=params, info=info, seed=seed, progress=progress)


def append_embeddings(spec: str, embeddings_dir) -> np.ndarray:
    """Add the galaxies of an embeddings folder to a Milvus index (no rebuild); they must come from a
    model of the same dimension and taxonomy (the error names both when not). Returns their keys."""
    from galaxalign.search.embed import read_embeddings

    index = SearchIndex.load(spec)
    table, vectors, manifest = read_embeddings(embeddings_dir)
    index.check_compatible(vectors.shape[1], manifest.get("taxonomy"), what=str(embeddings_dir))
    return index.add(vectors, table)


# -- the index -------------------------------------------------------------------------------------
class StoredAnswers:
    """Each galaxy's decision-tree path as the collection stores it (``search.galaxy_answers``'s
    interface, by key): read with the hits, not computed from a table in memory."""

    def __init__(self, index: "MilvusIndex", tree):
        self.index, self.tree = index, tree

    def of_row(self, key: int) -> tuple[str, ...]:
        return self.index._records([int(key)])[0]["answers"]

    def matched(self, key: int, query: Sequence[str]) -> int:
        have = _expanded(self.of_row(key), self.tree)
        return sum(a in have for a in query)


@lru_cache(maxsize=65536)
def _expanded_cached(path: tuple, tree_id: int, tree) -> frozenset:
    from galaxalign import answers as A

    return frozenset(A.expand(path, tree))


def _expanded(path, tree) -> frozenset:
    return _expanded_cached(tuple(path), id(tree), tree)


class MilvusIndex(SearchIndex):
    """A GalaxAlign collection in Milvus behind :class:`SearchIndex`'s interface (rows are keys).

    Open with ``SearchIndex.load("milvus://URI#COLLECTION")`` or :meth:`open`. Changes (``add``,
    ``remove``) go to Milvus at once; ``save`` only flushes.
    """

    def __init__(self, client, uri: str, collection: str, info: dict, complete_check: bool = True):
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
        """The Milvus boolean expression of a catalog filter (a cone becomes its RA/Dec bounding
        box; :meth:`search_vectors` then cuts the returned rows at the exact angular distance)."""
        if f is None or f.is_empty():
            return ""
        parts = []
        for column, bounds in f.ranges.items():
            if column not in self.layout.numeric:
                if column in ("id", "label", "source") or column in self.layout.meta:
                    raise FilterError(f"filter range on {column!r}: the column is not numeric")
                raise FilterError(f"filter on unknown column {column!r}; numeric columns of this catalog: "
                                  f"{list(self.layout.numeric)}")
            try:
                lo, hi = bounds
            except (TypeError, ValueError):
                raise FilterError(f"filter range on {column!r}: expected (min, max), got {bounds!r}") from None
            lo = None if lo is None else float(lo)
            hi = None if hi is None else float(hi)
            if lo is not None and hi is not None and lo > hi:
                raise FilterError(f"filter range on {column!r}: min {lo} is above max {hi}")
            if (lo is not None and lo == math.inf) or (hi is not None and hi == -math.inf):
                parts.append(NOTHING)
                continue
            # an open side still needs a value: a galaxy without one (null, NaN) matches no range, as in faiss
            lo = -MAX_DOUBLE if lo is None or not math.isfinite(lo) else lo
            hi = MAX_DOUBLE if hi is None or not math.isfinite(hi) else hi
            ref = self.layout.ref(column)
            parts.append(f"{ref} >= {lo!r} and {ref} <= {hi!r}")
        if f.classes is not None:
            labels = f._label_ids(self.class_names)
            parts.append(f"label in [{', '.join(str(int(x)) for x in labels)}]" if labels else NOTHING)
        if f.cone is not None:
            parts.append(self._cone_box(*f.cone))
        return " and ".join(f"({p})" for p in parts)

    def _cone_box(self, ra: float, dec: float, radius: float) -> str:
        """The RA/Dec bounding box of a sky cone as an expression (RA wraps at 0/360)."""
        ra, dec, radius = float(ra), float(dec), float(radius)
        if not (-90 <= dec <= 90) or not radius >= 0 or not math.isfinite(ra):
            raise FilterError(f"sky cone (ra={ra}, dec={dec}, radius={radius}): dec must be in [-90, 90], radius >= 0")
        for column in ("ra", "dec"):
            if column not in self.layout.numeric:
                raise FilterError(f"sky cone: this catalog has no numeric {column!r} column; numeric columns: "
                                  f"{list(self.layout.numeric)}")
        r_ra, r_dec = self.layout.ref("ra"), self.layout.ref("dec")
        lo_dec, hi_dec = dec - radius, dec + radius
        box = [f"{r_dec} >= {max(-90.0, lo_dec)!r}", f"{r_dec} <= {min(90.0, hi_dec)!r}"]
        if lo_dec <= -90 or hi_dec >= 90 or radius >= 90:
            return " and ".join(box)  # the cone holds a pole: every RA
        # half-width in RA of the smallest box around the cone (exact for a small circle on the sphere)
        half = math.degrees(math.asin(min(1.0, math.sin(math.radians(radius)) / math.cos(math.radians(dec)))))
        if half >= 180:
            return " and ".join(box)
        lo, hi = (ra - half) % 360.0, (ra + half) % 360.0
        if lo <= hi:
            box.append(f"{r_ra} >= {lo!r} and {r_ra} <= {hi!r}")
        else:  # across RA 0/360
            box.append(f"({r_ra} >= {lo!r} or {r_ra} <= {hi!r})")
        return " and ".join(box)

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
        fields = self._scalar_fields() + ([VECTOR_FIELD] if vectors else [])
        it = self.client.query_iterator(self.collection, batch_size=batch, filter="", output_fields=fields)
        records, keys, vecs = [], [], []
        try:
            while True:
                rows = it.next()
                if not rows:
                    break
                for r in rows:
                    keys.append(int(r["key"]))
                    records.append(self._to_record(r))
                    if vectors:
                        vecs.append(np.asarray(r[VECTOR_FIELD], np.float32))
        finally:
            it.close()
        order = np.argsort(np.asarray(keys, np.int64), kind="stable")
        columns = list(self.layout.order) or ["id", "label", "source"]
        table = pd.DataFrame([records[i] for i in order], columns=columns) if records else pd.DataFrame(columns=columns)
        x = np.stack([vecs[i] for i in order]) if vectors and vecs else (np.zeros((0, self.dim), np.float32) if vectors else None)
        return table, x

    @property
    def table(self) -> pd.DataFrame:
        """The catalog as a DataFrame, read from Milvus on first use after each change: for browsing
        and notebooks. Searches never need it (hits read their rows by key)."""
        if self._table_cache is None or self._table_cache[0] != self.generation:
            self._table_cache = (self.generation, self.export(vectors=False)[0])
        return self._table_cache[1]


def _taxonomy_signature(tax) -> tuple | None:
    """(name, class names) of a taxonomy given as a dict, a name or a loaded one; None if unknown."""
    if tax is None:
        return None
    if isinstance(tax, dict):
        return (tax.get("name"), tuple(c.get("name") for c in tax.get("classes", [])))
    if hasattr(tax, "class_names"):
        return (getattr(tax, "name", None), tuple(tax.class_names))
    try:
        from galaxalign.taxonomy import load_taxonomy

        t = load_taxonomy(tax)
        return (t.name, tuple(t.class_names))
    except (FileNotFoundError, ValueError):
        return None


def open_milvus_index(spec: str, search_params: dict | None = None) -> MilvusIndex:
    """``SearchIndex.load``'s route for ``milvus://`` addresses."""
    uri, collection = parse_milvus_spec(spec)
    return MilvusIndex.open(uri, collection, search_params=search_params)

"""Writing a GalaxAlign collection into Milvus, and moving an index between faiss and Milvus.

Nothing half-written: :func:`build_milvus_index` fills a fresh collection ``<name>__<stamp>``, builds
its vector index, waits until every row is indexed, checks the row count, calibrates the search
knob, marks it complete (the collection property ``galaxalign.complete``) and only then points the
alias ``<name>`` at it (``alter_alias``: one atomic switch); the collection it replaces is dropped
after the switch. A failed build drops its staging collection; one killed outright leaves an
unaliased, unmarked ``<name>__...`` that nothing opens (``MilvusIndex.open`` refuses a collection
without the mark) and :func:`drop_unfinished` removes.
"""
from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pandas as pd

from galaxalign.search.index import SearchIndex
from galaxalign.search.records import INDEX_FORMAT, IndexMismatchError, as_matrix as _as_matrix, id_table as _table_from
from galaxalign.search.milvus_schema import (
    COMPLETE_PROPERTY,
    DEFAULT_COLLECTION,
    INFO_PROPERTY,
    INSERT_BATCH,
    NEXT_KEY_PROPERTY,
    SEARCH_KNOB,
    VECTOR_FIELD,
    MilvusCollectionError,
    _count,
    _galaxy_paths,
    _index_params,
    _load_taxonomy,
    _rows,
    _schema,
    catalog_layout,
    check_collection_name,
    choose_milvus_index,
    connect,
    is_local,
    milvus_spec,
    resolve_milvus_params,
)


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
    _check_replaceable(client, collection)  # before the work, not after it
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
        from galaxalign.search.milvus_index import MilvusIndex

        built = MilvusIndex(client, uri, staging, meta)
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



def _check_count(client, name: str, n: int) -> None:
    got = _count(client, name)
    if got != n:
        raise IndexMismatchError(f"Milvus collection {name}: holds {got} galaxies after writing {n}")


def _aliased(client, alias: str) -> set:
    """The collection ``alias`` points at (empty when it is no alias)."""
    if alias not in (client.list_aliases().get("aliases") or []):
        return set()
    return {client.describe_alias(alias)["collection_name"]}


def _check_replaceable(client, alias: str) -> set:
    """The GalaxAlign collection ``alias`` names now (empty if none); refuses a name that belongs to a
    collection GalaxAlign did not write, which a build must never replace or drop."""
    old = _aliased(client, alias)
    if not old and client.has_collection(alias):
        raise MilvusCollectionError(f"a collection named {alias!r} that no GalaxAlign build wrote already exists; "
                                    "choose another --collection or drop it")
    for name in old:
        if INFO_PROPERTY not in (client.describe_collection(name).get("properties") or {}):
            raise MilvusCollectionError(f"the alias {alias!r} points at {name!r}, which no GalaxAlign build wrote; "
                                        "choose another --collection")
    return old


def _switch_alias(client, alias: str, target: str) -> None:
    """Point ``alias`` at ``target`` atomically, then drop the collection it pointed at before."""
    old = _check_replaceable(client, alias)
    if old:
        client.alter_alias(target, alias)
    else:
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

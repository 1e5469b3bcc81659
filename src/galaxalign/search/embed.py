"""Embed a survey into Parquet shards plus a manifest: batched, resumable, shardable across ranks.

Layout of an embeddings folder::

    manifest.json            model checkpoint, data source, dim, count, shards (rows, sha256)
    shard-00000.parquet      id, label, source, <metadata...>, embedding (fixed_size_list<float32>[D])
    shard-00001.parquet ...

Shard ``s`` holds catalog rows ``[s * shard_size, (s + 1) * shard_size)``. Each shard is written
atomically and then recorded in the manifest, so after a crash a re-run skips every recorded shard
whose checksum still matches and writes only the rest. Under ``torchrun`` rank ``r`` takes shards
``r::world_size`` and records them in ``manifest.rank<r>.json``; rank 0 merges those into
``manifest.json`` after a barrier.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from galaxalign.runtime import atomic_path

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "galaxalign-embeddings"
# OUR CHOICE: 8192 rows per shard: ~4-8 MB at D=128..256, a few minutes of CPU work at most, so a
# crash loses little and a torchrun job has enough shards to spread over its ranks.
DEFAULT_SHARD_SIZE = 8192

# embed_fn(shard_catalog, on_batch) -> float32 (rows, D), L2-normalised; calls on_batch(n) as it goes.
EmbedFn = Callable[[pd.DataFrame, Callable[[int], None]], np.ndarray]


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def catalog_fingerprint(catalog: pd.DataFrame) -> str:
    """Hash of the ordered ids: a resumed run must see the same galaxies in the same order."""
    h = hashlib.sha256()
    for gid in catalog["id"].astype(str):
        h.update(gid.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _source_column(catalog: pd.DataFrame) -> pd.Series:
    if "source" in catalog.columns:
        return catalog["source"].astype(str)
    if "file_loc" in catalog.columns:
        return catalog["file_loc"].astype(str)
    if "h5_path" in catalog.columns and "h5_row" in catalog.columns:
        return catalog["h5_path"].astype(str) + "#" + catalog["h5_row"].astype(str)
    return pd.Series([""] * len(catalog), index=catalog.index)


def check_catalog(catalog: pd.DataFrame, where: str = "catalog") -> pd.DataFrame:
    """The catalog as shards store it: id (str, unique), label (int, -1 unknown), source, metadata."""
    if "id" not in catalog.columns:
        raise ValueError(f"{where}: missing column 'id' (has {list(catalog.columns)})")
    cat = catalog.reset_index(drop=True).copy()
    cat["id"] = cat["id"].astype(str)
    dup = cat["id"][cat["id"].duplicated()]
    if len(dup):
        raise ValueError(f"{where}: id {dup.iloc[0]!r} appears more than once (row {int(dup.index[0])})")
    cat["label"] = pd.to_numeric(cat["label"], errors="coerce").fillna(-1).astype("int64") if "label" in cat else -1
    cat["source"] = _source_column(cat)
    first = ["id", "label", "source"]
    return cat[first + [c for c in cat.columns if c not in first and c != "embedding"]]


def _arrow_table(part: pd.DataFrame, vectors: np.ndarray):
    import pyarrow as pa

    columns, names = [], []
    for col in part.columns:
        values = part[col]
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            # OUR CHOICE: metadata of mixed types (e.g. lists and numbers) is stored as its text.
            arr = pa.array(values.astype(str))
        columns.append(arr)
        names.append(str(col))
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    columns.append(pa.FixedSizeListArray.from_arrays(flat, dim))
    names.append("embedding")
    return pa.Table.from_arrays(columns, names=names)


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to start over") from None


def write_embedding_shards(
    catalog: pd.DataFrame,
    out_dir: str | Path,
    embed_fn: EmbedFn,
    *,
    checkpoint: str | None = None,
    data_source: str | None = None,
    taxonomy: dict | str | None = None,
    modality: str = "image",
    shard_size: int = DEFAULT_SHARD_SIZE,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Embed ``catalog`` shard by shard into ``out_dir`` (see the module doc); return the manifest path.

    ``embed_fn`` does the model work; this function owns sharding, resume, checksums and the
    manifest. ``rank`` / ``world_size`` default to torchrun's.
    """
    from tqdm.auto import tqdm

    from galaxalign import distributed

    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    env_rank, env_world = distributed.env_rank_world()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    cat = check_catalog(catalog)
    if len(cat) == 0:
        raise ValueError("catalog: no rows to embed")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_shards = (len(cat) + shard_size - 1) // shard_size
    base = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "data_source": None if data_source is None else str(data_source),
        "taxonomy": taxonomy,
        "modality": modality,
        "catalog_fingerprint": catalog_fingerprint(cat),
        "count": int(len(cat)),
        "shard_size": int(shard_size),
        "num_shards": int(num_shards),
    }
    done = _recorded_shards(out, base)
    mine = [s for s in range(rank, num_shards, world_size)]
    todo = [s for s in mine if s not in done]
    partial = out / (MANIFEST if world_size == 1 else f"manifest.rank{rank}.json")
    records = {s: r for s, r in done.items() if s in mine}
    rows_todo = sum(min(shard_size, len(cat) - s * shard_size) for s in todo)
    with tqdm(total=rows_todo, desc=f"embed[{rank}/{world_size}]" if world_size > 1 else "embed",
              unit="img", disable=not progress) as bar:
        for s in todo:
            part = cat.iloc[s * shard_size : (s + 1) * shard_size]
            vectors = np.asarray(embed_fn(part, bar.update), dtype=np.float32)
            if vectors.shape[0] != len(part) or vectors.ndim != 2:
                raise ValueError(f"shard {s}: the embedder returned shape {vectors.shape} for {len(part)} galaxies")
            path = out / shard_name(s)
            with atomic_path(path) as tmp:
                import pyarrow.parquet as pq

                pq.write_table(_arrow_table(part, vectors), tmp)
            records[s] = {"index": s, "file": path.name, "start": s * shard_size, "rows": len(part),
                          "dim": int(vectors.shape[1]), "sha256": sha256_file(path)}
            _write_json_atomic(partial, {**base, "complete": False, "shards": [records[k] for k in sorted(records)]})
    with distributed.process_group(world_size) as barrier:
        barrier()
        if rank == 0:
            _merge_manifests(out, base, done, records, num_shards, world_size)
        barrier()
    return out / MANIFEST


def _merge_manifests(out: Path, base: dict, done: dict, records: dict, num_shards: int, world_size: int) -> None:
    """Rank 0, once every rank has written its shards: the ranks' manifests into one complete manifest."""
    merged = dict(done)
    merged.update(records)
    for r in range(1, world_size):
        p = out / f"manifest.rank{r}.json"
        if p.exists():
            merged.update({int(x["index"]): x for x in _read_json(p).get("shards", [])})
    missing = [s for s in range(num_shards) if s not in merged]
    if missing:
        raise RuntimeError(f"{out}: shards {missing[:10]} were not written by any rank")
    dims = {int(x["dim"]) for x in merged.values()}
    if len(dims) != 1:
        raise ValueError(f"{out}: shards disagree on the embedding dimension {sorted(dims)}")
    manifest = {**base, "complete": True, "dim": dims.pop(), "shards": [merged[s] for s in range(num_shards)]}
    _write_json_atomic(out / MANIFEST, manifest)
    if world_size > 1:
        for r in range(world_size):
            (out / f"manifest.rank{r}.json").unlink(missing_ok=True)


def _recorded_shards(out: Path, base: dict) -> dict[int, dict]:
    """Shards recorded by an earlier run whose file still matches its checksum."""
    recorded: dict[int, dict] = {}
    for path in sorted(out.glob("manifest*.json")):
        old = _read_json(path)
        for key in ("checkpoint", "data_source", "catalog_fingerprint", "shard_size", "count", "modality"):
            if old.get(key) != base.get(key):
                raise ValueError(
                    f"{path}: these embeddings were made with {key}={old.get(key)!r}, this run has "
                    f"{base.get(key)!r}; use another --out folder or delete {out} to start over"
                )
        for rec in old.get("shards", []):
            f = out / rec["file"]
            if f.is_file() and sha256_file(f) == rec.get("sha256"):
                recorded[int(rec["index"])] = rec
    return recorded


def read_manifest(embeddings_dir: str | Path) -> dict:
    d = Path(embeddings_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {d} is not an embeddings folder (make one with `galaxalign embed`)")
    manifest = _read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    if not manifest.get("complete"):
        n = len(manifest.get("shards", []))
        raise ValueError(f"{path}: incomplete ({n} of {manifest.get('num_shards')} shards); re-run `galaxalign embed` to finish")
    return manifest


def read_embeddings(embeddings_dir: str | Path, verify: bool = True) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """(table without the embedding column, float32 (N, D) vectors, manifest), in catalog order."""
    import pyarrow.parquet as pq

    d = Path(embeddings_dir)
    manifest = read_manifest(d)
    tables, vectors = [], []
    dim = int(manifest["dim"])
    for rec in manifest["shards"]:
        f = d / rec["file"]
        if not f.is_file():
            raise FileNotFoundError(f"{f}: shard listed in {d / MANIFEST} is missing")
        if verify and sha256_file(f) != rec["sha256"]:
            raise ValueError(f"{f}: checksum differs from {d / MANIFEST}; the shard changed after it was written")
        t = pq.read_table(f)
        if t.num_rows != int(rec["rows"]):
            raise ValueError(f"{f}: has {t.num_rows} rows, the manifest says {rec['rows']}")
        emb = t.column("embedding").combine_chunks()
        vectors.append(emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim))
        tables.append(t.drop_columns(["embedding"]).to_pandas())
    table = pd.concat(tables, ignore_index=True)
    return table, np.ascontiguousarray(np.concatenate(vectors).astype(np.float32, copy=False)), manifest


def read_embedding_rows(embeddings_dir: str | Path, rows: Sequence[int]) -> np.ndarray:
    """Embeddings of the given catalog rows, read from their shards only."""
    import pyarrow.parquet as pq

    d = Path(embeddings_dir)
    manifest = read_manifest(d)
    size, dim = int(manifest["shard_size"]), int(manifest["dim"])
    out = np.empty((len(rows), dim), np.float32)
    for i, row in enumerate(rows):
        rec = manifest["shards"][int(row) // size]
        emb = pq.read_table(d / rec["file"], columns=["embedding"]).column("embedding")
        out[i] = np.asarray(emb[int(row) - int(rec["start"])].as_py(), np.float32)
    return out


def model_embedder(model, batch_size: int = 64, device=None, num_workers: int = 0, modality: str = "image") -> EmbedFn:
    """The default embedder: ``inference.encode_images``, the package's one embedding loop (inference
    mode, the model's own test-time views, normalised). The frozen-trunk feature store is not used:
    a whole survey's 8-view features would outgrow the embeddings themselves many times over."""
    import torch

    from galaxalign.inference import encode_images

    if modality not in ("image", "symbol"):
        raise ValueError(f"modality must be 'image' or 'symbol', got {modality!r}")
    if device is not None:
        model.to(torch.device(device))
    model.eval()

    def embed(part: pd.DataFrame, on_batch: Callable[[int], None]) -> np.ndarray:
        out = encode_images(model, part.reset_index(drop=True), modality, batch_size=batch_size, use_cache=False,
                            num_workers=num_workers)
        on_batch(len(part))
        return out

    return embed


def embed_survey(
    model,
    catalog: pd.DataFrame,
    out_dir: str | Path,
    *,
    checkpoint: str | None = None,
    data_source: str | None = None,
    taxonomy=None,
    batch_size: int = 64,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 0,
    device=None,
    progress: bool = True,
) -> Path:
    """Embed every galaxy of ``catalog`` with ``model``'s image encoder into Parquet shards."""
    tax = taxonomy.to_dict() if hasattr(taxonomy, "to_dict") else taxonomy
    embed_fn = model_embedder(model, batch_size=batch_size, device=device, num_workers=num_workers)
    return write_embedding_shards(catalog, out_dir, embed_fn, checkpoint=checkpoint, data_source=data_source,
                                  taxonomy=tax, shard_size=shard_size, progress=progress)

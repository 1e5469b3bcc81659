"""An index built in shards: train once, fill each shard separately, fan a query out, merge.

This is faiss's own sharding, not a new engine: one empty index is trained (k-means centroids,
PQ codebooks) on a sample, and every shard starts as a copy of it (``faiss.serialize_index``), so
all shards share one coarse quantizer and their scores are comparable. Each shard takes a disjoint
slice of the galaxies under their global keys and is written to ``shards/shard-NNNNN.faiss``; a
shard can be filled on another machine from the trained file (:func:`fill_shard`). At query time
``faiss.IndexShards`` sends the query to every shard and merges their top-k into one list (search
parameters, such as a filter's ``IDSelector``, pass through to each shard).

For 10^8-10^9 galaxies the same shard files feed faiss's on-disk merge
(``faiss.contrib.ondisk.merge_ondisk``: one IVF index whose inverted lists are memory-mapped), or
each shard is served by its own process/machine and the client merges (docs/scale.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxalign.search.faiss_index import add_in_chunks, empty_index, set_search_params, train_index

SHARD_DIR = "shards"
TRAINED_FILE = "trained.faiss"


def shard_file(folder: Path, s: int) -> Path:
    return Path(folder) / SHARD_DIR / f"shard-{s:05d}.faiss"


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal row ranges [start, stop) of ``n`` rows over ``shards`` shards."""
    edges = np.linspace(0, n, int(shards) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def train_empty(kind: str, vectors: np.ndarray, params: dict, seed: int = 0):
    """The trained, empty index every shard starts from."""
    index = empty_index(kind, vectors.shape[1], params)
    train_index(index, kind, vectors, params, seed=seed)
    set_search_params(index, kind, params)
    return index


def fill_shard(trained, vectors: np.ndarray, keys: np.ndarray, progress: bool = False):
    """A copy of the trained empty index holding ``vectors`` under ``keys`` (one machine's job)."""
    import faiss

    if isinstance(trained, (str, Path)):
        shard = faiss.read_index(str(trained))
    else:
        shard = faiss.deserialize_index(faiss.serialize_index(trained))
    add_in_chunks(shard, vectors, keys, progress)
    return shard


def combine(parts: list, dim: int):
    """``faiss.IndexShards`` over ``parts``: a search fans out to each and merges the top-k."""
    import faiss

    index = faiss.IndexShards(int(dim), False, False)  # keep each shard's own (global) keys
    for part in parts:
        index.add_shard(part)
    # the Python objects own the shards: keep them alive as long as the IndexShards
    index.referenced_objects = list(getattr(index, "referenced_objects", None) or []) + list(parts)
    return index


def build_shards(kind: str, vectors: np.ndarray, keys: np.ndarray, params: dict, shards: int, seed: int = 0,
                 progress: bool = False, folder: Path | None = None):
    """Train once, fill ``shards`` shards with contiguous slices of ``vectors``, combine them.

    With ``folder``, the trained empty index is kept as ``shards/trained.faiss``: more shards can
    then be filled elsewhere (:func:`fill_shard`) and dropped in beside the others.
    """
    import faiss

    trained = train_empty(kind, vectors, params, seed=seed)
    if folder is not None:
        (Path(folder) / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        faiss.write_index(trained, str(Path(folder) / SHARD_DIR / TRAINED_FILE))
    parts = [fill_shard(trained, vectors[a:b], keys[a:b], progress) for a, b in shard_bounds(len(vectors), shards)]
    return combine(parts, vectors.shape[1])


def shard_keys(part) -> np.ndarray:
    """The keys one shard holds (an ``IndexIDMap`` keeps them in its id map, an IVF index in its lists)."""
    import faiss

    part = faiss.downcast_index(part)
    if isinstance(part, faiss.IndexIDMap):
        return faiss.vector_to_array(part.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(part)
    lists = ivf.invlists
    ids = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
           for i in range(ivf.nlist) if lists.list_size(i)]
    return np.sort(np.concatenate(ids).astype(np.int64)) if ids else np.zeros(0, np.int64)


def reconstruct(index, keys: np.ndarray, held: list[np.ndarray] | None = None) -> np.ndarray:
    """(len(keys), d) stored vectors of ``keys``, each read from the shard that holds it.

    ``faiss.IndexShards`` implements no ``reconstruct``; its shards do. ``held``: each shard's
    :func:`shard_keys` (sorted), when the caller keeps them; computed here otherwise.
    """
    import faiss

    keys = np.asarray(keys, dtype=np.int64)
    out = np.zeros((len(keys), int(index.d)), np.float32)
    found = np.zeros(len(keys), dtype=bool)
    for s in range(index.count()):
        part = faiss.downcast_index(index.at(s))
        mine = np.sort(shard_keys(part)) if held is None else held[s]
        if len(mine) == 0:
            continue
        pos = np.clip(np.searchsorted(mine, keys), 0, len(mine) - 1)
        here = ~found & (mine[pos] == keys)
        if here.any():
            out[here] = part.reconstruct_batch(np.ascontiguousarray(keys[here]))
            found |= here
    if not found.all():
        raise KeyError(f"key {int(keys[~found][0])} is in none of the {index.count()} shards")
    return out


def write_shards(index, folder: Path, trained: Path | None = None) -> None:
    """Write each shard of ``index`` into ``folder/shards/`` (and copy ``trained`` beside them)."""
    import shutil

    import faiss

    (Path(folder) / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    target = Path(folder) / SHARD_DIR / TRAINED_FILE
    if trained is not None and Path(trained).is_file() and Path(trained).resolve() != target.resolve():
        shutil.copyfile(trained, target)
    for s in range(index.count()):
        faiss.write_index(faiss.downcast_index(index.at(s)), str(shard_file(folder, s)))


def read_shards(folder: Path, shards: int, dim: int):
    """Open ``shards`` shard files of an index folder as one ``IndexShards``."""
    import faiss

    parts = []
    for s in range(int(shards)):
        f = shard_file(folder, s)
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; index.json says the index has {shards} shards")
        try:
            parts.append(faiss.read_index(str(f)))
        except RuntimeError as exc:
            raise ValueError(f"{f}: faiss cannot read it: {str(exc).strip().splitlines()[-1]}") from None
    return combine(parts, dim or parts[0].d)

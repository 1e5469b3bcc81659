"""The frozen-trunk feature cache and dihedral views.

A galaxy's morphology does not change under the eight rotations/flips of the square (the dihedral
group D4), so they are the views used both to augment training and to average at test time. When
everything of an image tower before its projection is frozen (the default recipe on a CPU), the
tower's pooled trunk features of each view are a pure function of (trunk weights, image,
preprocessing). They are computed once and cached on disk, and training, evaluation and search
embed from the cache through the tower's normaliser and projection only: many epochs at full input
resolution then cost little.

Invalidation is by construction: a store (a folder under ``cache_dir()/features/``) is keyed by a
hash of the trunk's weights and buffers (everything but the projection and the data-fitted
normaliser), the preprocessing (class, size, mean, std) and this module's format version; inside
it each galaxy is keyed by its id, image location, file size and modification time. Change any of
them and the features are recomputed. Shards are ``.npz`` read with ``allow_pickle=False`` and
written atomically.

A tower may instead cut its trunk after an early stage (``cache_stage``): the cache then holds the
flattened spatial feature maps of that stage for each view, and the later stages train on them
(partial fine-tuning at the cost of the later stages only). The fingerprint then covers only the
stem and the stages up to the cut, so training the later stages never invalidates the store.

Towers that support the cache expose ``cache_input(images) -> (B,W)``, ``cache_width`` (W),
``cache_state()`` (what determines a view), ``feature_width`` and accept ``(B,W)`` input in
``forward`` (``backbones.offline.EfficientNetImageTower`` with ``taps``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

FORMAT_VERSION = 2
N_VIEWS = 8
# A stage-map cache stores ~50-100x more per galaxy than pooled taps: catalogs larger than this are
# embedded through the whole tower instead of through the store (inference.encode_images).
MAP_CACHE_MAX_GALAXIES = 20000
VAL_VIEWS = (0, 5)  # the views a stage-map cache validates on during training


# --------------------------------------------------------------------------------- dihedral views
def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` (0..7) of a batch (..., H, W): ``k % 4`` quarter turns, then a transpose if ``k >= 4``."""
    if not 0 <= k < N_VIEWS:
        raise ValueError(f"dihedral view index must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.transpose(-2, -1) if k >= 4 else y


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 distinct rotations/flips of a batch of square images (view 0 is the identity)."""
    return [dihedral_view(x, k) for k in range(N_VIEWS)]


# --------------------------------------------------------------------------------- support checks
def supports_cache(tower) -> bool:
    """Whether a tower can embed from cached trunk views (pooled taps or stage maps)."""
    has_views = callable(getattr(tower, "cache_input", None)) or callable(getattr(tower, "pooled", None))
    return has_views and getattr(tower, "taps", None) is not None


def cache_input(tower, x: torch.Tensor) -> torch.Tensor:
    """What the cache stores for one view of images ``x``: the tower's ``cache_input`` (pooled taps or
    stage maps), or its ``pooled`` taps for towers that only pool."""
    fn = getattr(tower, "cache_input", None)
    return fn(x) if callable(fn) else tower.pooled(x)


def cache_width(tower) -> int:
    """Width of one cached view of a tower: pooled taps, or flattened stage maps (``cache_stage``)."""
    return int(getattr(tower, "cache_width", tower.feature_width))


def trunk_is_frozen(tower) -> bool:
    """True when nothing the cache holds fixed trains (so cached views stay valid): everything before
    the projection for a pooled cache, the stem and stages up to ``cache_stage`` for a stage-map cache."""
    if callable(getattr(tower, "cached_trainable", None)):
        return bool(tower.cached_trainable())
    return all(not p.requires_grad for n, p in tower.named_parameters() if not n.startswith("proj."))


# --------------------------------------------------------------------------------- fingerprints
_AFTER_POOL = ("proj.", "feature_mean", "feature_std")


def trunk_fingerprint(tower) -> str:
    """sha256 of every weight and buffer that determines a cached view (and of where the cut is)."""
    h = hashlib.sha256()
    h.update(repr(getattr(tower, "taps", None)).encode())
    h.update(repr((getattr(tower, "cache_stage", None), getattr(tower, "cache_shape", None))).encode())
    state = tower.cache_state() if callable(getattr(tower, "cache_state", None)) else tower.state_dict()
    for name, t in sorted(state.items()):
        if name.startswith(_AFTER_POOL):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def transform_fingerprint(transform) -> str:
    norm = getattr(transform, "normalize", None)
    parts = [type(transform).__name__, str(getattr(transform, "image_size", None)), str(getattr(transform, "crop", 1.0))]
    if norm is not None:
        parts += [str(norm.mean.flatten().tolist()), str(norm.std.flatten().tolist())]
    return "|".join(parts)


def _file_stamp(path) -> str:
    try:
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    except (OSError, TypeError):
        return f"{path}|missing"


def catalog_keys(catalog) -> list[str]:
    """One key per galaxy: its id, image location, and the file's size and modification time."""
    cols = set(catalog.columns)
    n = len(catalog)
    ids = catalog["id"].astype(str).tolist()
    locs = catalog["file_loc"].tolist() if "file_loc" in cols else [None] * n
    h5p = catalog["h5_path"].tolist() if "h5_path" in cols else [None] * n
    h5r = catalog["h5_row"].tolist() if "h5_row" in cols else [None] * n
    stamps: dict = {}
    keys = []
    for i, loc, hp, hr in zip(ids, locs, h5p, h5r):
        if isinstance(hp, str):
            if hp not in stamps:
                stamps[hp] = _file_stamp(hp)
            text = f"{i}|{stamps[hp]}#{hr}"
        else:
            text = f"{i}|{_file_stamp(loc)}"
        keys.append(hashlib.sha1(text.encode()).hexdigest())
    return keys


def array_keys(images: Sequence[np.ndarray]) -> list[str]:
    keys = []
    for im in images:
        a = np.ascontiguousarray(im)
        keys.append(hashlib.sha1(str(a.shape).encode() + str(a.dtype).encode() + a.tobytes()).hexdigest())
    return keys


def store_key(tower, transform) -> str:
    """Which feature store a (tower, preprocessing) pair reads: every other input is per galaxy."""
    h = hashlib.sha256()
    for part in (f"v{FORMAT_VERSION}", trunk_fingerprint(tower), transform_fingerprint(transform)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def features_dir() -> Path:
    from galaxalign.runtime import cache_dir

    return cache_dir() / "features"


class FeatureStore:
    """Pooled 8-view features of galaxies, by galaxy key, for one (trunk, preprocessing) pair.

    A folder of shards (``shard-*.npz``: ``keys`` as a fixed-width unicode array and ``views``
    float32 (n,8,F)), each written atomically and read with ``allow_pickle=False``; a shard that
    cannot be read is removed and its galaxies are recomputed. Galaxies missing from every shard
    are computed and added as a new shard, so training, evaluation and search share the work.
    """

    def __init__(self, folder: Path, width: int, views: int = N_VIEWS):
        self.folder = Path(folder)
        self.width = int(width)
        self.views = int(views)  # views stored per galaxy (1 for single-view baselines)

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz")) if self.folder.is_dir() else []

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask (N,), views (N,8,F) with zeros where not found)."""
        want: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            want.setdefault(k, []).append(i)
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.views, self.width), dtype=np.float32)
        for shard in self.shards():
            if found.all():
                break
            try:
                with np.load(shard, allow_pickle=False) as z:
                    skeys = z["keys"].tolist()
                    src, dst = [], []
                    for j, k in enumerate(skeys):
                        for i in want.get(k, ()):
                            if not found[i]:
                                src.append(j)
                                dst.append(i)
                    if src:
                        views = z["views"]
                        if views.shape[1:] != (self.views, self.width):
                            raise ValueError(f"shard views of shape {views.shape}")
                        out[dst] = views[src]
                        found[dst] = True
            except (ValueError, OSError, KeyError):
                shard.unlink(missing_ok=True)  # damaged: recomputed, never trusted
        return found, out

    def add(self, keys: Sequence[str], views: np.ndarray) -> None:
        if len(keys) == 0:
            return
        from galaxalign.runtime import atomic_path

        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
        with atomic_path(self.folder / f"shard-{name}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.asarray(list(keys), dtype="U40"), views=np.asarray(views, dtype=np.float32))


def _through_store(tower, transform, keys: list[str], compute, use_cache: bool) -> np.ndarray:
    """Views for ``keys``: from the store where present, ``compute(positions)`` for the rest."""
    if not use_cache:
        return compute(list(range(len(keys))))
    store = FeatureStore(features_dir() / store_key(tower, transform), cache_width(tower))
    found, out = store.lookup(keys)
    missing = np.flatnonzero(~found).tolist()
    if missing:
        fresh = compute(missing)
        out[missing] = fresh
        first: dict = {}  # a galaxy listed twice is stored once
        for pos, i in enumerate(missing):
            first.setdefault(keys[i], pos)
        store.add(list(first), fresh[list(first.values())])
    return out


# --------------------------------------------------------------------------------- computing
@torch.no_grad()
def _pool_batches(tower, batches, n: int, device, progress: bool, desc: str) -> np.ndarray:
    out = np.zeros((n, N_VIEWS, cache_width(tower)), dtype=np.float32)
    was_training = tower.training
    tower.eval()
    pos = 0
    bar = None
    # OUR CHOICE: the one-off trunk pass uses every core this process may run on (measured at 224 px on
    # the idle 2-core machine: 14 -> 26 images/s), then the configured thread count is restored.
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(max(threads, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="galaxy", leave=False)
    try:
        for x in batches:
            x = x.to(device)
            for k in range(N_VIEWS):
                out[pos : pos + len(x), k] = cache_input(tower, dihedral_view(x, k)).float().cpu().numpy()
            pos += len(x)
            if bar is not None:
                bar.update(len(x))
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
        tower.train(was_training)
    return out


def pooled_views_catalog(tower, catalog, transform, *, device=None, batch_size: int = 64, use_cache: bool = True,
                         progress: bool = True, num_workers: int = 0) -> np.ndarray:
    """(N, 8, F) float32 pooled trunk features of every catalog row under the 8 dihedral views."""
    from galaxalign.datasets import GalaxyDataset

    if not supports_cache(tower):
        raise ValueError("this image tower cannot embed from pooled features (it needs backbone 'taps')")
    device = device or next(tower.parameters()).device

    def compute(rows):
        sub = catalog.iloc[rows]
        loader = torch.utils.data.DataLoader(GalaxyDataset(sub, transform), batch_size=batch_size,
                                             shuffle=False, num_workers=num_workers)
        return _pool_batches(tower, (x for x, _ in loader), len(sub), device, progress,
                             f"trunk features, {len(sub)} galaxies x 8 views")

    return _through_store(tower, transform, catalog_keys(catalog), compute, use_cache)


def pooled_views_arrays(tower, images: Sequence[np.ndarray], transform, *, device=None, batch_size: int = 64,
                        use_cache: bool = True) -> np.ndarray:
    """(N, 8, F) pooled features of uint8 (H,W,3) images (symbols, uploads) under the 8 views."""
    from galaxalign.transforms import stack

    if not supports_cache(tower):
        raise ValueError("this image tower cannot embed from pooled features (it needs backbone 'taps')")
    device = device or next(tower.parameters()).device

    def compute(rows):
        sub = [images[i] for i in rows]
        batches = (stack(sub[s : s + batch_size], transform) for s in range(0, len(sub), batch_size))
        return _pool_batches(tower, batches, len(sub), device, False, "")

    keys = array_keys(images) if use_cache else [""] * len(images)
    return _through_store(tower, transform, keys, compute, use_cache)


# --------------------------------------------------------------------------------- training sets
class PooledSet:
    """Cached views of a labelled set: ``views`` (N,V,F) and ``labels`` (N,)."""

    def __init__(self, views, labels):
        self.views = np.asarray(views, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.views) != len(self.labels):
            raise ValueError(f"{len(self.views)} views for {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def _mix(seed: int) -> int:
    """splitmix64: a well-spread integer from a sample seed (cheap, unlike reseeding an RNG)."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


class CachedViews(torch.utils.data.Dataset):
    """Training samples from cached views, indexed like the trainer's ``SeededSamples`` by
    ``(index, seed)``: item is (views[index, v], label) with the view v a pure function of the
    sample's seed (uniform over the 8), so a resumed run or another worker count draws the same."""

    def __init__(self, views: torch.Tensor, labels):
        self.views = torch.as_tensor(views, dtype=torch.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.views.ndim != 3 or self.views.shape[1] != N_VIEWS or len(self.views) != len(self.labels):
            raise ValueError(f"cached views must be (N, 8, F) for N labels, got {tuple(self.views.shape)} for {len(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        index, seed = key
        v = _mix(seed) % N_VIEWS
        return self.views[index, v], int(self.labels[index])


# --------------------------------------------------------------------------------- embedding
def view_batch(width: int, batch_size: int = 4096) -> int:
    """Galaxies per batch when embedding cached views of ``width``: ~4M floats of 8 views at a time."""
    return max(1, min(int(batch_size), (1 << 22) // (N_VIEWS * max(int(width), 1))))


@torch.no_grad()
def embed_pooled_views(tower, views, tta: bool = True, batch_size: int = 4096) -> np.ndarray:
    """L2-normalised (N,D) embeddings from (N,8,F) cached views: the mean of the 8 views' normalised
    embeddings, renormalised (``tta``), or view 0 alone."""
    views = torch.as_tensor(np.asarray(views), dtype=torch.float32)
    batch_size = view_batch(views.shape[-1] if views.ndim == 3 else 1, batch_size)
    device = next(tower.parameters()).device
    out = []
    was_training = tower.training
    tower.eval()
    try:
        for s in range(0, views.shape[0], batch_size):
            v = views[s : s + batch_size].to(device)
            if tta:
                e = F.normalize(tower(v.reshape(-1, v.shape[-1])).float(), dim=-1).reshape(v.shape[0], N_VIEWS, -1)
                out.append(F.normalize(e.mean(1), dim=-1).cpu())
            else:
                out.append(F.normalize(tower(v[:, 0]).float(), dim=-1).cpu())
    finally:
        tower.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

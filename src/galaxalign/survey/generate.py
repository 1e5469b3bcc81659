"""Write a labelled synthetic survey to HDF5 in the layout of ``Galaxy10_DECals.h5``.

Layout: ``images`` uint8 (N, H, W, 3); ``ans`` uint8 (N,); ``ra``, ``dec``, ``redshift``, ``pxscale``
float64 (N,); group ``params/`` with one float32 dataset per generating parameter (NaN where not
applicable); file attributes ``generator_version``, ``seed``, ``size``, ``num``, ``class_names``,
``class_keys``, ``class_weights``, ``config_hash``, ``observing``; and one float32 dataset per
decision-tree answer, ``<answer>_fraction`` (galaxy-datasets' vote-fraction columns): each galaxy's
true answers from its generating parameters (1 / 0 / NaN, ``survey.answers``).

Reproducible: galaxy ``i`` is drawn from ``SeedSequence([seed, i])`` and the class list from
``SeedSequence([seed, LABEL_STREAM])``, so the bytes do not depend on the number of workers.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np
from tqdm.auto import tqdm

from galaxalign.answers import answer_ids, fraction_column
from galaxalign.runtime import atomic_path, cache_dir
from galaxalign.survey.answers import answer_rows
from galaxalign.survey.classes import (
    DEFAULT_SURVEY_NUM,
    DEFAULT_SURVEY_SIZE,
    DEFAULT_TAXONOMY,
    load_survey_config,
    survey_class_keys,
    survey_taxonomy,
)
from galaxalign.survey.render import PARAM_NAMES, render_galaxy

# Bump when a change to the renderer changes the images; the config hash covers the YAML.
GENERATOR_VERSION = "1.2"
LABEL_STREAM = 0x6C61626C  # separate seed stream for the class list
SKY_STREAM = 0x736B79      # separate seed stream for ra/dec


def reference_weights(config: dict | None = None) -> np.ndarray:
    """Default class balance: the ``count`` of each class in the survey's taxonomy (a data file)."""
    taxonomy = survey_taxonomy(config or load_survey_config())
    counts = taxonomy.class_counts
    if counts is None:
        missing = [c.key for c in taxonomy.classes if c.count is None]
        raise ValueError(f"taxonomy {taxonomy.name!r} ({taxonomy.source}): classes {missing} have no 'count', "
                         "so there are no default class proportions; give class_weights explicitly")
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


def galaxy10_weights() -> np.ndarray:
    """Default class balance of the shipped survey: the Galaxy10 DECaLS proportions."""
    return reference_weights()


def resolve_class_weights(class_weights: Sequence[float] | Mapping | str | None, config: dict | None = None) -> np.ndarray:
    """Weights per class id from None/'galaxy10' (default: the taxonomy's counts), 'uniform', a list, or {id|key: w}."""
    config = config or load_survey_config()
    keys = survey_class_keys(config)
    if class_weights is None or (isinstance(class_weights, str) and class_weights == "galaxy10"):
        return reference_weights(config)
    if isinstance(class_weights, str) and class_weights == "uniform":
        return np.full(len(keys), 1.0 / len(keys))
    if isinstance(class_weights, str):
        raise ValueError(f"class weights {class_weights!r}: expected 'galaxy10', 'uniform', a list of {len(keys)} numbers or a mapping")
    if isinstance(class_weights, Mapping):
        w = np.zeros(len(keys))
        for label, value in class_weights.items():
            if isinstance(label, str) and not label.isdigit():
                if label not in keys:
                    raise ValueError(f"class weights: unknown class {label!r}; known keys: {list(keys)}")
                w[keys.index(label)] = float(value)
            else:
                i = int(label)
                if not 0 <= i < len(keys):
                    raise ValueError(f"class weights: class id {i} outside 0..{len(keys) - 1}")
                w[i] = float(value)
    else:
        w = np.asarray(list(class_weights), dtype=float)
        if w.shape != (len(keys),):
            raise ValueError(f"class weights: expected {len(keys)} numbers (one per survey class), got {len(w)}")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"class weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return w / w.sum()


def class_labels(num: int, weights: np.ndarray, seed: int) -> np.ndarray:
    """Exactly ``round(num * w)`` galaxies per class (largest remainder), in seeded random order."""
    # OUR CHOICE: exact counts rather than i.i.d. draws, so small surveys keep every class's share.
    raw = num * np.asarray(weights, dtype=float)
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: num - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(weights)), counts).astype(np.uint8)
    return np.random.default_rng(np.random.SeedSequence([seed, LABEL_STREAM])).permutation(labels)


def _config_hash(config: dict) -> str:
    # Classes files used to leave the taxonomy implicit; the default one hashes as those files
    # before did, so identical surveys keep their cache key (any other taxonomy changes the hash).
    if config.get("taxonomy") == DEFAULT_TAXONOMY:
        config = {k: v for k, v in config.items() if k != "taxonomy"}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _sky_position(seed: int, index: int) -> tuple[float, float]:
    # OUR CHOICE: uniform on the sphere within a DECaLS-like declination band (-20..+35 deg).
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, SKY_STREAM]))
    ra = rng.uniform(0.0, 360.0)
    s0, s1 = math.sin(math.radians(-20.0)), math.sin(math.radians(35.0))
    return ra, math.degrees(math.asin(rng.uniform(s0, s1)))


def _render_chunk(task: tuple) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Worker: render galaxies ``start .. start+len(labels)``; each from its own (seed, index) RNG."""
    start, labels, size, seed, observing = task
    config = load_survey_config(observing=observing)
    images = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    params = np.full((len(labels), len(PARAM_NAMES)), np.nan, dtype=np.float64)
    sky = np.empty((len(labels), 2))
    for k, label in enumerate(labels):
        index = start + k
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        images[k], p = render_galaxy(int(label), size, rng, config=config)
        params[k] = [p[name] for name in PARAM_NAMES]
        sky[k] = _sky_position(seed, index)
    return start, images, params, sky


def _worker_init() -> None:
    # Each worker renders single-threaded; parallelism comes from the processes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def _chunks(labels: np.ndarray, chunk: int, size: int, seed: int, observing: dict | None) -> Iterable[tuple]:
    for start in range(0, len(labels), chunk):
        yield start, labels[start:start + chunk], size, seed, observing


# OUR CHOICE: cutouts of at most 1024 px a side (Galaxy10 DECaLS has 256 px, GZ2 424 px); a larger
# --size is refused before a frame of that size is allocated.
MAX_SIZE = 1024


def generate_survey(out: str | os.PathLike, num: int, size: int = 128, seed: int = 0, workers: int | None = None,
                    class_weights: Sequence[float] | Mapping | str | None = None, progress: bool = True,
                    observing: dict | None = None) -> Path:
    """Render ``num`` galaxies at ``size`` x ``size`` px into ``out`` (HDF5, written atomically).

    ``workers``: processes (None: all cores; 0 or 1: in this process). ``class_weights``: see
    :func:`resolve_class_weights` (default: Galaxy10 DECaLS proportions). ``observing``: overrides of
    observing ranges in survey_classes.yaml (domain randomisation). Same arguments -> same bytes in
    every dataset, whatever ``workers`` is.
    """
    if int(num) < 1:
        raise ValueError(f"num must be a positive number of galaxies, got {num}")
    if not 16 <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be from 16 to {MAX_SIZE} pixels, got {size}")
    num, size, seed = int(num), int(size), int(seed)
    out = Path(out)
    config = load_survey_config(observing=observing)  # validates the overrides before any work
    weights = resolve_class_weights(class_weights, config)
    labels = class_labels(num, weights, seed)
    workers = (os.cpu_count() or 1) if workers is None else max(int(workers), 0)
    workers = min(workers, max(1, math.ceil(num / 8)))
    # OUR CHOICE: chunks of <= 32 galaxies, ~4 per worker, so the progress bar moves and loads balance.
    chunk = max(1, min(32, math.ceil(num / max(1, workers * 4))))
    tasks = _chunks(labels, chunk, size, seed, observing)
    keys = survey_class_keys(config)
    taxonomy = survey_taxonomy(config)
    names = taxonomy.class_names

    # The file's size is known: a disk too small for it is said before rendering starts. No chunk
    # cache (each chunk is one galaxy, written whole): HDF5 then holds no unwritten data when a
    # write fails, and closing the file after a full disk cannot crash the process at exit.
    needed = num * (size * size * 3 + 8 * (len(PARAM_NAMES) + 4 + len(answer_ids(taxonomy.tree)))) + 256 * 1024
    with atomic_path(out, needed=needed) as tmp, h5py.File(tmp, "w", rdcc_nbytes=0) as h5:
        images = h5.create_dataset("images", (num, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3))
        h5.create_dataset("ans", data=labels, dtype=np.uint8)
        cols = {name: h5.create_dataset(name, (num,), dtype=np.float64) for name in ("ra", "dec", "redshift", "pxscale")}
        group = h5.create_group("params")
        params = np.full((num, len(PARAM_NAMES)), np.nan)
        sky = np.empty((num, 2))
        bar = tqdm(total=num, desc=f"rendering {out.name}", unit="gal", disable=not progress)
        t0 = time.perf_counter()
        if workers <= 1:
            results = map(_render_chunk, tasks)
            pool = None
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork: safe even when torch threads run in the parent
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
            results = pool.map(_render_chunk, tasks)
        try:
            for start, imgs, prm, radec in results:
                stop = start + len(imgs)
                images[start:stop] = imgs
                params[start:stop] = prm
                sky[start:stop] = radec
                bar.update(len(imgs))
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        seconds = time.perf_counter() - t0
        cols["ra"][:] = sky[:, 0]
        cols["dec"][:] = sky[:, 1]
        cols["redshift"][:] = params[:, PARAM_NAMES.index("redshift")]
        cols["pxscale"][:] = params[:, PARAM_NAMES.index("pxscale")]
        for j, name in enumerate(PARAM_NAMES):
            group.create_dataset(name, data=params[:, j].astype(np.float32))
        # Each galaxy's true decision-tree answers (galaxy-datasets' vote-fraction columns; 1/0/NaN).
        rows = answer_rows(labels, {name: params[:, j] for j, name in enumerate(PARAM_NAMES)}, config)
        for j, answer in enumerate(answer_ids(taxonomy.tree)):
            h5.create_dataset(fraction_column(answer), data=rows[:, j])
        h5.attrs.update({
            "generator": "galaxalign.survey",
            "generator_version": GENERATOR_VERSION,
            "config_hash": _config_hash(config),
            "seed": seed,
            "size": size,
            "num": num,
            "taxonomy": taxonomy.name,
            "class_names": json.dumps(names),
            "class_keys": json.dumps(list(keys)),
            "class_weights": json.dumps([round(float(w), 8) for w in weights]),
            "observing": json.dumps(observing or {}, sort_keys=True),
            "bands": "g, r, z rendered; RGB = make_lupton_rgb(z, r, g)",
        })
    if progress:
        print(f"wrote {out} ({num} galaxies, {size}x{size}) in {seconds:.1f} s: {num / max(seconds, 1e-9):.1f} galaxies/s")
    return out


def default_survey(num: int = DEFAULT_SURVEY_NUM, size: int = DEFAULT_SURVEY_SIZE, seed: int = 0,
                   progress: bool = True) -> Path:
    """The cached embedded survey: rendered once under ``cache_dir()/surveys/``, then reused.

    Keyed by (num, size, seed, generator version, hash of the generating distributions).
    """
    tag = f"{GENERATOR_VERSION}-{_config_hash(load_survey_config())}"
    path = cache_dir() / "surveys" / f"galaxy10-synth_n{num}_s{size}_seed{seed}_v{tag}.h5"
    if not path.exists():
        generate_survey(path, num, size=size, seed=seed, progress=progress)
    return path

"""Galaxy10 DECaLS (astroNN) from its HDF5 file, and the synthetic survey that shares its layout.

Layout: ``images`` uint8 (N, H, W, 3) (256x256 for the real file), ``ans`` uint8 class ids, and
per-galaxy 1-D datasets ``ra``, ``dec``, ``redshift``, ``pxscale``. The rendered survey adds more
1-D datasets and a ``params/`` group of per-galaxy floats; all become metadata columns. Images are
not read here: rows point into the file (``h5_path`` + ``h5_row``) and are read on demand.
"""
from __future__ import annotations

import json

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from galaxalign.datasets.catalog import RESERVED_COLUMNS, CatalogError
from galaxalign.runtime import atomic_path, cache_dir

log = logging.getLogger(__name__)

GALAXY10_URL = "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5"
GALAXY10_FILENAME = "Galaxy10_DECals.h5"
GALAXY10_METADATA = ("ra", "dec", "redshift", "pxscale")


def default_galaxy10_path() -> Path:
    """Where :func:`download_galaxy10` puts the file by default (under the GalaxAlign cache)."""
    return cache_dir() / GALAXY10_FILENAME


def _missing_message(path: Path) -> str:
    return (
        f"Galaxy10 DECaLS file {path} not found. Download it (about 2.5 GB) from {GALAXY10_URL} "
        f"(e.g. `curl -L -o {path} {GALAXY10_URL}` or galaxalign.datasets.download_galaxy10('{path}')) "
        f"and pass its path."
    )


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in ("S", "O"):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    return values


def load_galaxy10(path: str | os.PathLike | None = None, taxonomy=None) -> pd.DataFrame:
    """Catalog of a Galaxy10-layout HDF5 file: one row per image, ``h5_path`` + ``h5_row``.

    ``taxonomy`` (optional) checks that every ``ans`` is one of its class ids, and, when the file
    records its classes (attribute ``class_names``), that they are the taxonomy's first classes.
    """
    import h5py

    path = Path(path) if path is not None else default_galaxy10_path()
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    path = path.resolve()
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CatalogError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle:
        for name in ("images", "ans"):
            if name not in handle or not isinstance(handle[name], h5py.Dataset):
                raise CatalogError(
                    f"{path}: missing dataset {name!r} (Galaxy10 layout needs 'images' and 'ans'; "
                    f"found {sorted(handle.keys())})"
                )
        images, ans = handle["images"], handle["ans"]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise CatalogError(f"{path}: dataset 'images' has shape {images.shape}; expected (N, H, W, 3)")
        if images.dtype != np.uint8:
            raise CatalogError(f"{path}: dataset 'images' has dtype {images.dtype}; expected uint8")
        n = images.shape[0]
        if n == 0:
            raise CatalogError(f"{path}: dataset 'images' is empty (0 galaxies)")
        if ans.ndim != 1 or ans.shape[0] != n:
            raise CatalogError(f"{path}: dataset 'ans' has shape {ans.shape} but 'images' holds {n} galaxies")
        if ans.dtype.kind not in "iu":
            raise CatalogError(f"{path}: dataset 'ans' has dtype {ans.dtype}; expected integer class ids")
        labels = ans[()].astype(np.int64)
        if taxonomy is not None:
            _check_taxonomy(handle, path, labels, taxonomy)

        metadata: dict[str, np.ndarray] = {}
        ignored: list[str] = []
        for name, obj in handle.items():
            if name in ("images", "ans") or not isinstance(obj, h5py.Dataset):
                continue
            if obj.ndim == 1 and obj.shape[0] == n:
                metadata[name] = _decode(obj[()])
            elif name in GALAXY10_METADATA:
                raise CatalogError(f"{path}: dataset {name!r} has shape {obj.shape} but 'images' holds {n} galaxies")
            else:
                ignored.append(name)  # e.g. a class-name list: not per galaxy
        if "params" in handle and isinstance(handle["params"], h5py.Group):
            for name, obj in handle["params"].items():
                if not isinstance(obj, h5py.Dataset) or obj.ndim != 1 or obj.shape[0] != n:
                    raise CatalogError(
                        f"{path}: dataset 'params/{name}' has shape {getattr(obj, 'shape', None)}; "
                        f"expected one value per galaxy ({n},)"
                    )
                column = name if name not in metadata and name not in RESERVED_COLUMNS else f"params_{name}"
                metadata[column] = _decode(obj[()])

    ids = metadata.pop("id", None)
    # OUR CHOICE: Galaxy10 has no galaxy ids; "<file stem>-<row>" is stable for a given file.
    if ids is None or len(set(ids)) != n:
        ids = np.array([f"{path.stem}-{i}" for i in range(n)], dtype=object)
    columns: dict[str, object] = {
        "id": [str(i) for i in ids],
        "label": labels,
        "source": [f"{path.name}#{i}" for i in range(n)],
        "h5_path": str(path),
        "h5_row": np.arange(n, dtype=np.int64),
    }
    for name, values in metadata.items():
        columns[name if name not in RESERVED_COLUMNS else f"meta_{name}"] = values
    catalog = pd.DataFrame(columns)
    catalog.attrs["skipped"] = []
    if ignored:
        catalog.attrs["ignored_datasets"] = ignored
        log.info("%s: datasets not one-per-galaxy, left out of the catalog: %s", path, ignored)
    return catalog


def _check_taxonomy(handle, path: Path, labels: np.ndarray, taxonomy) -> None:
    from galaxalign.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(taxonomy)
    bad = np.flatnonzero((labels < 0) | (labels >= taxonomy.num_classes))
    if len(bad):
        raise CatalogError(
            f"{path}: row {bad[0]}: ans {labels[bad[0]]} is not a class of taxonomy {taxonomy.name!r} "
            f"(ids 0..{taxonomy.num_classes - 1}); {len(bad)} such row(s)"
        )
    # Class names, not the taxonomy's name, decide: a user's renamed copy of a scheme still fits.
    names = handle.attrs.get("class_names")
    if names is not None:
        if isinstance(names, bytes):
            names = names.decode()
        if isinstance(names, str) and names.lstrip().startswith("["):
            names = json.loads(names)  # the rendered survey stores its class names as a JSON list
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]
        if names != taxonomy.class_names[: len(names)]:
            raise CatalogError(
                f"{path}: class_names {names} do not match taxonomy {taxonomy.name!r} {taxonomy.class_names}"
            )


def download_galaxy10(
    dest: str | os.PathLike | None = None, url: str = GALAXY10_URL, overwrite: bool = False, progress: bool = True
) -> Path:
    """Download Galaxy10_DECals.h5 (about 2.5 GB) to ``dest`` (a file or a folder); return its path.

    The download streams into a temporary file that is renamed only when complete, so an
    interrupted download never leaves a truncated file under the final name.
    """
    from tqdm.auto import tqdm

    dest = Path(dest) if dest is not None else default_galaxy10_path()
    if dest.is_dir() or (dest.suffix.lower() not in (".h5", ".hdf5") and not dest.exists()):
        dest = dest / GALAXY10_FILENAME
    if dest.is_file() and not overwrite:
        log.info("%s already exists; not downloading", dest)
        return dest
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(
            f"cannot download Galaxy10 DECaLS from {url} ({exc}); download it by hand and pass its path"
        ) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    with response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and tmp.stat().st_size != total:
            raise ConnectionError(f"download of {url} incomplete: {tmp.stat().st_size} of {total} bytes")
        load_galaxy10(tmp)  # the file must load before it gets its final name
    return dest


__all__ = ["GALAXY10_URL", "default_galaxy10_path", "download_galaxy10", "load_galaxy10"]

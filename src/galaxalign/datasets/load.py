"""``load_catalog``: the single front door from "some data a user points at" to a catalog.

Dispatch by what ``source`` is: a DataFrame (validated), ``.h5``/``.hdf5`` (Galaxy10 layout),
``.csv``/``.tsv``/``.parquet`` (GZ2 when it has ``summary`` or GZ2 vote columns, else a user
catalog), or a folder (one subfolder per class).
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from galaxalign.datasets.catalog import CatalogError, validate_catalog
from galaxalign.datasets.galaxy10 import load_galaxy10
from galaxalign.datasets.gz2 import is_gz2_table, load_gz2_catalog
from galaxalign.datasets.user import load_image_folder, load_user_catalog

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def _table_columns(path: Path) -> list[str]:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises many types on broken files
            raise CatalogError(f"{path}: cannot read parquet catalog ({exc})") from None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","), [])
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not a UTF-8 text CSV ({exc})") from None
    except csv.Error as exc:
        raise CatalogError(f"{path}: malformed CSV ({exc})") from None
    return [c.strip() for c in header]


def load_catalog(source, taxonomy=None, **kwargs) -> pd.DataFrame:
    """Catalog of ``source`` (path or DataFrame), labels in ``taxonomy`` (name, path or Taxonomy).

    ``taxonomy`` defaults to ``gz2`` for GZ2 tables and ``galaxy10_decals`` otherwise. Extra
    keyword arguments go to the chosen loader (``skip_bad``, ``check_images``, ``image_dir``).
    """
    if isinstance(source, pd.DataFrame):
        return validate_catalog(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data source {path} not found (expected a .h5 file, a .csv/.parquet catalog or a folder)"
        )
    if path.is_dir():
        return load_image_folder(path, taxonomy or "galaxy10_decals", **kwargs)
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        # Row-level options do not apply: the file's structure is checked as a whole.
        unknown = set(kwargs) - {"skip_bad", "check_images", "image_dir"}
        if unknown:
            raise TypeError(f"{path}: unknown loader option(s) {sorted(unknown)}")
        return load_galaxy10(path, taxonomy=taxonomy)
    if suffix in TABLE_SUFFIXES:
        if is_gz2_table(_table_columns(path)):
            return load_gz2_catalog(path, taxonomy=taxonomy or "gz2", **kwargs)
        return load_user_catalog(path, taxonomy or "galaxy10_decals", **kwargs)
    raise CatalogError(
        f"{path}: unsupported data source {suffix!r}; use an HDF5 file ({', '.join(HDF5_SUFFIXES)}), a catalog "
        f"({', '.join(TABLE_SUFFIXES)}) or a folder with one subfolder per class"
    )

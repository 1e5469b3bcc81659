"""The catalog: the common currency of every dataset (galaxy-datasets style).

A catalog is a ``pandas.DataFrame`` with one row per galaxy:

- ``id`` (str, unique), ``label`` (int class id into a Taxonomy, -1 when unknown),
  ``source`` (str, human readable: a path or ``file.h5#row``);
- either ``file_loc`` (str image path) or ``h5_path`` + ``h5_row`` (int);
- any metadata columns (``ra``, ``dec``, survey parameters ...). A galaxy's text comes from its class
  (the taxonomy's prompts) or its decision-tree answers (``galaxalign.answers``), never from free text.

Loaders never drop or relabel a row silently: a bad row raises :class:`CatalogError` naming the
file and row, or, with ``skip_bad=True``, is dropped and recorded in ``catalog.attrs["skipped"]``
with a warning that gives the count.
"""
from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("id", "label", "source")
RESERVED_COLUMNS = ("id", "label", "source", "file_loc", "h5_path", "h5_row")
UNKNOWN_LABEL = -1


class CatalogError(ValueError):
    """A catalog or one of its rows is unusable; the message names the file and row."""


class BadRows:
    """Collects bad rows while a loader walks its input.

    Without ``skip_bad`` the first problem raises; with it, problems are recorded and
    :meth:`finish` stores them in ``catalog.attrs["skipped"]`` and warns with the count.
    """

    def __init__(self, where: str, skip_bad: bool = False):
        self.where = where
        self.skip_bad = skip_bad
        self.skipped: list[dict[str, str]] = []

    def __call__(self, location: str, reason: str) -> None:
        message = f"{location}: {reason}"
        if not self.skip_bad:
            raise CatalogError(message + " (to drop bad rows instead: data.skip_bad=true in a training config, "
                               "--skip-bad for `galaxalign embed`, skip_bad=True for load_catalog)")
        self.skipped.append({"location": location, "reason": reason})

    def finish(self, catalog: pd.DataFrame) -> pd.DataFrame:
        catalog.attrs["skipped"] = list(self.skipped)
        if self.skipped:
            first = self.skipped[0]
            warnings.warn(
                f"{self.where}: skipped {len(self.skipped)} bad row(s); first: {first['location']}: "
                f"{first['reason']} (all listed in catalog.attrs['skipped'])",
                stacklevel=3,
            )
        return catalog


def image_columns(catalog: pd.DataFrame) -> str:
    """Which image address the catalog uses: ``"file_loc"``, ``"h5"`` or ``"mixed"``."""
    has_file = "file_loc" in catalog.columns
    has_h5 = "h5_path" in catalog.columns and "h5_row" in catalog.columns
    if has_file and has_h5:
        return "mixed"
    if has_file:
        return "file_loc"
    if has_h5:
        return "h5"
    raise CatalogError(
        f"catalog has no image column: needs 'file_loc' or 'h5_path' + 'h5_row' (columns: {list(catalog.columns)})"
    )


def validate_catalog(catalog: pd.DataFrame, where: str = "catalog") -> pd.DataFrame:
    """Check the catalog contract; return the catalog (labels as int64) or raise CatalogError."""
    if not isinstance(catalog, pd.DataFrame):
        raise CatalogError(f"{where}: a catalog is a pandas DataFrame, got {type(catalog).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in catalog.columns]
    if missing:
        raise CatalogError(f"{where}: missing column(s) {missing} (columns: {list(catalog.columns)})")
    image_columns(catalog)
    duplicated = catalog["id"][catalog["id"].duplicated()]
    if len(duplicated):
        raise CatalogError(f"{where}: ids must be unique; duplicated: {list(duplicated[:5])}")
    labels = pd.to_numeric(catalog["label"], errors="coerce")
    if labels.isna().any() or (labels != np.round(labels)).any():
        bad = catalog.index[labels.isna() | (labels != np.round(labels))][0]
        raise CatalogError(f"{where}: row {bad}: label {catalog['label'][bad]!r} is not an integer class id")
    if (labels < UNKNOWN_LABEL).any():
        raise CatalogError(f"{where}: labels must be class ids >= 0 or -1 (unknown); got {int(labels.min())}")
    if catalog["label"].dtype != np.int64:
        catalog = catalog.assign(label=labels.astype(np.int64))
    return catalog


def new_catalog(records: list[dict[str, Any]], columns_first: tuple[str, ...] = ()) -> pd.DataFrame:
    """Build a catalog from row dicts with the contract columns first, metadata after."""
    order = [c for c in (*REQUIRED_COLUMNS, *columns_first) if records and c in records[0]]
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(REQUIRED_COLUMNS))
    rest = [c for c in frame.columns if c not in order]
    frame = frame[order + rest] if records else frame
    frame["label"] = frame["label"].astype(np.int64)
    return frame


def class_counts(catalog: pd.DataFrame) -> dict[int, int]:
    """Number of galaxies per label (including -1 for unlabelled), sorted by label."""
    return dict(sorted(Counter(int(x) for x in catalog["label"]).items()))


def describe_catalog(catalog: pd.DataFrame, taxonomy=None) -> str:
    """A short human summary: size, per-class counts, dropped and skipped rows (for CLI output)."""
    names = taxonomy.class_names if taxonomy is not None else None
    lines = [f"{len(catalog)} galaxies"]
    for label, n in class_counts(catalog).items():
        name = "unlabelled" if label < 0 else (names[label] if names and label < len(names) else f"class {label}")
        lines.append(f"  {label:>3} {name}: {n}")
    for key, value in catalog.attrs.get("dropped", {}).items():
        lines.append(f"  dropped {value} row(s): {key}")
    skipped = catalog.attrs.get("skipped") or []
    if skipped:
        lines.append(f"  skipped {len(skipped)} bad row(s); first: {skipped[0]['location']}: {skipped[0]['reason']}")
    return "\n".join(lines)

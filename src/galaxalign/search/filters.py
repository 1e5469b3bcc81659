"""Restrict a search to catalog rows: magnitude / redshift ranges, a sky region, classes.

A :class:`CatalogFilter` turns the index's id table into a boolean mask over its rows; the index
hands faiss the matching ids as an ``IDSelectorBitmap`` in the search parameters, so faiss itself
skips every other vector while it scans (no over-fetch-and-drop). Stein et al. restrict neighbours
to ±0.5 mag of the query: ``CatalogFilter(ranges={"mag_r": (m - 0.5, m + 0.5)})``.

Ranges work on any numeric column of the table (``mag_r``, ``redshift``, ``params_sersic_n`` ...);
a row whose value is NaN never matches a range on it. The sky region is a cone on ``ra``/``dec``
(degrees). Classes are label ids or class names of the index's taxonomy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


class FilterError(ValueError):
    """A filter the user can fix (unknown column, empty range); the message names the field."""


@dataclass(frozen=True)
class CatalogFilter:
    """Which catalog rows a search may return. All given conditions must hold (AND)."""

    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    classes: Sequence[int | str] | None = None
    cone: tuple[float, float, float] | None = None  # (ra_deg, dec_deg, radius_deg)

    def is_empty(self) -> bool:
        return not self.ranges and self.classes is None and self.cone is None

    def mask(self, table: pd.DataFrame, class_names: Sequence[str] = ()) -> np.ndarray:
        """Boolean (len(table),): the rows that pass every condition."""
        keep = np.ones(len(table), dtype=bool)
        for column, bounds in self.ranges.items():
            values = _numeric_column(table, column)
            try:
                lo, hi = bounds
            except (TypeError, ValueError):
                raise FilterError(f"filter range on {column!r}: expected (min, max), got {bounds!r}") from None
            lo = -math.inf if lo is None else float(lo)
            hi = math.inf if hi is None else float(hi)
            if lo > hi:
                raise FilterError(f"filter range on {column!r}: min {lo} is above max {hi}")
            with np.errstate(invalid="ignore"):
                keep &= (values >= lo) & (values <= hi)
        if self.classes is not None:
            keep &= np.isin(table["label"].to_numpy(), self._label_ids(class_names))
        if self.cone is not None:
            keep &= _in_cone(table, *self.cone)
        return keep

    def _label_ids(self, class_names: Sequence[str]) -> list[int]:
        ids = []
        for c in self.classes or ():
            if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.lstrip("-").isdigit()):
                ids.append(int(c))
            elif c in class_names:
                ids.append(list(class_names).index(c))
            else:
                raise FilterError(f"filter class {c!r}: not a label id or one of the classes {list(class_names)}")
        return ids

    def to_dict(self) -> dict:
        out: dict = {}
        if self.ranges:
            out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.cone is not None:
            out["cone"] = list(self.cone)
        return out


def _numeric_column(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise FilterError(f"filter on unknown column {column!r}; numeric columns of this catalog: {numeric}")
    if not pd.api.types.is_numeric_dtype(table[column]):
        raise FilterError(f"filter range on {column!r}: the column is not numeric ({table[column].dtype})")
    return table[column].to_numpy(dtype=np.float64)


def _in_cone(table: pd.DataFrame, ra: float, dec: float, radius: float) -> np.ndarray:
    if not (-90 <= float(dec) <= 90) or float(radius) < 0:
        raise FilterError(f"sky cone (ra={ra}, dec={dec}, radius={radius}): dec must be in [-90, 90], radius >= 0")
    r1, d1 = np.radians(_numeric_column(table, "ra")), np.radians(_numeric_column(table, "dec"))
    r0, d0 = math.radians(float(ra)), math.radians(float(dec))
    # great-circle separation (haversine: stable at small angles)
    h = np.sin((d1 - d0) / 2) ** 2 + np.cos(d1) * math.cos(d0) * np.sin((r1 - r0) / 2) ** 2
    sep = 2 * np.degrees(np.arcsin(np.sqrt(np.clip(h, 0, 1))))
    with np.errstate(invalid="ignore"):
        return sep <= float(radius)


def parse_filter(spec: str | Mapping | CatalogFilter | None) -> CatalogFilter | None:
    """A filter from a dict (``{"ranges": {...}, "classes": [...], "cone": [ra, dec, r]}``) or the
    compact text form ``"redshift=0.1:0.3;mag_r=:19.5;class=2,3;cone=150.1,2.2,1.5"`` (CLI, URLs)."""
    if spec is None or isinstance(spec, CatalogFilter):
        return spec
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"ranges", "classes", "cone"}
        if unknown:
            raise FilterError(f"filter: unknown field(s) {sorted(unknown)}; use ranges, classes, cone")
        given = spec.get("ranges") or {}
        if not isinstance(given, Mapping):
            raise FilterError(f"filter ranges: expected a mapping of column -> [min, max], got {given!r}")
        ranges = {str(k): _bounds(k, v) for k, v in given.items()}
        classes = spec.get("classes")
        if classes is not None:
            if isinstance(classes, (str, int)) or not isinstance(classes, Sequence):
                classes = [classes]
            if not all(isinstance(c, (str, int, np.integer)) and not isinstance(c, bool) for c in classes):
                raise FilterError(f"filter classes: expected label ids or class names, got {spec.get('classes')!r}")
        cone = spec.get("cone")
        if cone is not None:
            try:
                cone = tuple(float(c) for c in cone)
            except (TypeError, ValueError):
                raise FilterError(f"filter cone: expected [ra, dec, radius_deg], got {spec.get('cone')!r}") from None
            if len(cone) != 3:
                raise FilterError(f"filter cone: expected [ra, dec, radius_deg], got {spec.get('cone')!r}")
        return CatalogFilter(ranges, classes, cone)
    ranges: dict[str, tuple] = {}
    classes, cone = None, None
    for part in [p.strip() for p in str(spec).split(";") if p.strip()]:
        if "=" not in part:
            raise FilterError(f"filter part {part!r}: expected column=min:max, class=..., or cone=ra,dec,radius")
        key, value = (s.strip() for s in part.split("=", 1))
        if key == "class":
            classes = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "cone":
            try:
                cone = tuple(float(v) for v in value.split(","))
            except ValueError:
                raise FilterError(f"filter cone {value!r}: expected three numbers ra,dec,radius_deg") from None
            if len(cone) != 3:
                raise FilterError(f"filter cone {value!r}: expected three numbers ra,dec,radius_deg")
        else:
            if ":" not in value:
                raise FilterError(f"filter {part!r}: expected {key}=min:max (either side may be empty)")
            lo, hi = value.split(":", 1)
            try:
                ranges[key] = (float(lo) if lo.strip() else None, float(hi) if hi.strip() else None)
            except ValueError:
                raise FilterError(f"filter {part!r}: min and max must be numbers") from None
    return CatalogFilter(ranges, classes, cone)


def _bounds(column, value) -> tuple[float | None, float | None]:
    """A range's ``[min, max]`` (either may be None) as numbers, or a FilterError naming the column."""
    try:
        lo, hi = value
        return (None if lo is None else float(lo), None if hi is None else float(hi))
    except (TypeError, ValueError):
        raise FilterError(f"filter range on {column!r}: expected [min, max] numbers (either may be null), "
                          f"got {value!r}") from None


def id_selector(keys: np.ndarray, key_space: int):
    """A faiss ``IDSelectorBitmap`` over ids ``0..key_space-1`` selecting ``keys``.

    Returns ``(selector, bitmap)``; keep the bitmap alive while faiss uses the selector.
    """
    import faiss

    bits = np.zeros(max(int(key_space), 1), dtype=bool)
    bits[np.asarray(keys, dtype=np.int64)] = True
    bitmap = np.packbits(bits, bitorder="little")  # faiss reads bit (id & 7) of byte (id >> 3)
    return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bitmap)), bitmap

"""What an index folder holds, row by row: its file names, the id table (``id``, ``label``,
``source``, metadata, hidden ``key``), the embedding matrices it accepts, and the hits it returns.
Shared by the index (``index.py``) and its builders (``build.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from galaxalign.taxonomy import load_taxonomy

INDEX_FILE = "index.faiss"
TABLE_FILE = "table.parquet"
INFO_FILE = "index.json"
STORE_FILE = "vectors.f32"
INDEX_FORMAT = "galaxalign-index"
KEY_COLUMN = "key"
CHUNK = 262_144

class IndexMismatchError(ValueError):
    """The index folder's parts disagree (count, dim, kind); the message names the files."""


class UnknownGalaxyError(KeyError):
    """A galaxy id that is not in the index."""


@dataclass(frozen=True)
class Hit:
    """One search result: where it sits in the index and what the catalog says about it."""

    rank: int
    id: str
    score: float
    label: int
    label_name: str
    source: str
    row: int
    # the galaxy's decision-tree path, when the index's catalog carries per-galaxy answers
    # (search.galaxy_answers); for a feature query also how many of the query's answers it has
    answers: tuple[str, ...] | None = None
    matched: int | None = None

    def to_dict(self) -> dict:
        out = {"rank": self.rank, "id": self.id, "score": self.score, "label": self.label,
               "label_name": self.label_name, "source": self.source, "row": self.row}
        if self.answers is not None:
            out["answers"] = list(self.answers)
        if self.matched is not None:
            out["matched"] = self.matched
        return out


def as_matrix(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    x = vectors if isinstance(vectors, np.memmap) else np.asarray(vectors)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what}: dimension {x.shape[1]} does not match the index dimension {dim}")
    if not isinstance(x, np.memmap):
        x = np.ascontiguousarray(x, dtype=np.float32)
    for start in range(0, len(x), CHUNK):  # in chunks: a memory-mapped 10 GB input stays on disk
        if not np.isfinite(x[start : start + CHUNK]).all():
            raise ValueError(f"{what}: contains NaN or infinite values (in rows {start}..{start + CHUNK - 1})")
    return x


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (inner product then equals cosine similarity); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def id_table(table: pd.DataFrame) -> pd.DataFrame:
    for col in ("id", "label", "source"):
        if col not in table.columns:
            raise ValueError(f"id table: missing required column {col!r} (has {list(table.columns)})")
    t = table.drop(columns=[c for c in ("embedding", KEY_COLUMN) if c in table.columns]).reset_index(drop=True)
    if not pd.api.types.is_string_dtype(t["id"]) or t["id"].dtype == object:
        t["id"] = t["id"].astype(str)
    dup = t["id"][t["id"].duplicated()]
    if len(dup):
        raise ValueError(f"id table: duplicate ids, e.g. {dup.iloc[0]!r} ({len(dup)} duplicates)")
    t["label"] = t["label"].fillna(-1).astype("int64")
    if t["source"].dtype == object:
        t["source"] = t["source"].astype(str)
    return t


def class_names_from(info: dict) -> list[str]:
    tax = info.get("taxonomy")
    if isinstance(tax, dict):
        return [c["name"] for c in tax.get("classes", [])]
    if isinstance(tax, str):
        try:
            return load_taxonomy(tax).class_names
        except (FileNotFoundError, ValueError):
            return []
    return []


def jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def index_taxonomy(index):
    """The label scheme an index was embedded with (index.json ``taxonomy``), with the decision tree
    and symbol book the model was trained with; None when the index records none."""
    cached = getattr(index, "_galaxalign_taxonomy", False)
    if cached is not False:
        return cached
    tax = None
    data = (getattr(index, "info", None) or {}).get("taxonomy")
    if data is not None:
        try:
            tax = load_taxonomy(data)
        except (FileNotFoundError, ValueError):
            tax = None
    try:
        index._galaxalign_taxonomy = tax
    except AttributeError:
        pass
    return tax

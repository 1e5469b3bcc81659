"""What a GalaxAlign collection in Milvus is made of: its address, the connection, the index type and
parameters chosen from the catalog size, the fields a catalog becomes, and catalog filters as Milvus
boolean expressions. :mod:`galaxalign.search.milvus_index` (the index) and
:mod:`galaxalign.search.milvus_build` (writing one) share it.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from galaxalign.search.faiss_index import auto_nlist
from galaxalign.search.filters import CatalogFilter, FilterError

SCHEME = "milvus://"
DEFAULT_COLLECTION = "galaxalign"
TOKEN_ENV = "GALAXALIGN_MILVUS_TOKEN"  # "user:password" or an API key; never a command-line argument
INFO_PROPERTY = "galaxalign.info"
COMPLETE_PROPERTY = "galaxalign.complete"
NEXT_KEY_PROPERTY = "galaxalign.next_key"
VECTOR_FIELD = "embedding"
CORE_FIELDS = ("key", "id", "label", "source", "answers", "meta", VECTOR_FIELD)
# OUR CHOICE: ids and sources up to 4,096 bytes (folder catalogs' ids are relative paths), at most 32
# numeric catalog columns as typed scalar fields (Milvus allows 64 fields; the rest go to ``meta``,
# where filters still reach them, more slowly), rows written 2,000 at a time (a few MB per request,
# under gRPC's 64 MB limit at D=1024 with metadata), metadata of hits kept for 100,000 galaxies.
MAX_STRING = 4096
MAX_TYPED_COLUMNS = 32
INSERT_BATCH = 2_000
READ_BATCH = 1_000
RECORD_CACHE = 100_000
# Milvus caps a search's limit (topk) and offset + limit at 16,384.
MAX_TOPK = 16_384

# OUR CHOICE of index types (docs/search.md, "Milvus"): exact (FLAT) up to 100k galaxies, as faiss
# ``auto``. Beyond, Milvus Lite (a local file) builds IVF_FLAT (its other choices, HNSW and IVF_SQ8,
# are faiss underneath too; IVF-Flat builds fastest there) with faiss ``auto``'s 4*sqrt(N) lists;
# a Milvus server builds HNSW (M 32) up to 20M galaxies (all in the query nodes' memory, ~1.3 KB
# per galaxy) and DISKANN beyond (PQ codes in memory, the graph and full vectors on NVMe; the
# 10^8-10^9 setting of docs/scale.md). The search knob (nprobe / ef / search_list) is calibrated
# on the data after the build, as for faiss, to recall@10 >= target_recall.
MILVUS_EXACT_MAX = 100_000
MILVUS_HNSW_MAX = 20_000_000
LOCAL_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ")
SERVER_INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN")
MILVUS_DEFAULT_PARAMS = {
    "FLAT": {},
    "IVF_FLAT": {"nlist": None, "nprobe": None, "target_recall": 0.98},
    "IVF_SQ8": {"nlist": None, "nprobe": None, "target_recall": 0.98},
    "IVF_PQ": {"nlist": None, "m": None, "nbits": 8, "nprobe": None, "target_recall": 0.98},
    "HNSW": {"M": 32, "efConstruction": 200, "ef": None, "target_recall": 0.98},
    "HNSW_SQ": {"M": 32, "efConstruction": 200, "ef": None, "target_recall": 0.98},
    "DISKANN": {"search_list": None, "target_recall": 0.98},
}
BUILD_KEYS = {"nlist", "m", "nbits", "M", "efConstruction"}
SEARCH_KNOB = {"IVF_FLAT": "nprobe", "IVF_SQ8": "nprobe", "IVF_PQ": "nprobe", "HNSW": "ef", "HNSW_SQ": "ef",
               "DISKANN": "search_list"}
UNCALIBRATED = {"nprobe": 16, "ef": 64, "search_list": 100}
KNOB_LIMIT = 4096
MAX_DOUBLE = 1.7976931348623157e308
NOTHING = "key < 0"  # an expression no galaxy matches (keys start at 0)


class MilvusConnectionError(ConnectionError):
    """The Milvus URI cannot be reached or refuses the credentials; the message names the URI."""


class MilvusCollectionError(FileNotFoundError):
    """No (complete) GalaxAlign collection of that name at the URI; the message names both."""


# -- addresses and connections ---------------------------------------------------------------------
def is_milvus_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith("milvus:")


def parse_milvus_spec(spec: str) -> tuple[str, str]:
    """``milvus://URI[#COLLECTION]`` -> (uri, collection).

    ``milvus://./survey.db#galaxies`` is a Milvus Lite file (any path ending ``.db``);
    ``milvus://host:19530#galaxies`` and ``milvus://https://host:443#galaxies`` a server. The
    collection defaults to ``galaxalign``; a token comes from the environment (``TOKEN_ENV``).
    """
    if not is_milvus_spec(spec):
        raise ValueError(f"{spec!r}: not a Milvus index address; expected milvus://URI[#COLLECTION]")
    rest = spec[len(SCHEME):] if spec.startswith(SCHEME) else spec[len("milvus:"):]
    uri, _, collection = rest.partition("#")
    if not uri:
        raise ValueError(f"{spec!r}: no URI after milvus://; e.g. milvus://./survey.db#galaxies or milvus://host:19530")
    if "://" not in uri and not uri.endswith(".db"):
        uri = "http://" + uri
    return uri, collection or DEFAULT_COLLECTION


def milvus_spec(uri: str, collection: str) -> str:
    return f"{SCHEME}{uri}#{collection}"


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a Milvus Lite file (run in this process) rather than a server."""
    return "://" not in uri


def check_collection_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", name or ""):
        raise ValueError(f"Milvus collection name {name!r}: use letters, digits and _ (not starting with a digit)")
    if "__" in name:
        raise ValueError(f"Milvus collection name {name!r}: '__' is reserved for build collections")
    return name


def connect(uri: str, token: str | None = None, timeout: float = 10.0):
    """A ``MilvusClient`` for ``uri`` (token: argument, else ``$GALAXALIGN_MILVUS_TOKEN``); an
    unreachable server or refused token is a :class:`MilvusConnectionError` naming the URI."""
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError as exc:  # pragma: no cover - pymilvus is a dependency
        raise ImportError(f"the Milvus backend needs pymilvus (and milvus-lite for local files): {exc}") from None
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if is_local(uri):
        parent = os.path.dirname(os.path.abspath(uri))
        if not os.path.isdir(parent):
            raise MilvusConnectionError(f"Milvus Lite file {uri}: its folder {parent} does not exist")
    try:
        client = MilvusClient(uri=uri, token=token, timeout=timeout)
        client.list_collections()  # a round trip: the credentials are checked here, not on first search
    except MilvusException as exc:
        raise connection_error(uri, exc) from None
    return client


def connection_error(uri: str, exc) -> Exception:
    """The error to raise for a failed connection to ``uri``: a refused token says so and names the
    variable it came from; anything else says the server cannot be reached."""
    message = str(getattr(exc, "message", "") or exc)
    code = getattr(exc, "code", None)
    if code in (1800, 16) or re.search(r"auth|credential|token|permission|denied|unauthenticated", message, re.I):
        return MilvusConnectionError(f"Milvus at {uri} refused the credentials (set ${TOKEN_ENV} to "
                                     f"'user:password' or an API key): {message}")
    return MilvusConnectionError(f"Milvus at {uri} cannot be reached: {message}")


def _quote(value: str) -> str:
    """A Milvus expression string literal (double quotes; backslash and quote escaped)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field_name(column: str, taken: set) -> str | None:
    """The scalar field a numeric catalog column becomes (its own name when Milvus allows it)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", column) and column not in CORE_FIELDS and column not in taken:
        return column
    return None


# -- choosing the index ----------------------------------------------------------------------------
def choose_milvus_index(count: int, local: bool) -> str:
    """The Milvus index type ``auto`` picks for ``count`` galaxies (see ``MILVUS_EXACT_MAX``)."""
    if count <= MILVUS_EXACT_MAX:
        return "FLAT"
    if local:
        return "IVF_FLAT"
    return "HNSW" if count <= MILVUS_HNSW_MAX else "DISKANN"


def resolve_milvus_params(index_type: str, count: int, dim: int, params: dict | None, local: bool) -> dict:
    """Fill the defaults of ``index_type`` that depend on the catalog size and dimension."""
    allowed = LOCAL_INDEX_TYPES if local else SERVER_INDEX_TYPES
    if index_type not in allowed:
        where = "Milvus Lite (a local file)" if local else "a Milvus server"
        raise ValueError(f"Milvus index type {index_type!r} is not available on {where}; choose auto or one of {allowed}")
    p = dict(MILVUS_DEFAULT_PARAMS[index_type])
    unknown = set(params or {}) - set(p)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for Milvus index type {index_type}; known: {sorted(p)}")
    p.update(params or {})
    if "nlist" in p:
        p["nlist"] = int(max(1, min(p["nlist"] or auto_nlist("ivf", count), count, 65536)))
    if index_type == "IVF_PQ" and p["m"] is None:
        p["m"] = next(m for m in (dim // 2, dim // 4, dim, 1) if m >= 1 and dim % m == 0)  # 8-bit codes: D/2 bytes
    return p


def _index_params(client, index_type: str, p: dict):
    ip = client.prepare_index_params()
    ip.add_index(VECTOR_FIELD, index_type=index_type, metric_type="IP",
                 params={k: int(v) for k, v in p.items() if k in BUILD_KEYS})
    return ip


# -- the schema of a catalog -----------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each catalog column lives in the collection: ``typed`` numeric columns -> scalar field,
    ``meta``: the rest (in the JSON field), ``numeric``: every numeric column (filterable)."""

    typed: dict
    meta: tuple
    numeric: tuple
    answers: bool
    integer: tuple = ()   # typed columns of integers (INT64 fields; the rest DOUBLE)
    order: tuple = ()     # the catalog's column order

    def to_dict(self) -> dict:
        return {"typed": self.typed, "meta": list(self.meta), "numeric": list(self.numeric), "answers": self.answers,
                "integer": list(self.integer), "order": list(self.order)}

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(dict(d.get("typed") or {}), tuple(d.get("meta") or ()), tuple(d.get("numeric") or ()),
                   bool(d.get("answers")), tuple(d.get("integer") or ()), tuple(d.get("order") or ()))

    def ref(self, column: str) -> str:
        """The expression that reads ``column`` (a scalar field, or a key of ``meta``)."""
        if column in self.typed:
            return self.typed[column]
        return f"meta[{_quote(column)}]"


def catalog_layout(table: pd.DataFrame, answers: bool) -> Layout:
    extra = [c for c in table.columns if c not in ("id", "label", "source")]
    numeric = [c for c in extra if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
    # sky position and the usual cuts first, then the catalog's order
    first = [c for c in numeric if c in ("ra", "dec", "redshift") or c.startswith("mag")]
    typed: dict = {}
    for c in first + [c for c in numeric if c not in first]:
        if len(typed) >= MAX_TYPED_COLUMNS:
            break
        name = _field_name(c, set(typed.values()))
        if name:
            typed[c] = name
    integer = tuple(c for c in typed if pd.api.types.is_integer_dtype(table[c]))
    return Layout(typed, tuple(c for c in extra if c not in typed), tuple(numeric), answers, integer,
                  tuple(table.columns))


def _schema(client, dim: int, layout: Layout, description: str):
    from pymilvus import DataType

    s = client.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    s.add_field("key", DataType.INT64, is_primary=True)
    s.add_field("id", DataType.VARCHAR, max_length=MAX_STRING)
    s.add_field("label", DataType.INT64)
    s.add_field("source", DataType.VARCHAR, max_length=MAX_STRING)
    if layout.answers:
        s.add_field("answers", DataType.VARCHAR, max_length=MAX_STRING)
    for column, field in layout.typed.items():
        s.add_field(field, DataType.INT64 if column in layout.integer else DataType.DOUBLE, nullable=True)
    s.add_field("meta", DataType.JSON)
    s.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(dim))
    return s


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _rows(table: pd.DataFrame, vectors: np.ndarray, keys: np.ndarray, layout: Layout, paths) -> list[dict]:
    """Milvus rows of galaxies (``paths``: each galaxy's answers, or None)."""
    cols = {c: table[c].tolist() for c in table.columns}
    out = []
    for i in range(len(table)):
        for what in ("id", "source"):
            if len(str(cols[what][i]).encode("utf-8")) > MAX_STRING:
                raise ValueError(f"galaxy {cols['id'][i]!r}: its {what} is over {MAX_STRING} bytes")
        row = {"key": int(keys[i]), "id": str(cols["id"][i]), "label": int(cols["label"][i]),
               "source": str(cols["source"][i]), VECTOR_FIELD: vectors[i],
               "meta": {c: _plain(cols[c][i]) for c in layout.meta if c in cols}}
        for c, field in layout.typed.items():
            v = _plain(cols[c][i]) if c in cols else None
            row[field] = None if v is None else (int(v) if c in layout.integer else float(v))
        if layout.answers:
            row["answers"] = ",".join(paths[i]) if paths is not None else ""
        out.append(row)
    return out


def _galaxy_paths(table: pd.DataFrame, taxonomy) -> list[tuple[str, ...]] | None:
    """Each galaxy's decision-tree path (``search.galaxy_answers``), or None without answers."""
    from galaxalign.search.galaxy_answers import compute_index_answers

    known = compute_index_answers(table, taxonomy)
    if known is None:
        return None
    return [known.paths[c] for c in known.codes.tolist()]


def _load_taxonomy(info: dict):
    data = info.get("taxonomy")
    if data is None:
        return None
    from galaxalign.taxonomy import load_taxonomy

    try:
        return load_taxonomy(data)
    except (FileNotFoundError, ValueError):
        return None


def _count(client, name: str) -> int:
    return int(client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])


# -- filters as expressions --------------------------------------------------------------------------
def filter_expression(f: CatalogFilter | None, layout: Layout, class_names: Sequence[str] = ()) -> str:
    """The Milvus boolean expression of a catalog filter (a cone becomes its RA/Dec bounding
    box; :meth:`MilvusIndex.search_vectors` then cuts the returned rows at the exact angular distance)."""
    if f is None or f.is_empty():
        return ""
    parts = []
    for column, bounds in f.ranges.items():
        if column not in layout.numeric:
            if column in ("id", "label", "source") or column in layout.meta:
                raise FilterError(f"filter range on {column!r}: the column is not numeric")
            raise FilterError(f"filter on unknown column {column!r}; numeric columns of this catalog: "
                              f"{list(layout.numeric)}")
        try:
            lo, hi = bounds
        except (TypeError, ValueError):
            raise FilterError(f"filter range on {column!r}: expected (min, max), got {bounds!r}") from None
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
        if lo is not None and hi is not None and lo > hi:
            raise FilterError(f"filter range on {column!r}: min {lo} is above max {hi}")
        if (lo is not None and lo == math.inf) or (hi is not None and hi == -math.inf):
            parts.append(NOTHING)
            continue
        # an open side still needs a value: a galaxy without one (null, NaN) matches no range, as in faiss
        lo = -MAX_DOUBLE if lo is None or not math.isfinite(lo) else lo
        hi = MAX_DOUBLE if hi is None or not math.isfinite(hi) else hi
        ref = layout.ref(column)
        parts.append(f"{ref} >= {lo!r} and {ref} <= {hi!r}")
    if f.classes is not None:
        labels = f._label_ids(class_names)
        parts.append(f"label in [{', '.join(str(int(x)) for x in labels)}]" if labels else NOTHING)
    if f.cone is not None:
        parts.append(cone_box(layout, *f.cone))
    return " and ".join(f"({p})" for p in parts)

def cone_box(layout: Layout, ra: float, dec: float, radius: float) -> str:
    """The RA/Dec bounding box of a sky cone as an expression (RA wraps at 0/360)."""
    ra, dec, radius = float(ra), float(dec), float(radius)
    if not (-90 <= dec <= 90) or not radius >= 0 or not math.isfinite(ra):
        raise FilterError(f"sky cone (ra={ra}, dec={dec}, radius={radius}): dec must be in [-90, 90], radius >= 0")
    for column in ("ra", "dec"):
        if column not in layout.numeric:
            raise FilterError(f"sky cone: this catalog has no numeric {column!r} column; numeric columns: "
                              f"{list(layout.numeric)}")
    r_ra, r_dec = layout.ref("ra"), layout.ref("dec")
    lo_dec, hi_dec = dec - radius, dec + radius
    box = [f"{r_dec} >= {max(-90.0, lo_dec)!r}", f"{r_dec} <= {min(90.0, hi_dec)!r}"]
    if lo_dec <= -90 or hi_dec >= 90 or radius >= 90:
        return " and ".join(box)  # the cone holds a pole: every RA
    # half-width in RA of the smallest box around the cone (exact for a small circle on the sphere)
    half = math.degrees(math.asin(min(1.0, math.sin(math.radians(radius)) / math.cos(math.radians(dec)))))
    if half >= 180:
        return " and ".join(box)
    lo, hi = (ra - half) % 360.0, (ra + half) % 360.0
    if lo <= hi:
        box.append(f"{r_ra} >= {lo!r} and {r_ra} <= {hi!r}")
    else:  # across RA 0/360
        box.append(f"({r_ra} >= {lo!r} or {r_ra} <= {hi!r})")
    return " and ".join(box)


def _taxonomy_signature(tax) -> tuple | None:
    """(name, class names) of a taxonomy given as a dict, a name or a loaded one; None if unknown."""
    if tax is None:
        return None
    if isinstance(tax, dict):
        return (tax.get("name"), tuple(c.get("name") for c in tax.get("classes", [])))
    if hasattr(tax, "class_names"):
        return (getattr(tax, "name", None), tuple(tax.class_names))
    try:
        from galaxalign.taxonomy import load_taxonomy

        t = load_taxonomy(tax)
        return (t.name, tuple(t.class_names))
    except (FileNotFoundError, ValueError):
        return None

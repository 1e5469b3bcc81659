"""What a client receives: JSON that cannot fail to encode, and names that reveal no server path."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse


def thumb_url(galaxy_id: str) -> str:
    """The thumbnail URL of a galaxy; the id is percent-encoded (any character round-trips)."""
    return _thumb_url(str(galaxy_id))


@lru_cache(maxsize=65536)
def _thumb_url(galaxy_id: str) -> str:  # ten per search result page, the same ids over and over
    return f"/api/thumb/{quote(galaxy_id, safe='')}.png"


@lru_cache(maxsize=65536)
def _public_str(value: str) -> str:
    from galaxalign.datasets.images import parse_h5_source

    h5 = parse_h5_source(value)
    path, suffix = (h5[0], f"#{h5[1]}") if h5 else (value, "")
    if os.path.isabs(path) or path.startswith("~") or ".." in Path(path).parts or "\\" in path:
        return Path(path.replace("\\", "/")).name + suffix
    return value


def public_name(value: Any) -> Any:
    """What a client may see of a server-side path: its file name (``survey.h5#12`` for an HDF5 row).

    Relative ids and labels pass unchanged; absolute paths, ``~`` paths and ones that climb out
    with ``..`` are cut to their last part, so no response reveals the server's folder layout.
    """
    if not isinstance(value, str) or not value:
        return value
    return _public_str(value)  # the same few thousand catalog sources, over and over: memoised


def render_json(content: Any) -> bytes:
    """JSON with every non-ASCII character escaped: a lone surrogate that a request smuggled in (and
    that an error message echoes back) cannot make the response unencodable, i.e. a 500."""
    options = {"ensure_ascii": True, "allow_nan": False, "separators": (",", ":"), "default": _json_default}
    try:
        text = json.dumps(content, **options)
    except ValueError:  # NaN / Infinity (Python's JSON parser accepts them in requests): null
        text = json.dumps(_finite(content), **options)
    return text.encode("ascii")


def _json_default(value: Any) -> Any:
    """What plain JSON does not know: numpy values as Python ones, the rest through FastAPI's encoder."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return jsonable_encoder(value)


class SafeJSONResponse(JSONResponse):
    """A JSONResponse rendered by :func:`render_json`."""

    def render(self, content: Any) -> bytes:
        return render_json(content)


def _finite(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

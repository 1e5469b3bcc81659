"""Thumbnails and icons as PNG bytes (Pillow's encoder)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 image (RGB or grey), shrunk to fit ``size`` (LANCZOS); lossless.

    OUR CHOICE: zlib level 1 without optimisation: noisy sky images gain a few percent of size from
    stronger compression, at several times the encode time."""
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if size:
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()

"""Fixtures shared by the search / serve / browser tests.

A small Galaxy10-layout HDF5 survey written by hand (drawn blobs, one look per class) and a tiny
random-initialised model exported with ``save_pretrained``: enough to run the real pipeline
(embed -> index -> query) in a second or two. ``fx`` is that pipeline built once per test module;
``make_survey``, ``make_model`` and ``png_bytes`` hand the builders to tests that need their own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_GALAXIES = 60
IMAGE_SIZE = 48


def draw_galaxy(class_id: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A blob whose elongation, angle and colour depend on the class: distinct looks per class."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    angle = class_id * np.pi / 10 + rng.normal(0, 0.05)
    ratio = 0.25 + 0.075 * class_id
    u = x * np.cos(angle) + y * np.sin(angle)
    v = (-x * np.sin(angle) + y * np.cos(angle)) / ratio
    r = np.hypot(u, v) / (size / 6)
    light = np.exp(-r) * (0.8 + 0.2 * rng.random())
    colour = np.array([1.0, 0.6 + 0.04 * class_id, 0.3 + 0.07 * class_id])
    image = light[..., None] * colour + rng.normal(0, 0.02, (size, size, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_survey(path: Path, n: int = N_GALAXIES, size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.stack([draw_galaxy(int(c), size, rng) for c in labels])
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("ans", data=labels.astype(np.uint8))
        f.create_dataset("redshift", data=rng.uniform(0.01, 0.2, n))
    return path


def write_model(folder: Path) -> Path:
    import torch

    from galaxalign.inference import save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.taxonomy import load_taxonomy

    torch.manual_seed(0)
    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny", "seed": 0}, "symbol_encoder_shared": False})
    return save_pretrained(model, load_taxonomy("galaxy10_decals"), folder)


def build_search_fixture(root: Path, shard_size: int = 25) -> dict:
    """Survey, model, embeddings and an exact index under ``root``; returns their paths."""
    from galaxalign.inference import load_model
    from galaxalign.datasets import load_catalog
    from galaxalign.search.embed import embed_survey
    from galaxalign.search.build import build_index_from_embeddings

    survey = write_survey(root / "survey.h5")
    model_dir = write_model(root / "model")
    model, taxonomy = load_model(model_dir)
    catalog = load_catalog(survey, taxonomy)
    embed_survey(model, catalog, root / "embeddings", checkpoint=str(model_dir), data_source=str(survey),
                 taxonomy=taxonomy, batch_size=16, shard_size=shard_size, progress=False)
    index = build_index_from_embeddings(root / "embeddings", root / "index", kind="exact", progress=False)
    return {"survey": survey, "model": model_dir, "embeddings": root / "embeddings", "index": index,
            "catalog": catalog, "loaded_model": model}


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Survey, model, embeddings and an exact index (``build_search_fixture``), once per module."""
    return build_search_fixture(tmp_path_factory.mktemp("search"))


@pytest.fixture
def make_survey():
    """``make_survey(path, n=60, size=48, seed=0) -> path``: a hand-drawn Galaxy10-layout survey."""
    return write_survey


@pytest.fixture
def make_model():
    """``make_model(folder) -> folder``: a tiny random model, exported."""
    return write_model


@pytest.fixture(name="png_bytes")
def png_bytes_fixture():
    """``png_bytes(image) -> bytes``: a uint8 (H, W, 3) image encoded as PNG."""
    return png_bytes


# -- hostile files (tests/test_image_decoder.py, test_model_files.py, test_serve_hostile.py) --------
def write_png(path, array: np.ndarray, bit_depth: int = 8) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGBA / LA): grey, LA, RGB or RGBA."""
    import struct
    import zlib

    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + a[y].astype(dtype).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    if path is not None:
        Path(path).write_bytes(data)
    return data


class _TouchOnUnpickle:
    """Unpickling this calls ``open(marker, "w")``: harmless, and proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_crafted_checkpoint(folder: Path) -> tuple[Path, Path]:
    """``(evil.pt, marker)``: a checkpoint-shaped file whose unpickling would create ``marker``."""
    import torch

    marker = Path(folder) / "unpickled.marker"
    path = Path(folder) / "evil.pt"
    torch.save({"model": _TouchOnUnpickle(marker), "model_config": {}, "taxonomy": {},
                "format": "galaxalign-checkpoint"}, path)
    return path, marker


@pytest.fixture(name="write_png")
def write_png_fixture():
    """``write_png(path_or_None, array, bit_depth=8) -> bytes``: PNGs Pillow cannot write (16-bit RGBA, LA)."""
    return write_png


@pytest.fixture
def crafted_checkpoint():
    """``crafted_checkpoint(folder) -> (path, marker)``: a .pt that would run code if unpickled."""
    return write_crafted_checkpoint

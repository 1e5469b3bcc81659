"""Reading one galaxy image from any source into uint8 (H, W, 3) RGB.

Sources: JPEG/PNG (PIL), FITS cutouts (astropy; asinh stretch to uint8) and rows of a
Galaxy10-layout HDF5 file (``images`` dataset). :class:`ImageReader` keeps HDF5 files open
between reads and reopens them lazily in each process, so it is safe in DataLoader workers.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
IMAGE_SUFFIXES = PICTURE_SUFFIXES + FITS_SUFFIXES

# OUR CHOICE: stretch for scientific data (FITS, 16-bit PNG): a shared 0.5-99.5 percentile interval
# over all bands (keeps the colour balance between bands), then astropy's AsinhStretch(a=0.1), the
# usual display stretch for galaxy cutouts (bright cores compressed, faint outskirts visible).
STRETCH_PERCENTILES = (0.5, 99.5)
ASINH_A = 0.1


class ImageReadError(ValueError):
    """An image cannot be read; the message names the file (and row) and what is wrong."""


def is_image_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES) and not Path(name).name.startswith(".")


def _is_fits(path: Path) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def asinh_to_uint8(data: np.ndarray, where: str = "image") -> np.ndarray:
    """Scale float data (H, W) or (H, W, C) to uint8 with an asinh stretch; NaN/inf become the floor."""
    from astropy.visualization import AsinhStretch

    data = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        raise ImageReadError(f"{where}: no finite pixel values (all NaN or inf)")
    lo, hi = np.percentile(data[finite], STRETCH_PERCENTILES)
    if not hi > lo:  # a constant image: nothing to stretch
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = np.where(finite, (data - lo) / (hi - lo), 0.0)
    stretched = AsinhStretch(a=ASINH_A)(np.clip(scaled, 0.0, 1.0))
    return np.round(np.clip(stretched, 0.0, 1.0) * 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, where: str) -> np.ndarray:
    """(H, W) grey, (H, W, 3) or band-first (3, H, W) / (1, H, W) -> (H, W, 3)."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[-1] == 3:
        return np.ascontiguousarray(array)
    raise ImageReadError(
        f"{where}: image data of shape {array.shape} is not (H, W) grey or 3 bands as (3, H, W) / (H, W, 3)"
    )


def read_fits(path: str | os.PathLike) -> np.ndarray:
    """First HDU with 2-D or 3-D data -> uint8 (H, W, 3): 2-D is grey, (3, H, W) bands are RGB."""
    from astropy.io import fits

    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdus:
                data = next((h.data for h in hdus if h.data is not None and np.ndim(h.data) >= 2), None)
                data = None if data is None else np.array(data)
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError ... on broken files
            raise ImageReadError(f"{path}: cannot read FITS file: {exc}") from None
    truncated = [w for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise ImageReadError(f"{path}: FITS file is truncated ({truncated[0].message})")
    if data is None:
        raise ImageReadError(f"{path}: FITS file has no 2-D or 3-D image data in any HDU")
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 3 and data.shape[0] not in (1, 3) and data.shape[-1] not in (1, 3):
        raise ImageReadError(f"{path}: FITS cube of shape {data.shape}; expected (3, H, W) bands or a 2-D image")
    return _to_rgb(asinh_to_uint8(data, where=str(path)), str(path))


def _check_jpeg_markers(path: Path) -> None:
    """Start-of-image at the head and end-of-image near the tail: truncation found without decoding."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(2)
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    if head != b"\xff\xd8":
        raise ImageReadError(f"{path}: not a JPEG file (no start-of-image marker)")
    if b"\xff\xd9" not in tail:
        raise ImageReadError(f"{path}: JPEG file is truncated (no end-of-image marker)")


def read_picture(path: str | os.PathLike) -> np.ndarray:
    """JPEG / PNG (any PIL-readable picture) -> uint8 (H, W, 3); corrupt or truncated files raise."""
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES and path.suffix.lower() in (".jpg", ".jpeg") and path.is_file():
        _check_jpeg_markers(path)  # someone let PIL pad truncated files with grey: refuse them here
    try:
        with Image.open(path) as img:
            img.load()  # decodes everything: a truncated JPEG raises here ("image file is truncated")
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # 16-bit / float pictures carry scientific dynamic range: stretch like FITS
                return _to_rgb(asinh_to_uint8(np.asarray(img), where=str(path)), str(path))
            if img.mode != "RGB":
                img = img.convert("RGB")
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc}); the file is corrupt or truncated") from None
    return np.ascontiguousarray(array)


def check_image(path: str | os.PathLike) -> None:
    """Cheap up-front check that a file is a readable image; raise ImageReadError otherwise.

    JPEG: start-of-image and end-of-image markers (catches truncation without decoding) plus
    PIL's header verify; PNG: PIL verify (chunk CRCs); FITS: a full read (cutouts are small).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if _is_fits(path):
        read_fits(path)
        return
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_markers(path)
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc}); the file is corrupt or truncated") from None


def parse_h5_source(text: str) -> tuple[str, int] | None:
    """``"file.h5#12"`` -> (``"file.h5"``, 12); None when ``text`` is not of that form."""
    path, sep, row = str(text).rpartition("#")
    if sep and row.isdigit() and path.lower().endswith((".h5", ".hdf5", ".hdf")):
        return path, int(row)
    return None


def _field(row: Any, name: str) -> Any:
    if isinstance(row, Mapping) or hasattr(row, "get"):
        value = row.get(name)
    else:
        value = getattr(row, name, None)
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    return value


class ImageReader:
    """Read catalog images; HDF5 files stay open per process (reopened lazily after fork/spawn)."""

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {}  # open HDF5 handles never travel to another process

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def _h5(self, path: str):
        import h5py

        if self._pid != os.getpid():
            # A forked worker inherited the parent's handles: never use (or close) them here.
            self._files = {}
            self._pid = os.getpid()
        handle = self._files.get(path)
        if handle is None:
            try:
                handle = h5py.File(path, "r")
            except FileNotFoundError:
                raise ImageReadError(f"{path}: HDF5 file not found") from None
            except OSError as exc:
                raise ImageReadError(f"{path}: cannot open HDF5 file ({exc})") from None
            self._files[path] = handle
        return handle

    def read_h5(self, path: str | os.PathLike, row: int) -> np.ndarray:
        path = str(path)
        handle = self._h5(path)
        if "images" not in handle:
            raise ImageReadError(f"{path}: no 'images' dataset (datasets: {sorted(handle.keys())})")
        images = handle["images"]
        if not 0 <= int(row) < images.shape[0]:
            raise ImageReadError(f"{path}#{row}: row out of range (the file holds {images.shape[0]} images)")
        try:
            image = np.asarray(images[int(row)])
        except OSError as exc:
            raise ImageReadError(f"{path}#{row}: cannot read image ({exc})") from None
        if image.dtype != np.uint8:
            raise ImageReadError(f"{path}#{row}: images must be uint8, got {image.dtype}")
        return _to_rgb(image, f"{path}#{row}")

    def read_file(self, path: str | os.PathLike) -> np.ndarray:
        path = Path(path)
        if _is_fits(path):
            if not path.is_file():
                raise ImageReadError(f"{path}: image file not found")
            return read_fits(path)
        return read_picture(path)

    def __call__(self, path_or_row: Any) -> np.ndarray:
        if isinstance(path_or_row, (str, os.PathLike)):
            h5 = parse_h5_source(str(path_or_row))
            return self.read_h5(*h5) if h5 else self.read_file(path_or_row)
        h5_path, h5_row = _field(path_or_row, "h5_path"), _field(path_or_row, "h5_row")
        if h5_path is not None and h5_row is not None:
            return self.read_h5(h5_path, int(h5_row))
        file_loc = _field(path_or_row, "file_loc")
        if file_loc is not None:
            return self.read_file(file_loc)
        raise ImageReadError(f"catalog row has neither 'file_loc' nor 'h5_path' + 'h5_row': {path_or_row!r}")

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._files.values():
                try:
                    handle.close()
                except Exception:  # already closed or broken: nothing left to release
                    pass
        self._files = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


_DEFAULT_READER = ImageReader()


def read_image(path_or_row: Any) -> np.ndarray:
    """Any image source -> uint8 (H, W, 3) RGB.

    ``path_or_row``: an image path (JPEG, PNG, FITS), ``"file.h5#row"``, or a catalog row
    (pandas Series, dict, namedtuple) with ``file_loc`` or ``h5_path`` + ``h5_row``.
    """
    return _DEFAULT_READER(path_or_row)

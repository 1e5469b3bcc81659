"""Reading one galaxy image from any source into uint8 (H, W, 3) RGB: the one image decoder.

Sources: pictures (PNG, JPEG and whatever else Pillow reads), FITS cutouts (astropy; asinh
stretch to uint8) and rows of a Galaxy10-layout HDF5 file (``images`` dataset). Catalog images,
uploads to the web service, ``galaxalign classify`` / ``search --image`` files all pass through
:func:`decode_image`, so a file reads the same wherever it is handed in:

- 16-bit and float pictures (and FITS) are stretched (asinh), never clipped;
- transparency (RGBA, LA, palette or colour-key transparency, 16-bit RGBA) is composited onto
  black -- the sky, and the background of the symbols -- never dropped;
- sizes are checked from the header before any pixel is decoded: at most
  :data:`MAX_IMAGE_PIXELS` pixels and an aspect ratio of at most :data:`MAX_ASPECT_RATIO`, so a
  tiny file cannot make the decoder (or the resize after it) allocate gigabytes.

:class:`ImageReader` keeps HDF5 files open between reads and reopens them lazily in each process,
so it is safe in DataLoader workers.
"""
from __future__ import annotations

import gzip
import io
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

# OUR CHOICE: refuse images above 25 megapixels (a 5000x5000 picture) or longer than 10 times
# their width (either way) before decoding them. Survey cut-outs are a few hundred pixels and
# square; the model resizes the shorter side to its input size, so a 1 x 20,000,000 strip would
# need a resize of 224 x 4.5e9 pixels. Both limits are checked from the header.
MAX_IMAGE_PIXELS = 25_000_000
MAX_ASPECT_RATIO = 10
# A gzipped FITS file is expanded to at most this many bytes (a gzip bomb stops here).
MAX_GUNZIP_BYTES = 512 * 1024 * 1024
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


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


def check_size(width: int, height: int, where: str, max_pixels: int | None = MAX_IMAGE_PIXELS,
               max_aspect: float | None = MAX_ASPECT_RATIO) -> None:
    """Refuse an image whose size would be costly to decode or resize (before decoding it)."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ImageReadError(f"{where}: image is {width}x{height} pixels; it has no pixels")
    if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
        raise ImageReadError(f"{where}: image is {width}x{height} pixels, an aspect ratio above the limit of "
                             f"{max_aspect:g}:1 (the longer side may be at most {max_aspect:g} times the shorter)")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(f"{where}: image is {width}x{height} = {width * height} pixels, above the limit "
                             f"of {max_pixels} pixels")


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


def _image_shape(header) -> tuple[int, ...] | None:
    """numpy shape of an HDU's data, from its header alone (FITS axes are listed fastest first)."""
    try:
        naxis = int(header.get("NAXIS", 0))
        return tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1)) if naxis else None
    except (KeyError, TypeError, ValueError):
        return None


def _fits_plane(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of a FITS image of numpy ``shape``: 2-D, or 3-D with bands first or last."""
    shape = tuple(n for n in shape if n != 1) if len(shape) > 3 else shape
    if len(shape) < 2:  # a degenerate cube, (1, 1, N) and the like: a single row
        return 1, (shape[0] if shape else 1)
    if len(shape) == 3 and shape[0] not in (1, 3) and shape[-1] in (1, 3):
        return shape[0], shape[1]
    return shape[-2], shape[-1]


def read_fits(path: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS,
              max_aspect: float | None = MAX_ASPECT_RATIO) -> np.ndarray:
    """First HDU with 2-D or 3-D data -> uint8 (H, W, 3): 2-D is grey, (3, H, W) bands are RGB.

    ``path``: a file, or the bytes of one (``name`` then says what to call it in messages). Sizes are
    checked from the header before the data is read.
    """
    from astropy.io import fits

    where = name or (str(path) if not isinstance(path, bytes) else "upload")
    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(source, memmap=False) as hdus:
                data = None
                for h in hdus:
                    if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                        continue  # tables hold no picture
                    shape = _image_shape(h.header)
                    if shape is None or len(shape) < 2 or 0 in shape:
                        continue
                    height, width = _fits_plane(shape)
                    check_size(width, height, where, max_pixels, max_aspect)
                    if max_pixels is not None and int(np.prod(shape, dtype=np.int64)) > 3 * max_pixels:
                        raise ImageReadError(f"{where}: FITS data of shape {shape} is over the limit of "
                                             f"{max_pixels} pixels x 3 bands")
                    if h.data is not None and np.ndim(h.data) >= 2:
                        data = np.array(h.data)
                        break
        except ImageReadError:
            raise
        except Exception as exc:  # astropy raises OSError, ValueError, TypeError ... on broken files
            raise ImageReadError(f"{where}: cannot read FITS file: {exc}") from None
    truncated = [w for w in caught if "truncated" in str(w.message).lower()]
    if truncated:
        raise ImageReadError(f"{where}: FITS file is truncated ({truncated[0].message})")
    if data is None:
        raise ImageReadError(f"{where}: FITS file has no 2-D or 3-D image data in any HDU")
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 3 and data.shape[0] not in (1, 3) and data.shape[-1] not in (1, 3):
        raise ImageReadError(f"{where}: FITS cube of shape {data.shape}; expected (3, H, W) bands or a 2-D image")
    return _to_rgb(asinh_to_uint8(data, where=where), where)


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


def _picture_to_rgb(img: "Image.Image", where: str) -> np.ndarray:
    """A decoded Pillow image -> uint8 (H, W, 3): high bit depth stretched, transparency on black."""
    if img.mode in _HIGH_DEPTH_MODES:
        # 16-bit / float pictures carry scientific dynamic range: stretch like FITS
        return _to_rgb(asinh_to_uint8(np.asarray(img), where=where), where)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        # OUR CHOICE: transparent pixels become black (the sky; the symbols' own background), and
        # partly transparent ones are blended onto it, so a white disk on a transparent background
        # reads exactly like the same disk drawn on black.
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255
        return np.ascontiguousarray(rgb.astype(np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _read_picture(source, where: str, max_pixels: int | None, max_aspect: float | None) -> np.ndarray:
    try:
        with Image.open(source) as img:
            check_size(img.width, img.height, where, max_pixels, max_aspect)  # from the header
            img.load()  # decodes everything: a truncated JPEG raises here ("image file is truncated")
            return _picture_to_rgb(img, where)
    except FileNotFoundError:
        raise ImageReadError(f"{where}: image file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{where}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{where}: not an image file that can be read (PNG, JPEG, FITS, TIFF, GIF, WebP, "
                             "...); the file is corrupt, truncated or of another kind") from None
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageReadError(f"{where}: cannot read image ({exc}); the file is corrupt or truncated") from None


def _looks_like_fits(head: bytes) -> bool:
    return head.startswith(b"SIMPLE  =")


def _gunzip(data: bytes, where: str, limit: int = MAX_GUNZIP_BYTES) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            out = fh.read(limit + 1)
    except (OSError, EOFError, ValueError) as exc:
        raise ImageReadError(f"{where}: broken gzip data ({exc})") from None
    if len(out) > limit:
        raise ImageReadError(f"{where}: gzipped data expands past {limit} bytes; refused")
    return out


def decode_image(source: bytes | str | os.PathLike, name: str | None = None, *,
                 max_pixels: int | None = MAX_IMAGE_PIXELS, max_aspect: float | None = MAX_ASPECT_RATIO,
                 max_gunzip_bytes: int = MAX_GUNZIP_BYTES) -> np.ndarray:
    """The one decoder: an image file, or its bytes, -> uint8 (H, W, 3) RGB.

    FITS (also gzipped) is recognised by its content or its name, everything else goes to Pillow.
    ``name`` is what messages call the image (default: the path, or ``upload``); gzipped bytes expand
    to at most ``max_gunzip_bytes``. Raises
    :class:`ImageReadError` for anything that is not a readable image within the size limits.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = name or "upload"
        if not data:
            raise ImageReadError(f"{where}: empty file, expected an image (PNG, JPEG, FITS, ...)")
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, where, max_gunzip_bytes)
        if _looks_like_fits(data[:16]):
            return read_fits(data, name=where, max_pixels=max_pixels, max_aspect=max_aspect)
        return _read_picture(io.BytesIO(data), where, max_pixels, max_aspect)
    path = Path(source)
    where = name or str(path)
    if not path.is_file():
        raise ImageReadError(f"{where}: image file not found" if not path.is_dir() else f"{where}: is a folder, not an image file")
    if _is_fits(path):
        return read_fits(path, name=where, max_pixels=max_pixels, max_aspect=max_aspect)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if _looks_like_fits(head):
        return read_fits(path, name=where, max_pixels=max_pixels, max_aspect=max_aspect)
    if ImageFile.LOAD_TRUNCATED_IMAGES and path.suffix.lower() in (".jpg", ".jpeg"):
        _check_jpeg_markers(path)
    return _read_picture(path, where, max_pixels, max_aspect)


def check_image(path: str | os.PathLike) -> None:
    """Cheap up-front check that a file is a readable image; raise ImageReadError otherwise.

    JPEG: start-of-image and end-of-image markers (catches truncation without decoding) plus
    PIL's header verify; PNG: PIL verify (chunk CRCs); FITS: a full read (cutouts are small).
    The size limits of :func:`decode_image` (pixels, aspect ratio) are checked from the header.
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
            check_size(img.width, img.height, str(path))
            img.verify()
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({exc})") from None
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
        if len(images.shape) >= 3:
            plane = images.shape[1:3] if len(images.shape) == 3 or images.shape[-1] in (1, 3) else images.shape[2:4]
            check_size(plane[1], plane[0], f"{path}#{row}")
        try:
            image = np.asarray(images[int(row)])
        except OSError as exc:
            raise ImageReadError(f"{path}#{row}: cannot read image ({exc})") from None
        if image.dtype != np.uint8:
            raise ImageReadError(f"{path}#{row}: images must be uint8, got {image.dtype}")
        return _to_rgb(image, f"{path}#{row}")

    def read_file(self, path: str | os.PathLike) -> np.ndarray:
        return decode_image(path)

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

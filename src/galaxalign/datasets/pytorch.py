"""PyTorch adapter over a catalog: ``GalaxyDataset(catalog, transform)`` yields ``(image, label)``;
``AugmentedSamples`` is the training data path (uint8 images plus per-sample augmentation parameters).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from galaxalign.datasets.catalog import image_columns, validate_catalog
from galaxalign.datasets.images import ImageReader, ImageReadError, _to_rgb

# OUR CHOICE: ``in_memory="auto"`` holds an HDF5 file's images in RAM when they take at most this share
# of the memory available at start-up (Galaxy10 DECaLS decompressed: 3.5 GB).
IN_MEMORY_SHARE = 0.25


def _available_bytes() -> int:
    """Memory available to a new allocation: Linux's MemAvailable (free + reclaimable page cache),
    else the free pages; 0 when unknown (``"auto"`` then keeps the file on disk)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class GalaxyDataset(Dataset):
    """Images of a catalog, read on demand.

    ``__getitem__(i)`` returns ``(transform(image), label)`` or, without a transform, the uint8
    (H, W, 3) array (resized and centre-cropped to ``image_size`` when given). Only plain lists travel
    to DataLoader workers; each worker opens its own HDF5 handles on first read and keeps them (with
    persistent workers, for the whole run), so ``num_workers > 0`` works with Galaxy10-layout files.

    ``in_memory``: True reads the HDF5 images into RAM once, here, before workers start (forked
    workers share the pages; under the ``spawn`` start method each worker would receive a pickled
    copy); ``"auto"`` does so when they fit in ``IN_MEMORY_SHARE`` of the free memory. HDF5 rows are read one by one: h5py's fancy indexing of a batch's sorted rows measured 50x
    slower than row reads (1.7 s vs 0.034 s for 64 rows of 256 px, chunked by row).
    """

    def __init__(self, catalog: pd.DataFrame, transform: Callable | None = None, image_size: int | None = None,
                 in_memory: bool | str = False, crop: float = 1.0):
        catalog = validate_catalog(catalog)
        kind = image_columns(catalog)
        self.transform = transform
        self.image_size = None if image_size is None else int(image_size)
        self.crop = float(crop)  # centre fraction kept before resizing to image_size
        self.labels = catalog["label"].to_numpy(np.int64)
        self.ids = catalog["id"].astype(str).tolist()
        self._file_loc = catalog["file_loc"].tolist() if kind in ("file_loc", "mixed") else [None] * len(catalog)
        if kind in ("h5", "mixed"):
            self._h5_path = catalog["h5_path"].tolist()
            self._h5_row = catalog["h5_row"].tolist()
        else:
            self._h5_path = self._h5_row = [None] * len(catalog)
        self._reader = ImageReader()
        self._memory: dict[str, np.ndarray] = {}
        if in_memory not in (True, False, "auto"):
            raise ValueError(f"in_memory must be true, false or 'auto', got {in_memory!r}")
        if in_memory:
            self._load_into_memory(auto=in_memory == "auto")

    def _h5_source(self, index: int) -> tuple[str, int] | None:
        h5_path, h5_row = self._h5_path[index], self._h5_row[index]
        if isinstance(h5_path, str) and h5_row is not None and h5_row == h5_row:
            return h5_path, int(h5_row)
        return None

    def _load_into_memory(self, auto: bool) -> None:
        import h5py

        paths = sorted({p for p in self._h5_path if isinstance(p, str)})
        sizes = {}
        for path in paths:
            try:
                with h5py.File(path, "r") as f:
                    sizes[path] = f["images"].size * f["images"].dtype.itemsize if "images" in f else 0
            except OSError as exc:
                raise ImageReadError(f"{path}: cannot open HDF5 file ({exc})") from None
        if auto and sum(sizes.values()) > IN_MEMORY_SHARE * _available_bytes():
            return
        for path in paths:
            with h5py.File(path, "r") as f:
                if "images" not in f:
                    raise ImageReadError(f"{path}: no 'images' dataset (datasets: {sorted(f.keys())})")
                images = f["images"][()]
            if images.dtype != np.uint8:
                raise ImageReadError(f"{path}: images must be uint8, got {images.dtype}")
            self._memory[path] = images

    @property
    def in_memory(self) -> bool:
        return bool(self._memory)

    def __len__(self) -> int:
        return len(self.labels)

    def _finish(self, image: np.ndarray) -> np.ndarray:
        if self.image_size is not None:
            from galaxalign.transforms import resize_center_crop_uint8

            image = resize_center_crop_uint8(image, self.image_size, self.crop)
        return image

    def image(self, index: int) -> np.ndarray:
        """The uint8 (H, W, 3) image of galaxy ``index`` (no transform)."""
        src = self._h5_source(index)
        if src is not None:
            path, row = src
            held = self._memory.get(path)
            if held is not None:
                if not 0 <= row < held.shape[0]:
                    raise ImageReadError(f"{path}#{row}: row out of range (the file holds {held.shape[0]} images)")
                return self._finish(_to_rgb(held[row], f"{path}#{row}"))
            return self._finish(self._reader.read_h5(path, row))
        # OUR CHOICE: files go through the one image decoder (PIL, with its size limits and checks);
        # torchvision's decoder was 25 % faster on 424 px JPEGs (bench/bench_data.py), not worth a second one.
        return self._finish(self._reader.read_file(self._file_loc[index]))

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class AugmentedSamples(Dataset):
    """The training data path: indexed by ``(index, sample_seed)`` (``ResumableSampler``), it yields
    ``(uint8 image (S,S,3), label, params)`` where ``params = augment.draw(default_rng(sample_seed))``.

    Pixels are augmented later, a batch at a time, on the training device (``GalaxyAugment.apply``);
    the parameters are a pure function of the sample's seed, so a resumed run or another worker count
    sees the same augmentations. ``dataset`` must return uint8 at the training size
    (``GalaxyDataset(..., image_size=S)``).
    """

    def __init__(self, dataset: GalaxyDataset, augment):
        self.dataset = dataset
        self.augment = augment

    def __len__(self) -> int:
        return len(self.dataset)

    def _sample(self, index: int, seed: int, image: np.ndarray):
        params = self.augment.draw(np.random.default_rng(int(seed)))
        return torch.from_numpy(image), int(self.dataset.labels[index]), torch.from_numpy(params)

    def __getitem__(self, key):
        index, seed = key
        return self._sample(int(index), seed, self.dataset.image(int(index)))

"""PyTorch adapter over a catalog: ``GalaxyDataset(catalog, transform)`` yields ``(image, label)``."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from galaxalign.datasets.catalog import image_columns, validate_catalog
from galaxalign.datasets.images import ImageReader


class GalaxyDataset(Dataset):
    """Images of a catalog, read on demand.

    ``__getitem__(i)`` returns ``(transform(image), label)`` or, without a transform, the uint8
    (H, W, 3) array. Only plain lists travel to DataLoader workers; each worker opens its own
    HDF5 handles on first read, so ``num_workers > 0`` works with Galaxy10-layout files.
    """

    def __init__(self, catalog: pd.DataFrame, transform: Callable | None = None):
        catalog = validate_catalog(catalog)
        kind = image_columns(catalog)
        self.transform = transform
        self.labels = catalog["label"].to_numpy(np.int64)
        self.ids = catalog["id"].astype(str).tolist()
        self._file_loc = catalog["file_loc"].tolist() if kind in ("file_loc", "mixed") else [None] * len(catalog)
        if kind in ("h5", "mixed"):
            self._h5_path = catalog["h5_path"].tolist()
            self._h5_row = catalog["h5_row"].tolist()
        else:
            self._h5_path = self._h5_row = [None] * len(catalog)
        self._reader = ImageReader()

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """The uint8 (H, W, 3) image of galaxy ``index`` (no transform)."""
        h5_path, h5_row = self._h5_path[index], self._h5_row[index]
        if isinstance(h5_path, str) and h5_row is not None and h5_row == h5_row:
            return self._reader.read_h5(h5_path, int(h5_row))
        return self._reader.read_file(self._file_loc[index])

    def __getitem__(self, index: int):
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

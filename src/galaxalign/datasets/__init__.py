"""Dataset loaders: every source becomes a catalog (a pandas DataFrame, galaxy-datasets style).

Front door: ``load_catalog(source, taxonomy)``. One module per concern: ``catalog`` (the contract),
``images`` (reading one image), ``galaxy10``, ``gz2``, ``user`` (CSV / image folder), ``splits``,
and ``pytorch`` (the torch Dataset, imported lazily so this package does not need torch).
"""
from galaxalign.datasets.catalog import (
    CatalogError,
    class_counts,
    describe_catalog,
    validate_catalog,
)
from galaxalign.datasets.galaxy10 import GALAXY10_URL, default_galaxy10_path, download_galaxy10, load_galaxy10
from galaxalign.datasets.gz2 import GZ2_SUMMARY_CLASSES, gz2_summary, load_gz2_catalog
from galaxalign.datasets.images import ImageReadError, ImageReader, check_image, read_image
from galaxalign.datasets.load import load_catalog
from galaxalign.datasets.splits import DATA_DEFAULTS, apply_label_fraction, data_config, split_catalog, splits_from_config
from galaxalign.datasets.user import load_image_folder, load_user_catalog

__all__ = [
    "DATA_DEFAULTS",
    "GALAXY10_URL",
    "GZ2_SUMMARY_CLASSES",
    "CatalogError",
    "GalaxyDataset",
    "ImageReadError",
    "ImageReader",
    "apply_label_fraction",
    "check_image",
    "data_config",
    "class_counts",
    "default_galaxy10_path",
    "describe_catalog",
    "download_galaxy10",
    "gz2_summary",
    "load_catalog",
    "load_galaxy10",
    "load_gz2_catalog",
    "load_image_folder",
    "load_user_catalog",
    "read_image",
    "split_catalog",
    "splits_from_config",
    "validate_catalog",
]


def __getattr__(name: str):
    if name == "GalaxyDataset":  # torch is heavy: import it only when the Dataset is wanted
        from galaxalign.datasets.pytorch import GalaxyDataset

        return GalaxyDataset
    raise AttributeError(f"module 'galaxalign.datasets' has no attribute {name!r}")

"""Stratified, seeded train/val/test splits and nested label-fraction subsets.

Both work class by class on galaxies ordered by ``id``, so the result depends only on the set of
galaxies, the fractions and the seed (not on row order), and is the same on every machine.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from galaxalign.datasets.catalog import UNKNOWN_LABEL, validate_catalog
from galaxalign.survey.classes import DEFAULT_SURVEY_NUM, DEFAULT_SURVEY_SIZE

# A run's data section: where its galaxies come from and how they are split. The training config's
# ``data`` section is this one (training.config), and evaluation completes a stored section with it.
DATA_DEFAULTS: dict = {
    "source": "survey",  # "survey": the embedded rendered survey; otherwise a path for load_catalog
    "num": DEFAULT_SURVEY_NUM,  # survey only: number of galaxies
    "size": DEFAULT_SURVEY_SIZE,  # survey only: rendered image size (px)
    "seed": 0,  # survey only: rendering seed
    "taxonomy": "galaxy10_decals",
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "split_seed": 0,
    "label_fraction": 1.0,
    "label_seed": 0,
    "augment": 1.0,  # strength passed to the model's train transform; 0 = no augmentation
    "in_memory": "auto",  # HDF5 images held in RAM: true, false, or "auto" (when they fit, see datasets.pytorch)
    "skip_bad": False,  # True: drop catalog rows whose image or label is bad (warned, listed) instead of stopping
}


def data_config(data_cfg: dict | None = None) -> dict:
    """A ``data`` section completed with :data:`DATA_DEFAULTS` (its own keys win)."""
    return {**DATA_DEFAULTS, **(data_cfg or {})}


SPLITS = ("train", "val", "test")


def _class_members(catalog: pd.DataFrame) -> dict[int, np.ndarray]:
    """Row positions of each label, each ordered by id."""
    # OUR CHOICE: per-class seeded shuffles of id-ordered galaxies instead of sklearn's
    # train_test_split: independent of row order, and small classes follow an explicit rule.
    order = np.argsort(catalog["id"].astype(str).to_numpy(), kind="stable")
    labels = catalog["label"].to_numpy()[order]
    return {int(c): order[labels == c] for c in np.unique(labels)}


def _rng(seed: int, label: int, purpose: int) -> np.random.Generator:
    # One stream per (seed, class, purpose): a class's draw never depends on the other classes.
    return np.random.default_rng([int(seed), int(label) + 1, purpose])


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) counts for one class of ``n`` galaxies.

    OUR CHOICE (small classes): counts are ``round(n * fraction)``; a split asked for (fraction > 0)
    gets at least one galaxy when the class can spare it, test before val, and train always keeps
    at least one. So n=1 -> train only; n=2 -> train + test; n>=3 -> all three splits.
    """
    # OUR CHOICE: small classes follow the rule in the docstring rather than sklearn's error.
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if test_fraction > 0 and n_test == 0 and n >= 2:
        n_test = 1
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    while n_test + n_val > n - 1 and n_val > 0:
        n_val -= 1
    while n_test + n_val > n - 1 and n_test > 0:
        n_test -= 1
    return n - n_val - n_test, n_val, n_test


def split_catalog(
    catalog: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Split into ``{"train", "val", "test"}``, stratified by label, seeded and reproducible.

    Each class is shuffled with its own seeded stream and cut by :func:`split_sizes`; unlabelled
    galaxies (-1) are split like one more class. Rows keep their catalog order inside each split.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    catalog = validate_catalog(catalog)
    assignment = np.empty(len(catalog), dtype=object)
    for label, members in _class_members(catalog).items():
        shuffled = members[_rng(seed, label, 0).permutation(len(members))]
        n_train, n_val, _ = split_sizes(len(members), val_fraction, test_fraction)
        assignment[shuffled[:n_train]] = "train"
        assignment[shuffled[n_train : n_train + n_val]] = "val"
        assignment[shuffled[n_train + n_val :]] = "test"
    return {name: catalog[assignment == name].reset_index(drop=True) for name in SPLITS}


def apply_label_fraction(
    catalog: pd.DataFrame, fraction: float, seed: int = 0, min_per_class: int = 1
) -> pd.DataFrame:
    """Keep ``fraction`` of each class's labelled galaxies (at least ``min_per_class``).

    Subsets are nested: for one seed, the galaxies kept at fraction 0.01 are among those kept at
    0.1, which are among those kept at 1.0 (each class takes a prefix of one fixed shuffle).
    Unlabelled galaxies (-1) are dropped: this is a subset of the labelled training set.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    catalog = validate_catalog(catalog)
    keep = np.zeros(len(catalog), dtype=bool)
    for label, members in _class_members(catalog).items():
        if label == UNKNOWN_LABEL:
            continue
        # OUR CHOICE: round(fraction * n), floored at min_per_class so rare classes stay represented.
        k = min(len(members), max(min_per_class, int(round(fraction * len(members)))))
        keep[members[_rng(seed, label, 1).permutation(len(members))[:k]]] = True
    return catalog[keep].reset_index(drop=True)


def splits_from_config(data_cfg: dict, taxonomy, source=None, progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict]:
    """The one derivation of a run's data: ``{"train", "val", "test", "train_labelled"}`` and a JSON
    description, from a training config's ``data`` section. Training and evaluation both call it,
    so the test galaxies evaluated are exactly the ones the trainer held out.

    ``source`` overrides ``data_cfg["source"]``. ``train_labelled`` is the labelled part of ``train``
    restricted to ``label_fraction`` (nested subsets, ``label_seed``); ``val``/``test`` keep only
    labelled galaxies. Every key of ``data_cfg`` the derivation reads must be present (the training
    schema fills them from :data:`DATA_DEFAULTS`, see :func:`data_config`), so no second set of
    fallback defaults can drift from the trainer's.
    """
    from galaxalign.datasets.load import load_catalog

    src = str(source) if source is not None else str(data_cfg["source"])
    info: dict = {"source": src}
    path = src
    if src == "survey":
        from galaxalign.survey import default_survey

        path = default_survey(int(data_cfg["num"]), int(data_cfg["size"]), int(data_cfg["seed"]), progress=progress)
        info.update(num=int(data_cfg["num"]), size=int(data_cfg["size"]), seed=int(data_cfg["seed"]))
    info["path"] = str(path)
    catalog = load_catalog(path, taxonomy, skip_bad=bool(data_cfg.get("skip_bad", False)))
    splits = split_catalog(catalog, float(data_cfg["val_fraction"]), float(data_cfg["test_fraction"]),
                           int(data_cfg["split_seed"]))
    train = splits["train"]
    labelled = train[train["label"] >= 0]
    lf = float(data_cfg["label_fraction"])
    if lf < 1:
        labelled = apply_label_fraction(labelled, lf, int(data_cfg["label_seed"]))
    out = {
        "train": train.reset_index(drop=True),
        "train_labelled": labelled[labelled["label"] >= 0].reset_index(drop=True),
        "val": splits["val"][splits["val"]["label"] >= 0].reset_index(drop=True),
        "test": splits["test"][splits["test"]["label"] >= 0].reset_index(drop=True),
    }
    info["splits"] = {k: int(len(out[k])) for k in SPLITS}
    info["n_train_labelled"] = int(len(out["train_labelled"]))
    info.update(split_seed=int(data_cfg["split_seed"]), val_fraction=float(data_cfg["val_fraction"]),
                test_fraction=float(data_cfg["test_fraction"]), label_fraction=lf, label_seed=int(data_cfg["label_seed"]))
    return out, info

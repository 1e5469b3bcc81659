"""Which rows a run's galaxies are aligned with: their class (the class bank, as in the paper), or
with per-galaxy alignment the row of each galaxy's own decision-tree path (``class_bank.galaxy_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galaxalign.training.methods import get_method

# OUR CHOICE: ``answers.per_galaxy: auto`` aligns each galaxy with its own path only when the labelled
# training galaxies average at least 2 per distinct path; below that most paths are one galaxy's, and a
# class bank generalises better (validation figures: docs/model.md, "Per-galaxy alignment").
MIN_GALAXIES_PER_PATH = 2.0


@dataclass
class LabelRows:
    rows: object | None  # class_bank.BankRows, or None: class-level rows
    labels: np.ndarray  # the label of each training galaxy the objective sees: class ids or row ids
    path_counts: tuple[list, list] | None = None  # (distinct paths, galaxies each): the model records them
    note: str | None = None  # why per-galaxy alignment was turned off, for the user

    def describe(self, n_train: int) -> str | None:
        """One line for the user: the note, or how many paths per-galaxy alignment found."""
        if self.rows is not None:
            return (f"per-galaxy alignment: {len(self.rows)} distinct decision-tree paths over {n_train} "
                    "training galaxies (answers.per_galaxy)")
        return self.note


def label_rows(cfg: dict, train_cat, taxonomy) -> LabelRows:
    """The rows of a run (see module doc).

    OUR CHOICE: ``answers.per_galaxy: auto`` turns it on for a method with ``per_galaxy_auto``
    (``galaxalign``) when the training catalog carries per-galaxy answers and its labelled galaxies
    average at least ``MIN_GALAXIES_PER_PATH`` per distinct path; ``image_text`` stays the paper's
    class-level baseline unless ``answers.per_galaxy: true``."""
    from galaxalign.answers import has_galaxy_answers
    from galaxalign.class_bank import galaxy_rows, path_counts

    labels = train_cat["label"].to_numpy(np.int64).copy()
    mode = cfg["answers"]["per_galaxy"]
    if not get_method(cfg["method"]).per_galaxy(mode, lambda: has_galaxy_answers(train_cat, taxonomy)):
        return LabelRows(None, labels)
    row_of, rows = galaxy_rows(train_cat, taxonomy, int(cfg["answers"]["partial_captions"]),
                               int(cfg["answers"]["partial_symbols"]), float(cfg["answers"]["class_weight"]))
    counts = path_counts(row_of, rows)
    if mode == "auto":
        n_paths = len(counts[0])
        if len(row_of) < MIN_GALAXIES_PER_PATH * n_paths:
            note = (f"per-galaxy alignment off (answers.per_galaxy: auto): {len(row_of)} labelled "
                    f"training galaxies on {n_paths} distinct decision-tree paths, fewer than "
                    f"{MIN_GALAXIES_PER_PATH:g} per path; aligning with class-level symbols and text")
            return LabelRows(None, labels, None, note)
    return LabelRows(rows, row_of, counts)

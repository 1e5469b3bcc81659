"""Classification metrics: accuracy, macro-F1, per-class accuracy and the confusion matrix.

Plain numpy on integer class ids, so the same functions serve the bootstrap (thousands of calls)
and the reports. Macro-F1 follows scikit-learn's ``f1_score(average="macro", zero_division=0)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    p = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no labels to score (empty y_true)")
    return t, p


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``C[i, j]`` = number of galaxies of true class ``i`` predicted as class ``j``."""
    t, p = _as_labels(y_true, y_pred)
    if (t < 0).any() or (p < 0).any():
        raise ValueError("class ids must be >= 0 (unlabelled galaxies, label -1, cannot be scored)")
    n = int(num_classes if num_classes is not None else max(t.max(), p.max()) + 1)
    if t.max() >= n or p.max() >= n:
        raise ValueError(f"class id {max(t.max(), p.max())} is outside 0..{n - 1}")
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def accuracy(y_true, y_pred) -> float:
    t, p = _as_labels(y_true, y_pred)
    return float((t == p).mean())


def _f1_from_confusion(cm: np.ndarray, labels: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)  # true count per class
    predicted = cm.sum(axis=0).astype(np.float64)
    denom = support + predicted  # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1[labels]


def macro_f1(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: classes seen in y_true or y_pred).

    A class never predicted and never present would be 0/0; like scikit-learn (``zero_division=0``)
    such a class scores 0 when it is listed explicitly in ``labels``.
    """
    t, p = _as_labels(y_true, y_pred)
    labs = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels, dtype=np.int64)
    n = int(max(t.max(), p.max(), labs.max()) + 1)
    return float(_f1_from_confusion(confusion_matrix(t, p, n), labs).mean())


def per_class_accuracy(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Recall of each class (fraction of its galaxies classified correctly); NaN for absent classes."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1).astype(np.float64)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)


def classification_report(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Every classification metric in JSON-safe form, keyed by class name where per class."""
    n = len(class_names)
    t, p = _as_labels(y_true, y_pred)
    cm = confusion_matrix(t, p, n)
    per_class = per_class_accuracy(t, p, n)
    return {
        "n": int(t.size),
        "accuracy": accuracy(t, p),
        # Over the taxonomy's full label list, the same definition the bootstrap resamples use.
        "macro_f1": macro_f1(t, p, labels=range(n)),
        "per_class_accuracy": {
            name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, per_class)
        },
        "support": {name: int(s) for name, s in zip(class_names, cm.sum(axis=1))},
        "confusion_matrix": cm.tolist(),
    }

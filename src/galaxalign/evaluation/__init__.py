"""Evaluation: classification and search metrics, classifiers on embeddings, reports.

The metric modules are plain numpy and import nothing heavy; ``evaluate`` and ``sim_to_real`` load
the model stack only when called. The run grids that train and then evaluate (the demo table, the
ablations) are application code: :mod:`galaxalign.grids`.
"""
from galaxalign.evaluation.bootstrap import bootstrap_ci, bootstrap_mean_ci
from galaxalign.evaluation.classifiers import LinearProbe, knn_classify, prototype_classify
from galaxalign.evaluation.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_accuracy,
)
from galaxalign.evaluation.retrieval import RetrievalResult, rank_gallery, retrieval_metrics


def evaluate(*args, **kwargs):
    """See :func:`galaxalign.evaluation.protocol.evaluate`."""
    from galaxalign.evaluation.protocol import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def evaluate_model(*args, **kwargs):
    """See :func:`galaxalign.evaluation.protocol.evaluate_model`."""
    from galaxalign.evaluation.protocol import evaluate_model as _evaluate_model

    return _evaluate_model(*args, **kwargs)


def sim_to_real(*args, **kwargs):
    """See :func:`galaxalign.evaluation.sim2real.sim_to_real`."""
    from galaxalign.evaluation.sim2real import sim_to_real as _sim_to_real

    return _sim_to_real(*args, **kwargs)


__all__ = [
    "accuracy", "macro_f1", "per_class_accuracy", "confusion_matrix", "classification_report",
    "rank_gallery", "retrieval_metrics", "RetrievalResult", "bootstrap_ci", "bootstrap_mean_ci",
    "prototype_classify", "knn_classify", "LinearProbe", "evaluate", "evaluate_model", "sim_to_real",
]

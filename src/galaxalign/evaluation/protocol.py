"""The evaluation protocol: classify the test galaxies and search the gallery with one model.

``evaluate_model`` works on a loaded model and catalogs (the demo calls it with the exact splits it
trained on); ``evaluate`` loads a checkpoint and a data source and writes report.json, report.md and
the plots. Classifiers reported for every model:

- ``zero_shot_text`` / ``zero_shot_symbol`` / ``zero_shot_both``: nearest class prototype
  (``inference.class_prototypes``);
- ``linear_probe``: logistic regression on frozen image embeddings of the labelled training galaxies,
  its C chosen on the validation split;
- ``knn``: cosine k-NN vote among the labelled training galaxies;

The probe and k-NN only ever see labelled TRAINING galaxies (``train_labelled``); without them they
are not run. They are never fitted on the gallery, which may be the test split itself.
- ``head``: the image-only baseline's own classifier head (only when the model has one).

Each method has one *primary* classifier, the one its table row shows (``PRIMARY_CLASSIFIER``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from galaxalign.evaluation.baselines import SMALL_VAL, frozen_probe_candidate  # noqa: F401 (SMALL_VAL: API)
from galaxalign.evaluation.bootstrap import N_RESAMPLES, bootstrap_ci, bootstrap_mean_ci
from galaxalign.evaluation.embeddings import cached_embeddings, head_scores_catalog
from galaxalign.evaluation.classifiers import (
    KNN_K,
    PROBE_C,
    LinearProbe,
    choose_probe_c,
    knn_classify,
    nearest_centroid,
    prototype_classify,
    softmax,
)
from galaxalign.evaluation.metrics import classification_report, macro_f1
from galaxalign.evaluation.report import evaluation_markdown, write_json, write_text
from galaxalign.evaluation.retrieval import rank_gallery
from galaxalign.model_files import training_config_of  # noqa: F401 (API: sim2real, feature search)

# OUR CHOICE: the row each method shows. The paper classifies by similarity to the class labels; the
# fine-tuned GalaxAlign model has two aligned label modalities, so it uses both fused; a stock CLIP-
# style model and the image-text baseline use the text labels (the usual zero-shot protocol); the
# image-only baseline has no aligned label encoder and uses its trained head.
PRIMARY_CLASSIFIER = {
    "galaxalign": "zero_shot_both",
    "image_text": "zero_shot_text",
    "zero_shot": "zero_shot_text",
    "image_only": "head",
}
ZERO_SHOT_MODALITIES = ("text", "symbol", "both")
GRID_QUERIES = 10
GRID_TOP = 5


def primary_classifier(method: str | None, model) -> str:
    if method in PRIMARY_CLASSIFIER:
        return PRIMARY_CLASSIFIER[method]
    return "head" if getattr(model, "classifier", None) is not None else "zero_shot_both"


def zero_shot_prototypes(model, taxonomy, modalities=ZERO_SHOT_MODALITIES, cache: dict | None = None) -> dict:
    """Class prototypes per modality; ``both`` is the normalised mean of the text and symbol ones."""
    from galaxalign.inference import class_prototypes

    cache = {} if cache is None else cache
    protos = {}
    for modality in ("text", "symbol"):
        if modality in modalities or "both" in modalities:
            key = ("prototypes", modality)
            if key not in cache:
                cache[key] = np.asarray(class_prototypes(model, taxonomy, modality=modality), dtype=np.float32)
            protos[modality] = cache[key]
    if "both" in modalities:
        # Same as class_prototypes(modality="both") (normalised mean of the two), without encoding twice.
        both = protos["text"] + protos["symbol"]
        protos["both"] = both / np.linalg.norm(both, axis=1, keepdims=True)
    return {m: protos[m] for m in modalities}


def classify_embeddings(
    model,
    taxonomy,
    query,
    fit=None,
    fit_labels=None,
    *,
    head: np.ndarray | None = None,
    zero_shot=ZERO_SHOT_MODALITIES,
    linear_probe: bool = True,
    probe_c: float = PROBE_C,
    centroid: bool = False,
    knn_k: int = KNN_K,
    knn_exclude: np.ndarray | None = None,
    seed: int = 0,
    cache: dict | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every classifier of the protocol on query embeddings: name -> (predicted ids, scores (N, C)).

    ``zero_shot_<modality>`` for each of ``zero_shot``; with ``fit`` / ``fit_labels`` (labelled
    embeddings the classifiers may learn from) ``linear_probe`` (when they hold two classes or more;
    inverse L2 strength ``probe_c``),
    ``nearest_centroid`` (if ``centroid``) and ``knn`` (``knn_exclude``: each query's own row in
    ``fit``, or -1); ``head``: the caller's class probabilities of the model's head, if it has one.
    """
    C = len(taxonomy.class_names)
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for modality, protos in zero_shot_prototypes(model, taxonomy, zero_shot, cache).items():
        predictions[f"zero_shot_{modality}"] = prototype_classify(query, protos)
    if fit is not None:
        if linear_probe and np.unique(fit_labels).size >= 2:
            predictions["linear_probe"] = LinearProbe(C, C=probe_c, seed=seed).fit(fit, fit_labels).predict_scores(query)
        if centroid:
            predictions["nearest_centroid"] = nearest_centroid(fit, fit_labels, query, C)
        exclude = knn_exclude if knn_exclude is not None and (knn_exclude >= 0).any() else None
        predictions["knn"] = knn_classify(fit, fit_labels, query, C, k=knn_k, exclude=exclude)
    if head is not None:
        predictions["head"] = (head.argmax(axis=1), head)
    return predictions


def fuse_predictions(predictions: dict) -> tuple[np.ndarray, np.ndarray]:
    """OUR CHOICE: ``fused`` = the mean of the class probabilities of the fused label prototypes (text
    and symbol, or text alone), the linear probe, k-NN and the head, whichever exist."""
    names = [n for n in ("zero_shot_both", "linear_probe", "knn", "head") if n in predictions]
    if "zero_shot_both" not in predictions and "zero_shot_text" in predictions:
        names.append("zero_shot_text")
    scores = np.mean([predictions[n][1] for n in names], axis=0)
    return scores.argmax(axis=1), scores


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class (class scores that sum to 1 per row)."""
    p = np.asarray(scores, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def select_primary(val_accuracy: dict[str, float], default: str, val_log_loss: dict[str, float] | None = None) -> str:
    """The classifier with the best validation accuracy. OUR CHOICE: accuracy ties (common on a small
    validation split: 15 of 17 right for four classifiers at once) go to the lowest validation
    log-loss (``val_log_loss``, a proper score that still separates them), then to ``fused`` (it
    averages the others), then ``default``, then by name."""
    best = max(val_accuracy.values())
    tied = sorted(k for k, v in val_accuracy.items() if v >= best - 1e-12)
    if val_log_loss and len(tied) > 1 and all(k in val_log_loss for k in tied):
        low = min(val_log_loss[k] for k in tied)
        tied = [k for k in tied if val_log_loss[k] <= low + 1e-9]
    for pick in ("fused", default):
        if pick in tied:
            return pick
    return tied[0]


def _labelled(catalog):
    return catalog[catalog["label"] >= 0].reset_index(drop=True)


def _class_ci(values: dict[str, Any], correct: np.ndarray, y_true, y_pred, num_classes: int, n_resamples: int,
              seed: int) -> dict:
    values["accuracy_ci"] = list(bootstrap_mean_ci(correct, n_resamples=n_resamples, seed=seed))
    # Every resample scores macro-F1 over the taxonomy's full label list, not the classes it happens to hold.
    labels = np.arange(num_classes)
    values["macro_f1_ci"] = list(bootstrap_ci(lambda t, p: macro_f1(t, p, labels=labels), y_true, y_pred,
                                              n_resamples=n_resamples, seed=seed))
    return values


def evaluate_model(
    model,
    taxonomy,
    test,
    gallery,
    train_labelled=None,
    out_dir: str | Path | None = None,
    *,
    method: str | None = None,
    title: str = "",
    knn_k: int = KNN_K,
    linear_probe: bool = True,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    batch_size: int = 64,
    plots: bool = True,
    progress: bool = True,
    embeddings: dict | None = None,
    val=None,
    frozen_probe: bool = True,
) -> dict:
    """Every metric of one model on one test set; plots go to ``out_dir`` when given.

    ``val``: labelled validation galaxies. When given, every classifier (and ``fused``, the mean of
    the label-prototype, probe, k-NN and head probabilities) is also scored on them and the primary
    classifier is the one with the best validation accuracy (ties: the method's default first);
    the test set never takes part in that choice. Without it, the method's default is primary.

    ``test``: labelled catalog of query galaxies. ``gallery``: catalog searched (labels define
    relevance; an item with a query's id is excluded from that query's ranking). ``train_labelled``:
    the labelled training galaxies the linear probe and k-NN may use (the label fraction); without it
    neither runs (the gallery is never used in its place: it may be the test split). ``val``: labelled
    validation galaxies on which the probe's C is chosen (``PROBE_C_GRID``); without them C = 1.
    ``embeddings``: optional cache dict (catalog id -> array) shared between calls on the same model.
    ``frozen_probe``: with labelled training and validation galaxies, the off-the-shelf baseline
    (``evaluation.baselines``: a logistic regression on frozen ImageNet features) is one more
    candidate of the primary classifier, so the reported model never loses to doing nothing by more
    than the selection's noise. Its validation score is its validation accuracy, or with fewer than
    ``SMALL_VAL`` validation galaxies its 5-fold cross-validated accuracy on training + validation
    galaxies (a frozen probe can be cross-validated; the fine-tuned model cannot).
    Returns a JSON-safe dict; ``per_query`` holds each test galaxy's primary-classifier hit and
    average precision, in test order, for paired comparisons between models.
    """
    t0 = time.perf_counter()
    test = _labelled(test)
    gallery = _labelled(gallery)
    train_labelled = None if train_labelled is None else _labelled(train_labelled)
    if len(test) == 0:
        raise ValueError("the test catalog has no labelled galaxies to evaluate on")
    if len(gallery) == 0:
        raise ValueError("the gallery catalog has no labelled galaxies")
    names = taxonomy.class_names
    C = len(names)
    model.eval()

    cache = embeddings if embeddings is not None else {}

    def embed(cat):
        return cached_embeddings(model, cat, cache, batch_size=batch_size, progress=progress)

    q = embed(test)
    g = embed(gallery)
    gpos = {v: i for i, v in enumerate(gallery["id"].astype(str))}
    y = test["label"].to_numpy(np.int64)
    if train_labelled is not None and len(train_labelled):
        tr_ids = train_labelled["id"].astype(str)
        if all(i in gpos for i in tr_ids):  # labelled training galaxies are usually gallery galaxies
            tr = g[[gpos[i] for i in tr_ids]]
        else:
            tr = embed(train_labelled)
        ytr = train_labelled["label"].to_numpy(np.int64)
    else:
        tr_ids, tr, ytr = None, None, np.zeros(0, np.int64)

    probe: dict[str, Any] = {"fit_on": None, "n_train_labelled": int(ytr.size), "C": None, "C_chosen_on": None}
    probe_c = PROBE_C
    if tr is not None and linear_probe and np.unique(ytr).size >= 2:
        val = None if val is None else _labelled(val)
        if val is not None and len(val):
            probe_c, by_c = choose_probe_c(tr, ytr, embed(val), val["label"].to_numpy(np.int64), C, seed=seed)
            probe.update(C_chosen_on="val", n_val=int(len(val)), val_accuracy_by_C=by_c)
        probe.update(fit_on="train", C=probe_c)
    self_index = None
    if tr is not None:
        trpos = {v: i for i, v in enumerate(tr_ids)}
        # A test galaxy that is also a labelled training galaxy (--split train) must not vote for itself.
        self_index = np.array([trpos.get(v, -1) for v in test["id"].astype(str)], dtype=np.int64)
    head = head_scores_catalog(model, test, batch_size, progress) if getattr(model, "classifier", None) is not None else None
    predictions = classify_embeddings(model, taxonomy, q, tr, ytr if tr is not None else None, head=head,
                                      linear_probe=linear_probe, probe_c=probe_c, knn_k=knn_k,
                                      knn_exclude=self_index, seed=seed, cache=cache)

    predictions["fused"] = fuse_predictions(predictions)
    val = None if val is None else _labelled(val)
    frozen = None
    if (frozen_probe and method != "zero_shot" and tr is not None and val is not None and len(val)
            and np.unique(ytr).size >= 2):
        frozen = frozen_probe_candidate(train_labelled, val, test, C, seed, progress)
        predictions["frozen_probe"] = frozen["test"]
    default = primary_classifier(method, model)
    if default not in predictions:
        raise ValueError(f"method {method!r} reports classifier {default!r}, which this model cannot provide")
    primary, val_scores, val_loss = default, {}, {}
    if val is not None and len(val):
        vq = embed(val)
        vhead = head_scores_catalog(model, val, batch_size, progress) if head is not None else None
        vpred = classify_embeddings(model, taxonomy, vq, tr, ytr if tr is not None else None, head=vhead,
                                    linear_probe=linear_probe, probe_c=probe_c, knn_k=knn_k, seed=seed, cache=cache)
        vpred["fused"] = fuse_predictions(vpred)
        yv = val["label"].to_numpy(np.int64)
        # A zero-shot model is reported by its label prototypes only: it learns nothing from labels.
        eligible = [k for k in vpred if k in predictions and (method != "zero_shot" or k.startswith("zero_shot"))]
        val_scores = {k: float(np.mean(vpred[k][0] == yv)) for k in eligible}
        val_loss = {k: log_loss(vpred[k][1], yv) for k in eligible}
        if frozen is not None:
            val_scores["frozen_probe"], val_loss["frozen_probe"] = frozen["val_accuracy"], frozen["val_log_loss"]
        primary = select_primary(val_scores, default, val_loss)

    classification = {}
    for name, (pred, _scores) in predictions.items():
        rep = classification_report(y, pred, names)
        classification[name] = rep
    p = predictions[primary][0]
    _class_ci(classification[primary], (p == y).astype(float), y, p, C, n_resamples, seed)

    r = rank_gallery(
        q, y, g, gallery["label"].to_numpy(np.int64),
        query_ids=test["id"].astype(str).to_numpy(), gallery_ids=gallery["id"].astype(str).to_numpy(),
        top_n=GRID_TOP,
    )
    retrieval = r.summary()
    retrieval["ci"] = {k: list(bootstrap_mean_ci(v, n_resamples=n_resamples, seed=seed)) for k, v in r.per_query().items() if v.size}
    retrieval["gallery_size"] = int(len(gallery))

    result = {
        "method": method,
        "primary_classifier": primary,
        "primary_selected_on": "val" if val_scores else "method default",
        "frozen_probe_scored_by": None if frozen is None else frozen["scored_by"],
        "val_accuracy": val_scores,
        "val_log_loss": val_loss,
        "n_test": int(len(test)),
        "n_gallery": int(len(gallery)),
        "n_train_labelled": int(ytr.size),
        "probe": probe,
        "accuracy": classification[primary]["accuracy"],
        "accuracy_ci": classification[primary]["accuracy_ci"],
        "macro_f1": classification[primary]["macro_f1"],
        "macro_f1_ci": classification[primary]["macro_f1_ci"],
        "map": retrieval["map"],
        "map_ci": retrieval["ci"].get("map"),
        "map_at_10": retrieval["map_at_10"],
        "map_at_10_ci": retrieval["ci"].get("map_at_10"),
        "precision_at_10": retrieval["precision_at_10"],
        "precision_at_10_ci": retrieval["ci"].get("precision_at_10"),
        "classification": classification,
        "retrieval": retrieval,
        "per_query": {
            "id": test["id"].astype(str).tolist(),
            "correct": (p == y).astype(int).tolist(),
            "label": y.tolist(),
            "predicted": p.astype(int).tolist(),
            # NaN (None in JSON) for a query whose class has no gallery galaxy
            "average_precision": np.where(r.valid, r.ap, np.nan).tolist(),
        },
        "plots": {},
    }
    if out_dir is not None and plots:
        result["plots"] = _write_plots(out_dir, result, taxonomy, test, gallery, r, title or (method or "model"))
    result["eval_seconds"] = time.perf_counter() - t0
    return result




def _write_plots(out_dir, result, taxonomy, test, gallery, r, title) -> dict:
    from galaxalign.datasets import read_image
    from galaxalign.evaluation.plots import pick_grid_queries, plot_confusion_matrix, plot_retrieval_grid

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prim = result["primary_classifier"]
    cm_png = plot_confusion_matrix(
        result["classification"][prim]["confusion_matrix"], taxonomy.class_names, out_dir / "confusion_matrix.png",
        title=f"{title}: {prim}, accuracy {result['accuracy']:.3f}",
    )
    ql = test["label"].to_numpy()
    queries = [i for i in pick_grid_queries(ql, GRID_QUERIES, seed=0) if r.num_relevant[i] > 0]
    trows = test.to_dict("records")
    grows = gallery.to_dict("records")
    grid_png = plot_retrieval_grid(
        lambda i: read_image(trows[i]), ql, lambda i: read_image(grows[i]), gallery["label"].to_numpy(),
        r.top_indices, taxonomy.class_names, out_dir / "retrieval_grid.png", queries, top_n=GRID_TOP,
        title=f"{title}: mAP@10 {result['map_at_10']:.3f}",
    )
    return {"confusion_matrix": str(cm_png), "retrieval_grid": str(grid_png)}


def resolve_data(data_cfg: dict, taxonomy, data: str | Path | None = None) -> tuple[dict, dict]:
    """Splits (``train``/``val``/``test``/``train_labelled``) and a JSON description of the data:
    :func:`galaxalign.datasets.splits_from_config`, the derivation the trainer uses.

    ``data_cfg`` is a training config's ``data`` section completed from the training schema;
    ``data`` overrides its source."""
    from galaxalign.datasets import data_config, splits_from_config

    return splits_from_config(data_config(data_cfg), taxonomy, source=data)


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    split: str = "test",
    gallery_split: str = "train",
    taxonomy: str | Path | None = None,
    label_fraction: float | None = None,
    knn_k: int = KNN_K,
    n_resamples: int = N_RESAMPLES,
    progress: bool = True,
) -> dict:
    """Evaluate a checkpoint; write report.json, report.md and plots into ``out_dir`` (if given).

    Without ``data`` the checkpoint's own training data and splits are used. Split fractions and seed
    come from the checkpoint's training config, else the training defaults (so test galaxies are
    never training galaxies of a model trained with the defaults).
    """
    from galaxalign.inference import load_model
    from galaxalign.datasets import data_config
    from galaxalign.taxonomy import load_taxonomy

    model, model_taxonomy = load_model(checkpoint)
    tax = load_taxonomy(taxonomy) if taxonomy is not None else model_taxonomy
    if tax.class_names != model_taxonomy.class_names:
        raise ValueError(
            f"taxonomy {tax.name!r} has classes {tax.class_names}, but checkpoint {checkpoint} was trained "
            f"with {model_taxonomy.class_names}"
        )
    train_cfg = training_config_of(checkpoint) or {}
    data_cfg = data_config(train_cfg.get("data"))
    if data is None and not train_cfg:
        raise ValueError(f"checkpoint {checkpoint} carries no training config: pass --data SOURCE")
    if label_fraction is not None:
        data_cfg["label_fraction"] = float(label_fraction)
    splits, info = resolve_data(data_cfg, tax, data)
    for name in (split, gallery_split):
        if name not in splits:
            raise ValueError(f"unknown split {name!r}; the data has splits {sorted(splits)}")
    lf = float(data_cfg.get("label_fraction", 1.0))
    # The probe and k-NN only ever learn from the labelled training galaxies (the label fraction),
    # whatever is searched; the primary classifier is chosen on the validation split.
    train_labelled = splits["train_labelled"]
    method = train_cfg.get("method")
    cache: dict = {}
    result = evaluate_model(
        model, tax, splits[split], splits[gallery_split], train_labelled, out_dir, method=method,
        title=Path(checkpoint).name, knn_k=knn_k, n_resamples=n_resamples, progress=progress,
        val=splits["val"] if split != "val" else None, embeddings=cache,
    )
    report = {"checkpoint": str(checkpoint), "dataset": info, "split": split, "gallery_split": gallery_split,
              "label_fraction": lf, "taxonomy": tax.name, **result}
    from galaxalign.answers import has_galaxy_answers

    if has_galaxy_answers(splits[split], tax):
        # The split's galaxies carry their true answers: search them by features too (same embeddings).
        from galaxalign.evaluation.feature_search import feature_search_model

        report["feature_search"] = feature_search_model(model, tax, _labelled(splits[split]), method=method,
                                                        n_resamples=n_resamples, cache=cache, progress=progress)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(report, out_dir / "report.json")
        write_text(evaluation_markdown(report), out_dir / "report.md")
    return report

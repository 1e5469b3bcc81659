"""Per-galaxy settings on the VALIDATION split (never the test split): class mAP and feature search.

Trains GalaxAlign on the embedded survey (label fraction 1) once per ``NAME=override[,override...]``
argument (or reuses runs/dev/NAME), then prints one JSON line per run: the validation galaxies' class
mAP (each queries the training split, relevant = same class; paired 95 % interval of the difference
to the first run) and feature-search nDCG@10 of the 50 seeded validation queries ranked as the search
ranks them (``search.features``; paired 95 % interval of the difference to the image-only baseline,
trained once as runs/dev/val_image_only).

    .venv/bin/python experiments/per_galaxy_val_sweep.py class=answers.per_galaxy=false \\
        st1=loss.symbol_text=1 st025=loss.symbol_text=0.25 st025_s1=loss.symbol_text=0.25,seed=1

``--prior-weights 0,0.5,1`` also prints, per run, the nDCG with the path prior of ``search.features``
at each weight (counts: the model's own, or for a model trained before they were recorded the
training split's, counted as the trainer counts them).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from galaxalign.datasets.splits import splits_from_config
from galaxalign.evaluation import feature_search as fs
from galaxalign.evaluation.bootstrap import paired_bootstrap_diff
from galaxalign.inference import load_model
from galaxalign.search.features import bank_paths, build_path_bank
from galaxalign.training.config import load_config
from galaxalign.training.trainer import train


def average_precision(sims: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-sims, kind="stable")
    r = relevant[order]
    precision = np.cumsum(r) / np.arange(1, len(r) + 1)
    return float((precision * r).sum() / max(r.sum(), 1.0))


def trained(name: str, overrides: list[str]):
    out = Path("runs/dev") / name
    if not (out / "model" / "model.safetensors").exists():
        train(load_config("default", [f"out={out}", "tensorboard=false", *overrides]), progress=False)
    return load_model(out / "model")


def per_query(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    return np.array([fs.ndcg_at_k(scores[i], rel[i]) for i in range(len(rel))])


def training_counts(model, tax, overrides: list[str]) -> list[int] | None:
    """The model's training galaxies per path, or (older models) those of its training split."""
    if model.answer_path_counts is not None or not model.answer_paths:
        return None if model.answer_path_counts is None else list(model.answer_path_counts)
    from galaxalign.class_bank import galaxy_rows, path_counts

    cfg = load_config("default", [o for o in overrides if not o.startswith("seed=")])
    train_cat = splits_from_config(cfg["data"], tax)[0]["train_labelled"]  # what the trainer trains on
    row_of, rows = galaxy_rows(train_cat, tax, class_weight=float(cfg["answers"]["class_weight"]))
    paths, counts = path_counts(row_of, rows)
    have = dict(zip(paths, counts))
    return [have.get(tuple(p), 0) for p in model.answer_paths]


def main(argv: list[str]) -> None:
    weights = None
    if "--prior-weights" in argv:
        i = argv.index("--prior-weights")
        weights = [float(w) for w in argv[i + 1].split(",")]
        argv = argv[:i] + argv[i + 2:]
    runs = [(a, [o for o in b.split(",") if o]) for a, b in (x.split("=", 1) for x in argv)]
    image_only, tax = trained("val_image_only", ["method=image_only"])
    splits, _ = splits_from_config(load_config("default", [])["data"], tax)
    val, tr = splits["val"].reset_index(drop=True), splits["train"].reset_index(drop=True)
    queries = fs.sample_feature_queries(fs.galaxy_paths(val, tax), tax)
    rel = fs.relevance_matrix(queries, fs.galaxy_paths(val, tax), tax.tree)
    base = per_query(fs.query_scores(image_only, tax, queries, val, method="image_only")["text"], rel)
    print(json.dumps({"run": "val_image_only", "nearest_class_ndcg": round(float(np.nanmean(base)), 3)}), flush=True)
    first = None
    yv, yt = val["label"].to_numpy(), tr["label"].to_numpy()
    for name, overrides in runs:
        model, _ = trained(name, overrides)
        ev, et = fs.cached_catalog_output(model, val, {}), fs.cached_catalog_output(model, tr, {})
        aps = np.array([average_precision(ev[i] @ et.T, (yt == yv[i]).astype(float)) for i in range(len(yv))])
        row: dict = {"run": name, "overrides": overrides, "val_map": round(float(aps.mean()), 3)}
        if first is None:
            first = aps
        else:
            row["val_map_minus_first"] = [round(x, 3) for x in paired_bootstrap_diff(aps, first)["ci"]]
        bank = build_path_bank(model, tax)
        for m in fs.MODALITIES:
            v = per_query(bank.scores(ev, queries, m), rel)
            row[f"{m}_ndcg"] = round(float(np.nanmean(v)), 3)
            row[f"{m}_minus_image_only"] = [round(x, 3) for x in paired_bootstrap_diff(v, base)["ci"]]
        if weights and model.answer_paths:
            counts = training_counts(model, tax, overrides)
            for w in weights:
                b = build_path_bank(model, tax, bank_paths(model, tax), counts=counts, prior_weight=w)
                row[f"prior_{w:g}"] = {m: round(float(np.nanmean(per_query(b.scores(ev, queries, m), rel))), 3)
                                       for m in fs.MODALITIES}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    if not sys.argv[1:]:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])

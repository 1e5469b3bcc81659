"""Choosing the per-galaxy settings on the VALIDATION split (never the test split).

Trains GalaxAlign on the embedded survey with the given config overrides, then reports the best
validation prototype accuracy seen during training and the feature-search nDCG@10 (symbol and text
queries, ``evaluation.feature_search``) on the validation galaxies. Prints one JSON line.

    .venv/bin/python experiments/per_galaxy_dev.py NAME [key=value ...]
    e.g. experiments/per_galaxy_dev.py pg answers.per_galaxy=true loss.graded_power=2
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from galaxalign.datasets.splits import splits_from_config
from galaxalign.evaluation.feature_search import feature_search
from galaxalign.inference import load_model
from galaxalign.training.config import load_config
from galaxalign.training.trainer import train


def main(argv: list[str]) -> None:
    name, overrides = argv[0], argv[1:]
    cfg = load_config("default", [f"out=runs/dev/{name}", "tensorboard=false", *overrides])
    t0 = time.time()
    result = train(cfg, progress=False)
    seconds = time.time() - t0
    model, tax = load_model(f"runs/dev/{name}/model")
    splits, _ = splits_from_config(cfg["data"], tax)
    fs = feature_search(model, splits["val"], taxonomy=tax, method=cfg["method"], n_resamples=200)
    val = [r["val_acc_both"] for r in result.history if r.get("kind") == "val" and r.get("val_acc_both") is not None]
    out = {"name": name, "overrides": overrides, "train_seconds": round(seconds),
           "best_val_acc_both": max(val) if val else None,
           "val_feature_search_ndcg10": {m: round(float(fs[m]["ndcg"]), 3) for m in ("symbol", "text")}}
    print(json.dumps(out))


if __name__ == "__main__":
    if not sys.argv[1:]:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])

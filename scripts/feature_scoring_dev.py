"""Choosing how feature queries are ranked, on the VALIDATION split (never the test split).

Trains (or reuses, under runs/dev/fsd_<name>) per-galaxy GalaxAlign, class-level GalaxAlign, the
image-only baseline and per-galaxy GalaxAlign with one shared visual encoder in stage 2, on the
embedded survey at label fraction 1, then scores the 50 seeded feature queries of the validation
galaxies (``evaluation.feature_search``) with each ranking: the composed query vector's cosine,
the path posterior of ``search.features`` at the model's temperature and at 1/2 and 2x it.
Prints one JSON line per run: nDCG@10 and the paired 95 % interval of the difference to image-only.

    .venv/bin/python scripts/feature_scoring_dev.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from galaxalign.datasets.splits import splits_from_config
from galaxalign.evaluation import feature_search as fs
from galaxalign.evaluation.bootstrap import paired_bootstrap_diff
from galaxalign.inference import load_model
from galaxalign.search.features import build_path_bank
from galaxalign.training.config import load_config
from galaxalign.training.trainer import train

RUNS = {
    "image_only": ["method=image_only"],
    "galaxalign": ["method=galaxalign"],
    "galaxalign_class": ["method=galaxalign", "answers.per_galaxy=false"],
    "galaxalign_shared_symbol": ["method=galaxalign", "stage2.shared_symbol_encoder=true"],
}


def per_query(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    return np.array([fs.ndcg_at_k(scores[i], rel[i]) for i in range(len(rel))])


def main() -> None:
    base = None
    for name, overrides in RUNS.items():
        out_dir = Path("runs/dev") / f"fsd_{name}"
        cfg = load_config("default", [f"out={out_dir}", "tensorboard=false", *overrides])
        if not (out_dir / "model" / "model.safetensors").exists():
            train(cfg, progress=False)
        model, tax = load_model(out_dir / "model")
        splits, _ = splits_from_config(cfg["data"], tax)
        pool = splits["val"].reset_index(drop=True)
        paths = fs.galaxy_paths(pool, tax)
        queries = fs.sample_feature_queries(paths, tax)
        rel = fs.relevance_matrix(queries, paths, tax.tree)
        cache: dict = {}
        row: dict = {"run": name}
        if cfg["method"] == "image_only":
            base = per_query(fs.query_scores(model, tax, queries, pool, method="image_only", cache=cache)["text"], rel)
            row["nearest_class"] = round(float(np.nanmean(base)), 3)
            print(json.dumps(row), flush=True)
            continue
        rankings = {"composed": fs.query_scores(model, tax, queries, pool, cache=cache, ranking="composed")}
        emb = fs.cached_catalog_output(model, pool, cache)
        bank = build_path_bank(model, tax)
        row["n_paths"] = len(bank.paths)
        for factor in (1.0, 0.5, 2.0):
            scaled = type(bank)(bank.paths, bank.have, bank.embeddings, bank.scale * factor, bank.columns)
            rankings[f"posterior_x{factor:g}"] = {m: scaled.scores(emb, queries, m) for m in fs.MODALITIES}
        for key, scores in rankings.items():
            for m, s in scores.items():
                v = per_query(s, rel)
                cell = {"ndcg": round(float(np.nanmean(v)), 3)}
                if base is not None:
                    cell["vs_image_only"] = [round(x, 3) for x in paired_bootstrap_diff(v, base)["ci"]]
                row[f"{key}/{m}"] = cell
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

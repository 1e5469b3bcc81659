"""Reproduce the README's "Your own galaxies (walkthrough, measured)" experiment.

Builds the smooth-vs-featured task from the real exemplars of ../shared/data (gz2-exemplars and
gama-exemplars): each manifest row's Galaxy Zoo question and answer is mapped to a decision-tree answer
(``feature_exemplars.load_exemplars`` / ``map_answer``); a row is "smooth" when its answer is or
requires ``smooth-or-featured_smooth`` and "featured" when it implies
``smooth-or-featured_featured-or-disk`` (``galaxalign.answers.expand`` on the shipped tree); every
other row (artifact, unmapped, merging / odd-feature answers that imply neither) is skipped and counted.
It writes ``smooth_featured.csv`` (``filepath,label``, absolute paths) and a two-class
``smooth_featured.yaml`` into ``--out``, then trains and evaluates on the test split, as
``galaxalign train --config default data.source=... data.taxonomy=... out=...`` followed by
``galaxalign evaluate --checkpoint OUT/model --out OUT/eval`` would:

1. the default config (``default``: the recipe on, GalaxAlign method);
2. the frozen probe baseline ``method=zero_shot recipe.enabled=false``.

Prints the counts, then one JSON line with both runs' test figures.

    cd /work/main && PYTHONPATH=$PWD/src .venv/bin/python experiments/own_galaxies_walkthrough.py [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter
from pathlib import Path

SMOOTH = "smooth-or-featured_smooth"
FEATURED = "smooth-or-featured_featured-or-disk"
DEFAULT_EXEMPLARS = ("../shared/data/gz2-exemplars", "../shared/data/gama-exemplars")

TAXONOMY_YAML = f"""\
# Smooth vs featured: the first question of the Galaxy Zoo decision tree (two classes).
name: smooth_featured
description: "Smooth vs featured Galaxy Zoo exemplars (SDSS + KiDS/GAMA cutouts)."
classes:
  - id: 0
    name: smooth
    key: smooth
    answers: [{SMOOTH}]
    text_labels: ["smooth galaxy", "smooth and rounded galaxy with no sign of a disk", "elliptical galaxy"]
  - id: 1
    name: featured
    key: featured
    answers: [{FEATURED}]
    text_labels: ["galaxy with features or a disk", "disk galaxy with visible features", "spiral or disk galaxy"]
"""

RUNS = {
    "galaxalign_default": [],
    "frozen_probe": ["method=zero_shot", "recipe.enabled=false"],
}


def build_task(folders, out: Path) -> tuple[Path, Path, dict]:
    """Write the CSV and the taxonomy YAML; return their paths and the counts."""
    from galaxalign.answers import expand
    from galaxalign.evaluation.feature_exemplars import load_exemplars
    from galaxalign.taxonomy import decision_tree

    tree = decision_tree()
    rows, counts, skipped = [], Counter(), Counter()
    per_folder = {}
    for folder in folders:
        folder = Path(folder).resolve()
        catalog, unmapped = load_exemplars(folder, tree)
        local = Counter()
        skipped["unmapped"] += len(unmapped)
        local["unmapped"] += len(unmapped)
        for rec in catalog.to_dict("records"):
            implied = expand([rec["answer"]], tree)
            if SMOOTH in implied:
                label = "smooth"
            elif FEATURED in implied:
                label = "featured"
            else:
                skipped[rec["answer"]] += 1
                local["skipped"] += 1
                continue
            counts[label] += 1
            local[label] += 1
            rows.append({"filepath": str(Path(rec["file_loc"]).resolve()), "label": label})
        per_folder[folder.name] = dict(local)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, yaml_path = out / "smooth_featured.csv", out / "smooth_featured.yaml"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filepath", "label"])
        writer.writeheader()
        writer.writerows(rows)
    yaml_path.write_text(TAXONOMY_YAML)
    info = {"smooth": counts["smooth"], "featured": counts["featured"], "total": len(rows),
            "skipped": dict(sorted(skipped.items())), "n_skipped": int(sum(skipped.values())),
            "per_folder": per_folder}
    return csv_path, yaml_path, info


def split_summary(report: dict, train_cfg: dict, taxonomy) -> dict:
    from galaxalign.evaluation.protocol import resolve_data

    splits, _ = resolve_data(train_cfg["data"], taxonomy)
    names = taxonomy.class_names
    sizes = {k: int(len(splits[k])) for k in ("train", "val", "test")}
    classes = {k: {names[int(c)]: int(n) for c, n in sorted(Counter(splits[k]["label"]).items())}
               for k in ("train", "val", "test")}
    return {"split_sizes": sizes, "class_counts": classes}


def run_one(name: str, overrides: list[str], csv_path: Path, yaml_path: Path, out: Path, quiet: bool) -> dict:
    from galaxalign.evaluation.protocol import evaluate, training_config_of
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.training.config import load_config
    from galaxalign.training.trainer import train

    run_dir = out / name
    cfg = load_config("default", [f"data.source={csv_path}", f"data.taxonomy={yaml_path}", f"out={run_dir}",
                                  "threads=1", *overrides])
    t0 = time.perf_counter()
    result = train(cfg, progress=not quiet)
    wall = time.perf_counter() - t0
    report = evaluate(result.export_dir, None, run_dir / "eval", split="test", gallery_split="train",
                      progress=not quiet)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    (run_dir / "eval" / "report.json").write_text(json.dumps(report, indent=1, default=str))
    train_cfg = training_config_of(result.export_dir) or cfg
    rec = train_cfg.get("recipe") or {}
    prim = report["primary_classifier"]
    return {
        "overrides": overrides,
        "method": report.get("method"),
        "primary_classifier": prim,
        "primary_selected_on": report.get("primary_selected_on"),
        "val_accuracy": report.get("val_accuracy"),
        "accuracy": report["accuracy"], "accuracy_ci": report.get("accuracy_ci"),
        "macro_f1": report["macro_f1"], "macro_f1_ci": report.get("macro_f1_ci"),
        "map": report["map"], "map_ci": report.get("map_ci"),
        "n_test": report["n_test"], "n_gallery": report["n_gallery"],
        "n_train_labelled": report.get("n_train_labelled"),
        "probe_C": (report.get("probe") or {}).get("C"),
        "test_support": report["classification"][prim].get("support"),
        # every classifier's test figures (the primary's are above; only the primary has intervals)
        "test_by_classifier": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]}
                               for k, v in report["classification"].items()},
        **split_summary(report, train_cfg, load_taxonomy(yaml_path)),
        "image_size": (train_cfg.get("model") or {}).get("backbone", {}).get("image_size"),
        "epochs": [train_cfg["stage1"]["epochs"], train_cfg["stage2"]["epochs"]], "batch_size": train_cfg["batch_size"],
        "train_seconds": round(result.seconds, 1), "train_wall_seconds": round(wall, 1),
        "eval_seconds": round(report.get("eval_seconds", float("nan")), 1),
        "completed": result.completed, "model": str(result.export_dir),
        **({"recipe": rec} if rec else {}),
    }


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/walkthrough", help="folder for the CSV, YAML and runs")
    p.add_argument("--exemplars", nargs="+", default=[str((here / d).resolve()) for d in DEFAULT_EXEMPLARS])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the default run (repeatable), e.g. --set loss.symbol_text=1")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    out = Path(args.out).resolve()
    csv_path, yaml_path, counts = build_task(args.exemplars, out)
    print(f"exemplars: {counts['smooth']} smooth, {counts['featured']} featured, {counts['n_skipped']} skipped "
          f"{counts['skipped']}; per folder {counts['per_folder']}", flush=True)
    print(f"wrote {csv_path} and {yaml_path}", flush=True)
    results = {"task": {"csv": str(csv_path), "taxonomy": str(yaml_path), **counts}}
    for name in args.runs:
        overrides = RUNS[name] + (list(args.set) if name == "galaxalign_default" else [])
        results[name] = run_one(name, overrides, csv_path, yaml_path, out, args.quiet)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()

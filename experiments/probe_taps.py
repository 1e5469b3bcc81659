"""Which frozen EfficientNet-Lite0 features separate real galaxies? (the recipe's `taps` choice)

Dev experiment on the real exemplars of ../shared/data (not shipped, not a test set of the product):
each exemplar illustrates one Galaxy Zoo answer, from which three binary tasks are derived
(smooth vs featured, edge-on vs not, bar vs no bar). Every exemplar is embedded at 224 px by the
offline image tower tapped at every stage and the head (``backbones.offline``, ``taps``), averaged
over the 8 dihedral views (``features.dihedral_view``), and a logistic regression is cross-validated
(5 folds x 4 repeats, per-fold standardisation, class-balanced) on each feature set. Prints JSON:
balanced accuracy per task and feature set, for the best C of (0.01, 0.1, 1).

    .venv/bin/python experiments/probe_taps.py [--shared ../shared/data] [--size 224]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

SETS = {"head": ["head"], "stage7": [7], "stage6": [6], "stage5": [5], "stages5-7": [5, 6, 7], "stages4-7": [4, 5, 6, 7]}


def task_label(question: str, answer: str, task: str):
    """0/1 label of an exemplar for ``task``, or None when its answer says nothing about it."""
    q, a = question.lower(), answer.lower()
    if task == "smooth_vs_featured":
        if "smooth and rounded" in q or "simply smooth" in q:
            return {"smooth": 0, "features or disk": 1, "features": 1}.get(a)
        if "how rounded" in q:
            return 0  # asked of smooth galaxies only
        if "odd" in q or "merging" in q:
            return None
        return 1  # every other question is asked of featured galaxies only
    if task == "edge_on":
        if "edge-on" in q:
            return {"yes": 1, "no": 0}.get(a)
        if "bulge at its cent" in q:
            return 1  # the edge-on bulge-shape question
        if any(k in q for k in ("bar feature", "spiral arm pattern", "how many spiral", "tightly", "how prominent")):
            return 0  # asked of face-on discs only
        return None
    if task == "bar":
        return {"bar": 1, "no bar": 0}.get(a) if "bar feature" in q else None
    raise ValueError(task)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from galaxalign.backbones.offline import build_offline
    from galaxalign.datasets import read_image
    from galaxalign.features import N_VIEWS, dihedral_view
    from galaxalign.transforms import eval_transform

    rows = []
    for folder in ("gz2-exemplars", "gama-exemplars"):
        with open(Path(args.shared) / folder / "manifest.csv", newline="") as f:
            rows += [(Path(args.shared) / folder / r["file"], r["question"], r["answer"]) for r in csv.DictReader(f)]
    taps = [1, 2, 3, 4, 5, 6, 7, "head"]
    backbone = build_offline({"image_size": args.size, "taps": taps})
    tower = backbone.visual.eval()
    widths = [s[-1]._block_args.output_filters for s in tower.stage_groups()] + [1280]
    offsets = dict(zip(taps, np.cumsum([0] + widths)[:-1]))
    sizes = dict(zip(taps, widths))
    transform = eval_transform(args.size, backbone.image_mean, backbone.image_std)
    torch.set_num_threads(2)
    feats = []
    with torch.no_grad():
        for s in range(0, len(rows), 32):
            x = torch.stack([transform(read_image(str(p))) for p, _, _ in rows[s : s + 32]])
            feats.append(torch.stack([tower.pooled(dihedral_view(x, k)) for k in range(N_VIEWS)]).mean(0).numpy())
    feats = np.concatenate(feats)

    out = {"n_exemplars": len(rows), "image_size": args.size, "tasks": {}}
    for task in ("smooth_vs_featured", "edge_on", "bar"):
        labels = [task_label(q, a, task) for _, q, a in rows]
        idx = np.array([i for i, lab in enumerate(labels) if lab is not None])
        y = np.array([labels[i] for i in idx])
        res = {}
        for name, chosen in SETS.items():
            x = np.concatenate([feats[idx, offsets[t] : offsets[t] + sizes[t]] for t in chosen], axis=1)
            weight = np.concatenate([np.full(sizes[t], sizes[t] ** -0.5) for t in chosen])  # each tap counts equally
            best = 0.0
            for c in (0.01, 0.1, 1.0):
                accs = []
                for rep in range(4):
                    for tr, te in StratifiedKFold(5, shuffle=True, random_state=rep).split(x, y):
                        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
                        xs = (x - mu) / sd * weight
                        clf = LogisticRegression(C=c * len(chosen), max_iter=3000, class_weight="balanced").fit(xs[tr], y[tr])
                        p = clf.predict(xs[te])
                        accs.append(np.mean([np.mean(p[y[te] == k] == k) for k in (0, 1)]))
                best = max(best, float(np.mean(accs)))
            res[name] = round(best, 3)
        out["tasks"][task] = {"n": int(len(y)), "per_class": np.bincount(y).tolist(), "balanced_accuracy": res}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

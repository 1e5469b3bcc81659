"""`galaxalign benchmark`: does fine-tuning pay on the user's own labelled galaxies?

For each seed, the catalog is split (stratified, seeded), ``labels`` training galaxies are kept
labelled, the default path trains on them (``galaxalign train`` with no options but the data) and
is evaluated on the test split; the off-the-shelf baselines (``evaluation.baselines``: a frozen
ImageNet probe and k-NN) learn from the same labelled galaxies and are scored on the same test
galaxies. Reported per method: accuracy, balanced accuracy, macro-F1, mAP (each test galaxy queries
the other test galaxies; relevant = same class), the test set's majority-class rate, and paired
bootstrap intervals of the default path minus each baseline over the same (seed, galaxy) pairs.

Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` into ``out``; each seed's run
folder (``seed-N/``) is resumable: a seed whose ``result.json`` exists is not trained again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

DEFAULT_SEEDS = (0, 1, 2)


def _per_galaxy(y: np.ndarray, pred: np.ndarray, ap: np.ndarray, num_classes: int) -> dict:
    from galaxalign.evaluation.metrics import macro_f1

    present = [c for c in range(num_classes) if (y == c).any()]
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(np.mean([np.mean(pred[y == c] == c) for c in present])),
        "macro_f1": float(macro_f1(y, pred, labels=present)),
        "map": float(np.nanmean(ap)),
        "correct": (pred == y).astype(int).tolist(),
        "average_precision": [None if np.isnan(a) else float(a) for a in ap],
    }


def _baselines(features: np.ndarray, index: dict, splits: dict, num_classes: int, seed: int) -> dict:
    from galaxalign.evaluation.baselines import probe_scores, unit
    from galaxalign.evaluation.classifiers import knn_classify
    from galaxalign.evaluation.retrieval import rank_gallery

    def rows(cat):
        return features[[index[i] for i in cat["id"].astype(str)]]

    tr, te = splits["train_labelled"], splits["test"]
    xtr, xte = rows(tr), rows(te)
    ytr, yte = tr["label"].to_numpy(np.int64), te["label"].to_numpy(np.int64)
    ids = te["id"].astype(str).to_numpy()
    ap = rank_gallery(unit(xte), yte, unit(xte), yte, query_ids=ids, gallery_ids=ids).ap
    probe = probe_scores(xtr, ytr, xte, num_classes, seed=seed).argmax(1)
    knn = knn_classify(xtr, ytr, xte, num_classes)[0]
    return {"frozen_probe": _per_galaxy(yte, probe, ap, num_classes),
            "frozen_knn": _per_galaxy(yte, knn, ap, num_classes)}


def run_seed(data: str, taxonomy: str, seed: int, labels: int | None, out: Path, features: np.ndarray, index: dict,
             *, val_fraction: float, test_fraction: float, overrides: tuple = (), progress: bool = True) -> dict:
    """Train and evaluate the default path and the baselines on one seeded split."""
    from galaxalign.datasets import splits_from_config
    from galaxalign.evaluation.protocol import evaluate_model
    from galaxalign.inference import load_model
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.training.config import load_config
    from galaxalign.training.trainer import train

    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    tax = load_taxonomy(taxonomy)
    base = [f"data.source={data}", f"data.taxonomy={taxonomy}", f"data.split_seed={seed}", f"data.label_seed={seed}",
            f"seed={seed}", f"data.val_fraction={val_fraction}", f"data.test_fraction={test_fraction}",
            f"out={out / 'train'}", "tensorboard=false"]
    cfg = load_config("default", base)
    splits, info = splits_from_config(cfg["data"], tax)
    n_train = len(splits["train_labelled"])
    if labels is not None and labels < n_train:
        cfg = load_config("default", base + [f"data.label_fraction={labels / n_train:.6f}", *overrides])
        splits, info = splits_from_config(cfg["data"], tax)
    else:
        cfg = load_config("default", base + list(overrides))
    from galaxalign.training.checkpoint import claim_run_folder

    claim_run_folder(cfg["out"], resume=False, overwrite=True, is_main=True)  # an interrupted seed starts afresh
    t0 = time.perf_counter()
    result = train(cfg, progress=progress)
    seconds = time.perf_counter() - t0
    model, _ = load_model(result.export_dir)
    test = splits["test"]
    ev = evaluate_model(model, tax, test, test, splits["train_labelled"], None, method=cfg["method"], plots=False,
                        progress=progress, val=splits["val"], seed=seed, n_resamples=200)
    pq = ev["per_query"]
    y = np.asarray(pq["label"], np.int64)
    ap = np.array([np.nan if a is None else a for a in pq["average_precision"]], dtype=np.float64)
    C = len(tax.class_names)
    methods = {"galaxalign": {**_per_galaxy(y, np.asarray(pq["predicted"]), ap, C),
                              "primary_classifier": ev["primary_classifier"], "train_seconds": seconds}}
    methods.update(_baselines(features, index, splits, C, seed))
    counts = np.bincount(y, minlength=C)
    out_row = {"seed": seed, "n_train_labelled": int(len(splits["train_labelled"])), "n_val": int(len(splits["val"])),
               "n_test": int(len(test)), "majority_rate": float(counts.max() / counts.sum()),
               "test_ids": test["id"].astype(str).tolist(), "labels": y.tolist(), "methods": methods,
               "recipe": (json.loads((Path(result.export_dir) / "config.json").read_text()).get("extra") or {}).get("recipe")}
    from galaxalign.runtime import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(done) as tmp:
        Path(tmp).write_text(json.dumps(out_row))
    return out_row


def paired(rows: list[dict], a: str, b: str, key: str, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` per (seed, galaxy) of ``key`` ('correct' or 'average_precision'), with a
    bootstrap interval resampling galaxies within each seed (the pairs stay paired)."""
    diffs = []
    for r in rows:
        x = np.array([np.nan if v is None else v for v in r["methods"][a][key]], dtype=np.float64)
        z = np.array([np.nan if v is None else v for v in r["methods"][b][key]], dtype=np.float64)
        d = x - z
        diffs.append(d[~np.isnan(d)])
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_resamples)
    for d in diffs:
        idx = rng.integers(0, len(d), size=(n_resamples, len(d)))
        boots += d[idx].mean(axis=1)
    boots /= len(diffs)
    mean = float(np.mean([d.mean() for d in diffs]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": mean, "ci": [float(lo), float(hi)]}


METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "map")


def summarise(rows: list[dict], n_resamples: int = 2000) -> dict:
    methods = list(rows[0]["methods"])
    table = {}
    for m in methods:
        table[m] = {k: float(np.mean([r["methods"][m][k] for r in rows])) for k in METRICS}
        table[m].update({f"{k}_by_seed": [r["methods"][m][k] for r in rows] for k in METRICS})
    comparisons = {}
    for b in methods[1:]:
        comparisons[f"galaxalign-{b}"] = {
            "accuracy": paired(rows, "galaxalign", b, "correct", n_resamples),
            "map": paired(rows, "galaxalign", b, "average_precision", n_resamples),
        }
    return {"seeds": [r["seed"] for r in rows], "majority_rate": float(np.mean([r["majority_rate"] for r in rows])),
            "n_train_labelled": [r["n_train_labelled"] for r in rows], "n_val": [r["n_val"] for r in rows],
            "n_test": [r["n_test"] for r in rows], "methods": table, "paired": comparisons,
            "train_seconds": [r["methods"]["galaxalign"]["train_seconds"] for r in rows],
            "primary_classifier": [r["methods"]["galaxalign"]["primary_classifier"] for r in rows],
            "recipe": rows[0].get("recipe")}


def markdown(summary: dict, command: str) -> str:
    s = summary
    lines = [f"Command: `{command}`", "",
             f"Seeds {s['seeds']}; labelled training galaxies {s['n_train_labelled']}, validation {s['n_val']}, "
             f"test {s['n_test']} per seed; test majority-class rate {s['majority_rate']:.3f}.", "",
             "| method | accuracy | balanced accuracy | macro-F1 | mAP |", "|---|---|---|---|---|"]
    for m, v in s["methods"].items():
        lines.append(f"| {m} | {v['accuracy']:.3f} | {v['balanced_accuracy']:.3f} | {v['macro_f1']:.3f} | {v['map']:.3f} |")
    lines += ["", "Paired differences (default path minus baseline, same test galaxies, 95 % bootstrap interval):", "",
              "| comparison | accuracy | mAP |", "|---|---|---|"]
    for name, c in s["paired"].items():
        a, m = c["accuracy"], c["map"]
        lines.append(f"| {name} | {a['mean']:+.3f} [{a['ci'][0]:+.3f}, {a['ci'][1]:+.3f}] | "
                     f"{m['mean']:+.3f} [{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}] |")
    lines += ["", f"Default-path training seconds per seed: {[round(t) for t in s['train_seconds']]}; "
              f"primary classifier chosen on validation: {s['primary_classifier']}."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary["methods"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [summary["methods"][m][k] for k in METRICS]
        ax.bar(np.arange(len(METRICS)) + i * width, vals, width, label=m)
    ax.axhline(summary["majority_rate"], color="k", ls="--", lw=1, label="majority class")
    ax.set_xticks(np.arange(len(METRICS)) + width * (len(methods) - 1) / 2, METRICS)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    from galaxalign.runtime import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_benchmark(data: str, taxonomy: str, out: str | Path, *, seeds=DEFAULT_SEEDS, labels: int | None = 300,
                  val_fraction: float = 0.1, test_fraction: float = 0.3, overrides: tuple = (), progress: bool = True,
                  command: str = "galaxalign benchmark") -> dict:
    from galaxalign.datasets import load_catalog
    from galaxalign.evaluation.baselines import imagenet_features
    from galaxalign.evaluation.report import write_json, write_text
    from galaxalign.taxonomy import load_taxonomy

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if not seeds:
        raise ValueError("benchmark needs at least one seed")
    if labels is not None and labels < 2:
        raise ValueError(f"--labels must be at least 2, got {labels}")
    tax = load_taxonomy(taxonomy)
    catalog = load_catalog(data, tax)
    catalog = catalog[catalog["label"] >= 0].reset_index(drop=True)
    if catalog["label"].nunique() < 2:
        raise ValueError(f"{data}: benchmark needs labelled galaxies of at least two classes")
    features = imagenet_features(catalog, progress=progress)
    index = {i: k for k, i in enumerate(catalog["id"].astype(str))}
    rows = []
    for seed in seeds:
        if progress:
            print(f"benchmark: seed {seed}", flush=True)
        rows.append(run_seed(str(data), str(taxonomy), int(seed), labels, out / f"seed-{seed}", features, index,
                             val_fraction=val_fraction, test_fraction=test_fraction, overrides=tuple(overrides),
                             progress=progress))
    summary = summarise(rows)
    summary["command"] = command
    write_json(summary, out / "benchmark.json")
    write_text(markdown(summary, command), out / "benchmark.md")
    plot(summary, out / "benchmark.png")
    return summary

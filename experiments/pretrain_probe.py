"""Frozen linear probe of a pretrained trunk base against ImageNet's, on real galaxies; and sim-to-real.

    PYTHONPATH=src python experiments/pretrain_probe.py --base runs/pretrain/base \
        --out experiments/results/pretrain_probe.json

1. gz1-sdss (``../shared/data/gz1-sdss``, manifest ``file,gz1_class,gz1_name``): elliptical / spiral
   (spiral_cw + spiral_acw) / edge_on, ``dont_know`` left out. Per seed a stratified split: ``--train``
   labelled galaxies, the rest test. Logistic regression on standardised pooled trunk features (the
   1280-wide head conv, and the recipe's taps: stages 5-7, 624 wide; mean-pooled), its C chosen by 5-fold cross-validation on the training galaxies
   only; accuracy and balanced accuracy on the test galaxies, and the paired bootstrap interval of
   (base - ImageNet) on the same test galaxies.
2. Sim-to-real, the protocol of ``galaxalign.evaluation.sim2real``'s fitted linear probe on trunk
   features: ``FIT_PER_CLASS`` rendered galaxies per Galaxy10 class (a survey rendered with a seed the
   pretraining never saw) fit the probe; the real exemplars (``realism.load_real_catalog``) of each
   survey (gz2-exemplars: SDSS, gama-exemplars: KiDS/GAMA) are classified. No real label is used to fit.

Features are computed once per (trunk, size, views) and cached beside ``--out``.
"""
from __future__ import annotations

import argparse
import warnings
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

GZ1_CLASSES = {"elliptical": 0, "spiral_cw": 1, "spiral_acw": 1, "edge_on": 2}
GZ1_NAMES = ["elliptical", "spiral", "edge_on"]
FEATURE_SETS = {"head": slice(624, None), "taps5-7": slice(0, 624)}


def trunk(base: str | None):
    from galaxalign.backbones import create_backbone

    # One pass gives both feature sets: the recipe's taps (stages 5-7, 624 wide) and the head conv (1280).
    tower = create_backbone({"kind": "offline", "image_size": 224, "taps": [5, 6, 7, "head"],
                             **({"init": base} if base else {})}).visual
    return tower.eval()


def read_images(paths) -> list[np.ndarray]:
    from galaxalign.datasets import ImageReader

    reader = ImageReader()
    return [reader(str(p)) for p in paths]


@torch.no_grad()
def pooled(tower, images: list[np.ndarray], size: int, dihedral: bool, batch: int = 32) -> np.ndarray:
    """(N, F) mean-pooled head-conv features at ``size`` px, averaged over the 8 dihedral views if asked."""
    from galaxalign.backbones.offline import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
    from galaxalign.transforms import eval_transform

    tf = eval_transform(size, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    out = []
    for s in range(0, len(images), batch):
        x = torch.stack([tf(im) for im in images[s:s + batch]])
        views = [x] if not dihedral else [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]
        out.append(torch.stack([tower.pooled(v) for v in views]).mean(0).numpy())
    return np.concatenate(out)


def cached(path: Path, fn):
    if path.exists():
        return np.load(path)
    value = fn()
    np.save(path, value)
    return value


def probe(train_x, train_y, test_x, seed: int):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=np.logspace(-4, 1, 11).tolist(), cv=5, max_iter=3000,
                                                               random_state=seed))
    clf.fit(train_x, train_y)
    return clf.predict(test_x)


def balanced_accuracy(y, p) -> float:
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


def paired_balanced_interval(y, pa, pb, seed: int, n: int = 2000) -> dict:
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(len(y), size=len(y))
        diffs.append(balanced_accuracy(y[i], pa[i]) - balanced_accuracy(y[i], pb[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": balanced_accuracy(y, pa) - balanced_accuracy(y, pb), "ci": [float(lo), float(hi)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="trunk base written by `galaxalign pretrain`")
    ap.add_argument("--data", default="../shared/data", help="folder with gz1-sdss, gz2-exemplars, gama-exemplars")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    ap.add_argument("--dihedral-max-size", type=int, default=96, help="dihedral-average features at sizes up to this")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--features-only", choices=["imagenet", "pretrained"], default=None,
                    help="compute (and cache) one trunk's features, then stop: lets ImageNet's run before the base exists")
    ap.add_argument("--limit", type=int, default=None, help="first N gz1 galaxies only (a smoke run, not a measurement)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn API notices, not results
    if args.threads:
        torch.set_num_threads(args.threads)
    from sklearn.model_selection import train_test_split

    from galaxalign.evaluation.bootstrap import paired_bootstrap_diff
    from galaxalign.evaluation.sim2real import DEFAULT_CROP, FIT_PER_CLASS, centre_crop
    from galaxalign.realism import load_real_catalog
    from galaxalign.survey import generate_survey
    from galaxalign.taxonomy import load_taxonomy

    t0 = time.perf_counter()
    data = Path(args.data)
    out = Path(args.out)
    cache = out.parent / f".{out.stem}-features"
    cache.mkdir(parents=True, exist_ok=True)
    base_meta = {} if args.features_only == "imagenet" else json.loads((Path(args.base) / "base.json").read_text())
    tag = "t" + base_meta.get("weights_sha256", "")[:10]

    table = pd.read_csv(data / "gz1-sdss" / "manifest.csv")
    table = table[table["gz1_name"].isin(GZ1_CLASSES)].reset_index(drop=True)
    if args.limit:
        table = table.sample(n=min(args.limit, len(table)), random_state=0).reset_index(drop=True)
    y = table["gz1_name"].map(GZ1_CLASSES).to_numpy()
    gz1 = read_images([data / "gz1-sdss" / f for f in table["file"]])

    tax = load_taxonomy("galaxy10_decals")
    fit_h5 = cache / "fit_survey_n1000_s128_seed9001.h5"
    if not fit_h5.exists():
        generate_survey(fit_h5, 1000, size=128, seed=9001, workers=1, progress=False)
    from galaxalign.datasets import load_catalog

    fit_cat = load_catalog(fit_h5, tax)
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(fit_cat["label"] == c),
                                              min(FIT_PER_CLASS, int((fit_cat["label"] == c).sum())), replace=False)
                                   for c in np.unique(fit_cat["label"])]))
    import h5py

    with h5py.File(fit_h5, "r") as h5:
        fit_images = list(h5["images"][np.sort(keep)])
    fit_y = fit_cat["label"].to_numpy()[keep]
    reals = {}
    for name in ("gz2-exemplars", "gama-exemplars"):
        cat = load_real_catalog(data / name, tax)
        cat = cat[cat["label"] >= 0].reset_index(drop=True)
        reals[name] = ([centre_crop(im, DEFAULT_CROP) for im in read_images(cat["file_loc"])], cat["label"].to_numpy())

    results: dict = {"base": str(args.base), "base_meta": {k: base_meta.get(k) for k in ("steps", "image_size", "survey", "final_loss", "final_answer_acc")},
                     "gz1_sdss": {}, "sim_to_real": {}, "n_gz1": int(len(y)), "train": args.train, "seeds": args.seeds}
    names = [args.features_only] if args.features_only else ["imagenet", "pretrained"]
    towers = {n: trunk(None if n == "imagenet" else args.base) for n in names}
    for size in args.sizes:
        dih = size <= args.dihedral_max_size
        key = f"{size}px" + ("_dihedral" if dih else "")
        feats = {}
        for name, tower in towers.items():
            t = tag if name == "pretrained" else "timagenet"
            feats[name] = {
                "gz1": cached(cache / f"{t}_gz1_{key}.npy", lambda: pooled(tower, gz1, size, dih)),
                "fit": cached(cache / f"{t}_fit_{key}.npy", lambda: pooled(tower, fit_images, size, dih)),
                **{r: cached(cache / f"{t}_{r}_{key}.npy", lambda: pooled(tower, reals[r][0], size, dih)) for r in reals},
            }
            print(f"features {name} {key}: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.features_only:
            continue
        for fs, cols in FEATURE_SETS.items():
            rows = []
            for seed in args.seeds:
                tr, te = train_test_split(np.arange(len(y)), train_size=args.train, stratify=y, random_state=seed)
                preds = {n: probe(f["gz1"][tr][:, cols], y[tr], f["gz1"][te][:, cols], seed) for n, f in feats.items()}
                yt = y[te]
                row = {"seed": seed, "n_test": int(len(te))}
                for n, p in preds.items():
                    row[n] = {"accuracy": float(np.mean(p == yt)), "balanced_accuracy": balanced_accuracy(yt, p)}
                row["accuracy_difference"] = paired_bootstrap_diff(preds["pretrained"] == yt, preds["imagenet"] == yt, seed=seed)
                row["balanced_accuracy_difference"] = paired_balanced_interval(yt, preds["pretrained"], preds["imagenet"], seed)
                rows.append(row)
                print(fs, key, json.dumps(row), flush=True)
            results["gz1_sdss"][f"{key}_{fs}"] = {
                "per_seed": rows,
                "mean": {n: {m: float(np.mean([r[n][m] for r in rows])) for m in ("accuracy", "balanced_accuracy")}
                         for n in towers},
            }
            s2r = {}
            for n, f in feats.items():
                from sklearn.linear_model import LogisticRegression
                from sklearn.pipeline import make_pipeline
                from sklearn.preprocessing import StandardScaler

                clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(f["fit"][:, cols], fit_y)
                s2r[n] = {}
                for r, (_, ry) in reals.items():
                    p = clf.predict(f[r][:, cols])
                    s2r[n][r] = {"n": int(len(ry)), "accuracy": float(np.mean(p == ry))}
            results["sim_to_real"][f"{key}_{fs}"] = s2r
            print(json.dumps({f"{key}_{fs}": s2r}), flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out} in {results['seconds']} s")


if __name__ == "__main__":
    main()

"""Off-the-shelf baselines a fine-tune must beat, on the same galaxies.

``frozen_probe``: what a user gets in ten lines without this tool: an ImageNet EfficientNet-Lite0
at 224 px on the whole cutout, its pooled head features (1280 wide), standardised, and a logistic
regression (scikit-learn defaults, C = 1). ``frozen_knn``: cosine k-NN on the same features.
Both learn only from the labelled training galaxies.
"""
from __future__ import annotations

import numpy as np

PROBE_IMAGE = "efficientnet-lite0"
PROBE_SIZE = 224


def imagenet_features(catalog, *, image: str = PROBE_IMAGE, image_size: int = PROBE_SIZE, batch_size: int = 32,
                      progress: bool = True, use_cache: bool = True) -> np.ndarray:
    """(N, 1280) float32 pooled head features of the ImageNet tower, one view (no crop, no averaging).

    Stored under ``cache_dir()/baselines/`` by galaxy key (``features.catalog_keys``: id, file, size,
    modification time), so a second benchmark on the same catalog computes nothing."""
    from galaxalign.features import FeatureStore, catalog_keys
    from galaxalign.runtime import cache_dir

    keys = catalog_keys(catalog)
    store = FeatureStore(cache_dir() / "baselines" / f"{image}-{int(image_size)}-v2", 1280, views=1) if use_cache else None
    found = np.zeros(len(keys), bool)
    out = np.zeros((len(keys), 1280), np.float32)
    if store is not None:
        found, views = store.lookup(keys)
        out[found] = views[found, 0]
    missing = np.flatnonzero(~found)
    if len(missing):
        fresh = _compute_features(catalog.iloc[missing], image, image_size, batch_size, progress)
        out[missing] = fresh
        if store is not None:
            store.add([keys[i] for i in missing], fresh[:, None])
    return out


def _compute_features(catalog, image: str, image_size: int, batch_size: int, progress: bool) -> np.ndarray:
    import torch

    from galaxalign.backbones import create_backbone
    from galaxalign.datasets import GalaxyDataset
    from galaxalign.transforms import eval_transform

    backbone = create_backbone({"kind": "offline", "image": image, "image_size": int(image_size)})
    tower = backbone.visual.eval()
    transform = eval_transform(int(image_size), backbone.image_mean, backbone.image_std)
    loader = torch.utils.data.DataLoader(GalaxyDataset(catalog, transform), batch_size=batch_size, shuffle=False)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(catalog), desc=f"ImageNet features, {len(catalog)} galaxies", unit="galaxy", leave=False)
    with torch.no_grad():
        for x, _ in loader:
            out.append(tower.pooled(x).float().numpy())
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, tower.feature_width), np.float32)


def probe_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, num_classes: int,
                 seed: int = 0) -> np.ndarray:
    """(N, C) class probabilities of a standardised logistic regression (C = 1) fitted on the train rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    clf.fit(train_x, train_y)
    scores = np.zeros((len(query_x), num_classes))
    scores[:, clf.classes_] = clf.predict_proba(query_x)
    return scores


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


SMALL_VAL = 100  # below this many validation galaxies the frozen probe is scored by cross-validation


def frozen_probe_candidate(train_labelled, val, test, num_classes: int, seed: int, progress: bool) -> dict:
    """The frozen ImageNet probe's test predictions and its validation (or CV) accuracy and log-loss."""
    import pandas as pd

    both = pd.concat([train_labelled, val, test], ignore_index=True)
    feats = imagenet_features(both, progress=progress)
    ntr, nva = len(train_labelled), len(val)
    xtr, xva, xte = feats[:ntr], feats[ntr : ntr + nva], feats[ntr + nva :]
    ytr, yva = train_labelled["label"].to_numpy(np.int64), val["label"].to_numpy(np.int64)
    test_scores = probe_scores(xtr, ytr, xte, num_classes, seed=seed)
    if nva >= SMALL_VAL:
        vs = probe_scores(xtr, ytr, xva, num_classes, seed=seed)
        acc, loss, how = float(np.mean(vs.argmax(1) == yva)), _log_loss(vs, yva), "val"
    else:
        from sklearn.model_selection import StratifiedKFold

        x, y = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
        folds = max(2, min(5, int(np.bincount(y)[np.bincount(y) > 0].min())))
        oof = np.zeros((len(y), num_classes))
        for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            oof[b] = probe_scores(x[a], y[a], x[b], num_classes, seed=seed) if np.unique(y[a]).size >= 2 else 1.0 / num_classes
        acc, loss, how = float(np.mean(oof.argmax(1) == y)), _log_loss(oof, y), f"{folds}-fold CV on train+val"
    return {"test": (test_scores.argmax(1), test_scores), "val_accuracy": acc, "val_log_loss": loss, "scored_by": how}


def _log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(scores, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())

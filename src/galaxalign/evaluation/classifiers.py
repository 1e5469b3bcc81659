"""Classifiers on frozen embeddings: zero-shot prototypes, linear probe, nearest centroid, k-NN.

All take L2-normalised float embeddings (``inference.embed_catalog`` output) and return predicted
class ids plus a (N, C) score matrix whose rows sum to 1, so every method reports the same way.
"""
from __future__ import annotations

import numpy as np

# OUR CHOICE: zero-shot scores are softmax(100 * cosine), CLIP's usual inverse temperature; the
# ranking (and so the prediction) does not depend on it, only how peaked the printed scores are.
ZERO_SHOT_SCALE = 100.0
KNN_K = 10  # OUR CHOICE: k = 10, cosine, votes weighted by (1 + cosine) / 2
PROBE_C = 1.0  # scikit-learn's default L2 strength: used only when there is no validation split
# OUR CHOICE: the probe's inverse L2 strength is picked on the validation split from this grid (never on
# test); C = 1 underfits unit-length embeddings. Ties go to the smaller C (stronger regularisation).
PROBE_C_GRID = (0.1, 1.0, 10.0, 100.0)


def _unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (N, D), got shape {x.shape}")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prototype_classify(
    embeddings: np.ndarray, prototypes: np.ndarray, scale: float = ZERO_SHOT_SCALE
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot: each galaxy goes to the class prototype (text, symbol or fused) it is most similar to."""
    e = _unit(embeddings, "embeddings")
    p = _unit(prototypes, "prototypes")
    if e.shape[1] != p.shape[1]:
        raise ValueError(f"embedding dim {e.shape[1]} != prototype dim {p.shape[1]}")
    cos = e @ p.T
    return cos.argmax(axis=1), softmax(scale * cos)


def nearest_centroid(train_emb: np.ndarray, train_labels: np.ndarray, query_emb: np.ndarray, num_classes: int):
    """Cosine nearest class centroid of labelled training embeddings; (pred, scores)."""
    dim = train_emb.shape[1]
    centroids = np.zeros((num_classes, dim), np.float32)
    for c in range(num_classes):
        members = train_emb[train_labels == c]
        if len(members):
            centroids[c] = members.mean(0)
    return prototype_classify(query_emb, centroids)


def knn_classify(
    train_emb: np.ndarray,
    train_labels,
    query_emb: np.ndarray,
    num_classes: int,
    k: int = KNN_K,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-weighted vote of the k most similar labelled galaxies (cosine).

    ``exclude[i]``: index of a training galaxy that query i must not vote with (itself, when the
    queries are training galaxies), or -1.
    """
    g = _unit(train_emb, "train embeddings")
    q = _unit(query_emb, "query embeddings")
    y = np.asarray(train_labels, dtype=np.int64)
    if y.shape != (g.shape[0],):
        raise ValueError(f"{g.shape[0]} train embeddings but {y.size} labels")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, g.shape[0])
    votes = np.zeros((q.shape[0], num_classes))
    for s in range(0, q.shape[0], 1024):
        sim = q[s : s + 1024] @ g.T
        if exclude is not None:
            ex = np.asarray(exclude[s : s + 1024])
            rows = np.nonzero(ex >= 0)[0]
            sim[rows, ex[rows]] = -np.inf
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.take_along_axis(sim, nn, axis=1)
        # (1 + cos) / 2 lies in [0, 1]: closer neighbours weigh more, none votes against its class.
        w = np.where(np.isfinite(w), (1.0 + w) / 2.0 + 1e-6, 0.0)
        rows = np.repeat(np.arange(nn.shape[0]), k)
        np.add.at(votes[s : s + 1024], (rows, y[nn].ravel()), w.ravel())
    scores = votes / votes.sum(axis=1, keepdims=True)
    return scores.argmax(axis=1), scores


class LinearProbe:
    """Multinomial logistic regression on frozen image embeddings (scikit-learn)."""

    def __init__(self, num_classes: int, C: float = PROBE_C, max_iter: int = 2000, seed: int = 0):
        self.num_classes = num_classes
        self.C, self.max_iter, self.seed = C, max_iter, seed
        self._model = None

    def fit(self, embeddings: np.ndarray, labels) -> "LinearProbe":
        from sklearn.linear_model import LogisticRegression

        x = _unit(embeddings, "probe embeddings")
        y = np.asarray(labels, dtype=np.int64)
        if np.unique(y).size < 2:
            raise ValueError("a linear probe needs training galaxies of at least two classes")
        self._model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        self._model.fit(x, y)
        return self

    def predict_scores(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._model is None:
            raise RuntimeError("LinearProbe.fit must be called first")
        proba = self._model.predict_proba(_unit(embeddings, "embeddings"))
        scores = np.zeros((proba.shape[0], self.num_classes))
        scores[:, self._model.classes_] = proba  # classes absent from training keep score 0
        return scores.argmax(axis=1), scores


def choose_probe_c(train_emb, train_labels, val_emb, val_labels, num_classes: int,
                   grid=PROBE_C_GRID, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The C of ``grid`` whose probe, fitted on the training galaxies, is most accurate on the validation
    galaxies. Returns ``(C, {str(C): validation accuracy})``."""
    yv = np.asarray(val_labels, dtype=np.int64)
    if yv.size == 0:
        raise ValueError("choosing the probe's C needs labelled validation galaxies")
    scores: dict[str, float] = {}
    best_c, best = None, -1.0
    for c in sorted(float(c) for c in grid):
        pred, _ = LinearProbe(num_classes, C=c, seed=seed).fit(train_emb, train_labels).predict_scores(val_emb)
        acc = float((pred == yv).mean())
        scores[f"{c:g}"] = acc
        if acc > best:
            best_c, best = c, acc
    return best_c, scores

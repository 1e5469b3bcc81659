"""Report figures: confusion matrices and a grid of search queries with their top retrievals."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from galaxalign.runtime import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return out_png


def plot_confusion_matrix(
    cm, class_names: Sequence[str], out_png: str | Path, title: str = "", normalize: bool = True
) -> Path:
    """Rows = true class, columns = predicted; cells show row fractions and counts."""
    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {n} class names")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) if normalize else cm
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                dark = frac[i, j] > 0.5
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=6, color="white" if dark else "black")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out_png)


GREEN = (44, 160, 44)
RED = (214, 39, 40)
GREY = (40, 40, 40)


def _thumbnail(img: np.ndarray, size: int, border: int, colour) -> np.ndarray:
    from PIL import Image

    img = np.asarray(img, dtype=np.uint8)
    inner = size - 2 * border
    thumb = np.asarray(Image.fromarray(img[:, :, :3]).resize((inner, inner), Image.BILINEAR))
    cell = np.empty((size, size, 3), np.uint8)
    cell[:] = colour
    cell[border : border + inner, border : border + inner] = thumb
    return cell


def plot_retrieval_grid(
    query_image: Callable[[int], np.ndarray],
    query_labels,
    gallery_image: Callable[[int], np.ndarray],
    gallery_labels,
    top_indices: np.ndarray,
    class_names: Sequence[str],
    out_png: str | Path,
    queries: Sequence[int],
    top_n: int = 5,
    title: str = "",
    thumb: int = 72,
) -> Path:
    """One row per query: the query (grey frame), then its top retrievals framed green (same class) or red.

    The thumbnails are tiled into one array and drawn once (one image, not one axes per cell), which
    keeps a 10 x 6 grid well under a second to render.
    """
    plt = _pyplot()
    queries = list(queries)
    top_n = min(top_n, top_indices.shape[1])
    short = [n.replace(" Galaxies", "").replace(" Galaxy", "") for n in class_names]
    pad, label_h = 4, 14
    cell_h = thumb + label_h
    canvas = np.full((len(queries) * cell_h + pad, (top_n + 1) * (thumb + pad) + pad, 3), 255, np.uint8)
    labels = []
    for r, qi in enumerate(queries):
        ql = int(query_labels[qi])
        cells = [("query", query_image(qi), ql, GREY)]
        for j in range(top_n):
            gi = int(top_indices[qi, j])
            gl = int(gallery_labels[gi])
            cells.append((f"#{j + 1}", gallery_image(gi), gl, GREEN if gl == ql else RED))
        for c, (tag, img, lab, colour) in enumerate(cells):
            y, x = r * cell_h + label_h, pad + c * (thumb + pad)
            canvas[y : y + thumb, x : x + thumb] = _thumbnail(img, thumb, 3, colour)
            name = short[lab] if 0 <= lab < len(short) else str(lab)
            labels.append((x + thumb / 2, y - 2, f"{tag}: {name}"))
    dpi = 100
    fig = plt.figure(figsize=(canvas.shape[1] / dpi * 1.6, canvas.shape[0] / dpi * 1.6), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=5.5)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, out_png)


def pick_grid_queries(labels, n: int, seed: int = 0) -> list[int]:
    """One query per class first (classes in order), then random ones, so every class shows up."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        picked.append(int(rng.choice(np.nonzero(labels == c)[0])))
    rest = [i for i in rng.permutation(len(labels)) if i not in set(picked)]
    return (picked + [int(i) for i in rest])[:n]

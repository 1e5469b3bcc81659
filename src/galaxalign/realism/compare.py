"""Rendered versus real galaxies: measure both sets, compare distributions, draw plots and a grid.

A statistic's distance is the two-sample Kolmogorov–Smirnov statistic (with its p-value) and the
1-D Wasserstein distance divided by the real set's spread, overall and per class where the real
galaxies carry labels. ``compare_survey`` does everything and writes one output folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from galaxalign.realism.morphology import STATISTICS, galaxy_statistics
from galaxalign.runtime import atomic_path
from galaxalign.taxonomy import Taxonomy, load_taxonomy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------------
# Reading the two sets


def load_real_catalog(source: str | Path, taxonomy: Taxonomy) -> pd.DataFrame:
    """Real galaxies as a catalog (``id``, ``label``, ``source``, ``file_loc``); label -1 if unknown.

    Accepts a folder with a ``manifest.csv`` (columns ``file`` and ``galaxy10_class``, the
    gz2-exemplars layout), a bare folder of images (all unlabelled), or anything
    ``galaxalign.datasets.load_catalog`` reads (a CSV with ``filepath,label``, a Galaxy10 HDF5).
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"real galaxies: {source} does not exist")
    if source.is_dir():
        manifest = source / "manifest.csv"
        if manifest.exists():
            return _read_manifest(manifest, taxonomy)
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"real galaxies: {source} has no manifest.csv and no .jpg/.png images")
        return pd.DataFrame(
            {"id": [p.stem for p in files], "label": -1, "source": [str(p) for p in files], "file_loc": [str(p) for p in files]}
        )
    from galaxalign.datasets import load_catalog  # the general reader (CSV, HDF5, GZ2 parquet)

    return load_catalog(source, taxonomy)


def _read_manifest(manifest: Path, taxonomy: Taxonomy) -> pd.DataFrame:
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "file" not in table.columns:
        raise ValueError(f"{manifest}: needs a 'file' column (found {list(table.columns)})")
    label_col = next((c for c in ("galaxy10_class", "label") if c in table.columns), None)
    rows = []
    for i, r in table.iterrows():
        path = manifest.parent / r["file"]
        if not path.exists():
            raise FileNotFoundError(f"{manifest}, row {i + 2}: image {r['file']!r} not found in {manifest.parent}")
        raw = r[label_col].strip() if label_col else ""
        try:
            label = taxonomy.class_id(raw) if raw else -1
        except KeyError as exc:
            raise ValueError(f"{manifest}, row {i + 2}, field {label_col!r}: {exc.args[0]}") from None
        rows.append({"id": Path(r["file"]).stem, "label": label, "source": str(path), "file_loc": str(path)})
    return pd.DataFrame(rows)


def read_images(catalog: pd.DataFrame) -> list[np.ndarray]:
    """uint8 RGB arrays for every catalog row (files or HDF5 rows), read by ``datasets.read_image``'s reader."""
    from galaxalign.datasets import ImageReader

    reader = ImageReader()
    try:
        return [reader(row) for row in catalog.to_dict("records")]
    finally:
        reader.close()


def sample_catalog(catalog: pd.DataFrame, max_per_class: int | None = None, seed: int = 0) -> pd.DataFrame:
    """At most ``max_per_class`` rows of each label, drawn with ``seed``, in catalog order."""
    labels = catalog["label"].to_numpy(np.int64)
    rng = np.random.default_rng(seed)
    keep = [np.zeros(0, np.int64)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if max_per_class is not None and idx.size > max_per_class:
            idx = rng.choice(idx, max_per_class, replace=False)
        keep.append(idx)
    return catalog.iloc[np.sort(np.concatenate(keep))]


def sample_survey(survey, max_per_class: int | None = None, seed: int = 0, taxonomy: Taxonomy | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W,3), labels) of a rendered survey, at most ``max_per_class`` each.

    ``survey``: a catalog, or any source ``datasets.load_catalog`` reads (a Galaxy10-layout HDF5).
    """
    from galaxalign.datasets import load_catalog

    if isinstance(survey, (str, Path)) and not Path(survey).exists():
        raise FileNotFoundError(f"survey: {survey} does not exist")
    catalog = survey if isinstance(survey, pd.DataFrame) else load_catalog(survey, taxonomy)
    chosen = sample_catalog(catalog, max_per_class, seed)
    images = read_images(chosen)
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"survey {survey if not isinstance(survey, pd.DataFrame) else 'catalog'}: images differ in size {sorted(shapes)[:3]}; a rendered survey has one size")
    return np.stack(images), chosen["label"].to_numpy(np.int64)


# ---------------------------------------------------------------------------------------------
# Measuring


def measure_galaxies(images, labels, size: int | None = None, progress: bool = True, desc: str = "measuring") -> pd.DataFrame:
    """One row of statistics per galaxy (plus ``label``, ``flag``, ``failed``, ``error``)."""
    from tqdm.auto import tqdm

    rows = []
    for i, (image, label) in enumerate(tqdm(list(zip(images, labels)), desc=desc, disable=not progress, leave=False)):
        row = galaxy_statistics(np.asarray(image), size=size)
        row = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}
        rows.append({"index": i, "label": int(label), **row})
    return pd.DataFrame(rows, columns=["index", "label", *STATISTICS, "flag", "flag_sersic", "failed", "error"])


# ---------------------------------------------------------------------------------------------
# Distances


def spread(values) -> float:
    """Robust std of a sample (1.4826 x MAD), or the plain std when the MAD is 0; NaN dropped.

    OUR CHOICE: robust, so that one outlier in a small real set does not shrink every distance.
    """
    b = np.asarray(values, np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return float("nan")
    s = 1.4826 * float(np.median(np.abs(b - np.median(b))))
    return s if s > 0 else float(np.std(b))


def distance(rendered, real, scale: float | None = None) -> dict:
    """KS statistic and p-value, and Wasserstein distance / ``scale``, of two samples (NaN dropped).

    ``scale`` defaults to the real sample's ``spread``; per-class comparisons pass the spread of
    the whole real set so that classes with one or two real galaxies still get a distance in the
    same units.
    """
    from scipy import stats

    a = np.asarray(rendered, np.float64)
    b = np.asarray(real, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = {
        "n_rendered": int(a.size),
        "n_real": int(b.size),
        "median_rendered": float(np.median(a)) if a.size else None,
        "median_real": float(np.median(b)) if b.size else None,
        "ks": None,
        "ks_pvalue": None,
        "wasserstein_norm": None,
    }
    if a.size == 0 or b.size == 0:
        return out
    ks = stats.ks_2samp(a, b)
    scale = spread(b) if scale is None else scale
    w = stats.wasserstein_distance(a, b)
    out.update(
        ks=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        wasserstein_norm=float(w / scale) if np.isfinite(scale) and scale > 0 else None,
    )
    return out


def compare_statistics(rendered: pd.DataFrame, real: pd.DataFrame, taxonomy: Taxonomy) -> dict:
    """The JSON summary: per statistic overall, and per class (real galaxies with a label)."""
    summary = {
        "statistics": dict(STATISTICS),
        "overall": {s: distance(rendered[s], real[s]) for s in STATISTICS},
        "per_class": {},
        "failures": {
            "rendered": _failures(rendered),
            "real": _failures(real),
        },
    }
    for spec in taxonomy.classes:
        ren = rendered[rendered["label"] == spec.id]
        rea = real[real["label"] == spec.id]
        if rea.empty or ren.empty:
            continue
        # OUR CHOICE: per class, divide by the overall real spread: the real classes are tiny (1-6
        # exemplars here), so their own spread is undefined or noise; same units as overall.
        summary["per_class"][spec.name] = {s: distance(ren[s], rea[s], spread(real[s])) for s in STATISTICS}
    ranked = [(s, d["wasserstein_norm"]) for s, d in summary["overall"].items() if d["wasserstein_norm"] is not None]
    summary["largest_gaps"] = [s for s, _ in sorted(ranked, key=lambda x: -x[1])]
    return summary


def _failures(table: pd.DataFrame) -> dict:
    """How many galaxies statmorph could not measure (flag 2 or raised), and the flag counts."""
    flags = table["flag"].value_counts().to_dict()
    return {
        "n": int(len(table)),
        "failed": int(table["failed"].sum()),
        "flags": {str(int(k)): int(v) for k, v in sorted(flags.items())},
        "sersic_flag_2": int((table["flag_sersic"] == 2).sum()),
    }


# ---------------------------------------------------------------------------------------------
# Pictures


def plot_distributions(rendered: pd.DataFrame, real: pd.DataFrame, out_png: str | Path, summary: dict | None = None) -> Path:
    """Histograms of every statistic, rendered vs real, one panel each, in one PNG (title: KS and
    normalised Wasserstein distance from ``summary``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(STATISTICS)
    cols = 5
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.2 * rows))
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for stat, ax in zip(names, axes.flat):
        _histogram(ax, rendered[stat], real[stat], stat, (summary or {}).get("overall", {}).get(stat))
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=65, format="png")
    plt.close(fig)
    return out_png


def _histogram(ax, rendered, real, stat: str, dist: dict | None) -> None:
    a = np.asarray(rendered, np.float64)
    b = np.asarray(real, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    both = np.concatenate([a, b])
    if both.size == 0:
        ax.set_title(f"{stat}: no values", fontsize=8)
        return
    lo, hi = np.percentile(both, [2, 98])  # a few statmorph outliers would squash the rest
    if hi <= lo:
        lo, hi = both.min() - 0.5, both.max() + 0.5
    bins = np.linspace(lo, hi, 25)
    ax.hist(np.clip(a, lo, hi), bins=bins, density=True, alpha=0.55, color="tab:orange", label=f"rendered ({a.size})")
    ax.hist(np.clip(b, lo, hi), bins=bins, density=True, alpha=0.55, color="tab:blue", label=f"real ({b.size})")
    title = stat
    if dist and dist.get("ks") is not None:
        title += f"\nKS {dist['ks']:.2f}"
        if dist.get("wasserstein_norm") is not None:
            title += f"  W/spread {dist['wasserstein_norm']:.2f}"
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)


def picture_grid(
    rendered_images,
    rendered_labels,
    real_images,
    real_labels,
    taxonomy: Taxonomy,
    out_png: str | Path,
    per_side: int = 4,
    tile: int = 64,
    seed: int = 0,
) -> Path:
    """One row per class: ``per_side`` rendered galaxies, a gap, ``per_side`` real ones (blank
    where the real set has none of that class). Real cutouts are shown whole, resized to the tile."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    label_w, gap = 150, 8
    width = label_w + 2 * per_side * tile + gap
    head = 16
    canvas = Image.new("RGB", (width, head + len(taxonomy) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 2), "rendered", fill=(0, 0, 0))
    draw.text((label_w + per_side * tile + gap, 2), "real", fill=(0, 0, 0))
    for spec in taxonomy.classes:
        y = head + spec.id * tile
        draw.text((4, y + tile // 2 - 6), f"{spec.id} {spec.name}"[:24], fill=(0, 0, 0))
        for side, (images, labels) in enumerate(((rendered_images, rendered_labels), (real_images, real_labels))):
            idx = np.flatnonzero(np.asarray(labels) == spec.id)
            if idx.size > per_side:
                idx = np.sort(rng.choice(idx, per_side, replace=False))
            x0 = label_w + side * (per_side * tile + gap)
            for k, i in enumerate(idx):
                thumb = Image.fromarray(np.asarray(images[i])).resize((tile, tile), Image.BILINEAR)
                canvas.paste(thumb, (x0 + k * tile, y))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return out_png


# ---------------------------------------------------------------------------------------------
# Everything


def compare_survey(
    survey: str | Path | pd.DataFrame,
    real_source: str | Path | pd.DataFrame,
    out_dir: str | Path,
    taxonomy: str | Taxonomy = "galaxy10_decals",
    max_per_class: int | None = 50,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure a rendered survey and a real set, write the comparison, return the JSON summary.

    ``survey`` and ``real_source``: catalogs, or sources that ``load_catalog`` (``load_real_catalog``
    for the real set) reads.

    Writes ``summary.json``, ``rendered_statistics.csv``, ``real_statistics.csv``,
    ``distributions.png`` (a histogram panel per statistic) and ``grid.png`` into ``out_dir``.
    """
    taxonomy = load_taxonomy(taxonomy) if isinstance(taxonomy, (str, Path)) else taxonomy
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ren_images, ren_labels = sample_survey(survey, max_per_class, seed, taxonomy)
    if len(ren_images) == 0:
        raise ValueError(f"survey {survey}: no galaxies")
    size = int(ren_images.shape[1])
    catalog = real_source if isinstance(real_source, pd.DataFrame) else load_real_catalog(real_source, taxonomy)
    if max_per_class is not None:
        # Unlabelled real galaxies are kept whole (they feed the overall comparison); labelled ones capped.
        labelled = catalog[catalog["label"] >= 0].groupby("label", group_keys=False).head(max_per_class)
        catalog = pd.concat([catalog[catalog["label"] < 0], labelled]).sort_index()
    real_images = read_images(catalog)
    real_labels = catalog["label"].to_numpy()

    rendered = measure_galaxies(ren_images, ren_labels, size=None, progress=progress, desc="rendered")
    real = measure_galaxies(real_images, real_labels, size=size, progress=progress, desc="real")
    real.insert(1, "id", catalog["id"].to_numpy())

    summary = compare_statistics(rendered, real, taxonomy)
    summary["inputs"] = {
        "survey": "<catalog>" if isinstance(survey, pd.DataFrame) else str(survey),
        "real": "<catalog>" if isinstance(real_source, pd.DataFrame) else str(real_source),
        "taxonomy": taxonomy.name,
        "n_rendered": int(len(rendered)),
        "n_real": int(len(real)),
        "n_real_labelled": int((real["label"] >= 0).sum()),
        "measured_at_px": size,
        "max_per_class": max_per_class,
        "seed": seed,
    }
    for name, table in (("rendered_statistics.csv", rendered), ("real_statistics.csv", real)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    plot_distributions(rendered, real, out_dir / "distributions.png", summary)
    picture_grid(ren_images, ren_labels, real_images, real_labels, taxonomy, out_dir / "grid.png", seed=seed)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False))
    return summary

"""Writing reports: report.json (numbers, machine-readable) and report.md (tables for people)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from galaxalign.runtime import atomic_path


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)  # JSON has no NaN
    return x


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    return path


def write_text(text: str, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def fmt(value: float | None, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """``0.812 [0.790, 0.834]``; an em dash where there is no number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    s = f"{value:.{digits}f}"
    if ci is not None and ci[0] is not None:
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return s


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def evaluation_markdown(report: dict) -> str:
    """report.md of a single evaluation."""
    lines = [f"# Evaluation of `{report.get('checkpoint', 'model')}`\n"]
    ds = report.get("dataset", {})
    if ds:
        lines.append(f"Data: `{ds.get('path', ds.get('source'))}`, split `{report.get('split')}` "
                     f"({report['n_test']} test galaxies), gallery `{report.get('gallery_split')}` "
                     f"({report['n_gallery']} galaxies). 95 % bootstrap intervals over test galaxies/queries.\n")
    lines.append("## Classification\n")
    rows = []
    for name, rep in report["classification"].items():
        star = " (primary)" if name == report["primary_classifier"] else ""
        rows.append([name + star, fmt(rep["accuracy"], rep.get("accuracy_ci")), fmt(rep["macro_f1"], rep.get("macro_f1_ci"))])
    lines.append(markdown_table(["classifier", "accuracy", "macro-F1"], rows))
    pr = report.get("probe") or {}
    if pr.get("fit_on"):
        chosen = (f"C = {pr['C']:g} chosen on the validation split ({pr.get('n_val')} galaxies)"
                  if pr.get("C_chosen_on") else f"C = {pr['C']:g} (no validation split to choose it on)")
        lines.append(f"\nThe linear probe and k-NN learn from the {pr['n_train_labelled']} labelled training "
                     f"galaxies only (never the gallery); probe {chosen}.\n")
    elif "n_train_labelled" in report:
        lines.append("\nNo linear probe or k-NN: no labelled training galaxies were given.\n")
    prim = report["classification"][report["primary_classifier"]]
    lines.append("\nPer-class accuracy (primary classifier):\n")
    lines.append(markdown_table(["class", "support", "accuracy"],
                                [[c, prim["support"][c], fmt(a)] for c, a in prim["per_class_accuracy"].items()]))
    rt = report["retrieval"]
    ci = rt.get("ci", {})
    lines.append("\n## Similarity search\n")
    lines.append("Each test galaxy queries the gallery; relevant = same class; the query itself is excluded.\n")
    keys = ["map", "map_at_10", "precision_at_1", "precision_at_5", "precision_at_10", "recall_at_10"]
    lines.append(markdown_table(["metric", "value"], [[k, fmt(rt.get(k), ci.get(k))] for k in keys]))
    fs = report.get("feature_search")
    if fs:
        lines.append("\n## Feature search\n")
        lines.append(f"{fs['n_queries']} seeded feature queries (decision-tree answer sets) over the {fs['n_pool']} "
                     "galaxies of the split, relevance = the fraction of the query's answers a galaxy has; 95 % "
                     "bootstrap intervals over queries"
                     + (f"; a random ranking scores {fs['chance']:.3f}" if fs.get("chance") is not None else "") + ".\n")
        lines.append(markdown_table(["query", f"nDCG@{fs['k']}"],
                                    [[m, fmt(fs[m]["ndcg"], fs[m].get("ci"))] for m in ("symbol", "text")]))
    for name, png in report.get("plots", {}).items():
        lines.append(f"\n![{name}]({Path(png).name})\n")
    return "\n".join(lines)

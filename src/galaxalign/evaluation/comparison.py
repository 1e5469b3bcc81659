"""Paired comparisons between runs evaluated on the same test galaxies (the demo's verdict, the
ablations' effects).

Two runs of a table classify and search the SAME test galaxies, so their difference is judged with a
paired bootstrap (``bootstrap.paired_bootstrap_diff``): each resample draws one set of galaxies and
scores both runs on it. Comparing two separate intervals would ignore that both runs meet the same
easy and hard galaxies, and call real differences noise (or the reverse).

Works on run records as written to report.json (each with ``per_query``: ids, primary-classifier hits
and average precisions in test order), so a report can be judged again from its file alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from galaxalign.evaluation.bootstrap import N_RESAMPLES, paired_bootstrap_diff

# metric -> the per-query values whose mean it is
PER_QUERY = {"accuracy": "correct", "map": "average_precision"}


def group_key(run: dict, several_seeds: bool) -> str:
    f = f"{float(run['label_fraction']):g}"
    return f"{f}, seed {run.get('seed', 0)}" if several_seeds else f


def groups(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Runs that may be compared with each other: same label fraction and training seed."""
    several = len({r.get("seed", 0) for r in runs}) > 1
    out: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: (float(r["label_fraction"]), r.get("seed", 0))):
        out.setdefault(group_key(r, several), []).append(r)
    return out


def _values(run: dict, metric: str) -> tuple[list[str], np.ndarray]:
    pq = run.get("per_query") or {}
    if PER_QUERY[metric] not in pq or "id" not in pq:
        raise ValueError(f"run {run.get('name')!r} has no per-query {PER_QUERY[metric]!r}: it cannot be compared pairwise")
    vals = np.array([np.nan if v is None else float(v) for v in pq[PER_QUERY[metric]]], dtype=np.float64)
    return list(pq["id"]), vals


def paired_advantage(reference: dict, other: dict, metric: str, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """``reference - other`` for ``metric`` on the galaxies both were tested on, with its paired 95 % interval."""
    ids_a, a = _values(reference, metric)
    ids_b, b = _values(other, metric)
    if ids_a != ids_b:
        raise ValueError(f"runs {reference.get('name')!r} and {other.get('name')!r} were not tested on the same "
                         "galaxies in the same order: no paired comparison")
    return paired_bootstrap_diff(a, b, n_resamples=n_resamples, seed=seed)


def compare_to_reference(runs: Sequence[dict], reference: str, metrics: Sequence[str] = ("accuracy", "map"),
                         n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """For each group (label fraction, seed): the reference run's advantage over every other run.

    Returns ``{group: {"reference": name, "vs": {run name: {metric: {"difference", "ci", "n"}}},
    "verdict": {metric: {"reference", "best_other", "best_other_value", "advantage", "ci",
    "beats_all", "clearly"}}}}``. ``beats_all``: ahead of every other run; ``clearly``: ahead of every
    other run with the paired interval of each difference above 0.
    """
    out: dict = {}
    for key, members in groups(runs).items():
        ref = next((r for r in members if r.get("run", r.get("method")) == reference), None)
        others = [r for r in members if r is not ref]
        if ref is None or not others:
            continue
        vs: dict = {}
        verdict: dict = {}
        for metric in metrics:
            cands = [r for r in others if r.get(metric) is not None]
            if ref.get(metric) is None or not cands:
                continue
            for r in cands:
                vs.setdefault(r["name"], {})[metric] = paired_advantage(ref, r, metric, n_resamples, seed)
            best = max(cands, key=lambda r: r[metric])
            adv = vs[best["name"]][metric]
            verdict[metric] = {
                "reference": ref[metric], "best_other": best["name"], "best_other_method": best["method"],
                "best_other_run": best.get("run", best["method"]),
                "best_other_value": best[metric], "advantage": adv["difference"], "ci": adv["ci"],
                "beats_all": all(ref[metric] > r[metric] for r in cands),
                "clearly": all(vs[r["name"]][metric]["ci"][0] > 0 for r in cands),
            }
        out[key] = {"reference": ref["name"], "vs": vs, "verdict": verdict}
    return out

"""A grid of training runs as data: the demo's table and the ablations (``configs/grids/*.yaml``).

A grid names a base training config, overrides shared by every run (plus a ``quick`` set), a list of
runs (a name, a method, overrides), and the axes every run is repeated over: label fractions and
training seeds. ``expand_grid`` turns it into ``RunSpec``s, each carrying the exact override values
(Python values, merged by ``load_config``: nothing is written out as ``key=value`` text and re-read).

Shipped grids: ``demo`` (every method at every label fraction) and ``ablate``. A user's grid is a
YAML file of the same form.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

GRIDS = "galaxalign.configs"
GRID_FOLDER = "grids"
KINDS = ("demo", "ablation")
GRID_KEYS = {"kind", "title", "base", "name", "label_fractions", "seeds", "bootstrap", "overrides", "quick",
             "reference", "runs"}
RUN_KEYS = {"run", "method", "what", "overrides"}
_REFERENCE = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


class GridError(ValueError):
    """A run grid is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of a grid: its name (output folder), method, label fraction, seed and the config
    overrides (a nested dict of values) that make it, on top of the grid's shared overrides."""

    name: str
    run: str  # the grid entry it comes from (same for every fraction and seed)
    method: str
    label_fraction: float
    seed: int
    overrides: dict = field(default_factory=dict)
    description: str = ""


@dataclass
class RunGrid:
    kind: str
    title: str
    base: str
    name: str
    label_fractions: list[float]
    seeds: list[int]
    bootstrap: int
    overrides: dict
    quick: dict
    reference: str | None
    runs: list[dict]
    source: str = "<grid>"

    def shared_overrides(self, quick: bool) -> dict:
        """The overrides every run gets (nested dict), quick ones on top with ``quick``."""
        from galaxalign.training.config import merge_nested, dotted_overrides

        out = dotted_overrides(self.overrides, f"{self.source}: overrides")
        if quick:
            merge_nested(out, dotted_overrides(self.quick.get("overrides") or {}, f"{self.source}: quick.overrides"))
        return out

    def n_resamples(self, quick: bool) -> int:
        return int(self.quick.get("bootstrap", self.bootstrap) if quick else self.bootstrap)

    def run_names(self) -> list[str]:
        return [r["run"] for r in self.runs]


def shipped_grids() -> list[str]:
    folder = resources.files(GRIDS).joinpath(GRID_FOLDER)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_grid(name_or_path: str | Path) -> RunGrid:
    """Read a shipped grid by name (``demo``, ``ablate``) or a YAML file; errors name the file and field."""
    name = str(name_or_path)
    if name in shipped_grids():
        text = resources.files(GRIDS).joinpath(GRID_FOLDER, f"{name}.yaml").read_text()
        source = f"grids/{name}.yaml"
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"run grid {name!r} is neither a shipped grid {shipped_grids()} nor an existing file")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GridError(f"{source}: not valid YAML: {exc}") from None
    return parse_grid(data, source)


def parse_grid(data: Any, source: str = "<grid>") -> RunGrid:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise GridError(f"{source}: {key}: {msg}")

    need(isinstance(data, dict), "(top level)", "expected a mapping")
    unknown = set(data) - GRID_KEYS
    need(not unknown, ", ".join(sorted(map(str, unknown))), f"unknown key(s); known: {sorted(GRID_KEYS)}")
    kind = data.get("kind", "demo")
    need(kind in KINDS, "kind", f"must be one of {list(KINDS)}, got {kind!r}")
    fractions = data.get("label_fractions", [1.0])
    need(isinstance(fractions, list) and fractions and all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions),
         "label_fractions", f"must be a non-empty list of numbers in (0, 1], got {fractions!r}")
    seeds = data.get("seeds", [0])
    need(isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
         "seeds", f"must be a non-empty list of integers, got {seeds!r}")
    need(len(set(seeds)) == len(seeds), "seeds", f"repeats a seed: {seeds}")
    overrides = data.get("overrides") or {}
    need(isinstance(overrides, dict), "overrides", "must be a mapping of dotted config keys to values")
    quick = data.get("quick") or {}
    need(isinstance(quick, dict) and set(quick) <= {"overrides", "bootstrap"}, "quick",
         "must be a mapping with 'overrides' and/or 'bootstrap'")
    bootstrap = data.get("bootstrap", 1000)
    need(isinstance(bootstrap, int) and bootstrap > 0, "bootstrap", f"must be a positive integer, got {bootstrap!r}")
    runs = data.get("runs")
    need(isinstance(runs, list) and runs, "runs", "must be a non-empty list of runs")
    from galaxalign.training.config import METHODS

    seen = set()
    for i, r in enumerate(runs):
        where = f"runs[{i}]"
        need(isinstance(r, dict), where, "must be a mapping with 'run' and 'method'")
        bad = set(r) - RUN_KEYS
        need(not bad, where, f"unknown key(s) {sorted(bad)}; known: {sorted(RUN_KEYS)}")
        need(isinstance(r.get("run"), str) and r["run"], f"{where}.run", "must be a non-empty name")
        need(r["run"] not in seen, f"{where}.run", f"name {r['run']!r} is used twice")
        seen.add(r["run"])
        need(r.get("method") in METHODS, f"{where}.method", f"must be one of {list(METHODS)}, got {r.get('method')!r}")
        need(isinstance(r.get("overrides") or {}, dict), f"{where}.overrides", "must be a mapping")
    reference = data.get("reference")
    need(reference is None or reference in seen, "reference", f"must name one of the runs {sorted(seen)}, got {reference!r}")
    name = data.get("name", "{run}_lf{label_fraction:g}")
    try:
        name.format(run="x", method="x", label_fraction=1.0, seed=0)
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise GridError(f"{source}: name: {name!r} is not a valid template ({exc}); fields: run, method, label_fraction, seed") from None
    return RunGrid(kind, str(data.get("title", "GalaxAlign runs")), str(data.get("base", "default")), name,
                   [float(f) for f in fractions], [int(s) for s in seeds], bootstrap, overrides, quick, reference,
                   [dict(r) for r in runs], source)


def fraction_epoch_scale(label_fraction: float) -> int:
    """How many times more epochs a run at ``label_fraction`` gets: 1/fraction, rounded (>= 1)."""
    return max(1, round(1.0 / float(label_fraction)))


def budget_overrides(base_cfg: dict, run_cfg: dict, label_fraction: float, given: dict) -> dict:
    """Equal training budget (nested dict): the epochs of the base config's two stages for every run (a
    single-stage run trains their sum in its one stage), times 1/label_fraction so that every label
    fraction gets the same optimiser steps. Epochs a run sets itself (``given``) are kept."""
    # OUR CHOICE: the budget is optimiser steps (the paper fixes none). At label fraction 0.1 an epoch
    # is a tenth as long, so epochs scale by 1/fraction: with the epochs of the full-label run the 0.1
    # runs took 4 steps (~140 labelled galaxies, batch 64) and measured nothing but the initial towers
    # (GalaxAlign val 0.28 -> 0.48 with equal steps, docs/training.md). Per-epoch validation is then
    # switched off (40 validations would cost more than the training; the demo evaluates on test).
    from galaxalign.training.methods import get_method

    method = get_method(run_cfg["method"])
    if not method.trains:
        return {}
    recipe = base_cfg.get("recipe") or {}
    if recipe.get("enabled") and recipe.get("epochs") == "auto":
        # The recipe already sets every run's epochs from one optimiser-step budget (training/recipe.py)
        # and keeps per-epoch validation for its best-epoch selection.
        return {}
    e1, e2 = int(base_cfg["stage1"]["epochs"]), int(base_cfg["stage2"]["epochs"])
    k = fraction_epoch_scale(label_fraction)
    stages = [s.number for s in method.stages(run_cfg)]
    out: dict = {}
    if len(stages) == 1:
        out[f"stage{stages[0]}"] = {"epochs": (e1 + e2) * k}
    elif k > 1:
        out = {"stage1": {"epochs": e1 * k}, "stage2": {"epochs": e2 * k}}
    for stage in list(out):
        if "epochs" in (given.get(stage) or {}):
            del out[stage]
    if k > 1:
        out["validate"] = False
    return out


def _resolve_references(node: Any, base_cfg: dict, source: str) -> Any:
    """``"${stage1.lr}"`` -> the base config's value at that key path."""
    if isinstance(node, dict):
        return {k: _resolve_references(v, base_cfg, source) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_references(v, base_cfg, source) for v in node]
    if isinstance(node, str):
        m = _REFERENCE.match(node)
        if m:
            value: Any = base_cfg
            for part in m.group(1).split("."):
                if not isinstance(value, dict) or part not in value:
                    raise GridError(f"{source}: {node!r} names no key of the base config")
                value = value[part]
            return copy.deepcopy(value)
    return node


def expand_grid(
    grid: RunGrid,
    base_cfg: dict,
    *,
    runs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[RunSpec]:
    """Every run of the grid at every label fraction and seed, in that order (run, fraction, seed).

    ``base_cfg``: the base config with the shared overrides applied (the budget reads its epochs).
    ``runs`` / ``methods`` / ``label_fractions`` / ``seeds`` select a subset or replace an axis.
    """
    from galaxalign.training.config import merge_nested, dotted_overrides, load_config

    entries = grid.runs
    if runs is not None:
        bad = [r for r in runs if r not in grid.run_names()]
        if bad:
            raise ValueError(f"unknown run(s) {bad}; {grid.source} has {grid.run_names()}")
        entries = [e for e in entries if e["run"] in runs]
    if methods is not None:
        entries = [e for e in entries if e["method"] in methods]
    fractions = [float(f) for f in (label_fractions if label_fractions is not None else grid.label_fractions)]
    seed_list = [int(s) for s in (seeds if seeds is not None else grid.seeds)]
    specs = []
    for e in entries:
        where = f"{grid.source}: run {e['run']!r}"
        own = _resolve_references(dotted_overrides(e.get("overrides") or {}, where), base_cfg, where)
        for f in fractions:
            for seed in seed_list:
                ov = {"method": e["method"], "data": {"label_fraction": f}, "seed": seed}
                merge_nested(ov, copy.deepcopy(own))
                run_cfg = load_config(base_cfg, [ov])
                merge_nested(ov, budget_overrides(base_cfg, run_cfg, f, own))
                name = grid.name.format(run=e["run"], method=e["method"], label_fraction=f, seed=seed)
                if len(seed_list) > 1 and "{seed" not in grid.name:
                    name += f"_s{seed}"
                specs.append(RunSpec(name, e["run"], e["method"], f, seed, ov, str(e.get("what", ""))))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise GridError(f"{grid.source}: name template {grid.name!r} gives several runs the folder(s) {dup}")
    return specs

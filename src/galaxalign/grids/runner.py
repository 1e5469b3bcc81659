"""Train and evaluate every run of a grid (``run_grid``) on shared splits; write report.json and
report.md. ``galaxalign demo`` and ``galaxalign ablate`` are this runner on the shipped ``demo`` and
``ablate`` grids.

Every run starts from the grid's base config plus the same shared overrides, so a table scales up on
a GPU by changing only sizes. All runs share the survey, the splits (``data.split_seed``) and the
labelled subset of each label fraction; they are evaluated on the same test galaxies with the same
gallery (the whole training split), and the probe's C is chosen on the validation split. The
markdown report is rendered from report.json (``table_report.render_report``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from galaxalign.evaluation.comparison import compare_to_reference
from galaxalign.evaluation.report import fmt, write_json, write_text
from galaxalign.grids.run_grid import RunGrid, RunSpec, expand_grid, load_grid
from galaxalign.runtime import DEMO_DIR
from galaxalign.training.methods import get_method

METRICS = ("accuracy", "macro_f1", "map", "map_at_10", "precision_at_10")
REPORT_KINDS = {"demo": "galaxalign-demo", "ablation": "galaxalign-ablations"}


def describe_backbone(cfg: dict) -> str:
    spec = cfg["model"]["backbone"]
    if spec.get("kind") == "offline":
        return (f"offline: image {spec.get('image', 'efficientnet-lite0')} (ImageNet) + text "
                f"{spec.get('text', 'all-MiniLM-L6-v2')}, embed_dim {spec.get('embed_dim')}, "
                f"image_size {spec.get('image_size')}")
    return json.dumps(spec, sort_keys=True)


def _final_losses(history: list[dict]) -> dict:
    """Last training row's loss terms (evidence for the 'why' analysis)."""
    rows = [r for r in history if "loss" in r and not any(k.startswith("val_") for k in r)]
    if not rows:
        return {}
    return {k: v for k, v in rows[-1].items() if "loss" in k and isinstance(v, (int, float))}


def user_overrides(overrides: Sequence[str | dict]) -> dict:
    """``--set KEY=VALUE`` strings (read once, as YAML values) and dicts -> one nested dict."""
    from galaxalign.training.config import dotted_overrides, merge_nested, parse_override

    out: dict = {}
    for ov in overrides:
        merge_nested(out, dotted_overrides(ov, "override") if isinstance(ov, dict) else parse_override(ov))
    if "seed" in out:
        raise ValueError("the training seed is an axis of the run grid: pass --seeds (or set `seeds` in the grid), not seed=")
    return out


def sim_to_real_hook(checkpoint: str | Path, exemplars: str | Path | None) -> dict | None:
    """Sim-to-real accuracy of a checkpoint on the real galaxies in ``exemplars`` (a labelled folder or
    catalog, e.g. ../shared/data/gz2-exemplars); None when no exemplars are given."""
    if exemplars is None:
        return None
    exemplars = Path(exemplars)
    if not exemplars.exists():
        raise FileNotFoundError(f"exemplars {exemplars} do not exist (pass an existing folder or catalog, or leave it out)")
    from galaxalign.evaluation.sim2real import sim_to_real

    result = sim_to_real(checkpoint, exemplars)
    return dict(result) if result is not None else None


class GridRunner:
    """Trains the runs of one grid and evaluates them on shared splits."""

    def __init__(self, grid: RunGrid, out: Path, quick: bool, overrides: Sequence[str | dict], progress: bool,
                 n_resamples: int | None, config: str | None = None):
        from galaxalign.evaluation.protocol import resolve_data
        from galaxalign.runtime import pick_device
        from galaxalign.taxonomy import load_taxonomy
        from galaxalign.training import load_config
        from galaxalign.training.config import merge_nested

        self.grid, self.out, self.quick, self.progress = grid, out, quick, progress
        self.base = config or grid.base
        self.n_resamples = n_resamples or grid.n_resamples(quick)
        self.overrides = merge_nested(grid.shared_overrides(quick), user_overrides(overrides))
        # The base config is read once: every run starts from the same dict, even if its file changes.
        self.base_dict = load_config(self.base)
        self.base_cfg = load_config(self.base_dict, [self.overrides])
        self.taxonomy = load_taxonomy(self.base_cfg["data"]["taxonomy"])
        t0 = time.perf_counter()
        self.splits, self.dataset = resolve_data(self.base_cfg["data"], self.taxonomy)
        self.dataset["taxonomy"] = self.taxonomy.name
        self.timings: dict[str, Any] = {"data_seconds": time.perf_counter() - t0, "runs": {}}
        self._labelled: dict[float, Any] = {}
        self.device = pick_device(str(self.base_cfg["device"]))  # evaluate where training ran
        self.feature_pool, self.feature_queries = feature_search_setup(self.splits["test"], self.taxonomy)
        self.exemplar_sets: dict[str, tuple] = {}

    def labelled_train(self, fraction: float):
        if fraction not in self._labelled:
            train = self.splits["train"]
            if fraction < 1:
                from galaxalign.datasets import apply_label_fraction

                train = apply_label_fraction(train, fraction, int(self.base_cfg["data"]["label_seed"]))
            self._labelled[fraction] = train[train["label"] >= 0].reset_index(drop=True)
        return self._labelled[fraction]

    def config(self, spec: RunSpec) -> dict:
        from galaxalign.training import load_config

        return load_config(self.base_dict, [self.overrides, spec.overrides, {"out": str(self.out / spec.name)}])

    def train(self, spec: RunSpec):
        from galaxalign.training import train

        cfg = self.config(spec)
        if self.progress:
            print(f"[{spec.name}] training {spec.method} at label fraction {spec.label_fraction:g}, seed {spec.seed}", flush=True)
        return train(cfg, progress=self.progress)

    def evaluate(self, spec: RunSpec, model, embeddings: dict | None = None) -> dict:
        from galaxalign.evaluation.protocol import evaluate_model

        return evaluate_model(
            model, self.taxonomy, self.splits["test"], self.splits["train"], self.labelled_train(spec.label_fraction),
            self.out / spec.name / "eval", method=spec.method, title=spec.name, n_resamples=self.n_resamples,
            progress=self.progress, embeddings=embeddings, val=self.splits.get("val"),
            # the grid compares the methods' own classifiers; the frozen-probe candidate would make
            # every row the same baseline wherever it wins (benchmark and evaluate report it)
            frozen_probe=False,
        )

    def feature_search(self, spec: RunSpec, model, cache: dict) -> dict | None:
        """Feature-search nDCG@10 on the test galaxies' true answers (None when they have none)."""
        if self.feature_queries is None:
            return None
        from galaxalign.evaluation.feature_search import feature_search_model

        res = feature_search_model(model, self.taxonomy, self.feature_pool, self.feature_queries, method=spec.method,
                                   n_resamples=self.n_resamples, cache=cache, progress=self.progress)
        res.pop("queries", None)  # the report holds them once (report["feature_search"]["queries"])
        return res

    def load_exemplars(self, sets: Sequence[str | Path]) -> None:
        """Read each exemplar folder once per grid (manifest mapped to tree answers, images decoded)."""
        from galaxalign.evaluation.feature_exemplars import load_exemplars, read_exemplar_images

        for ex in sets:
            ex = Path(ex)
            if not (ex / "manifest.csv").is_file():
                continue  # a labelled catalog without per-answer exemplars: sim-to-real only
            catalog, unmapped = load_exemplars(ex, self.taxonomy.tree)
            if len(catalog):
                self.exemplar_sets[ex.name] = (catalog, unmapped, read_exemplar_images(catalog))

    def exemplar_search(self, spec: RunSpec, model) -> dict | None:
        if not self.exemplar_sets:
            return None
        from galaxalign.evaluation.feature_exemplars import exemplar_search

        return {name: exemplar_search(model, self.taxonomy, (cat, unmapped), method=spec.method, images=images,
                                      n_resamples=self.n_resamples)
                for name, (cat, unmapped, images) in self.exemplar_sets.items()}

    def execute(self, specs: list[RunSpec], on_run: Callable[[dict], None] | None = None) -> list[dict]:
        from galaxalign.inference import load_model

        records = []
        zero_shot: dict = {}  # a stock model is exported once per grid entry and evaluated at every fraction
        for spec in specs:
            t0 = time.perf_counter()
            trains = get_method(spec.method).trains
            if not trains and spec.run in zero_shot:
                tr, model, cache = zero_shot[spec.run]
            else:
                tr = self.train(spec)
                model, _ = load_model(tr.export_dir, device=self.device)
                cache = {}
                if not trains:
                    zero_shot[spec.run] = (tr, model, cache)
            # zero_shot has nothing to train: its "training" only builds and exports the stock model
            train_s = float(tr.seconds) if trains else 0.0
            res = self.evaluate(spec, model, cache)
            rec = run_record(spec, res, train_s, tr.export_dir, tr.checkpoint, tr.history)
            t_fs = time.perf_counter()
            for key, value in (("feature_search", self.feature_search(spec, model, cache)),
                               ("feature_exemplars", self.exemplar_search(spec, model))):
                if value is not None:
                    rec[key] = value
            self.timings["runs"][spec.name] = {"train_seconds": train_s, "eval_seconds": res["eval_seconds"],
                                               "feature_search_seconds": time.perf_counter() - t_fs,
                                               "wall_seconds": time.perf_counter() - t0}
            records.append(rec)
            if self.progress:
                print(f"[{spec.name}] accuracy {fmt(rec['accuracy'])}  macro-F1 {fmt(rec['macro_f1'])}  "
                      f"mAP {fmt(rec['map'])}  mAP@10 {fmt(rec['map_at_10'])}  ({train_s:.0f} s training)", flush=True)
            if on_run is not None:
                on_run(rec)
        return records


def feature_search_setup(test, taxonomy):
    """``(pool, queries)`` of the feature-search benchmark: the labelled test galaxies (those the
    protocol embeds, so the embeddings are shared) and the seeded queries drawn from their true
    paths; ``(None, None)`` when the test catalog carries no per-galaxy answers."""
    from galaxalign.answers import has_galaxy_answers

    if not has_galaxy_answers(test, taxonomy):
        return None, None
    from galaxalign.evaluation.feature_search import galaxy_paths, sample_feature_queries

    pool = test[test["label"] >= 0].reset_index(drop=True)
    if pool.empty:
        return None, None
    return pool, sample_feature_queries(galaxy_paths(pool, taxonomy), taxonomy)


def run_record(spec: RunSpec, res: dict, train_seconds: float, export_dir: Path | None, checkpoint: Path | None,
               history: list[dict]) -> dict:
    rec = {
        "name": spec.name,
        "run": spec.run,
        "method": spec.method,
        "label_fraction": spec.label_fraction,
        "seed": spec.seed,
        **{m: res[m] for m in METRICS},
        **{f"{m}_ci": res.get(f"{m}_ci") for m in METRICS},
        "primary_classifier": res["primary_classifier"],
        "val_accuracy": res.get("val_accuracy"),
        "classifiers": {k: {"accuracy": v["accuracy"], "macro_f1": v["macro_f1"]} for k, v in res["classification"].items()},
        "per_class_accuracy": res["classification"][res["primary_classifier"]]["per_class_accuracy"],
        "retrieval": {k: v for k, v in res["retrieval"].items() if k != "ci"},
        "probe": res.get("probe"),
        "per_query": res["per_query"],
        "train_seconds": train_seconds,
        "eval_seconds": res["eval_seconds"],
        "checkpoint": str(Path(export_dir).resolve()) if export_dir else None,
        "training_checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "final_losses": _final_losses(history),
        "overrides": spec.overrides,
        "plots": {k: str(Path(v).resolve()) for k, v in res.get("plots", {}).items()},
    }
    if spec.description:
        rec["description"] = spec.description
    return rec


def run_table(
    grid: str | Path | RunGrid,
    out: str | Path,
    quick: bool = False,
    *,
    config: str | None = None,
    overrides: Sequence[str | dict] = (),
    runs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    label_fractions: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    exemplars: str | Path | Sequence[str | Path] | None = None,
    n_resamples: int | None = None,
    progress: bool = True,
) -> dict:
    """Train and evaluate every run of ``grid`` (a shipped name, a YAML path or a ``RunGrid``); write
    report.json (after every run, so an interrupted table keeps what it measured) and report.md.

    ``config`` replaces the grid's base config; ``overrides`` (``KEY=VALUE`` strings or dicts) apply
    to every run; ``runs`` / ``methods`` / ``label_fractions`` / ``seeds`` select or replace axes;
    ``exemplars``: real labelled galaxies for the sim-to-real check of the GalaxAlign run with the most
    labels (skipped without). zero_shot is exported once and reported at every label fraction.
    """
    from galaxalign.grids.table_report import render_report

    t_start = time.perf_counter()
    g = grid if isinstance(grid, RunGrid) else load_grid(grid)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = GridRunner(g, out, quick, overrides, progress, n_resamples, config)
    specs = expand_grid(g, runner.base_cfg, runs=runs, methods=methods, label_fractions=label_fractions, seeds=seeds)
    # Several exemplar sets (e.g. SDSS and KiDS/GAMA) are reported separately, one result per set.
    sets = [] if exemplars is None else ([exemplars] if isinstance(exemplars, (str, Path)) else list(exemplars))
    for ex in sets:
        if not Path(ex).exists():
            raise FileNotFoundError(f"exemplars {ex} do not exist (pass an existing folder or catalog, or leave it out)")
    runner.load_exemplars(sets)
    report: dict[str, Any] = {
        "kind": REPORT_KINDS[g.kind],
        "title": g.title,
        "grid": g.source,
        "quick": quick,
        "out": str(out.resolve()),
        "dataset": runner.dataset,
        "backbone": describe_backbone(runner.base_cfg),
        "config": {"base": runner.base, "overrides": runner.overrides},
        "budget": {"stage1_epochs": runner.base_cfg["stage1"]["epochs"], "stage2_epochs": runner.base_cfg["stage2"]["epochs"],
                   "baseline_epochs": runner.base_cfg["stage1"]["epochs"] + runner.base_cfg["stage2"]["epochs"],
                   "batch_size": runner.base_cfg["batch_size"], "equal_steps_across_fractions": True,
                   "recipe": (runner.base_cfg.get("recipe") or {}) if (runner.base_cfg.get("recipe") or {}).get("enabled") else None},
        "label_fractions": sorted({s.label_fraction for s in specs}),
        "seeds": sorted({s.seed for s in specs}),
        "reference": g.reference,
        "n_resamples": runner.n_resamples,
        "runs": [],
        "timings": runner.timings,
    }
    if len(report["label_fractions"]) == 1:
        report["label_fraction"] = report["label_fractions"][0]

    def checkpoint_partial(rec: dict) -> None:
        report["runs"].append(rec)
        write_json(report, out / "report.json")  # a partial table survives an interrupted run

    runner.execute(specs, checkpoint_partial)
    t0 = time.perf_counter()
    ga = [r for r in report["runs"] if r["method"] == "galaxalign"]
    # the grid's reference run (per-galaxy GalaxAlign in the demo) with the most labels, not any
    # GalaxAlign run (the class-level one trains beside it)
    best = max(ga, key=lambda r: (r.get("run") == g.reference, r["label_fraction"])) if ga else None
    report["sim_to_real_run"] = best["name"] if best else None
    by_set = {}
    if best and g.kind == "demo":
        for ex in sets:
            by_set[Path(ex).name] = sim_to_real_hook(best["checkpoint"], ex)
    report["sim_to_real_by_set"] = by_set
    report["sim_to_real"] = next(iter(by_set.values()), None)
    report["exemplars"] = [str(e) for e in sets] or None
    runner.timings["sim_to_real_seconds"] = time.perf_counter() - t0
    if g.reference is not None:
        report["comparison"] = compare_to_reference(report["runs"], g.reference, n_resamples=runner.n_resamples)
    if runner.feature_queries is not None:
        from galaxalign.evaluation.feature_search import K, compare_feature_search

        report["feature_search"] = {
            "k": K, "n_pool": int(len(runner.feature_pool)), "queries": [list(q) for q in runner.feature_queries],
            "comparison": (compare_feature_search(report["runs"], g.reference, n_resamples=runner.n_resamples)
                           if g.reference is not None else {}),
        }
    runner.timings["total_seconds"] = time.perf_counter() - t_start
    write_json(report, out / "report.json")
    write_text(render_report(report), out / "report.md")
    return report


def run_demo(out: str | Path = DEMO_DIR, quick: bool = False, *, grid: str | Path = "demo",
             fractions: Sequence[float] | None = None, **kwargs) -> dict:
    """The reproduction table (``galaxalign demo``): the shipped ``demo`` grid. See :func:`run_table`."""
    return run_table(grid, out, quick, label_fractions=fractions, **kwargs)


def run_ablations(out: str | Path = Path("runs") / "ablate", quick: bool = False, *, grid: str | Path = "ablate",
                  label_fraction: float | None = None, only: Sequence[str] | None = None, **kwargs) -> dict:
    """The ablations (``galaxalign ablate``): the shipped ``ablate`` grid. See :func:`run_table`."""
    fractions = None if label_fraction is None else [label_fraction]
    return run_table(grid, out, quick, label_fractions=fractions, runs=only, **kwargs)

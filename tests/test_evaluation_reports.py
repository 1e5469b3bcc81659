"""Report writing, plots, run grids and the paired verdict on hand-made results (no training)."""
import json

import numpy as np
import pytest

from galaxalign.evaluation.bootstrap import bootstrap_mean_ci
from galaxalign.evaluation.comparison import compare_to_reference
from galaxalign.grids.run_grid import GridError, expand_grid, load_grid, parse_grid
from galaxalign.grids.table_report import demo_markdown
from galaxalign.training import load_config
from galaxalign.evaluation.plots import pick_grid_queries, plot_confusion_matrix, plot_retrieval_grid
from galaxalign.evaluation.report import fmt, markdown_table, write_json

PNG = b"\x89PNG\r\n\x1a\n"


def test_write_json_turns_nan_and_numpy_into_json(tmp_path):
    path = write_json({"a": np.float32(0.5), "b": float("nan"), "c": np.arange(3), "d": {1: np.int64(2)}}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"a": 0.5, "b": None, "c": [0, 1, 2], "d": {"1": 2}}
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary behind


def test_fmt_and_markdown_table():
    assert fmt(0.81234, (0.8, 0.83)) == "0.812 [0.800, 0.830]"
    assert fmt(None) == "—" and fmt(float("nan")) == "—"
    table = markdown_table(["a", "b"], [["x|y", 1]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_confusion_matrix_png(tmp_path):
    cm = [[3, 1], [0, 4]]
    assert plot_confusion_matrix(cm, ["round", "cigar"], tmp_path / "cm.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="does not match 3 class names"):
        plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "bad.png")


def test_retrieval_grid_png(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    top = np.array([[1, 2], [0, 2], [0, 1]])
    out = plot_retrieval_grid(lambda i: img, [0, 1, 0], lambda i: img, [0, 1, 0], top, ["a", "b"], tmp_path / "g.png", [0, 1])
    assert out.read_bytes()[:8] == PNG


def test_grid_queries_cover_every_class_first():
    labels = np.array([0] * 20 + [1] * 3 + [2] * 5)
    q = pick_grid_queries(labels, 5)
    assert len(q) == len(set(q)) == 5
    assert sorted(labels[q[:3]]) == [0, 1, 2]


BASE = load_config("default", [{"stage1": {"epochs": 2, "lr": 3e-4}, "stage2": {"epochs": 1}}])


def _epochs(spec):
    cfg = load_config(BASE, [spec.overrides])
    return cfg["stages"], cfg["stage1"]["epochs"], cfg["stage2"]["epochs"], cfg["validate"]


def test_baselines_get_galaxaligns_budget_and_every_method_runs_at_every_fraction():
    specs = {(s.run, s.label_fraction): s for s in expand_grid(load_grid("demo"), BASE)}
    runs = ("zero_shot", "image_only", "image_text", "galaxalign_class", "galaxalign")
    assert set(specs) == {(m, f) for m in runs for f in (0.01, 0.1, 1.0)}
    assert load_config(BASE, [specs["galaxalign_class", 1.0].overrides])["answers"]["per_galaxy"] is False
    assert _epochs(specs["image_only", 1.0])[1] == 3  # 2 + 1: one stage with both stages' epochs
    assert _epochs(specs["galaxalign", 1.0])[1:3] == (2, 1)
    assert _epochs(specs["galaxalign", 0.1]) == ([1, 2], 20, 10, False)  # 1/f times the epochs, no per-epoch validation
    assert _epochs(specs["image_text", 0.1])[1] == 30
    assert specs["galaxalign", 1.0].name == "galaxalign_lf1" and specs["galaxalign", 0.1].name == "galaxalign_lf0.1"


def test_ablations_are_data_with_references_and_the_same_budget():
    specs = expand_grid(load_grid("ablate"), BASE)
    names = [s.name for s in specs]
    assert names[:3] == ["full", "no_symbols", "no_stage1"] and len(set(names)) == 9
    assert load_config(BASE, [next(s for s in specs if s.name == "label_aware_class_level").overrides])["answers"]["per_galaxy"] is False
    no_stage1 = load_config(BASE, [next(s for s in specs if s.name == "no_stage1").overrides])
    assert no_stage1["stages"] == [2] and no_stage1["stage2"]["epochs"] == 3 and no_stage1["stage2"]["lr"] == 3e-4
    assert load_config(BASE, [specs[1].overrides])["stage1"]["epochs"] == 3  # no_symbols: image_text, 2 + 1


def test_seeds_are_a_grid_axis_and_name_the_runs_apart():
    specs = expand_grid(load_grid("demo"), BASE, runs=["galaxalign"], seeds=[0, 1])
    assert [(s.label_fraction, s.seed) for s in specs] == [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    assert [s.name for s in specs][2:] == ["galaxalign_lf0.1_s0", "galaxalign_lf0.1_s1", "galaxalign_lf1_s0", "galaxalign_lf1_s1"]
    assert load_config(BASE, [specs[1].overrides])["seed"] == 1


def test_grid_overrides_are_values_so_a_path_with_a_hash_is_kept_whole(tmp_path):
    # Regression (#10 item 11): out=... was built as a key=value string and re-read as YAML.
    from galaxalign.grids.runner import user_overrides
    from galaxalign.training.config import ConfigError

    grid = parse_grid({"kind": "demo", "name": "{run}", "overrides": {"data.source": str(tmp_path / "my data #2.h5")},
                       "runs": [{"run": "a: b #1", "method": "galaxalign"}]})
    spec = expand_grid(grid, BASE)[0]
    cfg = load_config(BASE, [grid.shared_overrides(False), spec.overrides, {"out": str(tmp_path / spec.name)}])
    assert cfg["out"] == str(tmp_path / "a: b #1") and cfg["data"]["source"] == str(tmp_path / "my data #2.h5")
    with pytest.raises(ConfigError, match="comment"):
        user_overrides(["out=runs/my run #2"])
    assert user_overrides(['out="runs/my run #2"']) == {"out": "runs/my run #2"}


def test_grid_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("runs:\n  - {run: a, method: galaxalgn}\n")
    with pytest.raises(GridError, match=r"g.yaml: runs\[0\].method"):
        load_grid(bad)
    with pytest.raises(GridError, match="label_fractions"):
        parse_grid({"label_fractions": [0], "runs": [{"run": "a", "method": "galaxalign"}]})


def _run(name, method, f, correct, ap=None, seed=0):
    correct = np.asarray(correct, dtype=float)
    ap = correct * 0.5 if ap is None else np.asarray(ap, dtype=float)
    return {"name": name, "run": method, "method": method, "label_fraction": f, "seed": seed,
            "accuracy": float(correct.mean()), "map": float(np.nanmean(ap)),
            "per_query": {"id": [str(i) for i in range(correct.size)], "correct": correct.astype(int).tolist(),
                          "average_precision": [None if np.isnan(v) else float(v) for v in ap]}}


def test_verdict_is_a_paired_bootstrap_of_the_difference():
    # Regression (#10 item 7): two unpaired intervals on the same galaxies called this a tie.
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.6).astype(float)
    ahead = base.copy()
    ahead[np.flatnonzero(base == 0)[:15]] = 1  # right on 15 more galaxies, wrong on none it got right
    runs = [_run("galaxalign_lf1", "galaxalign", 1.0, ahead), _run("image_only_lf1", "image_only", 1.0, base),
            _run("galaxalign_lf0.1", "galaxalign", 0.1, base), _run("image_only_lf0.1", "image_only", 0.1, ahead)]
    comp = compare_to_reference(runs, "galaxalign", n_resamples=500)
    v = comp["1"]["verdict"]["accuracy"]
    assert v["beats_all"] and v["clearly"] and v["advantage"] == pytest.approx(0.05) and v["ci"][0] > 0
    lo_ga, hi_io = bootstrap_mean_ci(ahead)[0], bootstrap_mean_ci(base)[1]
    assert lo_ga < hi_io  # the old, unpaired rule would not have called it
    v01 = comp["0.1"]["verdict"]["accuracy"]
    assert not v01["beats_all"] and v01["best_other_method"] == "image_only" and v01["ci"][1] < 0
    assert comp["1"]["verdict"]["map"]["advantage"] == pytest.approx(0.025)
    md = demo_markdown({"runs": [], "budget": {"stage1_epochs": 1, "stage2_epochs": 1, "baseline_epochs": 2, "batch_size": 8},
                        "dataset": {}, "backbone": "tiny", "timings": {}, "comparison": comp})
    assert "paired" in md and "+0.050" in md and "does not beat" in md


def test_paired_comparison_refuses_runs_tested_on_different_galaxies():
    a = _run("a", "galaxalign", 1.0, [1, 0, 1])
    b = _run("b", "image_only", 1.0, [1, 1, 0])
    b["per_query"]["id"] = ["0", "2", "1"]
    with pytest.raises(ValueError, match="same galaxies"):
        compare_to_reference([a, b], "galaxalign")


def test_backbone_key_overrides_update_the_base_spec_instead_of_replacing_it():
    from galaxalign.training import load_config

    base = load_config("default")["model"]["backbone"]
    cfg = load_config("default", ["seed=1", "model.backbone.image_size=32"])
    assert cfg["seed"] == 1 and cfg["model"]["backbone"] == {**base, "image_size": 32}
    tiny = load_config("default", ["model.backbone.kind=tiny"])
    assert tiny["model"]["backbone"] == {"kind": "tiny"}


def test_report_names_the_embedded_survey_by_file_not_by_a_cache_path():
    from galaxalign.grids.table_report import _data_line

    ds = {"source": "survey", "path": "/root/.cache/galaxalign/surveys/galaxy10-synth_n2000.h5", "num": 2000,
          "size": 96, "taxonomy": "galaxy10_decals", "splits": {"train": 1}, "split_seed": 0}
    line = _data_line(ds)
    assert "`galaxy10-synth_n2000.h5`" in line and "/root" not in line
    assert "`/data/my.csv`" in _data_line({**ds, "source": "/data/my.csv", "path": "/data/my.csv"})

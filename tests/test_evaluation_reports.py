"""Report writing, plots, and the demo's verdict logic on hand-made results (no training)."""
import json

import numpy as np
import pytest

from galaxalign.evaluation.demo import ablation_runs, budget_overrides, demo_runs, verdict
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


BASE = {"stage1": {"epochs": 2, "lr": 3e-4}, "stage2": {"epochs": 1}}


def test_baselines_get_galaxaligns_budget_and_every_method_runs_at_every_fraction():
    assert budget_overrides(BASE, "image_only") == ["stage1.epochs=3"]
    assert budget_overrides(BASE, "galaxalign") == []
    specs = demo_runs(BASE)
    assert {(s.method, s.label_fraction) for s in specs} == {
        (m, f) for m in ("zero_shot", "image_only", "image_text", "galaxalign") for f in (0.1, 1.0)
    }
    names = [s.name for s in ablation_runs(BASE)]
    assert names[:3] == ["full", "no_symbols", "no_stage1"] and len(set(names)) == 8
    no_stage1 = next(s for s in ablation_runs(BASE) if s.name == "no_stage1")
    assert "stages=[2]" in no_stage1.overrides and "stage2.epochs=3" in no_stage1.overrides


def _run(method, f, acc, ci, m=0.5):
    return {"method": method, "label_fraction": f, "accuracy": acc, "accuracy_ci": ci, "map": m, "map_ci": [m - 0.01, m + 0.01]}


def test_verdict_says_plainly_when_galaxalign_loses_or_wins_within_noise():
    runs = [
        _run("galaxalign", 1.0, 0.70, [0.65, 0.75]),
        _run("image_only", 1.0, 0.72, [0.67, 0.77]),
        _run("galaxalign", 0.1, 0.60, [0.58, 0.62], m=0.6),
        _run("image_only", 0.1, 0.50, [0.48, 0.52]),
    ]
    v = verdict(runs)
    assert v["1"]["accuracy"]["beats_all"] is False and v["1"]["accuracy"]["best_baseline"] == "image_only"
    assert v["0.1"]["accuracy"] == {"galaxalign": 0.6, "best_baseline": "image_only", "best_baseline_value": 0.5,
                                    "beats_all": True, "clearly": True}
    assert v["1"]["map"]["beats_all"] is False  # equal mAP is not a win


def test_backbone_key_overrides_update_the_base_spec_instead_of_replacing_it():
    from galaxalign.training import load_config

    base = load_config("default")["model"]["backbone"]
    cfg = load_config("default", ["seed=1", "model.backbone.image_size=32"])
    assert cfg["seed"] == 1 and cfg["model"]["backbone"] == {**base, "image_size": 32}
    tiny = load_config("default", ["model.backbone.kind=tiny"])
    assert tiny["model"]["backbone"] == {"kind": "tiny"}

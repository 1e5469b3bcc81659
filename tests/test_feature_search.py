"""Search by features (#14): nDCG@k with graded relevance, seeded feature queries, the class-prototype
baseline, paired comparisons, real-exemplar AUCs and the reports that show them."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galaxalign import answers as A
from galaxalign.evaluation import feature_exemplars as FE
from galaxalign.evaluation import feature_search as FS
from galaxalign.evaluation.bootstrap import paired_bootstrap_diff
from galaxalign.taxonomy import load_taxonomy

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def tax():
    return load_taxonomy("galaxy10_decals")


@pytest.fixture(scope="module")
def survey(tmp_path_factory, tax):
    from galaxalign.datasets import load_catalog
    from galaxalign.survey.generate import generate_survey

    path = generate_survey(tmp_path_factory.mktemp("fs") / "s.h5", 80, size=32, seed=5, workers=0, progress=False)
    return path, load_catalog(path, tax)


def _tiny(num_classes=None):
    from galaxalign.model import GalaxAlignModel

    torch.manual_seed(0)
    return GalaxAlignModel.from_config({"backbone": {"kind": "tiny", "seed": 0, "image_size": 24, "width": 8, "embed_dim": 16},
                                        "symbol_encoder_shared": False, "num_classes": num_classes})


# ------------------------------------------------------------------------------------------ nDCG
def test_ndcg_on_a_hand_made_ranking():
    rel = np.array([0.0, 1.0, 0.5, 0.0, 1.0])
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])          # ranking 0, 1, 2, 3, 4
    dcg = 0 / 1 + 1 / math.log2(3) + 0.5 / 2 + 0 + 1 / math.log2(6)
    ideal = 1 + 1 / math.log2(3) + 0.5 / 2
    assert FS.ndcg_at_k(scores, rel, k=5) == pytest.approx(dcg / ideal)
    assert FS.ndcg_at_k(scores, rel, k=2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert FS.ndcg_at_k(rel, rel, k=3) == pytest.approx(1.0)          # the ideal ranking
    assert math.isnan(FS.ndcg_at_k(scores, np.zeros(5)))             # nothing relevant: undefined
    # ties keep pool order: items 0 and 1 tie, item 0 (irrelevant) is ranked first
    assert FS.ndcg_at_k(np.array([1.0, 1.0]), np.array([0.0, 1.0]), k=1) == 0.0
    assert FS.chance_ndcg(np.array([1.0, 0.0]), k=1) == pytest.approx(0.5)


def test_relevance_matrix_is_answers_relevance(tax):
    paths = [("smooth-or-featured_smooth", "how-rounded_cigar"), ("bar_yes", "spiral-winding_tight")]
    queries = [("smooth-or-featured_featured-or-disk", "bar_yes", "spiral-arm-count_2"), ("how-rounded_cigar",)]
    m = FS.relevance_matrix(queries, paths, tax.tree)
    for qi, q in enumerate(queries):
        for gi, p in enumerate(paths):
            assert m[qi, gi] == pytest.approx(A.relevance(q, p, tax.tree))
    assert m[0, 1] == pytest.approx(2 / 3)
    with pytest.raises(A.AnswerError, match="query #0: unknown decision-tree answer"):
        FS.relevance_matrix([("bar_maybe",)], paths, tax.tree)


# --------------------------------------------------------------------------------------- queries
def test_queries_are_seeded_valid_drawable_and_held_by_a_pool_galaxy(survey, tax):
    _, cat = survey
    paths = FS.galaxy_paths(cat, tax)
    q1 = FS.sample_feature_queries(paths, tax, n=30, seed=0)
    assert q1 == FS.sample_feature_queries(paths, tax, n=30, seed=0)
    assert q1 != FS.sample_feature_queries(paths, tax, n=30, seed=1)
    assert len(set(q1)) == len(q1) == 30
    held = [set(A.expand(p, tax.tree)) for p in paths]
    for q in q1:
        assert 3 <= len(q) <= 7
        assert tuple(A.expand(q, tax.tree)) == q            # closed under `requires`, in tree order
        assert FS.drawable(q, tax)
        assert any(set(q) <= h for h in held)                # ideal DCG > 0: some galaxy has all of it
        assert all(tax.tree.answers[a].phrase != "" for a in q)  # every answer can be said in text
    assert not FS.drawable(("smooth-or-featured_smooth", "bar_yes"), tax)  # a contradiction
    text = FS.query_text(q1[0], tax)
    assert text == tax.prompt_templates[0].format(label=A.caption(q1[0], tax.tree))


def test_nearest_class_matches_the_query_answers(tax):
    assert tax.classes[FS.nearest_class(("smooth-or-featured_smooth", "how-rounded_cigar"), tax)].key == "cigar_smooth"
    assert tax.classes[FS.nearest_class(("bar_yes", "has-spiral-arms_yes"), tax)].key == "barred_spiral"


# --------------------------------------------------------------------------------------- scoring
def test_feature_search_of_a_model_on_a_survey(survey, tax):
    path, cat = survey
    qs = FS.sample_feature_queries(FS.galaxy_paths(cat, tax), tax, n=12, seed=0)
    res = FS.feature_search(_tiny(), path, qs, taxonomy=tax, n_resamples=50)
    assert res["n_queries"] == 12 and res["n_pool"] == len(cat) and res["scoring"] == "path_posterior"
    assert res["per_galaxy_paths"] == 0  # the tiny model carries no per-galaxy paths
    assert set(res["composed"]) == {"symbol", "text"}
    assert res["per_query"]["query"] == [",".join(q) for q in qs]
    for m in ("symbol", "text"):
        v = np.array(res["per_query"][m])
        assert v.shape == (12,) and np.all((v >= 0) & (v <= 1 + 1e-9))
        assert res[m]["ci"][0] <= res[m]["ndcg"] <= res[m]["ci"][1]
    # the image-only baseline ranks by its head's probability of the query's nearest class
    model = _tiny(num_classes=10)
    cache: dict = {}
    io = FS.feature_search_model(model, tax, cat, qs, method="image_only", n_resamples=50, cache=cache)
    assert io["scoring"] == "class_prototype" and io["per_query"]["symbol"] == io["per_query"]["text"]
    head = cache[("head", tuple(cat["id"].astype(str)))]
    rel = FS.relevance_matrix(qs, FS.galaxy_paths(cat, tax), tax.tree)
    c = FS.nearest_class(qs[0], tax)
    assert io["per_query"]["symbol"][0] == pytest.approx(FS.ndcg_at_k(head[:, c], rel[0]))


def test_an_oracle_ranking_scores_one_and_a_reversed_one_less(tax):
    rel = np.array([[1.0, 0.5, 0.0, 0.25], [0.0, 0.0, 1.0, 0.5]])
    queries = [("bar_yes",), ("bar_no",)]
    res = FS.score_queries({"symbol": rel, "text": -rel}, rel, queries, k=2, n_resamples=20)
    assert res["symbol"]["ndcg"] == pytest.approx(1.0)
    assert res["text"]["ndcg"] < 0.3


def _fs_run(name, method, values_symbol, values_text, queries=("a", "b", "c", "d")):
    return {"name": name, "run": name, "method": method, "label_fraction": 1.0, "seed": 0,
            "feature_search": {"k": 10, "n_queries": len(queries), "n_pool": 100, "chance": 0.2,
                               "symbol": {"ndcg": float(np.mean(values_symbol)), "ci": [0.0, 1.0]},
                               "text": {"ndcg": float(np.mean(values_text)), "ci": [0.0, 1.0]},
                               "per_query": {"query": list(queries), "symbol": list(values_symbol), "text": list(values_text)}}}


def test_paired_comparison_over_the_same_queries():
    rng = np.random.default_rng(0)
    q = [f"q{i}" for i in range(50)]
    base = rng.random(50)
    runs = [_fs_run("galaxalign", "galaxalign", base + 0.1, base, q), _fs_run("image_only", "image_only", base, base + 0.05, q)]
    comp = FS.compare_feature_search(runs, "galaxalign", n_resamples=300)["1"]
    assert comp["vs"]["image_only"]["symbol"] == paired_bootstrap_diff(base + 0.1, base, n_resamples=300)
    assert comp["verdict"]["symbol"]["clearly"] and comp["verdict"]["symbol"]["advantage"] == pytest.approx(0.1)
    assert not comp["verdict"]["text"]["beats_all"] and comp["verdict"]["text"]["ci"][1] < 0
    runs[1]["feature_search"]["per_query"]["query"] = list(reversed(q))
    with pytest.raises(ValueError, match="same feature queries"):
        FS.compare_feature_search(runs, "galaxalign")


def test_several_seeds_are_also_compared_on_seed_averaged_queries():
    """Per label fraction, each query's nDCG averaged over the training seeds, then paired over the
    same queries; a run missing a seed is left out of the pooled comparison, and the report shows it."""
    from galaxalign.grids.table_report import demo_markdown

    rng = np.random.default_rng(1)
    q = [f"q{i}" for i in range(40)]
    base = rng.random(40)
    runs = []
    for s_ in (0, 1):
        noise = rng.normal(0, 0.05, 40)
        for name, vals in (("galaxalign", base + 0.05 + noise), ("image_only", base + noise[::-1])):
            r = _fs_run(f"{name}_lf1_s{s_}", name, vals, vals - 0.01, q)
            r.update(run=name, seed=s_)
            runs.append(r)
    lone = _fs_run("image_text_lf1_s0", "image_text", base, base, q)
    lone.update(run="image_text", seed=0)
    comp = FS.compare_feature_search([*runs, lone], "galaxalign", n_resamples=200)
    assert set(comp) == {"1, seed 0", "1, seed 1", "1, mean over seeds 0, 1"}
    pooled = comp["1, mean over seeds 0, 1"]
    assert pooled["reference"] == "galaxalign (seeds 0, 1)" and set(pooled["vs"]) == {"image_only (seeds 0, 1)"}
    assert pooled["seeds"] == [0, 1] and "seeds" not in comp["1, seed 0"]
    mean = lambda name, m: np.mean([r["feature_search"]["per_query"][m] for r in runs if r["run"] == name], axis=0)
    want = paired_bootstrap_diff(mean("galaxalign", "symbol"), mean("image_only", "symbol"), n_resamples=200)
    assert pooled["vs"]["image_only (seeds 0, 1)"]["symbol"] == want
    assert pooled["ndcg"]["galaxalign (seeds 0, 1)"]["text"] == pytest.approx(float(mean("galaxalign", "text").mean()))
    for r in runs:
        r.update({"train_seconds": 1.0, "classifiers": {}, "description": "x", "checkpoint": "c", "label_fraction": 1.0,
                  **{m: 0.5 for m in ("accuracy", "macro_f1", "map", "map_at_10", "precision_at_10")}})
    md = demo_markdown({"runs": runs, "reference": "galaxalign", "dataset": {}, "backbone": "tiny", "timings": {},
                        "budget": {"stage1_epochs": 1, "stage2_epochs": 1, "baseline_epochs": 2, "batch_size": 8},
                        "feature_search": {"k": 10, "comparison": comp}})
    assert "Label fraction 1, mean over seeds 0, 1: each query's nDCG@10 averaged over the training seeds" in md
    assert "| image_only (seeds 0, 1) |" in md


def test_reports_show_the_feature_search_table_and_verdict():
    from galaxalign.grids.table_report import ablation_markdown, demo_markdown

    q = [f"q{i}" for i in range(20)]
    v = np.linspace(0.2, 0.8, 20)
    runs = [_fs_run("galaxalign", "galaxalign", v + 0.2, v + 0.1, q), _fs_run("image_text", "image_text", v, v, q)]
    for r in runs:
        r.update({"train_seconds": 1.0, "classifiers": {}, "description": "x", "checkpoint": "c",
                  **{m: 0.5 for m in ("accuracy", "macro_f1", "map", "map_at_10", "precision_at_10")}})
    runs[0]["feature_exemplars"] = {"gz2-exemplars": {
        "n": 86, "n_answers": 35, "symbol": {"auc": 0.61, "ci": [0.55, 0.67], "auc_all": 0.58, "n_answers": 28},
        "text": {"auc": 0.57, "ci": [0.5, 0.64], "auc_all": 0.55}}}
    report = {"runs": runs, "reference": "galaxalign", "dataset": {}, "backbone": "tiny", "timings": {},
              "budget": {"stage1_epochs": 1, "stage2_epochs": 1, "baseline_epochs": 2, "batch_size": 8},
              "feature_search": {"k": 10, "comparison": FS.compare_feature_search(runs, "galaxalign", n_resamples=100)}}
    for md in (demo_markdown(report), ablation_markdown({**report, "kind": "galaxalign-ablations"})):
        assert "## Feature search nDCG@10 (symbol / text)" in md
        assert "| image_text | image_text | 0.500 [0.000, 1.000] | 0.500 [0.000, 1.000] | +0.200 [" in md
        assert "symbol queries: galaxalign 0.700 vs best other image_text 0.500 (+0.200" in md and "clearly above" in md
        assert "| galaxalign | gz2-exemplars | 86 | 28 | 0.610 [0.550, 0.670] (0.580) |" in md
        assert "A random ranking scores 0.200." in md
    runs[0]["feature_search"]["per_galaxy_paths"], runs[1]["feature_search"]["per_galaxy_paths"] = 60, 0
    assert "Aligned per galaxy (the model carries its training paths): galaxalign (60 paths); every other" in demo_markdown(report)


# ------------------------------------------------------------------------------------- exemplars
@pytest.mark.parametrize("question, answer, icon, expected", [
    ("Is the galaxy in the centre of the image simply smooth and rounded, or does it have features?", "Features",
     "feature_clumpy", "smooth-or-featured_featured-or-disk"),
    ("Is the galaxy simply smooth and rounded, with no sign of a disk?", "Features or disk", "feature",
     "smooth-or-featured_featured-or-disk"),
    ("Could this be a disk viewed edge-on?", "Yes", "yes", "disk-edge-on_yes"),
    ("How prominent is the central bulge, compared with the rest of the galaxy?", "No bulge", "bulge_none", "bulge-size_no"),
    ("Does the galaxy have a bulge at its center? If so, what shape?", "No bulge", "edge_none", "bulge-shape_no-bulge"),
    ("What are the odd features?", "Merger", "merger", "odd-feature_merger"),
    ("Is there any sign of a bar feature through the center of the galaxy?", "Bar", "yes", "bar_yes"),
    ("Do you see any of these odd features in the image?", "None", "no", None),   # not an answer of the tree
])
def test_manifest_wording_maps_to_tree_answers(tax, question, answer, icon, expected):
    assert FE.map_answer(question, answer, icon, tax.tree) == expected


def test_roc_auc_and_contradiction(tax):
    assert FE.roc_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx((2 + 1 + 0.5) / 4)
    assert math.isnan(FE.roc_auc(np.array([1.0]), np.array([])))
    assert FE.contradicts("bar_yes", "bar_no", tax.tree)
    assert FE.contradicts("bar_yes", "smooth-or-featured_smooth", tax.tree)
    assert not FE.contradicts("bar_yes", "spiral-arm-count_2", tax.tree)   # unknown: neither positive nor negative
    assert not FE.contradicts("odd-feature_ring", "odd-feature_merger", tax.tree)  # multiple choice


def _exemplar_folder(root: Path) -> Path:
    from PIL import Image

    rows = [("a.png", "Is there any sign of a bar feature through the centre of the galaxy?", "Bar", "yes"),
            ("b.png", "Is there any sign of a bar feature through the centre of the galaxy?", "No bar", "no"),
            ("c.png", "Is there any sign of a bar feature through the centre of the galaxy?", "Bar", "yes"),
            ("d.png", "Do you see any of these odd features in the image?", "None", "no")]
    rng = np.random.default_rng(0)
    for f, *_ in rows:
        Image.fromarray(rng.integers(0, 255, (28, 30, 3), dtype=np.uint8)).save(root / f)
    pd.DataFrame(rows, columns=["file", "question", "answer", "icon"]).to_csv(root / "manifest.csv", index=False)
    return root


def test_exemplar_search_scores_each_answer_against_contradicting_exemplars(tmp_path, tax):
    folder = _exemplar_folder(tmp_path)
    cat, unmapped = FE.load_exemplars(folder, tax.tree)
    assert cat["answer"].tolist() == ["bar_yes", "bar_no", "bar_yes"] and unmapped[0]["row"] == 5
    res = FE.exemplar_search(_tiny(), tax, folder, n_resamples=20)
    assert res["n"] == 3 and set(res["answers"]) == {"bar_yes", "bar_no"}
    e = res["answers"]["bar_yes"]
    assert (e["n_pos"], e["n_neg"]) == (2, 1) and 0 <= e["symbol"]["auc"] <= 1
    assert res["symbol"]["n_answers"] == 2
    (folder / "manifest.csv").write_text("file,answer\na.png,Bar\n")
    with pytest.raises(ValueError, match=r"manifest.csv: needs column\(s\) \['question'\]"):
        FE.load_exemplars(folder, tax.tree)


@pytest.mark.skipif(not (SHARED / "gz2-exemplars" / "manifest.csv").is_file(), reason="../shared/data is absent")
def test_shipped_exemplar_manifests_map_to_tree_answers(tax):
    gz2, un = FE.load_exemplars(SHARED / "gz2-exemplars", tax.tree)
    assert len(gz2) == 86 and not un
    gama, un = FE.load_exemplars(SHARED / "gama-exemplars", tax.tree)
    assert len(gama) == 153 and [u["answer"] for u in un] == ["None", "None"]
    assert set(gama["answer"]) >= {"smooth-or-featured_featured-or-disk", "merging_both", "odd-feature_overlapping"}


# -------------------------------------------------------------------------------------- the grid
def test_evaluate_adds_feature_search_when_the_split_has_answers(tmp_path, survey, make_model, capsys):
    import json

    from galaxalign.cli import main

    path, _ = survey
    model_dir = make_model(tmp_path / "model")
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(path), "--bootstrap", "20",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[0])
    assert 0 <= figures["feature_search_symbol_ndcg_at_10"] <= 1 and 0 <= figures["feature_search_text_ndcg_at_10"] <= 1
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["feature_search"]["n_pool"] == report["n_test"]
    assert "## Feature search" in (tmp_path / "ev" / "report.md").read_text()


def test_grid_runner_reports_feature_search_for_each_run(tmp_path, survey):
    import json

    import yaml

    from galaxalign.grids.runner import run_table

    path, _ = survey
    grid = {"kind": "ablation", "title": "t", "name": "{run}", "bootstrap": 30, "reference": "ga",
            "overrides": {"tensorboard": False, "recipe.enabled": False, "data.source": str(path), "device": "cpu",
                          "model.backbone": {"kind": "tiny", "seed": 0, "image_size": 24, "width": 8, "embed_dim": 16},
                          "stage1.epochs": 1, "stage2.epochs": 1, "batch_size": 16, "symbols.variants": 1,
                          "validate": False},
            "runs": [{"run": "ga", "method": "galaxalign"}, {"run": "io", "method": "image_only"}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    report = run_table(tmp_path / "g.yaml", tmp_path / "out", exemplars=[_exemplar_folder(tmp_path)], progress=False)
    fs = report["feature_search"]
    assert len(fs["queries"]) > 0 and set(fs["comparison"]["1"]["vs"]) == {"io"}
    for r in report["runs"]:
        assert r["feature_search"]["per_query"]["query"] == [",".join(q) for q in fs["queries"]]
        assert r["feature_exemplars"][tmp_path.name]["n"] == 3
    assert {r["name"]: r["feature_search"]["scoring"] for r in report["runs"]} == {"ga": "path_posterior", "io": "class_prototype"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Feature search nDCG@10 (symbol / text)" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["feature_search"]["k"] == 10

"""Per-galaxy decision-tree answers: catalog columns, tree walk, captions, relevance, survey truth."""
import numpy as np
import pandas as pd
import pytest

from galaxalign import answers as A
from galaxalign.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def tax():
    return load_taxonomy("galaxy10_decals")


def _catalog(**cols):
    n = len(next(iter(cols.values())))
    base = {"id": [f"g{i}" for i in range(n)], "label": [-1] * n, "source": ["x"] * n, "file_loc": ["x.png"] * n}
    base.update(cols)
    return pd.DataFrame(base)


def test_fraction_columns_accept_galaxy_datasets_names_with_campaign_suffix(tax):
    cols = ["smooth-or-featured-gz2_smooth_fraction", "smooth-or-featured-gz2_featured-or-disk_fraction",
            "bar-dr5_yes_fraction", "bar_no_fraction", "bar_no", "unrelated_fraction"]
    found = A.fraction_columns(cols, tax.tree)
    assert found["bar_no"] == "bar_no_fraction"
    assert found["smooth-or-featured_smooth"] == "smooth-or-featured-gz2_smooth_fraction"
    assert "bar_yes" not in found  # the other campaign (dr5, one column) loses to gz2 (two)


def test_answer_matrix_reads_fractions_then_answers_column_then_class(tax):
    ids = A.answer_ids(tax.tree)
    cat = _catalog(**{"bar_yes_fraction": [0.8, np.nan, np.nan], "bar_no_fraction": [0.2, np.nan, np.nan],
                      "answers": ["", "smooth-or-featured_smooth;how-rounded_cigar", ""], "label": [-1, -1, 2]})
    m = A.answer_matrix(cat, tax)
    assert m.shape == (3, len(ids))
    assert m[0, ids.index("bar_yes")] == pytest.approx(0.8)
    assert A.hard_answers(m[1], tax.tree) == ("smooth-or-featured_smooth", "how-rounded_cigar")
    # row 2: no answers of its own -> class 2's (round smooth)
    assert A.hard_answers(m[2], tax.tree) == ("smooth-or-featured_smooth", "how-rounded_round")
    assert m[1, ids.index("how-rounded_round")] == 0.0 and np.isnan(m[1, ids.index("bar_yes")])


def test_bad_fraction_names_row_and_column(tax):
    cat = _catalog(bar_yes_fraction=[0.5, 1.7])
    with pytest.raises(A.AnswerError, match=r"row 1 \(id 'g1'\): column 'bar_yes_fraction' is 1.7"):
        A.answer_matrix(cat, tax)
    cat = _catalog(answers=["bar_maybe"])
    with pytest.raises(A.AnswerError, match=r"row 0 .*unknown decision-tree answer 'bar_maybe'"):
        A.answer_matrix(cat, tax)


def test_hard_answers_walk_the_tree_and_skip_unreached_questions(tax):
    ids = A.answer_ids(tax.tree)
    row = np.full(len(ids), np.nan, np.float32)
    for a, v in {"smooth-or-featured_smooth": 0.6, "smooth-or-featured_featured-or-disk": 0.4,
                 "how-rounded_in-between": 0.7, "how-rounded_round": 0.3, "bar_yes": 0.9, "bar_no": 0.1}.items():
        row[ids.index(a)] = v
    # bar is not reached from "smooth" (it requires disk-edge-on_no): left out
    assert A.hard_answers(row, tax.tree) == ("smooth-or-featured_smooth", "how-rounded_in-between")


def test_the_tree_walk_breaks_ties_to_the_first_answer_and_keeps_multiple_choice_answers(tax):
    ids = A.answer_ids(tax.tree)
    rows = np.full((2, len(ids)), np.nan, np.float32)
    for a, v in {"smooth-or-featured_featured-or-disk": 0.5, "smooth-or-featured_artifact": 0.5,
                 "smooth-or-featured_smooth": 0.5, "something-odd_yes": 1.0,
                 "odd-feature_ring": 0.5, "odd-feature_dust-lane": 0.7, "odd-feature_merger": 0.2}.items():
        rows[0, ids.index(a)] = v
    rows[1, ids.index("bar_yes")] = 1.0  # bar is only reached through disk-edge-on_no: nothing said
    masks = A.path_masks(rows, tax.tree)
    assert [a for a, on in zip(ids, masks[0]) if on] == [
        "smooth-or-featured_smooth", "something-odd_yes", "odd-feature_ring", "odd-feature_dust-lane"]
    assert not masks[1].any() and A.hard_answers(rows[1], tax.tree) == ()


def test_caption_says_the_path_in_volunteer_wording(tax):
    text = A.caption(["bar_yes", "spiral-winding_tight", "spiral-arm-count_2"], tax.tree)
    assert text == ("galaxy with features or a disk, not edge-on, a bar through the centre, spiral arms, "
                    "tightly wound arms, 2 spiral arms")


def test_relevance_is_the_fraction_of_query_answers_the_galaxy_has(tax):
    galaxy = ["bar_yes", "spiral-winding_tight", "spiral-arm-count_3"]
    query = ["smooth-or-featured_featured-or-disk", "bar_yes", "spiral-winding_tight", "spiral-arm-count_2"]
    assert A.relevance(query, galaxy, tax.tree) == pytest.approx(3 / 4)
    assert A.relevance(["smooth-or-featured_smooth"], galaxy, tax.tree) == 0.0


def test_answer_agreement_is_jaccard_on_hard_rows(tax):
    import torch

    from galaxalign.loss import answer_agreement  # the one soft-Jaccard (the graded loss's positives)

    a = A.answer_vector(["bar_yes", "spiral-winding_tight"], tax.tree)
    b = A.answer_vector(["bar_no", "spiral-winding_tight"], tax.tree)
    s = answer_agreement(torch.as_tensor(np.stack([a, b]))).numpy()
    # a: featured, edge-on no, bar yes, spiral yes, tight (5); b: same with bar no -> 4 shared of 6
    assert s[0, 0] == 1.0 and s[0, 1] == pytest.approx(4 / 6)


def test_rendered_survey_writes_true_answers_consistent_with_the_class(tmp_path, tax):
    from galaxalign.datasets import load_catalog
    from galaxalign.survey.generate import generate_survey

    path = generate_survey(tmp_path / "s.h5", 40, size=32, seed=3, workers=0, progress=False)
    cat = load_catalog(path)
    assert A.has_galaxy_answers(cat, tax)
    m = A.answer_matrix(cat, tax)
    for i in range(len(cat)):
        path_i = A.hard_answers(m[i], tax.tree)
        spec = tax.by_id(int(cat.label[i]))
        assert set(spec.answers) <= set(path_i), (i, spec.name, path_i)
        if "disk-edge-on_no" in path_i and "has-spiral-arms_yes" in path_i:
            arms = int(cat.n_arms[i])
            assert f"spiral-arm-count_{arms if arms <= 4 else 'more-than-4'}" in path_i


def test_survey_answer_rules_are_checked_against_the_tree():
    from galaxalign.survey.classes import SurveyConfigError, load_survey_config, validate

    config = load_survey_config()
    config["answers"]["bar"] = {"param": "bar_strength", "bins": [[0.3, 100, "maybe"]]}
    with pytest.raises(SurveyConfigError, match=r"answers.bar: 'maybe' is not an answer of 'bar'"):
        validate(config, "my_survey.yaml")

"""Classification metrics, bootstrap intervals and embedding classifiers on hand-computed cases."""
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from galaxalign.evaluation.bootstrap import bootstrap_ci, bootstrap_mean_ci
from galaxalign.evaluation.classifiers import LinearProbe, knn_classify, prototype_classify
from galaxalign.evaluation.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_accuracy,
)


def test_accuracy_and_confusion_on_a_hand_case():
    t = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 0, 2]
    assert accuracy(t, p) == pytest.approx(4 / 6)
    assert confusion_matrix(t, p, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_allclose(per_class_accuracy(t, p, 3), [0.5, 1.0, 0.5])


def test_macro_f1_by_hand():
    # class 0: TP1 FP1 FN1 -> F1 0.5; class 1: TP2 FP1 FN0 -> 0.8; class 2: TP1 FP0 FN1 -> 2/3
    t = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 0, 2]
    assert macro_f1(t, p) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_matches_sklearn_on_random_labels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        t = rng.integers(0, 6, 80)
        p = np.where(rng.random(80) < 0.5, t, rng.integers(0, 7, 80))
        assert macro_f1(t, p) == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
        assert (confusion_matrix(t, p, 7) == sk_confusion(t, p, labels=range(7))).all()


def test_per_class_accuracy_is_nan_for_absent_class_and_report_is_json_safe():
    rep = classification_report([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    assert rep["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": None}
    assert rep["support"] == {"a": 2, "b": 1, "c": 0}
    assert rep["n"] == 3


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="y_pred has 2"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="-1"):
        confusion_matrix([0, -1], [0, 0])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 0], num_classes=2)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = (rng.random(50) < 0.7).astype(float)
    large = (rng.random(5000) < 0.7).astype(float)
    lo_s, hi_s = bootstrap_mean_ci(small)
    lo_l, hi_l = bootstrap_mean_ci(large)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(n): 10x narrower expected
    # binomial standard error check: 95 % width ~ 2 * 1.96 * sqrt(p(1-p)/n)
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 5000), rel=0.2)


def test_bootstrap_of_a_statistic_resamples_rows_jointly():
    t = np.array([0, 1] * 50)
    lo, hi = bootstrap_ci(macro_f1, t, t.copy(), n_resamples=200)
    assert lo == hi == 1.0  # perfect predictions stay perfect under any resample
    with pytest.raises(ValueError, match="different lengths"):
        bootstrap_ci(macro_f1, t, t[:10])


def test_zero_shot_prototypes_pick_the_nearest_class():
    protos = np.eye(3, 4)  # class c points along axis c
    emb = np.array([[0.9, 0.1, 0, 0], [0.1, 0.2, 0.95, 0], [0, 1, 0, 0.5]])
    pred, scores = prototype_classify(emb, protos)
    assert pred.tolist() == [0, 2, 1]
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    assert scores[0, 0] > 0.99  # scale 100 makes a clear winner peaked


def test_knn_votes_with_the_nearest_neighbours():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.05, 1]])
    labels = [0, 0, 1, 1, 1]
    pred, scores = knn_classify(train, labels, np.array([[1, 0.05], [0.2, 1]]), num_classes=2, k=2)
    assert pred.tolist() == [0, 1]
    assert scores.shape == (2, 2)
    # k larger than the training set uses all of it (here class 1 has more members)
    pred_all, _ = knn_classify(train, labels, np.array([[0.6, 0.55]]), num_classes=2, k=50)
    assert pred_all.tolist() == [1]


def test_linear_probe_separates_separable_clusters():
    rng = np.random.default_rng(1)
    centres = np.eye(3, 8) * 3
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.normal(0, 0.3, (90, 8))
    probe = LinearProbe(num_classes=4).fit(x, y)
    pred, scores = probe.predict_scores(centres + rng.normal(0, 0.3, (3, 8)))
    assert pred.tolist() == [0, 1, 2]
    assert scores.shape == (3, 4) and (scores[:, 3] == 0).all()  # class 3 never seen: score 0


def test_knn_excluded_neighbour_does_not_vote():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = [0, 1, 1]
    query = np.array([[1.0, 0.0]])
    assert knn_classify(train, labels, query, 2, k=1)[0].tolist() == [0]  # finds itself
    assert knn_classify(train, labels, query, 2, k=1, exclude=np.array([0]))[0].tolist() == [1]


def test_choose_probe_c_picks_the_best_validation_accuracy_smallest_c_on_ties():
    from galaxalign.evaluation.classifiers import choose_probe_c

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8))
    y = np.repeat(np.arange(4), 30)
    x = centers[y] + 0.8 * rng.normal(size=(120, 8))
    c, by_c = choose_probe_c(x[::2], y[::2], x[1::2], y[1::2], 4, grid=(0.01, 1.0, 100.0))
    assert set(by_c) == {"0.01", "1", "100"}
    best = max(by_c.values())
    assert by_c[f"{c:g}"] == best and c == min(float(k) for k, v in by_c.items() if v == best)


def test_macro_f1_bootstrap_uses_the_full_label_list():
    # Regression (#10 item 6): a resample without some class used to average over fewer classes.
    from galaxalign.evaluation.protocol import _class_ci

    t = np.array([0] * 45 + [1] * 45 + [2] * 2)
    p = np.where(np.arange(92) < 90, t, 0)  # class 2 (2 galaxies) always wrong, never predicted
    vals = _class_ci({}, (t == p).astype(float), t, p, 3, n_resamples=300, seed=0)
    # Class 2 scores F1 = 0 in every resample, present or not: macro-F1 can never exceed 2/3.
    assert vals["macro_f1_ci"][1] <= 2 / 3 + 1e-9
    # The point estimate is over the same full list: a class absent from test and predictions counts 0.
    assert classification_report([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx(2 / 3)


def test_paired_bootstrap_of_a_difference_resamples_the_same_items_for_both():
    from galaxalign.evaluation.bootstrap import paired_bootstrap_diff

    rng = np.random.default_rng(1)
    base = (rng.random(400) < 0.6).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:20]] = 1.0  # +20 galaxies right, none lost: +0.05 exactly
    d = paired_bootstrap_diff(better, base, n_resamples=500)
    assert d["difference"] == pytest.approx(0.05) and d["n"] == 400
    lo, hi = d["ci"]
    assert 0 < lo <= 0.05 <= hi  # paired: every resample is >= 0, so the interval excludes 0
    # unpaired intervals of the two would overlap
    assert bootstrap_mean_ci(better)[0] < bootstrap_mean_ci(base)[1]
    nan_ap = np.array([0.5, np.nan, 0.7])
    assert paired_bootstrap_diff(nan_ap, np.array([0.4, 0.1, 0.6]))["n"] == 2

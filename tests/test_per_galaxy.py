"""Per-galaxy alignment: graded positives, per-path rows and symbols, and the trainer's switch."""
import numpy as np
import pytest
import pandas as pd
import torch

from galaxalign import answers as A
from galaxalign.loss import answer_agreement, contrastive_loss, label_targets
from galaxalign.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def tax():
    return load_taxonomy("galaxy10_decals")


def test_graded_targets_weigh_pairs_by_answer_agreement_to_the_power(tax):
    rows = torch.as_tensor(np.stack([A.answer_vector(a, tax.tree) for a in (
        ["bar_yes", "spiral-winding_tight"],      # 5 answers with their path
        ["bar_no", "spiral-winding_tight"],       # shares 4 of 6
        ["smooth-or-featured_smooth", "how-rounded_round"],  # shares nothing
    )]))
    s = answer_agreement(rows)
    assert s[0, 1] == pytest.approx(4 / 6) and s[0, 2] == 0 and torch.all(torch.diag(s) == 1)
    t = label_targets(rows, torch.float64, graded_power=2.0)
    w = (4 / 6) ** 2
    assert t[0].tolist() == pytest.approx([1 / (1 + w), w / (1 + w), 0.0])
    assert torch.allclose(t.sum(1), torch.ones(3, dtype=torch.float64))


def test_class_answer_rows_give_exactly_the_label_aware_loss(tax):
    torch.manual_seed(0)
    labels = torch.tensor([2, 2, 5, 7, 5, 9])
    class_rows = torch.as_tensor(A.class_answer_matrix(tax))[labels]
    a, b = torch.nn.functional.normalize(torch.randn(2, 6, 16), dim=-1)
    # different classes share answers (e.g. "featured"), so a finite power gives them some weight;
    # a large one leaves only identical answer sets, the label-aware special case.
    graded = contrastive_loss(a, b, 10.0, class_rows, graded_power=200.0)
    assert graded.item() == pytest.approx(contrastive_loss(a, b, 10.0, labels).item(), rel=1e-6)
    assert contrastive_loss(a, b, 10.0, class_rows, graded_power=4.0).item() != pytest.approx(graded.item())


def test_galaxy_rows_make_one_caption_and_symbol_per_distinct_path(tmp_path, tax):
    from galaxalign.class_bank import galaxy_rows
    from galaxalign.datasets import load_catalog
    from galaxalign.survey.generate import generate_survey

    cat = load_catalog(generate_survey(tmp_path / "s.h5", 60, size=32, seed=1, workers=0, progress=False))
    row_of, rows = galaxy_rows(cat, tax)
    matrix = A.answer_matrix(cat, tax)
    paths = [A.hard_answers(r, tax.tree) for r in matrix]
    assert len(rows) == len(set(paths)) < len(cat)
    for i in range(len(cat)):
        assert rows.symbols[row_of[i]] == [paths[i]]
        assert rows.prompts[row_of[i]][0] == tax.prompt_templates[0].format(label=A.caption(paths[i], tax.tree))
    assert rows.vectors.shape == (len(rows), len(A.answer_ids(tax.tree)))


def test_answer_symbols_depend_only_on_their_answers():
    from galaxalign.symbols.raster import answer_symbol_bank

    s1 = ("bar_yes", "spiral-winding_tight")
    s2 = ("smooth-or-featured_smooth", "how-rounded_cigar")
    a, ids = answer_symbol_bank([s1, s2], size=32, n_variants=2, seed=0)
    b, _ = answer_symbol_bank([s2, s1], size=32, n_variants=2, seed=0)
    assert ids.tolist() == [0, 0, 1, 1]
    assert np.array_equal(a[0:2], b[2:4]) and np.array_equal(a[2:4], b[0:2])
    assert not np.array_equal(a[0], a[1])  # variant 1 is an augmented drawing


def _trainer(tmp_path, survey, **over):
    from galaxalign.training.config import load_config
    from galaxalign.training.trainer import Trainer

    ov = [f"data.source={survey}", "data.size=32", f"out={tmp_path / 'run'}", "tensorboard=false", "batch_size=16"]
    ov += [f"{k}={v}" for k, v in over.items()]
    return Trainer(load_config("default", ov), progress=False)


def test_trainer_aligns_per_galaxy_when_the_catalog_has_answers(tmp_path, tax):
    from galaxalign.survey.generate import generate_survey

    survey = generate_survey(tmp_path / "s.h5", 120, size=32, seed=2, workers=0, progress=False)
    t = _trainer(tmp_path, survey)
    assert t.rows is not None and t.train_labels.max() == len(t.rows) - 1
    assert _trainer(tmp_path, survey, **{"answers.per_galaxy": "false"}).rows is None
    assert _trainer(tmp_path, survey, method="image_text").rows is None          # auto: the paper's baseline
    assert _trainer(tmp_path, survey, method="image_text", **{"answers.per_galaxy": "true"}).rows is not None


@pytest.mark.slow
def test_per_galaxy_training_runs_and_learns_its_rows(tmp_path):
    from galaxalign.survey.generate import generate_survey
    from galaxalign.training.config import load_config
    from galaxalign.training.trainer import train

    survey = generate_survey(tmp_path / "s.h5", 120, size=32, seed=2, workers=0, progress=False)
    cfg = load_config("default", [f"data.source={survey}", "data.size=32", f"out={tmp_path / 'run'}",
                                  "tensorboard=false", "batch_size=16", "max_steps=6", "validate=false",
                                  # one symbol per path and no partial captions: the same rows, a quarter of the renders
                                  "answers.symbol_variants=1", "answers.partial_captions=0"])
    res = train(cfg, progress=False)
    losses = [r for r in res.history if r.get("kind") == "train"]
    assert losses and all(np.isfinite(float(r["loss"])) for r in losses)
    # the exported model carries the distinct paths it was aligned with (search.features ranks by them)
    from galaxalign import answers as A
    from galaxalign.datasets import load_catalog
    from galaxalign.inference import load_model

    model, tax = load_model(res.checkpoint)
    cat = load_catalog(survey, tax)
    assert model.answer_paths and set(model.answer_paths) <= {A.hard_answers(r, tax.tree) for r in A.answer_matrix(cat, tax)}
    # ... and how many training galaxies had each (the path prior of search.features)
    from collections import Counter

    from galaxalign.datasets.splits import splits_from_config

    train_cat = splits_from_config(cfg["data"], tax)[0]["train_labelled"]
    have = Counter(A.hard_answers(r, tax.tree) for r in A.answer_matrix(train_cat, tax))
    assert model.answer_path_counts == tuple(have[p] for p in model.answer_paths)
    assert sum(model.answer_path_counts) == len(train_cat)


def test_auto_per_galaxy_falls_back_to_class_rows_when_paths_are_mostly_singletons(tmp_path, capsys):
    """``answers.per_galaxy: auto`` with fewer than MIN_GALAXIES_PER_PATH labelled galaxies per
    distinct path aligns with class rows (and says so); ``true`` forces per-galaxy rows."""
    from galaxalign.survey.generate import generate_survey
    from galaxalign.training import trainer as T
    from galaxalign.training.config import load_config
    from galaxalign.training.per_galaxy import MIN_GALAXIES_PER_PATH

    survey = generate_survey(tmp_path / "s.h5", 120, size=32, seed=2, workers=0, progress=False)
    base = [f"data.source={survey}", "data.size=32", f"out={tmp_path / 'run'}", "tensorboard=false", "validate=false"]
    few = T.Trainer(load_config("default", [*base, "data.label_fraction=0.1"]), progress=True)
    assert few.rows is None and "per-galaxy alignment off" in capsys.readouterr().out
    assert (few.train_labels == few.train_cat["label"].to_numpy()).all()
    forced = T.Trainer(load_config("default", [*base, "data.label_fraction=0.1", "answers.per_galaxy=true"]), progress=False)
    assert forced.rows is not None and forced.per_galaxy_note is None
    full = T.Trainer(load_config("default", base), progress=False)
    assert full.rows is not None and len(full.train_cat) >= MIN_GALAXIES_PER_PATH * len(set(full.rows.paths))


def test_path_counts_add_up_rows_that_differ_only_by_class():
    from galaxalign.class_bank import galaxy_rows, path_counts

    tax = load_taxonomy("galaxy10_decals")
    smooth = tax.classes[0].answers
    cat = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 0, 2],
                        "answers": [",".join(smooth)] * 3 + [",".join(tax.classes[2].answers)]})
    row_of, rows = galaxy_rows(cat, tax, class_weight=3.0)
    assert len(rows) == 3  # (path, class) pairs: (smooth, 0), (smooth, 1), (class 2's path, 2)
    paths, counts = path_counts(row_of, rows)
    assert paths == [tuple(A.hard_answers(A.answer_vector(smooth, tax.tree), tax.tree)), rows.paths[2]]
    assert counts == [3, 1]


def test_bad_per_galaxy_setting_names_the_key():
    from galaxalign.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="answers.per_galaxy"):
        load_config("default", ["answers.per_galaxy=sometimes"])


def test_partial_paths_say_some_answers_closed_under_requires_and_seeded_by_the_path(tax):
    from galaxalign.class_bank import partial_paths

    path = A.expand(["bar_yes", "spiral-winding_tight", "spiral-arm-count_2", "bulge-size_obvious"], tax.tree)
    subs = partial_paths(path, 3, tax.tree)
    assert subs == partial_paths(path, 3, tax.tree) and 1 <= len(subs) <= 3
    for sub in subs:
        assert set(sub) < set(path) and A.expand(sub, tax.tree) == sub  # a proper, closed subset


def test_galaxy_rows_add_partial_captions_and_alternate_partial_symbols(tmp_path, tax):
    from galaxalign.class_bank import galaxy_rows
    from galaxalign.datasets import load_catalog
    from galaxalign.survey.generate import generate_survey
    from galaxalign.symbols.raster import answer_symbol_bank

    cat = load_catalog(generate_survey(tmp_path / "s.h5", 30, size=32, seed=1, workers=0, progress=False))
    _, plain = galaxy_rows(cat, tax)
    _, rows = galaxy_rows(cat, tax, partial_captions=2, partial_symbols=1)
    n_templates = len(tax.prompt_templates)
    assert all(len(p) == n_templates for p in plain.prompts)
    assert any(len(p) > n_templates for p in rows.prompts) and all(p[:n_templates] == q for p, q in zip(rows.prompts, plain.prompts))
    r = next(i for i, s in enumerate(rows.symbols) if len(s) == 2)
    images, _ = answer_symbol_bank([rows.symbols[r]], size=32, n_variants=2, seed=0)
    partial, _ = answer_symbol_bank([rows.symbols[r][1]], size=32, n_variants=2, seed=0)
    assert np.array_equal(images[1], partial[1])  # variant 1 draws the partial path


def test_class_weight_makes_the_class_one_more_answer_of_the_agreement(tmp_path, tax):
    from galaxalign.class_bank import galaxy_rows
    from galaxalign.datasets import load_catalog
    from galaxalign.survey.generate import generate_survey
    from galaxalign.training.config import ConfigError, load_config

    cat = load_catalog(generate_survey(tmp_path / "s.h5", 60, size=32, seed=1, workers=0, progress=False))
    plain_of, plain = galaxy_rows(cat, tax)
    row_of, rows = galaxy_rows(cat, tax, class_weight=2.0)
    labels = cat["label"].to_numpy()
    n_answers = len(A.answer_ids(tax.tree))
    assert rows.vectors.shape == (len(rows), n_answers + tax.num_classes)
    assert len(rows) == len({(int(a), int(y)) for a, y in zip(plain_of, labels)})
    for i in range(len(cat)):
        r = row_of[i]
        assert rows.paths[r] == plain.paths[plain_of[i]] and rows.prompts[r] == plain.prompts[plain_of[i]]
        assert np.array_equal(rows.vectors[r, :n_answers], plain.vectors[plain_of[i]])
        assert rows.vectors[r, n_answers + labels[i]] == 2.0 and rows.vectors[r, n_answers:].sum() == 2.0
    # same answers, other class: they agree less than with the plain answer rows
    v = torch.tensor(rows.vectors)
    a, b = v[0].clone(), v[0].clone()
    b[n_answers:] = torch.roll(b[n_answers:], 1)
    assert answer_agreement(torch.stack([a, b]))[0, 1] < 1.0
    with pytest.raises(ConfigError, match="answers.class_weight"):
        load_config("default", ["answers.class_weight=-1"])

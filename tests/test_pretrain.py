"""`galaxalign pretrain`: a trunk trained on a rendered survey, resumable, loadable as model.backbone.init."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from galaxalign.backbones import create_backbone
from galaxalign.backbones.trunk_base import TrunkBaseError, read_trunk_base, write_trunk_base
from galaxalign.training.pretrain import AnswerLoss, PretrainSettings, SurveyBatches, dihedral, pretrain

pytest.importorskip("efficientnet_lite_pytorch")


def _settings(out, survey, steps, stop_at=None):
    return PretrainSettings(out=str(out), size=32, steps=steps, batch_size=8, checkpoint_every=2, survey=str(survey),
                            threads=1, symbol_variants=1, stop_at=stop_at)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from galaxalign.survey import generate_survey

    root = tmp_path_factory.mktemp("pretrain")
    survey = generate_survey(root / "survey.h5", 24, size=32, seed=3, workers=1, progress=False)
    whole = pretrain(_settings(root / "whole", survey, 4), progress=False)
    first = pretrain(_settings(root / "split", survey, 4, stop_at=2), progress=False)
    assert first.steps == 2
    resumed = pretrain(_settings(root / "split", survey, 4), resume=True, progress=False)
    return {"root": root, "survey": survey, "whole": whole, "resumed": resumed}


def test_a_tiny_run_writes_a_base_of_the_whole_trunk(runs):
    state, meta = read_trunk_base(runs["whole"].base)
    assert meta["image"] == "efficientnet-lite0" and meta["image_size"] == 32 and meta["steps"] == 4
    assert meta["survey"]["num"] == 24 and meta["survey"]["seed"] == 3
    trunk = create_backbone({"kind": "offline", "image_size": 32}).visual.trunk.state_dict()
    assert set(state) == set(trunk)
    changed = [k for k in trunk if trunk[k].dtype.is_floating_point and not torch.equal(trunk[k], state[k])]
    assert len(changed) > 0.5 * len(trunk)  # the trunk itself trained, not only heads
    losses = [r["loss"] for r in runs["whole"].history]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


def test_resume_repeats_the_steps_an_uninterrupted_run_takes(runs):
    whole, resumed = runs["whole"], runs["resumed"]
    assert resumed.steps == 4 and [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    a, _ = read_trunk_base(whole.base)
    b, _ = read_trunk_base(resumed.base)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_not_overwritten_without_resume(runs):
    with pytest.raises(ValueError, match="checkpoint.pt exists; pass --resume"):
        pretrain(_settings(runs["root"] / "whole", runs["survey"], 4), progress=False)


def test_resume_with_other_settings_names_what_differs(runs):
    s = replace(_settings(runs["root"] / "whole", runs["survey"], 6), lr=1e-2)
    with pytest.raises(ValueError, match=r"other settings: lr 0\.0003 \(now 0\.01\)"):
        pretrain(s, resume=True, progress=False)


def test_the_base_loads_through_model_backbone_init(runs):
    state, _ = read_trunk_base(runs["whole"].base)
    for init in (runs["whole"].base, runs["whole"].base / "base.json"):
        tower = create_backbone({"kind": "offline", "image_size": 32, "init": str(init)}).visual
        own = tower.trunk.state_dict()
        assert all(torch.equal(own[k], state[k]) for k in own)
    # With taps the tower keeps the base's early stages (it loads before dropping the later ones).
    tapped = create_backbone({"kind": "offline", "image_size": 32, "taps": [5], "init": str(runs["whole"].base)}).visual
    assert torch.equal(tapped.trunk._conv_stem.weight, state["_conv_stem.weight"])


def test_the_training_config_takes_the_base(runs):
    from galaxalign.training.config import load_config

    cfg = load_config("default", [f"model.backbone.init={runs['whole'].base}"])
    assert cfg["model"]["backbone"]["init"] == str(runs["whole"].base)


def test_a_base_for_another_tower_is_refused_with_the_reason(runs, tmp_path):
    state, meta = read_trunk_base(runs["whole"].base)
    other = write_trunk_base(tmp_path / "lite1", state, {**meta, "image": "efficientnet-lite1"})
    with pytest.raises(TrunkBaseError, match="made for image tower 'efficientnet-lite1'"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(other)})
    short = write_trunk_base(tmp_path / "short", {k: v for k, v in state.items() if k != "_conv_stem.weight"}, meta)
    with pytest.raises(TrunkBaseError, match=r"1 missing \(e\.g\. \['_conv_stem\.weight'\]\)"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(short)})
    wrong = write_trunk_base(tmp_path / "wrong", {**state, "_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, meta)
    with pytest.raises(TrunkBaseError, match=r"'_conv_stem.weight' has shape \(8, 3, 3, 3\)"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(wrong)})


def test_a_damaged_or_missing_base_is_refused_naming_the_file(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["whole"].base, copy)
    with open(copy / "trunk.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(TrunkBaseError, match="trunk.safetensors: SHA-256 differs"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(copy)})
    with pytest.raises(TrunkBaseError, match="does not exist"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(tmp_path / "nowhere")})
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(TrunkBaseError, match="a trunk base is a folder"):
        create_backbone({"kind": "offline", "image_size": 32, "init": str(tmp_path / "x.pt")})


def test_the_cli_runs_and_reports(runs, tmp_path, capsys):
    from galaxalign.cli import main

    rc = main(["pretrain", "--out", str(tmp_path / "cli"), "--survey", str(runs["survey"]), "--size", "32",
               "--steps", "1", "--batch-size", "4", "--threads", "1", "--quiet"])
    assert rc == 0
    assert "pretrain: 1 steps on survey.h5" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "history.json").read_text())[0]["step"] == 1
    rc = main(["pretrain", "--out", str(tmp_path / "cli"), "--survey", str(runs["survey"]), "--steps", "0"])
    assert rc == 1


def test_the_answer_loss_rewards_the_right_answers_and_skips_unreached_questions():
    from galaxalign.answers import answer_ids, answer_vector
    from galaxalign.taxonomy import decision_tree

    tree = decision_tree()
    ids = answer_ids(tree)
    row = torch.from_numpy(answer_vector(["smooth-or-featured_smooth", "how-rounded_round", "merging_neither",
                                          "something-odd_yes", "odd-feature_ring"], tree))[None]
    loss = AnswerLoss(tree)
    right = torch.where(torch.nan_to_num(row) > 0, 5.0, -5.0)
    wrong = -right
    l_right, acc_right = loss(right, row)
    l_wrong, acc_wrong = loss(wrong, row)
    assert l_right < 0.2 < l_wrong and acc_right == 1.0 and acc_wrong == 0.0
    # Questions the galaxy does not reach (bar, spiral arms ...) take no part, whatever their logits.
    noisy = right.clone()
    noisy[0, ids.index("bar_yes")] = 50.0
    assert loss(noisy, row)[0] == pytest.approx(float(l_right))


def test_batches_are_reproducible_per_step_and_views_are_dihedral(runs):
    src = SurveyBatches(runs["survey"], 24, 8, seed=0)
    a, ia = src[5]
    b, ib = src[5]
    assert torch.equal(a, b) and torch.equal(ia, ib)
    # Three steps of 8 cover the 24 galaxies of epoch 0 once each.
    assert sorted(torch.cat([src[s][1] for s in range(3)]).tolist()) == list(range(24))
    im = np.arange(3 * 3 * 3, dtype=np.uint8).reshape(1, 3, 3, 3)  # no symmetry: 8 distinct views
    views = {dihedral(im, np.array([k]))[0].tobytes() for k in range(8)}
    assert len(views) == 8


def test_a_survey_of_another_size_is_refused_naming_both(runs, tmp_path):
    s = replace(_settings(tmp_path / "x", runs["survey"], 1), size=48)
    with pytest.raises(ValueError, match="holds 32x32 px cutouts, but --size is 48"):
        pretrain(s, progress=False)


def test_running_a_base_at_another_size_warns_with_the_fix(runs):
    with pytest.warns(UserWarning, match="pretrained at 32 px and this model runs at 64 px; set model.backbone.image_size=32"):
        create_backbone({"kind": "offline", "image_size": 64, "init": str(runs["whole"].base)})

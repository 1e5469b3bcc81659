"""The training loop end to end on a tiny backbone: stages, baselines, checkpoints, exact resume."""
from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import torch

from galaxalign.training import load_config, train

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CPU
from galaxalign.training.checkpoint import load_checkpoint

PER_CLASS = 10


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory):
    """A Galaxy10-layout file: 10 classes, each a blob of its own colour and size, 24 px."""
    rng = np.random.default_rng(0)
    n = 10 * PER_CLASS
    images = np.zeros((n, 24, 24, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:24, :24]
    for i in range(n):
        c = i % 10
        r = 3 + c * 0.8
        blob = ((yy - 12) ** 2 + (xx - 12) ** 2) < r * r
        colour = np.array([25 * c, 255 - 20 * c, 120 + (c % 3) * 40])
        images[i][blob] = colour
        images[i] = np.clip(images[i] + rng.integers(0, 30, (24, 24, 3)), 0, 255)
    path = tmp_path_factory.mktemp("data") / "tiny10.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["ans"] = np.arange(n) % 10
    return path


def tiny_config(tmp_path, tiny_h5, *overrides):
    return load_config("default", [
        f"data.source={tiny_h5}", "data.val_fraction=0.2", "data.test_fraction=0.1",
        "model.backbone={kind: tiny, seed: 0, image_size: 24, width: 8, embed_dim: 16}",
        "model.lock_image=false", "model.lock_text=false", "symbols.variants=2",
        "batch_size=8", "stage1.epochs=1", "stage2.epochs=1", "device=cpu", "tensorboard=false",
        "stage2.shared_symbol_encoder=false",  # the paper's stage 2 (a copied symbol encoder), tested here
        f"out={tmp_path / 'run'}", *overrides,
    ])


def same_state(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_galaxalign_runs_both_stages_logs_and_exports(tmp_path, tiny_h5):
    from galaxalign.inference import load_model

    cfg = tiny_config(tmp_path, tiny_h5, "tensorboard=true")
    result = train(cfg, progress=False)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    train_rows = [r for r in result.history if r["kind"] == "train"]
    val_rows = [r for r in result.history if r["kind"] == "val"]
    # 70 training galaxies / batch 8 -> 8 steps per epoch, one epoch per stage.
    assert [r["stage"] for r in train_rows] == [1] * 8 + [2] * 8
    assert [r["step"] for r in train_rows] == list(range(1, 17))
    assert all({"image_text", "symbol_text", "image_symbol", "loss", "lr", "logit_scale"} <= set(r) for r in train_rows)
    assert [r["stage"] for r in val_rows] == [1, 2] and all(0 <= r["val_acc_text"] <= 1 for r in val_rows)
    with open(tmp_path / "run" / "train_log.csv") as f:
        assert len(list(csv.DictReader(f))) == 16
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["stage"] == 2 and ckpt["step"] == 16 and ckpt["method"] == "galaxalign"
    assert ckpt["model_config"]["symbol_encoder_shared"] is False
    assert any(k.startswith("symbol_encoder.") for k in ckpt["model"])
    model, taxonomy = load_model(result.export_dir)
    assert taxonomy.name == "galaxy10_decals" and not model.symbol_encoder_shared
    exported = model.state_dict()
    assert not same_state(exported, {k: v for k, v in ckpt["model"].items()})


def test_stage2_starts_from_a_copy_of_the_stage1_image_encoder(tmp_path, tiny_h5):
    cfg = tiny_config(tmp_path, tiny_h5, "stages=[1]")
    s1 = load_checkpoint(train(cfg, progress=False).checkpoint)["model"]
    cfg2 = tiny_config(tmp_path, tiny_h5, "stage2.lr=1e-12", "stage2.warmup_fraction=0")
    # Same seed, stage 1 identical; a negligible stage-2 lr leaves the symbol copy ~ the stage-1 image encoder.
    s2 = load_checkpoint(train(cfg2, progress=False).checkpoint)["model"]
    image_keys = [k for k in s1 if k.startswith("image_encoder.")]
    assert image_keys and any(k.startswith("symbol_encoder.") for k in s2)  # stage 2 really has its own copy
    for k in image_keys:
        torch.testing.assert_close(s2["symbol_encoder." + k[len("image_encoder."):]], s1[k], atol=1e-6, rtol=0)


# 8 optimiser steps per epoch: step 3 is mid stage 1; with accumulation 2 there are 4, so step 5 is mid stage 2.
@pytest.mark.parametrize("stop_at,extra", [(3, ()), (5, ("accumulation=2",)), (5, ("accumulation=2", "symbols.refresh_every=3"))])
def test_killed_run_resumes_to_identical_weights(tmp_path, tiny_h5, stop_at, extra):
    """Stopped mid-epoch, resumed from the checkpoint: bit-identical weights on CPU."""
    full = train(tiny_config(tmp_path / "a", tiny_h5, *extra), progress=False)
    cfg = tiny_config(tmp_path / "b", tiny_h5, *extra, f"max_steps={stop_at}")
    stopped = train(cfg, progress=False)
    assert not stopped.completed and load_checkpoint(stopped.checkpoint)["step"] == stop_at
    cfg["max_steps"] = None
    resumed = train(cfg, progress=False, resume="auto")
    assert resumed.completed
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert same_state(a["model"], b["model"]) == []
    assert a["step"] == b["step"]
    # The logs read as one run: every step once, same losses as the uninterrupted run.
    la = [r["loss"] for r in full.history if r["kind"] == "train"]
    lb = [r["loss"] for r in resumed.history if r["kind"] == "train"]
    assert la == pytest.approx(lb, rel=1e-5)


def test_baselines_share_the_code_path(tmp_path, tiny_h5):
    io = train(tiny_config(tmp_path / "io", tiny_h5, "method=image_only", "stage1.epochs=2", "stage1.lr=3e-3"), progress=False)
    rows = [r for r in io.history if r["kind"] == "train"]
    assert {"cross_entropy", "loss"} <= set(rows[0]) and rows[-1]["loss"] < rows[0]["loss"]
    assert "val_acc_classifier" in [r for r in io.history if r["kind"] == "val"][-1]
    it = train(tiny_config(tmp_path / "it", tiny_h5, "method=image_text"), progress=False)
    rows = [r for r in it.history if r["kind"] == "train"]
    assert {r["stage"] for r in rows} == {1} and "symbol_text" not in rows[0] and "image_text" in rows[0]
    zs = train(tiny_config(tmp_path / "zs", tiny_h5, "method=zero_shot"), progress=False)
    assert [r for r in zs.history if r["kind"] == "train"] == []
    assert (zs.export_dir / "config.json").is_file() and load_checkpoint(zs.checkpoint)["step"] == 0


def test_batch_larger_than_the_data_is_a_clear_error(tmp_path, tiny_h5):
    with pytest.raises(ValueError, match="batch_size 512"):
        train(tiny_config(tmp_path, tiny_h5, "batch_size=512"), progress=False)


def test_worker_count_does_not_change_the_result(tmp_path, tiny_h5):
    """Augmentations are seeded per sample, so DataLoader workers give the same weights as none."""
    a = train(tiny_config(tmp_path / "w0", tiny_h5, "stages=[1]", "max_steps=3", "workers=0"), progress=False)
    b = train(tiny_config(tmp_path / "w2", tiny_h5, "stages=[1]", "max_steps=3", "workers=2"), progress=False)
    assert same_state(load_checkpoint(a.checkpoint)["model"], load_checkpoint(b.checkpoint)["model"]) == []


def test_cli_train_and_resume(tmp_path, tiny_h5, capsys):
    import json

    from galaxalign.cli import main

    args = ["train", "--config", "default", "--quiet", "--out", str(tmp_path / "cli"), f"data.source={tiny_h5}",
            "model.backbone={kind: tiny, seed: 0, image_size: 24, width: 8, embed_dim: 16}", "model.lock_image=false",
            "model.lock_text=false", "symbols.variants=1", "batch_size=8", "stage1.epochs=1", "stage2.epochs=1",
            "device=cpu", "tensorboard=false"]
    assert main(args + ["max_steps=4"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["completed"] is False and first["export_dir"] is None
    assert main(args + ["--resume"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["completed"] is True and load_checkpoint(second["checkpoint"])["step"] == 16
    assert (tmp_path / "cli" / "model" / "model.safetensors").is_file()
    # Resuming with a different config is refused, naming the key.
    assert main(args + ["stage1.lr=0.5", "--resume"]) == 1
    assert "stage1.lr" in capsys.readouterr().err


def test_joint_symbol_pass_equals_separate_passes_without_batch_statistics():
    from galaxalign.model import GalaxAlignModel
    from galaxalign.taxonomy import load_taxonomy
    from galaxalign.distributed import DistEnv
    from galaxalign.training.methods import build_objective

    spec = {"kind": "tiny", "seed": 0, "image_size": 24, "width": 8, "embed_dim": 16}
    images = torch.randn(12, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 4, 0, 2, 5, 1, 3])
    losses = {}
    for joint in (True, False):
        cfg = load_config("default", ["symbols.variants=1", f"symbols.joint_forward={joint}"])
        model = GalaxAlignModel.from_config({"backbone": spec, "symbol_encoder_shared": True, "num_classes": None})
        objective = build_objective(cfg, model, load_taxonomy("galaxy10_decals"), DistEnv())
        objective.forward_module.bank_train = False
        losses[joint] = {k: float(v.detach()) for k, v in objective.loss(objective.forward_module, images, labels).items()}
    assert losses[True].keys() == losses[False].keys() == {"image_text", "symbol_text", "image_symbol", "loss"}
    for k in losses[True]:
        assert losses[True][k] == pytest.approx(losses[False][k], rel=1e-5)


def test_freeze_bn_stats_keeps_every_batch_norm_in_eval_mode(tmp_path, tiny_h5):
    from torch import nn

    from galaxalign.training.trainer import Trainer

    for frozen in (True, False):
        trainer = Trainer(tiny_config(tmp_path, tiny_h5, f"model.freeze_bn_stats={str(frozen).lower()}"), progress=False)
        trainer.setup()
        trainer.model.image_encoder.extra_bn = nn.BatchNorm1d(4)  # the tiny towers have no batch norm of their own
        trainer.train_mode()
        assert trainer.model.image_encoder.extra_bn.training is (not frozen)
        assert trainer.model.training and trainer.model.text_encoder.training
        before = trainer.model.image_encoder.extra_bn.running_mean.clone()
        trainer.model.image_encoder.extra_bn(torch.randn(8, 4) + 5)
        assert torch.equal(before, trainer.model.image_encoder.extra_bn.running_mean) is frozen


def test_run_log_widens_the_csv_when_a_new_loss_term_appears_and_keeps_earlier_rows(tmp_path):
    import csv

    from galaxalign.training.run_log import TRAIN_LOG, RunLog

    log = RunLog(tmp_path, enabled=True, tensorboard=False, resume_step=None)
    log.train_row({"step": 1, "stage": 1, "loss": 2.0})
    log.train_row({"step": 2, "stage": 1, "loss": 1.5})
    log.train_row({"step": 3, "stage": 2, "loss": 1.2, "image_symbol": 0.4})
    log.train_row({"step": 4, "stage": 2, "loss": 1.1})  # a row lacking a column stays aligned
    with open(tmp_path / TRAIN_LOG, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "stage", "loss", "image_symbol"]
    assert [r["loss"] for r in rows] == ["2.0", "1.5", "1.2", "1.1"]
    assert [r["image_symbol"] for r in rows] == ["", "", "0.4", ""]
    assert len(log.history) == 4

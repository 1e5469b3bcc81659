"""The training data path: uint8 batches from workers, batch augmentation on the device, derived settings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from galaxalign.datasets.pytorch import AugmentedSamples, GalaxyDataset
from galaxalign.training import load_config, train
from galaxalign.training.checkpoint import load_checkpoint
from galaxalign.training.config import derived_checkpoint_every, derived_runtime
from galaxalign.transforms import GalaxyAugment, N_PARAMS, P_NOISE_SEED

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory):
    """10 classes x 8 galaxies of 28 px: discs of a class colour on noise (Galaxy10 layout)."""
    rng = np.random.default_rng(0)
    n = 80
    yy, xx = np.mgrid[:28, :28]
    images = rng.integers(0, 40, (n, 28, 28, 3), dtype=np.uint8)
    for i in range(n):
        c = i % 10
        images[i][((yy - 14) ** 2 + (xx - 14) ** 2) < (3 + 0.8 * c) ** 2] = (25 * c, 255 - 20 * c, 120 + (c % 3) * 40)
    path = tmp_path_factory.mktemp("data") / "tiny10.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["ans"] = np.arange(n) % 10
    return path


def catalog(path: Path, n: int = 80) -> pd.DataFrame:
    return pd.DataFrame({"id": [str(i) for i in range(n)], "source": "test", "h5_path": str(path), "h5_row": range(n),
                         "label": np.arange(n) % 10})


def config(tmp_path, h5_file, *overrides):
    return load_config("default", [
        f"data.source={h5_file}", "data.val_fraction=0.2", "data.test_fraction=0.1",
        "model.backbone={kind: tiny, seed: 0, image_size: 24, width: 8, embed_dim: 16}",
        "model.lock_image=false", "model.lock_text=false", "symbols.variants=2",
        "batch_size=8", "stage1.epochs=1", "stage2.epochs=1", "device=cpu", "tensorboard=false",
        f"out={tmp_path / 'run'}", *overrides,
    ])


# ------------------------------------------------------------------------------------------ augmentation

def test_batch_augmentation_treats_each_sample_as_if_alone():
    """One code path: a sample augmented inside a batch equals the same sample augmented alone."""
    aug = GalaxyAugment(24, [0.5] * 3, [0.25] * 3, strength=1.0)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (5, 24, 24, 3), dtype=np.uint8))
    params = torch.from_numpy(np.stack([aug.draw(np.random.default_rng(s)) for s in range(5)]))
    params[:, P_NOISE_SEED] = 0  # noise is drawn per batch: switch it off for the comparison
    params[:, 9] = 0.0
    batch = aug.apply(images, params, noise_seed=0)
    alone = torch.cat([aug.apply(images[i : i + 1], params[i : i + 1], noise_seed=0) for i in range(5)])
    assert batch.shape == (5, 3, 24, 24) and batch.dtype == torch.float32
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(batch[0], batch[1])  # the parameters differ per sample


def test_augmentation_parameters_are_a_pure_function_of_the_sample_seed():
    aug = GalaxyAugment(24, [0.5] * 3, [0.25] * 3, strength=1.0)
    a, b = aug.draw(np.random.default_rng(7)), aug.draw(np.random.default_rng(7))
    assert a.shape == (N_PARAMS,) and np.array_equal(a, b)
    assert not np.array_equal(a, aug.draw(np.random.default_rng(8)))


def test_quarter_turn_and_flip_move_pixels_exactly_where_expected():
    aug = GalaxyAugment(8, [0.0] * 3, [1.0] * 3, strength=0.0)
    x = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    x[0, 1, 6] = 255  # a bright pixel top right
    p = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]], dtype=torch.float32)  # mirrored, no rotation
    y = aug.apply(x, p)[0, 0]
    assert y[1, 1] > 0.99 and y[1, 6] < 0.01  # now top left


# ------------------------------------------------------------------------------------------ the dataset

def test_uint8_samples_on_disk_and_in_memory_give_the_same_pixels(h5_file):
    aug = GalaxyAugment(24, [0.5] * 3, [0.25] * 3)
    on_disk = AugmentedSamples(GalaxyDataset(catalog(h5_file), image_size=24), aug)
    held = AugmentedSamples(GalaxyDataset(catalog(h5_file), image_size=24, in_memory=True), aug)
    assert held.dataset.in_memory and not on_disk.dataset.in_memory
    assert GalaxyDataset(catalog(h5_file), in_memory="auto").in_memory  # 190 KB: fits in any free memory
    keys = [(5, 11), (2, 3), (70, 99), (5, 11)]
    one = [on_disk[k] for k in keys]
    for batch in ([on_disk[k] for k in keys], [held[k] for k in keys]):
        for (im, label, params), (im1, label1, params1) in zip(batch, one):
            assert im.dtype == torch.uint8 and im.shape == (24, 24, 3)
            assert torch.equal(im, im1) and label == label1 and torch.equal(params, params1)
    with pytest.raises(ValueError, match="in_memory"):
        GalaxyDataset(catalog(h5_file), in_memory="yes")


# ------------------------------------------------------------------------------------------ derived settings

def test_workers_threads_and_log_cadence_derive_from_the_device():
    cfg = load_config("paper")
    assert cfg["workers"] is None and cfg["threads"] is None
    # 16 cores, 2 GPU processes: 7 workers + 1 thread each; no oversubscription.
    assert derived_runtime(cfg, "cuda", local_world_size=2, cpu_count=16) == {"workers": 7, "threads": 1, "log_every_steps": 25}
    assert derived_runtime(cfg, "cpu", local_world_size=1, cpu_count=8) == {"workers": 0, "threads": 8, "log_every_steps": 1}
    cfg["workers"], cfg["threads"] = 3, 2
    assert derived_runtime(cfg, "cuda", 1, 64)["workers"] == 3 and derived_runtime(cfg, "cuda", 1, 64)["threads"] == 2


def test_checkpoint_cadence_derives_from_the_run_length():
    cfg = load_config("paper")
    assert cfg["checkpoint_every_steps"] is None
    assert derived_checkpoint_every(cfg, steps_per_epoch=27, total_epochs=20) == (54, False)  # 10 per run
    assert derived_checkpoint_every(cfg, steps_per_epoch=20, total_epochs=4) == (20, False)  # epoch ends
    cfg["checkpoint_every_steps"] = 500
    assert derived_checkpoint_every(cfg, 27, 20) == (500, True)


def test_paper_config_keeps_only_the_last_and_the_best_checkpoint():
    cfg = load_config("paper")
    assert cfg["keep_epoch_checkpoints"] is False and cfg["keep_best_checkpoint"] is True


# ------------------------------------------------------------------------------------------ the loop

def test_log_cadence_does_not_change_the_logged_values(tmp_path, h5_file):
    a = train(config(tmp_path / "a", h5_file, "stages=[1]", "max_steps=5", "log_every_steps=1"), progress=False)
    b = train(config(tmp_path / "b", h5_file, "stages=[1]", "max_steps=5", "log_every_steps=3"), progress=False)
    ra = [r for r in a.history if r["kind"] == "train"]
    rb = [r for r in b.history if r["kind"] == "train"]
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5]
    for x, y in zip(ra, rb):
        assert x["loss"] == y["loss"] and x["logit_scale"] == y["logit_scale"] and y["data_seconds"] >= 0


def test_best_checkpoint_is_the_epoch_with_the_best_validation_accuracy(tmp_path, h5_file):
    result = train(config(tmp_path, h5_file, "stages=[1]", "stage1.epochs=3", "keep_best_checkpoint=true"), progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "last.pt"]
    vals = [r for r in result.history if r["kind"] == "val"]
    # galaxalign is judged by its primary classifier, the fused prototypes (Method.selection_metric, training.methods)
    best_row = max(vals, key=lambda r: r["val_acc_both"])  # first of the ties: a later tie is no improvement
    best = load_checkpoint(ckpts / "best.pt")
    assert best["step"] == best_row["step"] and best["best"] == ("val_acc_both", best_row["val_acc_both"])


def test_compile_and_channels_last_keep_the_state_dict_layout(tmp_path, h5_file):
    result = train(config(tmp_path, h5_file, "stages=[1]", "max_steps=2", "compile=eager", "channels_last=true"), progress=False)
    state = load_checkpoint(result.checkpoint)["model"]
    assert state and not any("_orig_mod" in k for k in state)


@pytest.mark.slow
def test_gpu_check_runs_in_reduced_mode_on_the_cpu(tmp_path):
    """scripts/gpu_check.sh --reduced: the GPU check's code path, tiny, so it cannot rot."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--reduced", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["mode"] == "reduced" and report["ok"]
    assert [p["phase"] for p in report["phases"]] == ["bf16", "fp16", "bf16_compile"]
    for p in report["phases"]:
        assert p["images_per_s"] > 0 and 0 <= p["data_wait_share"] <= 1 and p["finite"]
    assert report["one_batch_vs_cpu_fp32"]["within_tolerance"]


def test_jpeg_training_reads_use_the_one_decoder_and_refuse_truncated_files(tmp_path):
    from PIL import Image

    from galaxalign.datasets import ImageReadError, read_image
    from galaxalign.transforms import resize_center_crop_uint8

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=95)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cat = pd.DataFrame({"id": ["a", "cut"], "source": "test", "file_loc": [str(tmp_path / "a.jpg"), str(tmp_path / "cut.jpg")], "label": [0, 1]})
    ds = GalaxyDataset(cat, image_size=30)
    assert np.array_equal(ds.image(0), resize_center_crop_uint8(read_image(str(tmp_path / "a.jpg")), 30))
    assert ds.image(0).shape == (30, 30, 3)
    with pytest.raises(ImageReadError, match="cut.jpg"):
        ds.image(1)

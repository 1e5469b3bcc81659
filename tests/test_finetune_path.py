"""Partial fine-tuning from cached stage maps, the data-chosen crop, the frozen-probe candidate and
the benchmark's paired statistics."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from galaxalign import features as FT


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def map_model():
    from galaxalign.model import GalaxAlignModel

    spec = {"kind": "offline", "image_size": 64, "taps": [5, 6, 7], "embed_dim": 32, "cache_stage": 5}
    return GalaxAlignModel.from_config({"backbone": spec, "tta": "dihedral"}).eval()


def _blob_images(n: int, size: int = 64, radius: float = 6.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for i in range(n):
        light = np.exp(-np.hypot(x, y * (1 + 0.5 * (i % 2))) / radius)
        im = np.clip(light[..., None] * [220, 180, 140] + rng.normal(0, 2, (size, size, 3)), 0, 255)
        out.append(im.astype(np.uint8))
    return out


def _round_and_bar_images(n: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Two classes a frozen ImageNet trunk separates at once: round blobs (even) and thin bars (odd)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for i in range(n):
        im = np.zeros((size, size, 3), np.uint8)
        if i % 2:
            im[size // 2 - 3 : size // 2 + 3, size // 8 : size - size // 8] = 225
        else:
            im[np.hypot(x, y) < size / 5] = 225
        out.append(np.clip(im + rng.integers(0, 22, im.shape), 0, 255).astype(np.uint8))
    return out


def _catalog(folder, images) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, im in enumerate(images):
        p = folder / f"g{i}.png"
        Image.fromarray(im).save(p)
        rows.append({"id": f"g{i}", "label": i % 2, "source": str(p), "file_loc": str(p)})
    return pd.DataFrame(rows)


def _counting(tower, monkeypatch):
    calls = {"n": 0}
    real = type(tower).cache_input

    def counted(self, x):
        calls["n"] += x.shape[0]
        return real(self, x)

    monkeypatch.setattr(type(tower), "cache_input", counted)
    return calls


# -------------------------------------------------------------------------------- the tower's cut
def test_stage_maps_run_the_remaining_stages_exactly_as_the_whole_tower(map_model):
    tower = map_model.image_encoder
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        maps = tower.cache_input(x)
        assert maps.shape == (3, tower.cache_width) and tower.cache_width == int(np.prod(tower.cache_shape))
        assert tower.cache_shape[0] == 112  # EfficientNet-Lite0 stage 5 is 112 channels wide
        torch.testing.assert_close(tower(maps), tower(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tower.pool_cached(maps), tower.pooled(x), atol=1e-5, rtol=1e-5)


def test_locking_after_the_cut_keeps_the_cache_valid_and_unlocking_before_it_does_not(map_model):
    tower = copy.deepcopy(map_model.image_encoder)
    tower.lock(3)  # stages 6, 7 and the projection
    assert FT.trunk_is_frozen(tower)
    assert any(p.requires_grad for n, p in tower.named_parameters() if n.startswith("trunk._blocks.15"))
    tower.lock(4)  # stage 5 too: its output is what the cache holds
    assert not FT.trunk_is_frozen(tower)


def test_bad_cache_stage_is_refused_with_the_spec_key():
    from galaxalign.backbones import create_backbone

    with pytest.raises(ValueError, match="cache_stage"):
        create_backbone({"kind": "offline", "image_size": 64, "taps": [5, 6, 7], "cache_stage": 6}, load_weights=False)
    with pytest.raises(ValueError, match="cache_stage"):
        create_backbone({"kind": "offline", "image_size": 64, "cache_stage": 4}, load_weights=False)
    with pytest.raises(ValueError, match="crop"):
        create_backbone({"kind": "offline", "image_size": 64, "crop": 0}, load_weights=False)


def test_stage_map_cache_survives_training_the_later_stages_but_not_changing_the_earlier(map_model, cache_root,
                                                                                          tmp_path, monkeypatch):
    from galaxalign.transforms import eval_transform

    tower, tr = copy.deepcopy(map_model.image_encoder), map_model.eval_transform()
    cat = _catalog(tmp_path / "imgs", _blob_images(3))
    calls = _counting(tower, monkeypatch)
    first = FT.pooled_views_catalog(tower, cat, tr, progress=False)
    assert first.shape == (3, 8, tower.cache_width)
    n0 = calls["n"]
    assert n0 == 3 * 8
    with torch.no_grad():  # the stages after the cut, the normaliser and the projection train
        tower.trunk._blocks[14].project_conv.weight.mul_(1.5) if hasattr(tower.trunk._blocks[14], "project_conv") else None
        for p in tower.trunk._blocks[-1].parameters():
            p.mul_(1.5)
        tower.proj.weight.mul_(2.0)
    again = FT.pooled_views_catalog(tower, cat, tr, progress=False)
    assert calls["n"] == n0
    np.testing.assert_array_equal(again, first)
    with torch.no_grad():  # a weight of a stage before the cut changes every view
        for p in tower.trunk._blocks[3].parameters():
            p.mul_(1.01)
    FT.pooled_views_catalog(tower, cat, tr, progress=False)
    assert calls["n"] == 2 * n0
    # another crop is another store
    cropped = eval_transform(64, map_model.image_mean, map_model.image_std, crop=0.5)
    FT.pooled_views_catalog(tower, cat, cropped, progress=False)
    assert calls["n"] == 3 * n0


def test_the_cache_cut_is_part_of_the_store_key(map_model):
    from galaxalign.model import GalaxAlignModel

    other = GalaxAlignModel.from_config({"backbone": {"kind": "offline", "image_size": 64, "taps": [5, 6, 7],
                                                      "embed_dim": 32, "cache_stage": 4}})
    tr = map_model.eval_transform()
    assert FT.store_key(map_model.image_encoder, tr) != FT.store_key(other.image_encoder, tr)


def test_embeddings_from_stage_maps_equal_the_whole_tower_on_every_view(map_model, cache_root):
    from galaxalign.inference import embed_arrays

    images = _blob_images(2)
    cached = embed_arrays(map_model, images)
    tower, tr = map_model.image_encoder, map_model.eval_transform()
    x = torch.stack([tr(im) for im in images])
    with torch.no_grad():
        e = torch.stack([torch.nn.functional.normalize(tower(FT.dihedral_view(x, k)), dim=-1) for k in range(8)], 1)
    direct = torch.nn.functional.normalize(e.mean(1), dim=-1).numpy()
    np.testing.assert_allclose(cached, direct, atol=1e-4)


# -------------------------------------------------------------------------------- the crop
def test_central_crop_keeps_the_centre_of_arrays_and_tensors_alike():
    from galaxalign.transforms import central_crop

    a = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(central_crop(a, 0.5), a[2:7, 2:7])
    t = torch.arange(100).reshape(1, 10, 10)
    assert torch.equal(central_crop(t, 0.5), t[:, 2:7, 2:7])
    assert central_crop(a, 1.0) is a
    with pytest.raises(ValueError, match="crop"):
        central_crop(a, 0.0)


def test_recipe_crops_small_galaxies_in_big_frames_and_keeps_big_ones(tmp_path):
    from galaxalign.training.recipe import galaxy_crop

    small = _catalog(tmp_path / "small", _blob_images(6, size=128, radius=3.0))
    big = _catalog(tmp_path / "big", _blob_images(6, size=128, radius=40.0))
    crop_small, rel_small = galaxy_crop(small)
    crop_big, _ = galaxy_crop(big)
    assert 0.3 <= crop_small < 0.7 and rel_small < 0.3
    assert crop_big >= 0.7 and crop_big > crop_small + 0.2  # a galaxy spanning most of its frame keeps it


def test_recipe_finetunes_more_stages_on_a_gpu_and_none_when_asked(tmp_path):
    from galaxalign.training.config import load_config
    from galaxalign.training.recipe import resolve_recipe

    cat = _catalog(tmp_path / "c", _blob_images(4, size=96, radius=30))
    gpu, _ = resolve_recipe(load_config("default"), cat, "cuda")
    assert gpu["model"]["backbone"]["cache_stage"] == 4 and gpu["model"]["lock_image_unlocked_groups"] == 4
    off, choices = resolve_recipe(load_config("default", ["recipe.finetune_stages=0"]), cat, "cpu")
    assert off["model"]["backbone"]["cache_stage"] is None and off["model"]["lock_image_unlocked_groups"] == 1
    assert choices["finetune_stages"]["value"] == 0


# -------------------------------------------------------------------------------- never loses to the probe
def test_the_frozen_probe_is_a_candidate_scored_by_cross_validation_on_a_small_validation_split(tmp_path,
                                                                                                 cache_root):
    from galaxalign.evaluation.baselines import frozen_probe_candidate

    images = _round_and_bar_images(24)
    cat = _catalog(tmp_path / "p", images)
    tr, va, te = cat.iloc[:12].reset_index(drop=True), cat.iloc[12:16].reset_index(drop=True), cat.iloc[16:].reset_index(drop=True)
    out = frozen_probe_candidate(tr, va, te, 2, seed=0, progress=False)
    assert "CV" in out["scored_by"]
    assert out["val_accuracy"] >= 0.9
    pred, scores = out["test"]
    assert scores.shape == (8, 2) and np.mean(pred == te["label"].to_numpy()) >= 0.9


def test_baseline_features_are_stored_once_per_galaxy_as_one_view(tmp_path, cache_root, monkeypatch):
    from galaxalign.evaluation import baselines

    cat = _catalog(tmp_path / "b", _round_and_bar_images(3))
    first = baselines.imagenet_features(cat, progress=False)
    (shard,) = list((cache_root / "baselines").rglob("shard-*.npz"))
    with np.load(shard) as z:
        assert z["views"].shape == (3, 1, 1280)
    monkeypatch.setattr(baselines, "_compute_features", lambda *a, **k: pytest.fail("recomputed a stored galaxy"))
    np.testing.assert_array_equal(baselines.imagenet_features(cat, progress=False), first)


# -------------------------------------------------------------------------------- benchmark statistics
def _row(seed, a_correct, b_correct, a_ap, b_ap):
    def m(c, ap):
        return {"correct": list(c), "average_precision": list(ap), "accuracy": float(np.mean(c)),
                "balanced_accuracy": float(np.mean(c)), "macro_f1": 0.0, "map": float(np.mean(ap)), "train_seconds": 1.0,
                "primary_classifier": "x"}

    return {"seed": seed, "majority_rate": 0.5, "n_train_labelled": 4, "n_val": 2, "n_test": len(a_correct),
            "methods": {"galaxalign": m(a_correct, a_ap), "frozen_probe": m(b_correct, b_ap)}}


def test_paired_difference_is_the_mean_of_per_galaxy_differences_with_an_interval_around_it():
    from galaxalign.training.benchmark import markdown, paired, summarise

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        b = rng.random(200) < 0.6
        a = b | (rng.random(200) < 0.5)  # a is right wherever b is, and on half of the rest
        rows.append(_row(seed, a.astype(int), b.astype(int), rng.random(200) * 0.2 + 0.5, rng.random(200) * 0.2 + 0.4))
    d = paired(rows, "galaxalign", "frozen_probe", "correct")
    expected = np.mean([np.mean(np.array(r["methods"]["galaxalign"]["correct"]) - r["methods"]["frozen_probe"]["correct"])
                        for r in rows])
    assert d["mean"] == pytest.approx(expected)
    assert 0 < d["ci"][0] < d["mean"] < d["ci"][1]
    same = paired([_row(0, [1, 0, 1, 0], [1, 0, 1, 0], [0.5] * 4, [0.5] * 4)], "galaxalign", "frozen_probe", "correct")
    assert same == {"mean": 0.0, "ci": [0.0, 0.0]}
    s = summarise(rows)
    assert s["paired"]["galaxalign-frozen_probe"]["map"]["ci"][0] > 0.05
    text = markdown(s, "galaxalign benchmark --data x.csv --taxonomy t.yaml")
    assert "majority-class rate 0.500" in text and "galaxalign-frozen_probe" in text


# -------------------------------------------------------------------------------- end to end
def test_default_recipe_trains_the_last_stages_from_cached_maps_and_keeps_the_cache(tmp_path, cache_root):
    """The default path on a small catalog: stages 6-7 change, stages up to 5 do not, the stored maps
    are reused by evaluation, and the exported model embeds like the trained one."""
    from galaxalign.inference import embed_catalog, load_model
    from galaxalign.training import load_config, train

    images = _round_and_bar_images(24)
    cat = _catalog(tmp_path / "imgs", images)
    csv = tmp_path / "cat.csv"
    cat.rename(columns={"file_loc": "filepath"})[["filepath", "label", "id"]].to_csv(csv, index=False)
    cfg = load_config("default", [f"data.source={csv}", "data.val_fraction=0.25", "data.test_fraction=0.0",
                                  "recipe.finetune_steps=6", "recipe.max_epochs=2", "symbols.variants=1",
                                  "device=cpu", "tensorboard=false", "answers.per_galaxy=false", f"out={tmp_path / 'run'}"])
    from galaxalign.model import GalaxAlignModel

    result = train(cfg, progress=False)
    model, _ = load_model(result.export_dir)
    spec = model.config["backbone"]
    assert spec["cache_stage"] == 5 and spec["image_size"] == 64
    before = GalaxAlignModel.from_config({"backbone": spec}).image_encoder.state_dict()
    after = model.image_encoder.state_dict()
    cut = model.image_encoder._cut_block()
    early = [k for k in after if k.startswith(("trunk._conv_stem", "trunk._bn0"))
             or any(k.startswith(f"trunk._blocks.{i}.") for i in range(cut))]
    late = [k for k in after if k.startswith("trunk._blocks.") and int(k.split(".")[2]) >= cut and k.endswith("weight")]
    assert early and late
    assert all(torch.equal(before[k], after[k]) for k in early)  # frozen before the cut
    assert any(not torch.equal(before[k], after[k]) for k in late)  # trained after it
    stores = list((cache_root / "features").iterdir())
    emb = embed_catalog(model, cat, progress=False)
    assert sorted((cache_root / "features").iterdir()) == sorted(stores)  # evaluation read the training store
    assert emb.shape == (24, spec["embed_dim"]) and np.isfinite(emb).all()

"""The CLI against bad input: one clear line naming the file, never a traceback; many files are all
tried; an earlier run is never silently destroyed; paths stored in an index work from anywhere."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from galaxalign.cli import main


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return "\n".join(lines)


def save_galaxy(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:32, :32] - 15.5
    light = np.exp(-np.hypot(x, y * (1 + seed % 3)) / 5)[..., None] * rng.uniform(0.5, 1, 3)
    Image.fromarray((np.clip(light + rng.normal(0, 0.02, light.shape), 0, 1) * 255).astype(np.uint8)).save(path)
    return path


# -- classify ----------------------------------------------------------------------------------------
def test_classify_tries_every_file_reports_the_bad_ones_and_fails_at_the_end(fx, tmp_path, capsys):
    good1, good2 = save_galaxy(tmp_path / "a.png", 1), save_galaxy(tmp_path / "c.png", 2)
    strip = tmp_path / "strip.png"
    Image.new("1", (1, 20_000_000)).save(strip)  # the 19 kB file
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    code = main(["classify", "--checkpoint", str(fx["model"]), str(good1), str(strip), str(junk), str(good2)])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err
    assert [json.loads(line)["file"] for line in out.out.strip().splitlines()] == [str(good1), str(good2)]
    assert "strip.png: image is 1x20000000 pixels, an aspect ratio above the limit of 10:1" in out.err
    assert "junk.png" in out.err and "2 input(s) could not be classified" in out.err


def test_classify_reads_the_images_of_a_folder(fx, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    files = [save_galaxy(folder / "x1.png", 1), save_galaxy(folder / "deeper" / "x2.png", 2)]
    (folder / "notes.txt").write_text("not an image, not a candidate")
    assert main(["classify", "--checkpoint", str(fx["model"]), str(folder)]) == 0
    assert sorted(json.loads(line)["file"] for line in capsys.readouterr().out.strip().splitlines()) == sorted(map(str, files))


def test_classify_an_empty_folder_says_so(fx, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["classify", "--checkpoint", str(fx["model"]), str(tmp_path / "empty")]) == 1
    one_error_line(capsys, "a folder with no image files in it")


def test_classify_text_with_an_undecodable_byte_is_a_clear_error(fx, capsys):
    code = main(["classify", "--checkpoint", str(fx["model"]), "--modality", "text", "a spiral", "bar \udcff"])
    out = capsys.readouterr()
    assert code == 1 and len(out.out.strip().splitlines()) == 1 and "Traceback" not in out.err
    assert "not a character" in out.err


# -- search, evaluate, serve -------------------------------------------------------------------------------
def test_search_text_with_a_lone_surrogate_is_one_clear_line(fx, capsys):
    assert main(["search", "--index", str(fx["index"]), "--text", "spiral \ud800"]) == 1
    one_error_line(capsys, "not a character")


def test_search_image_of_extreme_aspect_is_one_clear_line(fx, tmp_path, capsys):
    strip = tmp_path / "strip.png"
    Image.new("1", (1, 60_000)).save(strip)
    assert main(["search", "--index", str(fx["index"]), "--image", str(strip)]) == 1
    one_error_line(capsys, "strip.png: image is 1x60000 pixels, an aspect ratio above the limit")


@pytest.mark.parametrize("command", ["evaluate", "serve", "classify", "embed"])
def test_a_junk_checkpoint_is_one_line_naming_the_file(fx, tmp_path, capsys, command):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(300))
    args = {"evaluate": ["evaluate", "--checkpoint", str(junk), "--quiet"],
            "serve": ["serve", "--index", str(fx["index"]), "--checkpoint", str(junk), "--port", "1"],
            "classify": ["classify", "--checkpoint", str(junk), str(fx["survey"])],
            "embed": ["embed", "--checkpoint", str(junk), "--data", str(fx["survey"]), "--out", str(tmp_path / "e")]}
    assert main(args[command]) == 1
    lines = one_error_line(capsys, "junk.pt: not a readable training checkpoint")
    assert len(lines.splitlines()) == 1


def test_embed_stores_absolute_paths_so_search_works_from_another_folder(fx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(fx["model"].parent)
    assert main(["embed", "--checkpoint", "model", "--data", "survey.h5", "--out", str(tmp_path / "emb"),
                 "--no-progress", "--device", "cpu"]) == 0
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert manifest["checkpoint"] == str(fx["model"].resolve()) and Path(manifest["data_source"]).is_absolute()
    assert main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), "--kind", "exact"]) == 0
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "a round galaxy", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


def test_embed_skip_bad_drops_unreadable_images(fx, tmp_path, capsys):
    folder = tmp_path / "cat"
    save_galaxy(folder / "round_smooth" / "ok.png", 1)
    save_galaxy(folder / "barred_spiral" / "ok2.png", 2)
    (folder / "barred_spiral" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    args = ["embed", "--checkpoint", str(fx["model"]), "--data", str(folder), "--out", str(tmp_path / "emb"),
            "--no-progress", "--device", "cpu"]
    assert main(args) == 1
    one_error_line(capsys, "broken.png", "--skip-bad")
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        assert main(args + ["--skip-bad"]) == 0
    assert json.loads((tmp_path / "emb" / "manifest.json").read_text())["count"] == 2


# -- train: a finished run is never silently replaced -------------------------------------------------------
def tiny_train_args(tmp_path, survey) -> list[str]:
    return ["train", "--config", "default", "--quiet", "--out", str(tmp_path / "run"), f"data.source={survey}",
            "model.backbone={kind: tiny, seed: 0, image_size: 24, width: 8, embed_dim: 16}", "model.lock_image=false",
            "model.lock_text=false", "symbols.variants=1", "batch_size=8", "stage1.epochs=1", "stage2.epochs=0",
            "device=cpu", "tensorboard=false", "max_steps=2"]


def test_a_second_train_into_the_same_folder_is_refused_unless_told(fx, tmp_path, capsys):
    args = tiny_train_args(tmp_path, fx["survey"])
    assert main(args) == 0
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = (last.stat().st_mtime_ns, (tmp_path / "run" / "train_log.csv").read_text())
    capsys.readouterr()
    assert main(args) == 1
    one_error_line(capsys, "holds an earlier run", "--resume", "--overwrite")
    assert (last.stat().st_mtime_ns, (tmp_path / "run" / "train_log.csv").read_text()) == before  # untouched
    (tmp_path / "run" / "model").mkdir(exist_ok=True)
    (tmp_path / "run" / "model" / "stale.txt").write_text("an export of the earlier run")
    assert main(args + ["--overwrite"]) == 0
    assert not (tmp_path / "run" / "model" / "stale.txt").exists()  # no old export beside new checkpoints
    assert main(args + ["--overwrite", "--resume"]) == 1
    one_error_line(capsys, "pass one of them")


def test_data_skip_bad_is_a_config_key_that_reaches_the_loader(tmp_path):
    from galaxalign.datasets.catalog import CatalogError
    from galaxalign.training import load_config
    from galaxalign.distributed import init_distributed
    from galaxalign.training.build import prepare_data

    folder = tmp_path / "cat"
    for i in range(12):
        save_galaxy(folder / ("round_smooth" if i % 2 else "barred_spiral") / f"g{i}.png", i)
    (folder / "round_smooth" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    base = [f"data.source={folder}", "data.val_fraction=0.2", "data.test_fraction=0.2"]
    with pytest.raises(CatalogError, match="broken.png.*data.skip_bad=true"):
        prepare_data(load_config("default", base), init_distributed("cpu"), False)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        _, train_cat, _, _ = prepare_data(load_config("default", base + ["data.skip_bad=true"]), init_distributed("cpu"), False)
    assert not any("broken" in str(f) for f in train_cat["file_loc"])


def test_a_transparent_pictogram_classifies_like_the_same_pictogram_on_black(fx, tmp_path, capsys):
    """Issue 10, item 4, through `galaxalign classify --modality symbol`."""
    y, x = np.mgrid[:64, :64] - 31.5
    disk = np.hypot(x, y) < 20
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[disk, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    on_black = np.zeros((64, 64, 3), np.uint8)
    on_black[disk] = 255
    Image.fromarray(on_black).save(tmp_path / "black.png")
    assert main(["classify", "--checkpoint", str(fx["model"]), "--modality", "symbol",
                 str(tmp_path / "transparent.png"), str(tmp_path / "black.png")]) == 0
    a, b = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert a["predicted_class"] == b["predicted_class"] and a["scores"] == b["scores"]

"""The CLI against bad input: one clear line naming the file, never a traceback; many files are all
tried; an earlier run is never silently destroyed; paths stored in an index work from anywhere."""
from __future__ import annotations

import errno
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


# -- a model that outputs NaN ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """An exported tiny model whose every weight is NaN (a diverged run): every output is NaN."""
    import torch

    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.taxonomy import load_taxonomy

    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny", "seed": 0}, "symbol_encoder_shared": False})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    folder = save_pretrained(model, load_taxonomy("galaxy10_decals"), tmp_path_factory.mktemp("nan") / "model")
    return folder, load_model(folder)[0]


@pytest.mark.parametrize("modality", ["image", "text"])
def test_classify_with_a_nan_model_reports_every_input_and_prints_no_nan(nan_model, tmp_path, capsys, modality):
    inputs = [str(save_galaxy(tmp_path / "a.png"))] if modality == "image" else ["a barred spiral"]
    code = main(["classify", "--checkpoint", str(nan_model[0]), "--modality", modality, *inputs])
    out = capsys.readouterr()
    assert code == 1 and out.out == "" and "NaN" not in out.out, out.out
    assert "scores are not finite" in out.err and "Traceback" not in out.err, out.err


def test_search_with_a_nan_model_is_one_line(fx, nan_model, capsys):
    assert main(["search", "--index", str(fx["index"]), "--text", "a spiral", "--checkpoint", str(nan_model[0])]) == 1
    one_error_line(capsys, "NaN or infinite values")


# -- flags and files that ask for too much -----------------------------------------------------------------
@pytest.mark.parametrize("flag", ["0", "-1"])
def test_classify_batch_size_must_be_positive(fx, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "--checkpoint", str(fx["model"]), "--modality", "text", "--batch-size", flag, "a spiral"])
    assert exit_.value.code == 2
    one_error_line(capsys, "--batch-size", "must be a positive integer")


def test_an_unknown_device_is_one_line_before_any_work(fx, tmp_path, capsys):
    assert main(["embed", "--checkpoint", str(fx["model"]), "--data", str(fx["survey"]), "--out",
                 str(tmp_path / "emb"), "--device", "tpu", "--no-progress"]) == 1
    one_error_line(capsys, "unknown device 'tpu'", "cuda:N")
    assert main(["train", "--quiet", "--out", str(tmp_path / "run"), "device=tpu"]) == 1
    one_error_line(capsys, "unknown device 'tpu'")
    assert not (tmp_path / "emb").exists() and not (tmp_path / "run").exists()


def edited_export(fx, tmp_path, edit) -> Path:
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(fx["model"], folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config["model_config"])
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_export_asking_for_huge_images_is_refused_before_allocating(fx, tmp_path, capsys):
    folder = edited_export(fx, tmp_path, lambda c: c["backbone"].update(image_size=100_000))
    assert main(["classify", "--checkpoint", str(folder), "--modality", "text", "a spiral"]) == 1
    one_error_line(capsys, str(folder), "image_size must be an integer from 1 to 1024, got 100000")


def test_an_export_with_an_unknown_model_config_key_is_refused(fx, tmp_path, capsys):
    folder = edited_export(fx, tmp_path, lambda c: c.update(symbol_encoder_shraed=True))
    assert main(["classify", "--checkpoint", str(folder), "--modality", "text", "a spiral"]) == 1
    one_error_line(capsys, "config.json", "unknown model_config key(s) ['symbol_encoder_shraed']")


def test_generate_refuses_a_huge_size_before_allocating(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--num", "2", "--size", "100000", "--out", str(tmp_path / "s.h5")])
    one_error_line(capsys, "--size", "between 16 and 1024")
    from galaxalign.survey import generate_survey

    with pytest.raises(ValueError, match="size must be from 16 to 1024"):
        generate_survey(tmp_path / "s.h5", 2, size=100_000)
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_out_of_range_at_once(capsys, port):
    with pytest.raises(SystemExit):
        main(["serve", "--index", "nowhere", "--port", port])
    one_error_line(capsys, "--port")


def test_serve_with_the_port_in_use_fails_before_loading_anything(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the index does not exist: had serve read it first, the error would name it
        assert main(["serve", "--index", str(tmp_path / "no-index"), "--port", str(port)]) == 1
    out = capsys.readouterr()
    assert "serving" not in out.out and f"cannot listen on 127.0.0.1:{port}: the port is in use" in out.err, out


def test_evaluate_out_that_is_a_file_fails_before_the_work(fx, tmp_path, capsys):
    taken = tmp_path / "report"
    taken.write_text("a file, not a folder")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing-model"), "--out", str(taken)]) == 1
    one_error_line(capsys, f"--out {taken}: exists and is not a folder")


# -- catalogs -------------------------------------------------------------------------------------------
def write_catalog(tmp_path, lines: list[str], encoding: str = "utf-8") -> Path:
    for name in ("a.png", "b.png"):
        save_galaxy(tmp_path / name)
    path = tmp_path / "cat.csv"
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


@pytest.mark.parametrize("row, cells", [("b.png,3,extra", 3), ("b.png", 1)])
def test_a_ragged_csv_row_is_refused_naming_file_and_line(fx, tmp_path, capsys, row, cells):
    cat = write_catalog(tmp_path, ["filepath,label", "a.png,2", row])
    assert main(["embed", "--checkpoint", str(fx["model"]), "--data", str(cat), "--out", str(tmp_path / "emb"),
                 "--no-progress"]) == 1
    one_error_line(capsys, f"{cat}: line 3: {cells} cells but the header has 2 columns")


def test_a_non_utf8_csv_error_names_the_file(fx, tmp_path, capsys):
    cat = write_catalog(tmp_path, ["filepath,label,note", "a.png,2,caf\xe9"], encoding="latin-1")
    assert main(["embed", "--checkpoint", str(fx["model"]), "--data", str(cat), "--out", str(tmp_path / "emb"),
                 "--no-progress"]) == 1
    one_error_line(capsys, f"{cat}: not a UTF-8 text CSV")


def test_resume_followed_by_an_override_takes_it_as_an_override(capsys):
    assert main(["train", "--print-config", "--resume", "data.num=300"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["num"] == 300


# -- a full disk: every writer says so in one line and keeps the previous version ---------------------------
def enospc(*_args, **_kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def assert_disk_full_line(err: str, path) -> None:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "no space left on device" in lines[0] and f"MB needed at {path}" in lines[0] and "MB free" in lines[0], err
    assert "[Errno" not in lines[0], err


def test_a_full_disk_while_exporting_keeps_the_previous_export(fx, tmp_path, monkeypatch):
    import shutil

    import safetensors.torch

    from galaxalign.inference import load_model, save_pretrained
    from galaxalign.runtime import DiskFullError

    folder = tmp_path / "export"
    shutil.copytree(fx["model"], folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    model, taxonomy = load_model(folder)
    monkeypatch.setattr(safetensors.torch, "save_file", enospc)
    with pytest.raises(DiskFullError) as exc:
        save_pretrained(model, taxonomy, folder)
    assert_disk_full_line(str(exc.value), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_full_disk_while_checkpointing_is_named_even_when_torch_hides_it(tmp_path, monkeypatch):
    import torch

    import galaxalign.runtime as runtime
    from galaxalign.runtime import DiskFullError
    from galaxalign.training.checkpoint import REQUIRED, save_checkpoint

    state = {k: 0 for k in REQUIRED}
    path = save_checkpoint(tmp_path / "last.pt", state)
    before = path.read_bytes()

    def torch_full(*_args, **_kw):  # what torch says when its writer hits a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1536 vs 1430")

    monkeypatch.setattr(torch, "save", torch_full)
    monkeypatch.setattr(runtime, "free_bytes", lambda _path: 4096)  # the disk is (nearly) full
    with pytest.raises(DiskFullError) as exc:
        save_checkpoint(path, state)
    assert_disk_full_line(str(exc.value), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_full_disk_while_embedding_is_one_line_and_keeps_written_shards(fx, tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    args = ["embed", "--checkpoint", str(fx["model"]), "--data", str(fx["survey"]), "--out", str(tmp_path / "emb"),
            "--no-progress", "--shard-size", "40"]
    calls = {"n": 0}
    real = pq.write_table

    def full_on_second(table, where, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            enospc()
        return real(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", full_on_second)
    assert main(args) == 1
    err = capsys.readouterr().err
    shard = tmp_path / "emb" / "shard-00001.parquet"
    assert_disk_full_line(err, shard)
    assert (tmp_path / "emb" / "shard-00000.parquet").is_file() and not shard.exists()
    monkeypatch.setattr(pq, "write_table", real)
    assert main(args) == 0  # with room again, the run finishes (from the shard it had)


def test_generate_on_a_full_disk_says_how_much_is_needed_before_rendering(tmp_path, monkeypatch, capsys):
    import galaxalign.runtime as runtime

    monkeypatch.setattr(runtime, "free_bytes", lambda _path: 3 * 1024 * 1024)
    out = tmp_path / "s.h5"
    assert main(["generate", "--num", "400", "--size", "128", "--out", str(out), "--quiet", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert_disk_full_line(err, out)
    assert "no space left on device, 19.3 MB needed at" in err and "(3.0 MB free)" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KB tmpfs (where this user may mount one), removed afterwards."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_generate_filling_a_real_disk_midway_fails_in_one_line_without_crashing(small_disk, tmp_path):
    """The write runs out of space while rendering (the up-front check is bypassed): one line, exit 1
    (HDF5 used to crash the process at exit), and the previous survey is intact."""
    import subprocess
    import sys

    out = small_disk / "s.h5"
    assert main(["generate", "--num", "10", "--size", "32", "--out", str(out), "--quiet", "--workers", "1"]) == 0
    before = out.read_bytes()
    script = ("import sys, galaxalign.runtime as r; r.check_free_space = lambda *a, **k: None; "
              "from galaxalign.cli import main; "
              f"sys.exit(main(['generate', '--num', '200', '--size', '64', '--out', {str(out)!r}, '--quiet', "
              "'--workers', '1']))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    assert_disk_full_line(run.stderr, out)
    assert out.read_bytes() == before and sorted(p.name for p in small_disk.iterdir()) == ["s.h5"]

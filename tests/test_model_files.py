"""Model files are read one safe way: a checkpoint that would run code if unpickled is refused."""
from __future__ import annotations

import pytest
import torch

from galaxalign.inference import load_model
from galaxalign.model_files import ModelFileError, read_checkpoint, read_model_files
from galaxalign.training.checkpoint import load_checkpoint


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, crafted_checkpoint):
    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(ModelFileError, match=r"evil\.pt: refused: .*not unpickled.*can run arbitrary code"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("reader", [read_checkpoint, read_model_files, load_checkpoint])
def test_every_reader_refuses_it(tmp_path, reader, crafted_checkpoint):
    path, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(ModelFileError, match="refused"):
        reader(path)
    assert not marker.exists()


def test_the_cli_refuses_it_in_one_line(tmp_path, capsys, crafted_checkpoint):
    from galaxalign.cli import main

    path, marker = crafted_checkpoint(tmp_path)
    image = tmp_path / "g.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    assert main(["classify", "--checkpoint", str(path), str(image)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evil.pt: refused" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_junk_files_are_one_clear_error_naming_the_file(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"junk\.pt: not a readable training checkpoint"):
        load_model(path)


def test_a_plain_tensor_file_and_a_bare_weights_file_are_refused(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(ModelFileError, match="expected a training checkpoint"):
        load_model(tmp_path / "t.pt")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="pass the exported model folder"):
        load_model(tmp_path / "w.safetensors")


def test_a_checkpoint_with_numpy_rng_state_loads_without_unpickling(tmp_path):
    import numpy as np

    from galaxalign.training.checkpoint import REQUIRED, rng_state

    state = {k: None for k in REQUIRED} | {"rng": rng_state(), "format": "galaxalign-checkpoint",
                                            "model": {"w": torch.ones(2)}, "config": {"seed": 0}}
    torch.save(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    np.testing.assert_array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert torch.equal(loaded["model"]["w"], torch.ones(2))

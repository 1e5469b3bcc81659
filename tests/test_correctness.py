"""Regression tests of issue #10: bugs that silently changed results (temperature, AMP, loss precision,
evaluation hygiene, override values)."""
import math

import numpy as np
import pytest
import torch

from galaxalign.training.config import ConfigError, load_config

torch.set_num_threads(1)


# ------------------------------------------------------------------ the temperature can learn
def test_temperature_gradient_is_nonzero_at_openais_initial_ln100():
    from galaxalign.loss import TriModalLoss
    from galaxalign.model import MAX_LOGIT_SCALE, GalaxAlignModel

    torch.manual_seed(0)
    m = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}})
    with torch.no_grad():
        m.logit_scale.fill_(4.6052)  # OpenAI's checkpoints: ln 100 (rounded), at or above the cap
    assert m.logit_scale.item() >= MAX_LOGIT_SCALE - 1e-4
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = m(images=x, text_tokens=m.tokenize(["a", "b", "c", "d"]))
    loss = TriModalLoss()(out["image_features"], out["text_features"], logit_scale=out["logit_scale"],
                          labels=torch.tensor([0, 1, 2, 3]))["loss"]
    loss.backward()
    assert m.logit_scale.grad is not None and abs(m.logit_scale.grad.item()) > 1e-6


# ------------------------------------------------------------------ amp reaches the trainer
@pytest.mark.parametrize("mode", ["off", "fp16", "bf16", "auto"])
def test_every_amp_mode_survives_the_config(mode):
    assert load_config("default", [f"amp={mode}"])["amp"] == mode
    assert load_config({"amp": mode})["amp"] == mode


def test_yaml_booleans_are_amp_modes_and_anything_else_is_an_error():
    assert load_config("default", ["amp=false"])["amp"] == "off"
    with pytest.raises(ConfigError, match="amp"):
        load_config("default", ["amp=banana"])


def test_amp_mode_picks_the_autocast_dtype_on_cuda():
    from galaxalign.training.build import amp_settings

    cuda = torch.device("cuda")
    assert amp_settings(load_config("default", ["amp=off"]), cuda) == (None, False)
    assert amp_settings(load_config("default", ["amp=fp16"]), cuda) == (torch.float16, True)
    assert amp_settings(load_config("default", ["amp=bf16"]), cuda) == (torch.bfloat16, False)


# ------------------------------------------------------------------ the loss runs in float32
def test_contrastive_loss_under_bf16_autocast_equals_the_float32_loss():
    from galaxalign.loss import contrastive_loss

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=-1)
    b = torch.nn.functional.normalize(a + 0.3 * torch.randn(32, 16, generator=g), dim=-1)
    labels = torch.arange(32) % 5
    ref = contrastive_loss(a, b, 100.0, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = contrastive_loss(a.bfloat16(), b.bfloat16(), torch.tensor(100.0), labels)
    assert low.dtype == torch.float32
    # Only the bf16 rounding of the inputs remains (their ~3 significant digits), not of the logits.
    exact_inputs = contrastive_loss(a.bfloat16().float(), b.bfloat16().float(), 100.0, labels)
    assert low.item() == pytest.approx(exact_inputs.item(), rel=1e-5)
    assert low.item() == pytest.approx(ref.item(), rel=0.05)


# ------------------------------------------------------------------ overrides YAML would cut
@pytest.mark.parametrize("text", ["out=runs/my run #2", "data.source=/data/a: b.h5"])
def test_an_override_yaml_would_truncate_is_an_error_not_a_silent_cut(text):
    with pytest.raises(ConfigError, match="quote"):
        load_config("default", [text])


def test_quoted_and_dict_overrides_keep_the_whole_path():
    assert load_config("default", ['out="runs/my run #2"'])["out"] == "runs/my run #2"
    assert load_config("default", [{"out": "runs/a: b #2"}])["out"] == "runs/a: b #2"
    assert load_config("default", ["stages=[2]", "model.backbone={kind: tiny}"])["stages"] == [2]

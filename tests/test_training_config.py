"""Training config: shipped configs load by name, overrides are typed, unknown keys name their path."""
import pytest
import yaml

from galaxalign.training.config import ConfigError, load_config, parse_override, shipped_configs
from galaxalign.training.schedule import CosineWithWarmup, build_optimizer, cosine_schedule


def test_shipped_configs_are_found_by_name_and_complete():
    assert {"default", "paper"} <= set(shipped_configs())
    cfg = load_config("default")
    assert cfg["method"] == "galaxalign" and cfg["stages"] == [1, 2]
    assert cfg["model"]["backbone"]["kind"] == "offline"
    paper = load_config("paper")
    assert paper["model"]["backbone"] == {"kind": "open_clip", "model": "ViT-B-16", "pretrained": "openai"}
    assert paper["batch_size"] == 256
    # Both configs hold the same keys: the paper config is the default one scaled up.
    assert set(cfg) == set(paper) and set(cfg["stage2"]) == set(paper["stage2"])


def test_overrides_are_read_as_yaml_scalars():
    cfg = load_config("default", ["stage1.lr=3e-4", "batch_size=8", "loss.label_aware=false", "stages=[1]", "data.source=/x/y.h5"])
    assert cfg["stage1"]["lr"] == pytest.approx(3e-4) and isinstance(cfg["stage1"]["lr"], float)
    assert cfg["batch_size"] == 8 and cfg["loss"]["label_aware"] is False and cfg["stages"] == [1]
    assert cfg["data"]["source"] == "/x/y.h5"
    assert parse_override("model.backbone.image_size=32") == {"model": {"backbone": {"image_size": 32}}}


def test_backbone_key_override_merges_into_the_spec():
    base = load_config("default")["model"]["backbone"]
    cfg = load_config("default", ["model.backbone.image_size=96"])
    assert cfg["model"]["backbone"] == {**base, "image_size": 96}
    # a whole spec of another kind replaces the spec; one of the same kind updates it
    tiny = load_config("default", ["model.backbone={kind: tiny, image_size: 24}"])["model"]["backbone"]
    assert tiny == {"kind": "tiny", "image_size": 24}
    same = load_config("default", [{"model": {"backbone": {"kind": "offline", "embed_dim": 128}}}])["model"]["backbone"]
    assert same == {**base, "embed_dim": 128}


def test_unknown_key_error_names_the_full_path(tmp_path):
    with pytest.raises(ConfigError, match=r"stage1\.lrr"):
        load_config("default", ["stage1.lrr=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"nmu": 3}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*data\.nmu"):
        load_config(str(bad))


def test_bad_values_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="method"):
        load_config("default", ["method=clip"])
    with pytest.raises(ConfigError, match="warmup_fraction"):
        load_config("default", ["stage2.warmup_fraction=5"])
    with pytest.raises(ConfigError, match="label_fraction"):
        load_config("default", ["data.label_fraction=0"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_cosine_schedule_warms_up_over_a_fraction_of_steps():
    import torch

    lin = torch.nn.Linear(4, 4)
    opt = build_optimizer(lin, lr=1.0, weight_decay=0.1)
    sched = cosine_schedule(opt, total_steps=100, warmup_fraction=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # 10 warm-up steps
    assert lrs[10] > lrs[50] > lrs[99] >= 0 and lrs[55] == pytest.approx(0.5, abs=0.02)
    assert CosineWithWarmup(100, 0)(0) == 1.0


def test_no_weight_decay_on_biases_norms_and_temperature():
    import torch

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 3)
            self.ln = torch.nn.LayerNorm(3)
            self.logit_scale = torch.nn.Parameter(torch.tensor(1.0))

    m = M()
    opt = build_optimizer(m, lr=1e-3, weight_decay=0.2)
    no_decay, decay = opt.param_groups
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.2
    assert [p is m.fc.weight for p in decay["params"]] == [True]
    assert len(no_decay["params"]) == 4  # fc.bias, ln.weight, ln.bias, logit_scale


def test_cli_prints_the_merged_config_and_reports_bad_keys(capsys):
    import json

    from galaxalign.cli import main

    assert main(["train", "--config", "default", "--print-config", "batch_size=3", "--out", "/tmp/x"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["batch_size"] == 3 and cfg["out"] == "/tmp/x"
    assert main(["train", "--config", "default", "stage1.lrr=1"]) == 1
    assert "stage1.lrr" in capsys.readouterr().err


def test_head_lr_scale_puts_projections_and_temperature_in_faster_groups():
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.logit_scale = nn.Parameter(torch.zeros(()))
            self.trunk = nn.Linear(4, 4)
            self.proj = nn.Linear(4, 2)

    opt = build_optimizer(M(), 1e-3, 0.1, head_lr_scale=10)
    lrs = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    assert lrs == [(1e-3, 0.0, 1), (1e-3, 0.1, 1), (pytest.approx(1e-2), 0.0, 2), (pytest.approx(1e-2), 0.1, 1)]
    assert len(build_optimizer(M(), 1e-3, 0.1).param_groups) == 2  # scale 1: the two usual groups

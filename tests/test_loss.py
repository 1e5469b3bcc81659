"""Losses: label-aware contrastive (default) and stock CLIP; the tri-modal weighted sum."""
import math

import pytest
import torch
import torch.nn.functional as F

from galaxalign.loss import PAIRS, ContrastiveLoss, TriModalLoss, contrastive_loss, gather_features, label_targets

torch.set_num_threads(1)


def _features(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_label_aware_loss_is_near_zero_when_same_class_pairs_align():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    class_dirs = torch.eye(8)[:4]
    feats = class_dirs[labels]  # every sample sits on its class direction, classes orthogonal
    loss = contrastive_loss(feats, feats.clone(), logit_scale=100.0, labels=labels, label_aware=True)
    assert loss.item() < 1e-3
    stock = contrastive_loss(feats, feats.clone(), logit_scale=100.0, labels=labels, label_aware=False)
    assert stock.item() > 0.3  # the stock loss still fights same-class "negatives"


def test_label_aware_differs_from_stock_when_labels_repeat():
    a, b = _features()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    aware = contrastive_loss(a, b, 10.0, labels, label_aware=True)
    stock = contrastive_loss(a, b, 10.0, labels, label_aware=False)
    assert abs(aware.item() - stock.item()) > 1e-3


def test_label_aware_equals_stock_clip_loss_when_labels_are_distinct():
    from open_clip.loss import ClipLoss

    a, b = _features()
    labels = torch.arange(8)
    aware = contrastive_loss(a, b, 10.0, labels, label_aware=True)
    stock = contrastive_loss(a, b, 10.0, labels, label_aware=False)
    reference = ClipLoss()(a, b, torch.tensor(10.0))
    assert aware.item() == pytest.approx(stock.item(), abs=1e-6)
    assert stock.item() == pytest.approx(reference.item(), abs=1e-6)


def test_targets_are_row_normalised_same_label_mask():
    t = label_targets(torch.tensor([5, 5, 7]), torch.float32)
    assert torch.allclose(t, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))


def test_label_aware_loss_is_soft_cross_entropy_minus_target_entropy():
    a, b = _features(4)
    labels = torch.tensor([0, 0, 0, 1])
    logits = 5.0 * a @ b.T
    t = label_targets(labels, torch.float32)
    soft_ce = 0.5 * (-(t * logits.log_softmax(1)).sum(1).mean() - (t * logits.T.log_softmax(1)).sum(1).mean())
    entropy = -(t * t.clamp(min=1e-30).log()).sum(1).mean()
    assert contrastive_loss(a, b, 5.0, labels).item() == pytest.approx((soft_ce - entropy).item(), abs=1e-6)


def test_contrastive_loss_module_without_labels_is_stock():
    a, b = _features()
    assert ContrastiveLoss()(a, b, 3.0).item() == pytest.approx(contrastive_loss(a, b, 3.0, None, False).item())


def test_trimodal_loss_is_the_weighted_sum_and_zero_weight_skips_a_term():
    img, txt = _features(seed=1)
    sym, _ = _features(seed=2)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = TriModalLoss({"image_text": 1.0, "symbol_text": 0.5, "image_symbol": 2.0})(img, txt, sym, 10.0, labels)
    expected = out["image_text"] + 0.5 * out["symbol_text"] + 2.0 * out["image_symbol"]
    assert set(out) == {*PAIRS, "loss"} and out["loss"].item() == pytest.approx(expected.item())
    skipped = TriModalLoss((1.0, 0.0, 1.0))(img, txt, sym, 10.0, labels)
    assert "symbol_text" not in skipped
    assert skipped["loss"].item() == pytest.approx((out["image_text"] + out["image_symbol"]).item())


def test_trimodal_loss_skips_missing_modalities_and_rejects_bad_weights():
    img, txt = _features()
    out = TriModalLoss()(image_features=img, text_features=txt, logit_scale=10.0)
    assert set(out) == {"image_text", "loss"}
    with pytest.raises(ValueError, match="unknown loss weight keys"):
        TriModalLoss({"image_txt": 1.0})
    with pytest.raises(ValueError, match="no loss term"):
        TriModalLoss((0, 0, 0))(img, txt, img, 10.0)


def test_gradient_reaches_the_temperature():
    a, b = _features()
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    contrastive_loss(a, b, scale.exp(), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0


def test_gather_features_is_identity_without_a_process_group():
    a, b = _features()
    labels = torch.arange(8)
    ga, gb, gl = gather_features(a, b, labels=labels)
    assert ga is a and gb is b and gl is labels

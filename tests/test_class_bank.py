"""Once-per-class encoding: distinct texts and symbols per batch, same loss and gradients as per sample."""
import pytest
import torch

from galaxalign.class_bank import ClassBank
from galaxalign.loss import TriModalLoss
from galaxalign.model import GalaxAlignModel
from galaxalign.taxonomy import load_taxonomy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}, "symbol_encoder_shared": False})
    tax = load_taxonomy("galaxy10_decals")
    return model, tax, ClassBank(tax, model, n_symbol_variants=2, seed=0)


def test_batch_holds_each_class_once_and_indexes_every_sample(setup):
    model, tax, bank = setup
    labels = torch.tensor([3, 1, 3, 3, 7, 1, 0, 7])
    cb = bank.batch(labels)
    assert cb.classes.tolist() == [0, 1, 3, 7]
    assert cb.symbol_images.shape == (4, 3, 32, 32) and len(cb.texts) == 4
    assert torch.equal(cb.classes[cb.text_index], labels) and torch.equal(cb.classes[cb.symbol_index], labels)
    for k, c in enumerate(cb.classes.tolist()):
        assert cb.texts[k] in tax.prompts(c)


def test_eval_batch_uses_first_prompt_and_canonical_symbol(setup):
    model, tax, bank = setup
    cb = bank.batch([2, 2, 5], train=False)
    assert cb.texts == [tax.prompts(2)[0], tax.prompts(5)[0]]
    again = bank.batch([2, 5], train=False)
    assert torch.equal(cb.symbol_images, again.symbol_images)


def test_bad_labels_are_named(setup):
    _, _, bank = setup
    with pytest.raises(ValueError, match="position 2 is 10"):
        bank.batch([0, 1, 10])
    with pytest.raises(ValueError, match="unlabelled"):
        bank.batch([-1])


def test_once_per_class_matches_per_sample_loss_and_gradients(setup):
    model, _, bank = setup
    model = model.double()
    labels = torch.tensor([0, 4, 4, 9, 0, 0, 2, 9, 4, 1])
    images = torch.randn(len(labels), 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cb = bank.batch(labels)
    cb.symbol_images = cb.symbol_images.double()
    criterion = TriModalLoss()

    def run(feats):
        model.zero_grad()
        loss = criterion(feats["image_features"], feats["text_features"], feats["symbol_features"],
                         feats["logit_scale"], labels)["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    once_loss, once_grads = run(model.forward_features(images, cb.text_tokens, cb.text_index,
                                                       cb.symbol_images, cb.symbol_index))
    tokens, symbols = bank.expand(cb)
    per_loss, per_grads = run(model(images=images, text_tokens=tokens, symbol_images=symbols))
    assert once_loss.item() == pytest.approx(per_loss.item(), abs=1e-12)
    assert once_grads.keys() == per_grads.keys()
    touched = 0
    for name in once_grads:
        assert torch.allclose(once_grads[name], per_grads[name], atol=1e-10, rtol=1e-8), name
        touched += bool(per_grads[name].abs().sum() > 0)
    assert touched == len(per_grads)  # every parameter (incl. both encoders, text, scale) got a gradient
    model.float()


def test_all_classes_batch_draws_on_the_device_one_prompt_and_variant_per_class(setup):
    model, tax, bank = setup
    labels = torch.tensor([3, 1, 3])
    cb = bank.batch(labels, all_classes=True)
    assert cb.classes.tolist() == list(range(10)) and torch.equal(cb.text_index, labels)
    assert cb.symbol_images.shape == (10, 3, 32, 32) and cb.text_tokens.shape[0] == 10
    # Each row is one of its own class's prompts: the tokens match one of that class's tokenised prompts.
    for c in range(10):
        rows = range(int(bank.prompt_offsets[c]), int(bank.prompt_offsets[c + 1]))
        assert any(torch.equal(cb.text_tokens[c], bank.tokens[r]) for r in rows)
    # Different batches draw different prompts (the bank's generator moves on).
    draws = {tuple(bank.batch(labels, all_classes=True).text_tokens[:, :8].flatten().tolist()) for _ in range(5)}
    assert len(draws) > 1

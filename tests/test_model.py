"""GalaxAlignModel: stage 1/2 symbol encoder, config and state-dict round trips, export, inference helpers."""
import math

import numpy as np
import pytest
import torch

from galaxalign.inference import class_prototypes, embed_arrays, encode_texts, load_model, save_pretrained
from galaxalign.model import GalaxAlignModel
from galaxalign.taxonomy import load_taxonomy

torch.set_num_threads(1)
TINY = {"backbone": {"kind": "tiny"}, "symbol_encoder_shared": True, "num_classes": None}


def _model(**overrides):
    torch.manual_seed(0)
    return GalaxAlignModel.from_config({**TINY, **overrides})


def _images(n=3, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_symbol_encoder_is_the_image_encoder_while_shared():
    m = _model()
    assert m.symbol_encoder is m.image_encoder and m.symbol_encoder_shared
    assert not any(k.startswith("symbol_encoder.") for k in m.state_dict())  # weights stored once


def test_separate_symbol_encoder_starts_equal_and_then_is_independent():
    m = _model()
    x = _images()
    m.separate_symbol_encoder()
    assert m.symbol_encoder is not m.image_encoder and m.config["symbol_encoder_shared"] is False
    assert torch.equal(m.encode_symbol(x), m.encode_image(x))
    with torch.no_grad():
        m.symbol_encoder.proj.weight.add_(1.0)
    assert not torch.allclose(m.encode_symbol(x), m.encode_image(x))
    assert not torch.equal(m.symbol_encoder.proj.weight, m.image_encoder.proj.weight)


def test_config_round_trips_and_state_dict_reproduces_outputs():
    for shared in (True, False):
        m = _model(symbol_encoder_shared=shared, num_classes=4)
        twin = GalaxAlignModel.from_config(m.config)
        assert twin.config == m.config
        twin.load_state_dict(m.state_dict())
        x = _images()
        assert torch.equal(twin.encode_symbol(x), m.encode_symbol(x))
        assert torch.equal(twin.classify(x), m.classify(x))


def test_separate_weights_load_into_a_shared_model_and_vice_versa():
    sep = _model(symbol_encoder_shared=False)
    with torch.no_grad():
        sep.symbol_encoder.proj.bias.add_(0.5)
    shared = _model()
    shared.load_state_dict(sep.state_dict())
    x = _images()
    assert not shared.symbol_encoder_shared and torch.equal(shared.encode_symbol(x), sep.encode_symbol(x))

    src = _model()
    target = _model(symbol_encoder_shared=False)
    target.load_state_dict(src.state_dict())
    assert torch.equal(target.encode_symbol(x), src.encode_image(x))


def test_classify_without_head_says_how_to_get_one():
    with pytest.raises(RuntimeError, match="num_classes"):
        _model().classify(_images())


def test_forward_returns_unit_features_and_the_scale_unclamped():
    # The cap at 100 is applied to the parameter after each optimiser step (trainer), not here:
    # a clamp in the forward pass has no gradient at the cap.
    m = _model()
    with torch.no_grad():
        m.logit_scale.fill_(math.log(100.0))
    out = m(images=_images(), text_tokens=m.tokenize(["a", "b c"]), symbol_images=_images(2))
    assert out["image_features"].shape == (3, 32) and out["text_features"].shape == (2, 32)
    assert torch.allclose(out["symbol_features"].norm(dim=-1), torch.ones(2), atol=1e-6)
    assert out["logit_scale"].item() == pytest.approx(100.0)


def test_export_then_load_round_trips_outputs_exactly(tmp_path):
    tax = load_taxonomy("galaxy10_decals")
    for shared in (True, False):
        m = _model(symbol_encoder_shared=shared, num_classes=10).eval()
        out = save_pretrained(m, tax, tmp_path / "export", extra={"note": "test"})
        assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
        loaded, loaded_tax = load_model(out)
        x = _images()
        tokens = m.tokenize(["a barred spiral galaxy"])
        with torch.no_grad():
            assert torch.equal(loaded.encode_image(x), m.encode_image(x))
            assert torch.equal(loaded.encode_symbol(x), m.encode_symbol(x))
            assert torch.equal(loaded.encode_text(tokens), m.encode_text(tokens))
            assert torch.equal(loaded.classify(x), m.classify(x))
        assert loaded.config == m.config and loaded_tax.class_names == tax.class_names
    assert not list(tmp_path.glob(".export*"))  # no temporaries left beside the export


def test_training_checkpoint_loads(tmp_path):
    tax = load_taxonomy("gz2")
    m = _model(symbol_encoder_shared=False).eval()
    ckpt = {"model": m.state_dict(), "model_config": m.config, "taxonomy": tax.to_dict(), "step": 3,
            "rng": {"numpy": np.random.get_state()}}
    torch.save(ckpt, tmp_path / "last.pt")
    loaded, loaded_tax = load_model(tmp_path / "last.pt")
    x = _images()
    assert torch.equal(loaded.encode_symbol(x), m.encode_symbol(x)) and loaded_tax.name == tax.name


def test_load_model_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lacks key 'model_config'"):
        load_model(tmp_path / "bad.pt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "folder")


def test_embed_arrays_gives_unit_float32_rows_in_batches():
    m = _model()
    imgs = np.random.default_rng(0).integers(0, 255, (5, 48, 40, 3), dtype=np.uint8)
    e = embed_arrays(m, imgs, batch_size=2)
    assert e.shape == (5, 32) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e[3], embed_arrays(m, imgs[3:4])[0], atol=1e-6)  # batching does not change rows


def test_class_prototypes_are_unit_rows_per_class():
    m = _model()
    tax = load_taxonomy("gz2")
    text = class_prototypes(m, tax, "text")
    assert text.shape == (tax.num_classes, 32)
    assert torch.allclose(text.norm(dim=-1), torch.ones(tax.num_classes), atol=1e-5)
    expected0 = torch.nn.functional.normalize(encode_texts(m, tax.prompts(0)).mean(0), dim=-1)
    assert torch.allclose(text[0], expected0, atol=1e-6)
    both = class_prototypes(m, tax, "both", n_symbol_variants=2)
    symbol = class_prototypes(m, tax, "symbol", n_symbol_variants=2)
    assert torch.allclose(both, torch.nn.functional.normalize(text + symbol, dim=-1), atol=1e-5)


def test_transforms_shape_normalise_and_reject_bad_images():
    m = _model()
    img = np.full((64, 80, 3), 255, np.uint8)
    x = m.eval_transform()(img)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5
    y = m.train_transform(strength=1.0)(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert y.shape == (3, 32, 32) and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        m.eval_transform()(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        m.eval_transform()(np.zeros((8, 8, 5), np.uint8))


def test_train_transform_rotation_and_flip_preserve_a_round_galaxy():
    yy, xx = np.mgrid[:64, :64] - 31.5
    blob = (255 * np.exp(-(xx**2 + yy**2) / (2 * 8.0**2))).astype(np.uint8)
    img = np.repeat(blob[:, :, None], 3, axis=2)
    m = _model()
    torch.manual_seed(0)
    aug = m.train_transform(strength=0.0)(img)
    assert torch.allclose(aug, m.eval_transform()(img), atol=0.05)


def test_embed_catalog_matches_embed_arrays_in_row_order(tmp_path):
    pytest.importorskip("galaxalign.datasets.pytorch")
    import pandas as pd
    from PIL import Image

    from galaxalign.inference import embed_catalog

    imgs = np.random.default_rng(1).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    rows = []
    for i, im in enumerate(imgs):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(im).save(path)
        rows.append({"id": f"g{i}", "label": i % 2, "source": str(path), "file_loc": str(path)})
    m = _model()
    e = embed_catalog(m, pd.DataFrame(rows), batch_size=2, progress=False)
    assert e.dtype == np.float32 and np.allclose(e, embed_arrays(m, imgs), atol=1e-6)

"""A user's taxonomy, decision tree and symbol book reach training, prototypes, export, evaluation
and search, and travel inside the trained model (#10 item 9)."""
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from galaxalign.taxonomy import TaxonomyError, load_decision_tree, load_taxonomy

torch.set_num_threads(1)
KNOWLEDGE = Path(__file__).resolve().parents[1] / "src" / "galaxalign" / "knowledge"


@pytest.fixture()
def user_knowledge(tmp_path):
    """A 3-class taxonomy whose 'haloed' class uses an answer only the user's tree has, drawn red by
    the user's symbol book."""
    tree = yaml.safe_load((KNOWLEDGE / "decision_tree.yaml").read_text())
    tree["questions"].append({"key": "has-halo", "text": "Is there a faint halo?", "requires": ["smooth-or-featured_smooth"],
                              "answers": [{"key": "yes", "text": "Halo", "icon": "halo"}, {"key": "no", "text": "No halo"}]})
    (tmp_path / "tree.yaml").write_text(yaml.safe_dump(tree))
    book = yaml.safe_load((KNOWLEDGE / "symbols.yaml").read_text())
    book["style"]["foreground"] = [255, 0, 0]
    book["answers"]["has-halo_yes"] = {"ring": {"radius": 0.8, "width": 0.1}}
    (tmp_path / "my_symbols.yaml").write_text(yaml.safe_dump(book))
    tax = {
        "name": "haloes", "decision_tree": "tree.yaml", "symbol_book": "my_symbols.yaml",
        "classes": [
            {"name": "round", "answers": ["smooth-or-featured_smooth", "how-rounded_round"], "text_labels": ["round galaxy"]},
            {"name": "haloed", "answers": ["smooth-or-featured_smooth", "has-halo_yes"], "text_labels": ["galaxy with a halo"]},
            {"name": "edge-on", "answers": ["disk-edge-on_yes"], "text_labels": ["edge-on disk"]},
        ],
    }
    (tmp_path / "haloes.yaml").write_text(yaml.safe_dump(tax))
    return tmp_path / "haloes.yaml"


def _redness(images: np.ndarray) -> float:
    x = images.astype(float)
    return float((x[..., 0] - x[..., 1]).mean())


def test_a_users_tree_and_symbols_load_with_the_taxonomy(user_knowledge):
    from galaxalign.symbols import class_symbol_bank

    tax = load_taxonomy(user_knowledge)
    assert tax.tree.answer("has-halo_yes").text == "Halo"
    images, ids = class_symbol_bank(tax, size=32, n_variants=1)
    assert ids.tolist() == [0, 1, 2] and _redness(images) > 5  # drawn with the user's red foreground
    shipped, _ = class_symbol_bank("galaxy10_decals", size=32, n_variants=1)
    assert abs(_redness(shipped)) < 3
    with pytest.raises(TaxonomyError, match="has-halo_yes"):  # the shipped tree has no such answer
        load_taxonomy({**yaml.safe_load(user_knowledge.read_text()), "decision_tree": None, "symbol_book": None})


def test_decision_tree_errors_name_the_file(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("questions:\n  - {key: a, text: A, requires: [b_c], answers: [{key: x, text: X}]}\n")
    with pytest.raises(TaxonomyError, match=r"t.yaml: question 'a' requires unknown answer"):
        load_decision_tree(bad)


def test_the_export_carries_the_tree_and_symbols_and_prototypes_use_them(user_knowledge, tmp_path):
    from galaxalign.inference import class_prototypes, load_model, save_pretrained
    from galaxalign.model import GalaxAlignModel

    tax = load_taxonomy(user_knowledge)
    torch.manual_seed(0)
    model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}}).eval()
    out = save_pretrained(model, tax, tmp_path / "export")
    for f in ("tree.yaml", "my_symbols.yaml", "haloes.yaml"):  # the user's files may go away
        (user_knowledge.parent / f).unlink()
    loaded, loaded_tax = load_model(out)
    assert loaded_tax.tree.answer("has-halo_yes").text == "Halo"
    assert loaded_tax.symbol_data["style"]["foreground"] == [255, 0, 0]
    mine = class_prototypes(loaded, loaded_tax, modality="symbol")
    data = loaded_tax.to_dict()
    data["symbol_book"]["style"]["foreground"] = [255, 255, 255]  # the same book, drawn white
    other = class_prototypes(loaded, load_taxonomy(data), modality="symbol")
    assert not np.allclose(mine, other)  # the prototypes are drawn with the model's own book


def test_training_saves_the_users_knowledge_and_search_draws_with_it(user_knowledge, tmp_path):
    from galaxalign.inference import load_model
    from galaxalign.search.query import index_taxonomy, render_query_symbol
    from galaxalign.training import load_config, train

    rng = np.random.default_rng(0)
    n = 36
    with h5py.File(tmp_path / "tiny.h5", "w") as f:
        f["images"] = rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8)
        f["ans"] = np.arange(n) % 3
    cfg = load_config("default", [{
        "data": {"source": str(tmp_path / "tiny.h5"), "taxonomy": str(user_knowledge), "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": {"kind": "tiny", "image_size": 24, "width": 8, "embed_dim": 16}, "lock_image": False, "lock_text": False},
        "symbols": {"variants": 1}, "batch_size": 8, "stage1": {"epochs": 1}, "stage2": {"epochs": 0}, "stages": [1],
        "device": "cpu", "tensorboard": False, "validate": False, "out": str(tmp_path / "run"),
    }])
    result = train(cfg, progress=False)
    _, tax = load_model(result.export_dir)
    assert tax.name == "haloes" and tax.symbol_data["style"]["foreground"] == [255, 0, 0]

    class Index:  # what index.json records: the taxonomy the model was exported with
        info = {"taxonomy": tax.to_dict()}

    img = render_query_symbol(["has-halo_yes"], size=32, taxonomy=index_taxonomy(Index()))
    assert _redness(img) > 5

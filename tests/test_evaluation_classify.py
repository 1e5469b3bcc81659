"""`galaxalign classify` and `galaxalign evaluate` on a tiny exported model (random weights)."""
import json

import numpy as np
import pytest
from PIL import Image

from galaxalign.cli import main


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from galaxalign.inference import save_pretrained
    from galaxalign.model import GalaxAlignModel
    from galaxalign.taxonomy import load_taxonomy

    torch.manual_seed(0)
    tax = load_taxonomy("galaxy10_decals")
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, num_classes in (("aligned", None), ("image_only", tax.num_classes)):
        model = GalaxAlignModel.from_config({"backbone": {"kind": "tiny"}, "symbol_encoder_shared": True, "num_classes": num_classes})
        out[name] = save_pretrained(model, tax, root / name, extra={"method": "galaxalign" if num_classes is None else "image_only"})
    return out, tax


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate((40, 97)):  # any size: the eval transform resizes
        p = tmp_path / f"galaxy{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_classify_prints_one_json_line_per_image(tiny_models, images, capsys):
    models, tax = tiny_models
    assert main(["classify", "--checkpoint", str(models["aligned"]), *images]) == 0
    records = _lines(capsys.readouterr().out)
    assert [r["file"] for r in records] == images
    for r in records:
        assert set(r) == {"file", "predicted_class", "predicted_id", "scores"}
        assert list(r["scores"]) == tax.class_names
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["predicted_class"] == tax.class_names[r["predicted_id"]]
        assert r["predicted_id"] == int(np.argmax(list(r["scores"].values())))


def test_unreadable_file_is_named_on_stderr_and_others_still_classified(tiny_models, images, tmp_path, capsys):
    models, _ = tiny_models
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8not a jpeg")
    code = main(["classify", "--checkpoint", str(models["aligned"]), images[0], str(bad), str(tmp_path / "missing.png"), images[1]])
    captured = capsys.readouterr()
    assert code == 1
    assert [r["file"] for r in _lines(captured.out)] == [images[0], images[1]]
    assert "broken.jpg" in captured.err and "missing.png" in captured.err


def test_symbol_and_text_modalities(tiny_models, images, capsys):
    models, tax = tiny_models
    assert main(["classify", "--checkpoint", str(models["aligned"]), "--modality", "symbol", images[0]]) == 0
    assert _lines(capsys.readouterr().out)[0]["file"] == images[0]
    texts = ["a barred spiral galaxy", "smooth round galaxy"]
    assert main(["classify", "--checkpoint", str(models["aligned"]), "--modality", "text", *texts]) == 0
    records = _lines(capsys.readouterr().out)
    assert [r["file"] for r in records] == texts
    assert all(r["predicted_class"] in tax.class_names for r in records)


def test_image_only_model_uses_its_head(tiny_models, images, capsys):
    import torch

    from galaxalign.inference import load_model

    models, _ = tiny_models
    assert main(["classify", "--checkpoint", str(models["image_only"]), images[0]]) == 0
    rec = _lines(capsys.readouterr().out)[0]
    model, _ = load_model(models["image_only"])
    img = np.array(Image.open(images[0]).convert("RGB"))
    with torch.no_grad():
        logits = model.classify(model.eval_transform()(img)[None])[0].numpy()
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(list(rec["scores"].values()), probs, atol=1e-5)


def test_head_requested_for_a_model_without_one_is_an_error(tiny_models, images, capsys):
    models, _ = tiny_models
    assert main(["classify", "--checkpoint", str(models["aligned"]), "--prototypes", "head", images[0]]) == 1
    assert "no classifier head" in capsys.readouterr().err


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """10 classes x 8 images; each class has its own colour so search has signal."""
    from galaxalign.taxonomy import load_taxonomy

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for c in load_taxonomy("galaxy10_decals").classes:
        (root / c.key).mkdir()
        colour = rng.integers(0, 255, 3)
        for i in range(8):
            img = np.clip(colour + rng.normal(0, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / c.key / f"{c.key}_{i}.png")
    return root


def test_evaluate_writes_reports_and_plots(tiny_models, image_folder, tmp_path, capsys):
    models, tax = tiny_models
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(models["aligned"]), "--data", str(image_folder), "--out", str(out),
                 "--bootstrap", "50", "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    # exported as method galaxalign; the primary classifier is the one the validation split picks
    assert report["primary_selected_on"] == "val"
    assert report["val_accuracy"][report["primary_classifier"]] == max(report["val_accuracy"].values())
    # accuracy ties go to the lowest validation log-loss, which the report carries per classifier
    from galaxalign.evaluation.protocol import select_primary

    loss = report["val_log_loss"]
    assert set(loss) == set(report["val_accuracy"]) and all(np.isfinite(v) and v >= 0 for v in loss.values())
    assert report["primary_classifier"] == select_primary(report["val_accuracy"], "zero_shot_both", loss)
    n = report["n_test"]
    assert n == report["dataset"]["splits"]["test"] and n >= 10
    for name, rep in report["classification"].items():
        assert 0 <= rep["accuracy"] <= 1 and 0 <= rep["macro_f1"] <= 1, name
        assert sum(map(sum, rep["confusion_matrix"])) == n
    lo, hi = report["accuracy_ci"]
    assert lo <= report["accuracy"] <= hi
    r = report["retrieval"]
    assert r["gallery_size"] == report["dataset"]["splits"]["train"]
    assert 0 <= r["map_at_10"] <= 1 and 0 <= r["precision_at_1"] <= 1
    # colour-coded classes: k-NN on the (random) tiny tower's embeddings is far above chance (0.1)
    assert report["classification"]["knn"]["accuracy"] > 0.3
    for png in ("confusion_matrix.png", "retrieval_grid.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert f"| {report['primary_classifier']} (primary) |" in md and "retrieval_grid.png" in md


def test_evaluate_without_data_on_a_model_with_no_training_config_says_so(tiny_models, capsys):
    models, _ = tiny_models
    assert main(["evaluate", "--checkpoint", str(models["aligned"]), "--quiet"]) == 1
    assert "--data" in capsys.readouterr().err


def test_probe_and_knn_learn_from_the_training_split_even_when_the_gallery_is_test(tiny_models, image_folder, tmp_path):
    # Regression (#10 item 5): with --gallery test the probe used to be fitted on the gallery, i.e. on
    # the test labels, and then scored on the same galaxies.
    models, _ = tiny_models
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(models["aligned"]), "--data", str(image_folder), "--gallery", "test",
                 "--out", str(out), "--bootstrap", "20", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    splits = report["dataset"]["splits"]
    assert report["n_gallery"] == splits["test"]
    assert report["n_train_labelled"] == splits["train"] and report["probe"]["fit_on"] == "train"
    assert "learn from the" in (out / "report.md").read_text()


def test_evaluate_model_without_training_galaxies_runs_no_probe_rather_than_fitting_the_gallery(tiny_models, image_folder):
    from galaxalign.datasets import load_catalog, split_catalog
    from galaxalign.evaluation.protocol import evaluate_model
    from galaxalign.inference import load_model

    models, tax = tiny_models
    model, _ = load_model(models["aligned"])
    test = split_catalog(load_catalog(str(image_folder), tax), 0.1, 0.3, 0)["test"]
    res = evaluate_model(model, tax, test, test, None, method="galaxalign", n_resamples=10, progress=False)
    assert "linear_probe" not in res["classification"] and "knn" not in res["classification"]
    assert res["probe"]["fit_on"] is None and res["n_train_labelled"] == 0


def test_probe_c_is_chosen_on_the_validation_split(tiny_models, image_folder, tmp_path):
    # Regression (#10 item 8): C was fixed at 1 whatever the data.
    models, _ = tiny_models
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(models["aligned"]), "--data", str(image_folder),
                 "--out", str(out), "--bootstrap", "20", "--quiet"]) == 0
    probe = json.loads((out / "report.json").read_text())["probe"]
    assert probe["C_chosen_on"] == "val" and probe["n_val"] > 0
    by_c = probe["val_accuracy_by_C"]
    assert probe["C"] == max((float(c) for c in by_c), key=lambda c: (by_c[f"{c:g}"], -c))
    # evaluating the validation split itself: C is not chosen on it
    assert main(["evaluate", "--checkpoint", str(models["aligned"]), "--data", str(image_folder), "--split", "val",
                 "--out", str(tmp_path / "v"), "--bootstrap", "20", "--quiet"]) == 0
    assert json.loads((tmp_path / "v" / "report.json").read_text())["probe"]["C_chosen_on"] is None

"""Dataset loaders, catalogs and splits: behaviour on small files written in tmp_path."""
from __future__ import annotations

import csv
import pickle
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxalign.datasets import (
    GALAXY10_URL,
    CatalogError,
    ImageReadError,
    apply_label_fraction,
    gz2_summary,
    load_catalog,
    load_galaxy10,
    load_gz2_catalog,
    load_image_folder,
    load_user_catalog,
    read_image,
    split_catalog,
)
from galaxalign.datasets.splits import split_sizes
from galaxalign.taxonomy import load_taxonomy

SHARED = Path(__file__).resolve().parents[2] / "shared"
EXEMPLARS = SHARED / "data" / "gz2-exemplars"


@pytest.fixture(scope="module")
def galaxy10():
    return load_taxonomy("galaxy10_decals")


def write_galaxy10(path: Path, n: int = 20, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["ans"] = (np.arange(n) % 10).astype(np.uint8)
        f["ra"] = np.linspace(150.0, 151.0, n)
        f["dec"] = np.linspace(2.0, 3.0, n)
        f["redshift"] = np.full(n, 0.05)
        f["pxscale"] = np.full(n, 0.262)
        params = f.create_group("params")
        params["sersic_n"] = np.linspace(1.0, 4.0, n)
    return images


def write_picture(path: Path, color=(200, 40, 10), size=(24, 20)) -> Path:
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = color
    array[5:10, 5:10] = 255
    Image.fromarray(array).save(path)
    return path


def write_fits(path: Path, data: np.ndarray) -> Path:
    from astropy.io import fits

    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- Galaxy10 HDF5 -----------------------------------------------------------------------------


def test_galaxy10_round_trip_rows_metadata_and_images(tmp_path, galaxy10):
    images = write_galaxy10(tmp_path / "g10.h5")
    catalog = load_galaxy10(tmp_path / "g10.h5", taxonomy=galaxy10)
    assert len(catalog) == 20
    assert list(catalog.columns[:5]) == ["id", "label", "source", "h5_path", "h5_row"]
    assert catalog["label"].tolist() == [i % 10 for i in range(20)]
    assert catalog["id"].is_unique and catalog["source"][3] == "g10.h5#3"
    assert catalog["ra"][19] == pytest.approx(151.0) and catalog["pxscale"][0] == pytest.approx(0.262)
    assert catalog["sersic_n"][19] == pytest.approx(4.0)  # params/ group becomes columns
    np.testing.assert_array_equal(read_image(catalog.iloc[7]), images[7])
    np.testing.assert_array_equal(read_image(f"{tmp_path / 'g10.h5'}#7"), images[7])
    dispatched = load_catalog(tmp_path / "g10.h5", "galaxy10_decals")
    assert dispatched["label"].tolist() == catalog["label"].tolist()


def test_galaxy10_missing_file_names_download_address(tmp_path):
    with pytest.raises(FileNotFoundError, match="zenodo.org/records/10845026/files/Galaxy10_DECals.h5"):
        load_galaxy10(tmp_path / "Galaxy10_DECals.h5")
    assert GALAXY10_URL.endswith("Galaxy10_DECals.h5")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("ans", np.zeros(19, np.uint8), "'ans' has shape"),
        ("ans", None, "missing dataset 'ans'"),
        ("images", np.zeros((20, 8, 8, 3), np.float32), "dtype float32"),
        ("images", np.zeros((20, 8, 8), np.uint8), "expected \\(N, H, W, 3\\)"),
        ("ra", np.zeros(3), "'ra' has shape"),
    ],
)
def test_galaxy10_bad_layout_names_file_and_dataset(tmp_path, name, data, message):
    path = tmp_path / "bad.h5"
    write_galaxy10(path)
    with h5py.File(path, "a") as f:
        del f[name]
        if data is not None:
            f[name] = data
    with pytest.raises(CatalogError, match=message) as info:
        load_galaxy10(path)
    assert "bad.h5" in str(info.value)


def test_galaxy10_empty_file_and_labels_outside_taxonomy(tmp_path, galaxy10):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["images"] = np.zeros((0, 8, 8, 3), np.uint8)
        f["ans"] = np.zeros(0, np.uint8)
    with pytest.raises(CatalogError, match="empty"):
        load_galaxy10(tmp_path / "empty.h5")
    write_galaxy10(tmp_path / "g.h5")
    with h5py.File(tmp_path / "g.h5", "a") as f:
        f["ans"][4] = 12
    with pytest.raises(CatalogError, match="row 4: ans 12 is not a class"):
        load_galaxy10(tmp_path / "g.h5", taxonomy=galaxy10)
    with h5py.File(tmp_path / "g.h5", "a") as f:
        f["ans"][4] = 4
        f.attrs["class_names"] = ["Round", "Spiral"]
    with pytest.raises(CatalogError, match="class_names \\['Round', 'Spiral'\\] do not match"):
        load_galaxy10(tmp_path / "g.h5", taxonomy=galaxy10)
    assert len(load_galaxy10(tmp_path / "g.h5")) == 20  # without a taxonomy nothing to compare


# --- images ------------------------------------------------------------------------------------


def test_read_image_png_jpeg_grey_and_truncated(tmp_path):
    png = read_image(write_picture(tmp_path / "a.png"))
    assert png.dtype == np.uint8 and png.shape == (20, 24, 3) and tuple(png[0, 0]) == (200, 40, 10)
    jpeg = read_image(write_picture(tmp_path / "a.jpg"))
    assert jpeg.shape == (20, 24, 3) and abs(float(jpeg[14:, 16:, 0].mean()) - 200) < 10
    Image.fromarray(np.full((6, 7), 90, np.uint8)).save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (6, 7, 3) and (grey == 90).all()
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "cut.jpg", quality=95)
    truncate(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_truncated_jpeg_refused_even_when_pil_is_told_to_pad(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "c.jpg")
    truncate(tmp_path / "c.jpg")
    with pytest.raises(ImageReadError, match="c.jpg: JPEG file is truncated"):
        read_image(tmp_path / "c.jpg")


def test_fits_grey_nan_and_three_band(tmp_path):
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    data[0, 0] = np.nan
    grey = read_image(write_fits(tmp_path / "grey.fits", data))
    assert grey.shape == (10, 10, 3) and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and grey[0, 0, 0] == 0 and grey[9, 9, 0] == 255
    assert grey[5, 5, 0] > grey[1, 1, 0]  # monotone stretch
    bands = np.stack([np.full((8, 9), v, np.float32) for v in (1.0, 5.0, 10.0)])
    rgb = read_image(write_fits(tmp_path / "rgb.fits", bands))
    assert rgb.shape == (8, 9, 3) and rgb[0, 0, 0] < rgb[0, 0, 1] < rgb[0, 0, 2]
    with pytest.raises(ImageReadError, match="no finite pixel"):
        read_image(write_fits(tmp_path / "nan.fits", np.full((4, 4), np.nan)))


# --- user catalogs -----------------------------------------------------------------------------


def test_user_csv_labels_by_id_name_key_and_metadata(tmp_path, galaxy10):
    write_picture(tmp_path / "a.png")
    (tmp_path / "img").mkdir()
    write_picture(tmp_path / "img" / "b.jpg")
    write_fits(tmp_path / "c.fits", np.random.default_rng(0).normal(size=(12, 12)))
    write_csv(
        tmp_path / "cat.csv",
        ["filepath", "label", "caption", "mag"],
        [
            ["a.png", "5", "a bar", "17.5"],
            ["img/b.jpg", "Merging Galaxies", "", "18"],
            [str(tmp_path / "c.fits"), "edge_on_no_bulge", "x", "19"],
        ],
    )
    catalog = load_user_catalog(tmp_path / "cat.csv", galaxy10)
    assert catalog["label"].tolist() == [5, 1, 8]
    # a free-text column is metadata like any other: the text a galaxy is aligned with comes from its
    # class's prompts or its decision-tree answers, never from a catalog column
    assert catalog["caption"].tolist()[0::2] == ["a bar", "x"]
    assert list(catalog.columns[:4]) == ["id", "label", "source", "file_loc"]
    assert catalog["mag"].tolist() == [17.5, 18.0, 19.0]
    assert catalog["file_loc"][1] == str(tmp_path / "img" / "b.jpg")
    assert [read_image(row).shape for _, row in catalog.iterrows()] == [(20, 24, 3), (20, 24, 3), (12, 12, 3)]
    assert load_catalog(tmp_path / "cat.csv", galaxy10)["id"].tolist() == catalog["id"].tolist()


def test_user_csv_errors_name_file_line_and_problem(tmp_path, galaxy10):
    write_picture(tmp_path / "a.png")
    write_picture(tmp_path / "t.jpg")
    truncate(tmp_path / "t.jpg", 0.6)
    write_csv(tmp_path / "nofile.csv", ["path", "label"], [["a.png", 1]])
    with pytest.raises(CatalogError, match="nofile.csv: missing column 'filepath'"):
        load_user_catalog(tmp_path / "nofile.csv", galaxy10)
    write_csv(tmp_path / "unknown.csv", ["filepath", "label"], [["a.png", 1], ["a.png", "Spiral Blobs"]])
    with pytest.raises(CatalogError, match=r"unknown.csv: line 3: label 'Spiral Blobs' is not in taxonomy"):
        load_user_catalog(tmp_path / "unknown.csv", galaxy10, check_images=False)
    write_csv(tmp_path / "trunc.csv", ["filepath", "label"], [["a.png", 1], ["t.jpg", 2]])
    with pytest.raises(CatalogError, match=r"trunc.csv: line 3: .*t.jpg.*truncated"):
        load_user_catalog(tmp_path / "trunc.csv", galaxy10)


def test_skip_bad_drops_and_reports_each_bad_row(tmp_path, galaxy10):
    write_picture(tmp_path / "a.png")
    write_picture(tmp_path / "b.png")
    write_picture(tmp_path / "t.jpg")
    truncate(tmp_path / "t.jpg", 0.6)
    rows = [["a.png", 0], ["missing.png", 1], ["t.jpg", 2], ["b.png", "no such class"], ["b.png", 3]]
    write_csv(tmp_path / "cat.csv", ["filepath", "label"], rows)
    with pytest.warns(UserWarning, match="skipped 3 bad row"):
        catalog = load_user_catalog(tmp_path / "cat.csv", galaxy10, skip_bad=True)
    assert catalog["label"].tolist() == [0, 3]
    assert [s["location"].rsplit("line ", 1)[1] for s in catalog.attrs["skipped"]] == ["3", "4", "5"]


def test_image_folder_by_class_name_or_key(tmp_path, galaxy10):
    for folder, n in (("Round Smooth Galaxies", 2), ("barred_spiral", 3)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(n):
            write_picture(tmp_path / "data" / folder / f"{i}.png")
    (tmp_path / "data" / "barred_spiral" / "notes.txt").write_text("not an image")
    catalog = load_catalog(tmp_path / "data", galaxy10)
    assert sorted(catalog["label"].tolist()) == [2, 2, 5, 5, 5]
    assert "barred_spiral/0.png" in catalog["id"].tolist()
    (tmp_path / "data" / "blobs").mkdir()
    write_picture(tmp_path / "data" / "blobs" / "x.png")
    with pytest.raises(CatalogError, match="class folder 'blobs'"):
        load_image_folder(tmp_path / "data", galaxy10)


# --- GZ2 ---------------------------------------------------------------------------------------

VOTE_COLUMNS = [
    f"{q}-gz2_{a}"
    for q, answers in {
        "smooth-or-featured": ("smooth", "featured-or-disk", "artifact"),
        "how-rounded": ("round", "in-between", "cigar"),
        "disk-edge-on": ("yes", "no"),
        "has-spiral-arms": ("yes", "no"),
        "bar": ("yes", "no"),
    }.items()
    for a in answers
]


def votes(sf, hr=(0, 0, 0), edge=(0, 0), spiral=(0, 0), bar=(0, 0)) -> list[int]:
    return [*sf, *hr, *edge, *spiral, *bar]


def test_gz2_summary_derived_from_votes_as_galaxy_datasets_does():
    table = pd.DataFrame(
        [
            votes((30, 8, 2), hr=(20, 6, 4)),  # smooth_round
            votes((30, 8, 2), hr=(6, 20, 4)),  # smooth_inbetween
            votes((30, 8, 2), hr=(1, 6, 23)),  # smooth_cigar
            votes((5, 35, 0), edge=(30, 5), spiral=(10, 10), bar=(4, 4)),  # edge-on, deadlocks: edge_on_disk
            votes((5, 35, 0), edge=(2, 33), spiral=(30, 5), bar=(5, 30)),  # unbarred_spiral
            votes((5, 35, 0), edge=(2, 33), spiral=(30, 5), bar=(25, 10)),  # barred_spiral
            votes((5, 35, 0), edge=(2, 33), spiral=(5, 30), bar=(5, 30)),  # featured_without_bar_or_spiral
            votes((18, 15, 7), hr=(10, 5, 3)),  # smooth is the mode but under half the votes: unassigned
            votes((5, 35, 0), edge=(30, 5), spiral=(5, 30), bar=(5, 30)),  # absent from their table: unassigned
            votes((20, 20, 0)),  # deadlock on the first question: unassigned
        ],
        columns=VOTE_COLUMNS,
    )
    assert gz2_summary(table).tolist() == [
        "smooth_round", "smooth_inbetween", "smooth_cigar", "edge_on_disk", "unbarred_spiral",
        "barred_spiral", "featured_without_bar_or_spiral", None, None, None,
    ]  # fmt: skip


def test_gz2_catalog_labels_drop_unassigned_and_resolve_paths(tmp_path):
    (tmp_path / "images" / "587722").mkdir(parents=True)
    write_picture(tmp_path / "images" / "587722" / "1.jpg")
    table = pd.DataFrame(
        {
            "id_str": ["g1", "g2", "g3"],
            "file_loc": ["587722/1.jpg", "587722/2.jpg", "587722/3.jpg"],
            "summary": ["barred_spiral", None, "smooth_round"],
            "ra": [1.0, 2.0, 3.0],
        }
    )
    table.to_parquet(tmp_path / "gz2.parquet")
    catalog = load_catalog(tmp_path / "gz2.parquet", image_dir=tmp_path / "images")
    assert catalog["id"].tolist() == ["g1", "g3"] and catalog["label"].tolist() == [5, 1]
    assert catalog.attrs["dropped"] == {"unassigned (label -1)": 1}
    assert read_image(catalog.iloc[0]).shape == (20, 24, 3)
    with pytest.raises(CatalogError, match="not in taxonomy 'galaxy10_decals'"):
        load_gz2_catalog(tmp_path / "gz2.parquet", taxonomy="galaxy10_decals")


def test_gz2_csv_with_vote_columns_dispatches_to_gz2(tmp_path):
    rows = [
        ["a.jpg", *votes((30, 8, 2), hr=(20, 6, 4))],
        ["b.jpg", *votes((5, 35, 0), edge=(2, 33), spiral=(30, 5), bar=(25, 10))],
    ]
    write_csv(tmp_path / "gz2.csv", ["file_loc", *VOTE_COLUMNS], rows)
    for name in ("a.jpg", "b.jpg"):  # a sample of the image paths is checked up front
        write_picture(tmp_path / name)
    catalog = load_catalog(tmp_path / "gz2.csv")
    assert catalog["label"].tolist() == [1, 5]
    assert catalog["summary"].tolist() == ["smooth_round", "barred_spiral"]
    write_csv(tmp_path / "bad.csv", ["file_loc", "summary"], [["a.jpg", "smooth_round"], ["b.jpg", "spiral_blob"]])
    with pytest.raises(CatalogError, match="bad.csv: line 3: summary 'spiral_blob'"):
        load_catalog(tmp_path / "bad.csv")


# --- splits and label fractions ----------------------------------------------------------------


def synthetic_catalog(counts: dict[int, int]) -> pd.DataFrame:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame(
        {"id": [f"g{i:04d}" for i in range(len(labels))], "label": labels, "source": "x", "file_loc": "x.png"}
    )


def test_split_is_stratified_disjoint_and_reproducible():
    catalog = synthetic_catalog({0: 200, 1: 100, 2: 50})
    splits = split_catalog(catalog, val_fraction=0.1, test_fraction=0.2, seed=3)
    counts = {name: part["label"].value_counts().to_dict() for name, part in splits.items()}
    assert counts["test"] == {0: 40, 1: 20, 2: 10} and counts["val"] == {0: 20, 1: 10, 2: 5}
    ids = [set(part["id"]) for part in splits.values()]
    assert set.union(*ids) == set(catalog["id"]) and sum(len(s) for s in ids) == len(catalog)
    again = split_catalog(catalog.sample(frac=1.0, random_state=1), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert set(again["test"]["id"]) == set(splits["test"]["id"])  # row order does not matter
    other = split_catalog(catalog, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert set(other["test"]["id"]) != set(splits["test"]["id"])


def test_split_small_classes_rule():
    assert [split_sizes(n, 0.1, 0.1) for n in (1, 2, 3, 10)] == [(1, 0, 0), (1, 0, 1), (1, 1, 1), (8, 1, 1)]
    splits = split_catalog(synthetic_catalog({0: 1, 1: 2, 2: 3}), 0.1, 0.1, seed=0)
    assert splits["train"]["label"].tolist() == [0, 1, 2]
    assert splits["test"]["label"].tolist() == [1, 2] and splits["val"]["label"].tolist() == [2]
    with pytest.raises(ValueError, match="must be < 1"):
        split_catalog(synthetic_catalog({0: 10}), 0.5, 0.5)


def test_label_fraction_per_class_and_nested():
    train = synthetic_catalog({0: 500, 1: 120, 2: 7, -1: 30})
    subsets = {f: apply_label_fraction(train, f, seed=0) for f in (0.01, 0.1, 0.5, 1.0)}
    assert subsets[0.01]["label"].value_counts().to_dict() == {0: 5, 1: 1, 2: 1}  # min_per_class=1
    assert subsets[0.1]["label"].value_counts().to_dict() == {0: 50, 1: 12, 2: 1}
    assert len(subsets[1.0]) == 627 and (subsets[1.0]["label"] >= 0).all()
    ids = [set(subsets[f]["id"]) for f in (0.01, 0.1, 0.5, 1.0)]
    assert ids[0] <= ids[1] <= ids[2] <= ids[3]
    assert set(apply_label_fraction(train, 0.1, seed=1)["id"]) != ids[1]
    assert len(apply_label_fraction(train, 0.01, seed=0, min_per_class=0)) == 6  # 5 + 1 + 0


# --- torch Dataset -----------------------------------------------------------------------------


def test_galaxy_dataset_with_workers_reads_h5(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from galaxalign.datasets import GalaxyDataset

    images = write_galaxy10(tmp_path / "g.h5", n=12)
    catalog = load_galaxy10(tmp_path / "g.h5")
    plain = GalaxyDataset(catalog)
    image, label = plain[3]  # the parent now holds an open handle that forked workers inherit
    assert label == 3 and image.dtype == np.uint8
    np.testing.assert_array_equal(image, images[3])
    copy = pickle.loads(pickle.dumps(plain))  # what spawn/forkserver workers receive
    np.testing.assert_array_equal(copy[5][0], images[5])
    dataset = GalaxyDataset(catalog, transform=lambda im: torch.from_numpy(im).permute(2, 0, 1).float())
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    got = torch.cat([b[0] for b in batches])
    assert got.shape == (12, 3, 16, 16)
    assert torch.cat([b[1] for b in batches]).tolist() == catalog["label"].tolist()
    np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy().astype(np.uint8), images)


# --- real images (../shared) -------------------------------------------------------------------


@pytest.mark.skipif(not (EXEMPLARS / "manifest.csv").is_file(), reason="../shared/data/gz2-exemplars absent")
def test_gz2_exemplars_through_the_user_catalog_path(tmp_path, galaxy10):
    manifest = pd.read_csv(EXEMPLARS / "manifest.csv")
    labelled = manifest[manifest["galaxy10_class"].notna()]
    rows = [[str(EXEMPLARS / f), int(c)] for f, c in zip(labelled["file"], labelled["galaxy10_class"])]
    write_csv(tmp_path / "exemplars.csv", ["filepath", "label"], rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row may be skipped
        catalog = load_catalog(tmp_path / "exemplars.csv", galaxy10)
    assert len(catalog) == 22
    assert catalog["label"].tolist() == [int(c) for c in labelled["galaxy10_class"]]
    assert {read_image(row).shape for _, row in catalog.iterrows()} == {(424, 424, 3)}


# --- GZ2: one decision tree, galaxy-datasets' image layout (#10 items 10, 12) -------------------


def test_gz2_questions_and_branches_come_from_the_decision_tree():
    import copy

    from galaxalign.datasets.gz2 import gz2_key_questions
    from galaxalign.taxonomy import decision_tree, load_decision_tree

    tree = decision_tree()
    assert tree.question("bar").requires == ("disk-edge-on_no",)
    q = gz2_key_questions(tree)
    # bar is asked on disk-edge-on_no, which is asked on featured-or-disk: its relevance branch
    assert q["bar"] == (("yes", "no"), "smooth-or-featured_featured-or-disk")
    assert q["how-rounded"][1] == "smooth-or-featured_smooth" and q["smooth-or-featured"][1] is None
    # a tree where bar hangs below 'smooth' changes the derivation: a barred spiral's bar is no longer asked
    data = tree.to_dict()
    moved = copy.deepcopy(data)
    next(x for x in moved["questions"] if x["key"] == "bar")["requires"] = ["smooth-or-featured_smooth"]
    table = pd.DataFrame([votes((5, 35, 0), edge=(2, 33), spiral=(30, 5), bar=(25, 10))], columns=VOTE_COLUMNS)
    assert gz2_summary(table, tree=load_decision_tree(data)).tolist() == ["barred_spiral"]
    assert gz2_summary(table, tree=load_decision_tree(moved)).tolist() == [None]


def _published_gz2(tmp_path):
    """galaxy-datasets' layout: ROOT/images/SUBFOLDER/FILENAME; the parquet's file_loc is its author's path."""
    root = tmp_path / "gz2_root"
    (root / "images" / "587722").mkdir(parents=True)
    write_picture(root / "images" / "587722" / "587722_1.jpg")
    write_picture(root / "images" / "587722" / "587722_2.jpg")
    table = pd.DataFrame({
        "dr7objid": [1, 2], "subfolder": ["587722", "587722"], "filename": ["587722_1.jpg", "587722_2.jpg"],
        "file_loc": ["/share/nas/walml/galaxy_zoo/gz2/images/587722/587722_1.jpg",
                     "/share/nas/walml/galaxy_zoo/gz2/images/587722/587722_2.jpg"],
        "summary": ["smooth_round", "barred_spiral"],
    })
    return root, table


def test_gz2_images_resolve_as_galaxy_datasets_does_from_the_root_or_its_images_folder(tmp_path):
    root, table = _published_gz2(tmp_path)
    table.to_parquet(tmp_path / "gz2_catalog.parquet")
    want = [str(root / "images" / "587722" / f"587722_{i}.jpg") for i in (1, 2)]
    for image_dir in (root, root / "images"):
        catalog = load_catalog(tmp_path / "gz2_catalog.parquet", image_dir=image_dir)
        assert catalog["file_loc"].tolist() == want, image_dir
    table.to_parquet(root / "gz2_catalog.parquet")  # beside images/: no image_dir needed
    assert load_catalog(root / "gz2_catalog.parquet")["file_loc"].tolist() == want


def test_gz2_author_paths_fail_early_with_the_folder_to_pass(tmp_path):
    _, table = _published_gz2(tmp_path)
    table.to_parquet(tmp_path / "gz2_catalog.parquet")  # not beside the images, no image_dir
    with pytest.raises(CatalogError, match=r"none of 2 sampled images exists.*image_dir=.*ROOT/images"):
        load_catalog(tmp_path / "gz2_catalog.parquet")
    no_subfolder = table.drop(columns=["subfolder", "filename"])
    with pytest.raises(CatalogError, match="image_dir"):
        load_gz2_catalog(no_subfolder, image_dir=tmp_path / "elsewhere")
    # only file_loc: the author's absolute path is found under our images folder by its tail
    cat = load_gz2_catalog(no_subfolder, image_dir=tmp_path / "gz2_root" / "images")
    assert Path(cat["file_loc"][0]).is_file()


def test_a_gz2_table_without_smooth_or_featured_votes_says_it_is_gz2_and_what_is_missing(tmp_path):
    rows = [["a.jpg", 10, 5, 3]]
    write_csv(tmp_path / "partial.csv", ["file_loc", "how-rounded-gz2_round", "how-rounded-gz2_in-between",
                                         "how-rounded-gz2_cigar"], rows)
    write_picture(tmp_path / "a.jpg")
    with pytest.raises(CatalogError, match=r"GZ2 summary.*missing vote columns \['smooth-or-featured_smooth'"):
        load_catalog(tmp_path / "partial.csv")
    write_csv(tmp_path / "objid.csv", ["dr7objid", "file_loc"], [[1, "a.jpg"]])
    with pytest.raises(CatalogError, match="looks like a GZ2 catalog"):
        load_catalog(tmp_path / "objid.csv")

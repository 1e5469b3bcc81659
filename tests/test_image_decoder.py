"""The one image decoder: every way in (catalog file, upload bytes, CLI path) reads an image the
same way -- transparency composited onto black, 16-bit and FITS stretched, sizes refused before
decoding."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from galaxalign.datasets.images import (
    MAX_ASPECT_RATIO,
    ImageReadError,
    asinh_to_uint8,
    decode_image,
    read_image,
)
from galaxalign.search.query import QueryError, load_image


def disk(size: int = 32, radius: float = 9) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return np.hypot(x, y) < radius


def white_disk_on_black(size: int = 32) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[disk(size)] = 255
    return image


def pil_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


# -- transparency (issue 10, item 4) --------------------------------------------------------------
def test_a_white_disk_on_transparent_reads_as_the_disk_on_black(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, visible only inside the disk
    rgba[disk(), 3] = 255
    path = tmp_path / "icon.png"
    Image.fromarray(rgba, "RGBA").save(path)
    expected = white_disk_on_black()
    np.testing.assert_array_equal(read_image(path), expected)  # catalog / classify
    np.testing.assert_array_equal(load_image(path.read_bytes()), expected)  # upload
    np.testing.assert_array_equal(load_image(path), expected)  # search --sketch


@pytest.mark.parametrize("kind", ["LA", "P", "RGBA16", "LA16", "L-colour-key"])
def test_every_kind_of_transparency_is_composited_onto_black(tmp_path, kind, write_png):
    inside = disk()
    path = tmp_path / f"{kind}.png"
    if kind == "LA":
        la = np.zeros((32, 32, 2), np.uint8)
        la[..., 0] = 255
        la[inside, 1] = 255
        Image.fromarray(la, "LA").save(path)
    elif kind == "P":
        p = Image.new("P", (32, 32), 0)
        p.putpalette([255, 255, 255] * 2 + [0, 0, 0] * 254)  # index 0 and 1 both white
        p.putdata([1 if v else 0 for v in inside.ravel()])
        p.save(path, transparency=0)  # index 0: white, but fully transparent
    elif kind == "RGBA16":
        rgba = np.zeros((32, 32, 4), np.uint16)
        rgba[..., :3] = 65535
        rgba[inside, 3] = 65535
        write_png(path, rgba, bit_depth=16)
    elif kind == "LA16":
        la = np.zeros((32, 32, 2), np.uint16)
        la[..., 0] = 65535
        la[inside, 1] = 65535
        write_png(path, la, bit_depth=16)
    else:  # grey with a tRNS colour key: value 200 is transparent
        grey = np.where(inside, 255, 200).astype(np.uint8)
        Image.fromarray(grey, "L").save(path, transparency=200)
    np.testing.assert_array_equal(read_image(path), white_disk_on_black())
    np.testing.assert_array_equal(load_image(path.read_bytes(), name=path.name), white_disk_on_black())


def test_half_transparent_pixels_are_blended_onto_black():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 128
    out = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[0, 0], np.round(np.array([200, 100, 50]) * 128 / 255).astype(np.uint8))


# -- scientific data: uploads read like catalog files ---------------------------------------------
def fits_bytes(data: np.ndarray) -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


def galaxy_light(size: int = 40) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return (1e-3 * np.exp(-np.hypot(x, y) / 5)).astype(np.float32)  # faint float flux, as in a cutout


def test_a_float_fits_upload_is_stretched_like_the_catalog_reads_it(tmp_path):
    data = galaxy_light()
    path = tmp_path / "cutout.fits"
    path.write_bytes(fits_bytes(data))
    upload = load_image(path.read_bytes(), name="cutout.fits")
    np.testing.assert_array_equal(upload, read_image(path))
    np.testing.assert_array_equal(upload[..., 0], asinh_to_uint8(data))
    assert upload.max() == 255 and upload.min() == 0  # not the all-black image of a plain conversion


def test_a_fits_upload_with_nan_pixels_is_not_all_white(tmp_path):
    data = galaxy_light()
    data[:5, :5] = np.nan
    upload = load_image(fits_bytes(data))
    assert upload[:5, :5].max() == 0  # NaN -> the floor
    assert 0 < upload.mean() < 128 and len(np.unique(upload)) > 20


def test_a_gzipped_fits_upload_is_read(tmp_path):
    import gzip

    data = galaxy_light()
    np.testing.assert_array_equal(load_image(gzip.compress(fits_bytes(data))), load_image(fits_bytes(data)))


def test_a_16_bit_grey_png_upload_is_stretched_not_clipped_to_white(tmp_path, write_png):
    grey = (galaxy_light() / 1e-3 * 3000).astype(np.uint16)  # 0..3000 of 65535
    path = tmp_path / "g16.png"
    write_png(path, grey, bit_depth=16)
    upload = load_image(path.read_bytes())
    np.testing.assert_array_equal(upload, read_image(path))
    assert upload.mean() < 128 and upload.max() == 255


# -- sizes: refused from the header, before any pixel is decoded ---------------------------------
def test_an_extreme_aspect_ratio_is_refused_naming_the_limit():
    strip = pil_bytes(Image.new("L", (1, 60_000)))  # a few hundred bytes
    with pytest.raises(QueryError, match=rf"1x60000 pixels, an aspect ratio above the limit of {MAX_ASPECT_RATIO}:1"):
        load_image(strip, name="strip.png")


def test_a_19_kb_png_of_one_by_twenty_million_pixels_is_refused():
    # The file: it passes a pixel-count guard (20 M < 25 M) and its resize would need ~1 TB.
    strip = pil_bytes(Image.new("1", (1, 20_000_000)))
    assert len(strip) < 50_000
    with pytest.raises(ImageReadError, match=r"1x20000000 pixels, an aspect ratio above the limit"):
        decode_image(strip)


def test_a_fits_cube_too_large_is_refused_from_its_header():
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 2
    header["NAXIS1"], header["NAXIS2"] = 100_000, 100_000  # 40 GB of float32 announced
    data = header.tostring().encode()  # no data follows at all
    with pytest.raises(ImageReadError, match="100000x100000 = 10000000000 pixels, above the limit"):
        decode_image(data, name="huge.fits")


def test_hdf5_rows_of_extreme_shape_are_refused(tmp_path):
    import h5py

    path = tmp_path / "strips.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 2, 400, 3), np.uint8)
    with pytest.raises(ImageReadError, match="aspect ratio"):
        read_image(f"{path}#1")


def test_folders_and_missing_files_are_named():
    with pytest.raises(ImageReadError, match="is a folder"):
        decode_image(".")
    with pytest.raises(ImageReadError, match="image file not found"):
        decode_image("no/such/file.png")


def test_a_folder_catalog_flags_an_extreme_image_up_front(tmp_path):
    from galaxalign.datasets import load_catalog
    from galaxalign.datasets.catalog import CatalogError

    (tmp_path / "round_smooth").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "round_smooth" / "ok.png")
    Image.new("1", (1, 20_000)).save(tmp_path / "round_smooth" / "strip.png")
    with pytest.raises(CatalogError, match="strip.png: image is 1x20000 pixels, an aspect ratio above the limit"):
        load_catalog(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        assert len(load_catalog(tmp_path, skip_bad=True)) == 1

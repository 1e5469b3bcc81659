"""A user's own galaxies: a CSV catalog or a folder of images, one subfolder per class.

CSV columns: ``filepath`` (or ``file_loc``), ``label`` (class id, name or key of the taxonomy; empty
or -1 = unlabelled) and optional ``id``; any other column is kept as metadata.
Relative paths are resolved against the CSV's folder (or ``image_dir``). Images may be JPEG, PNG
or FITS cutouts. Errors name the CSV line; ``skip_bad=True`` drops bad rows and reports them. A
row with more or fewer cells than the header is refused outright (its cells would fall under the
wrong columns), as is a file that is not UTF-8.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from galaxalign.datasets.catalog import RESERVED_COLUMNS, UNKNOWN_LABEL, BadRows, CatalogError, new_catalog
from galaxalign.datasets.images import ImageReadError, check_image, is_image_file

PATH_COLUMNS = ("filepath", "file_loc")


def _resolve_label(value, taxonomy) -> int:
    # OUR CHOICE: an empty cell or -1 means unlabelled (label -1, kept), so one CSV can mix labelled
    # and survey galaxies; a label that is given but unknown is always an error.
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if text in ("", "-1"):
        return UNKNOWN_LABEL
    return taxonomy.class_id(text)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(location, row dict)]) with CSV line numbers, or parquet row numbers."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types on broken files
            raise CatalogError(f"{path}: cannot read parquet catalog ({exc})") from None
        return list(frame.columns), [(f"{path}: row {i}", r) for i, r in enumerate(frame.to_dict("records"))]
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = []
            for raw in reader:
                extra = raw.pop(None, None)  # cells beyond the header (csv.DictReader's restkey)
                if not any((v or "").strip() for v in raw.values() if isinstance(v, str)) and not extra:
                    continue  # blank line
                # A row with more or fewer cells than the header is a shifted or cut row: its cells
                # would land under the wrong columns (a label read as "unlabelled"), so it is refused.
                cells = len(raw) - sum(v is None for v in raw.values()) + len(extra or ())
                if cells != len(columns):
                    raise CatalogError(f"{path}: line {reader.line_num}: {cells} cells but the header has "
                                       f"{len(columns)} columns ({', '.join(columns)}); quote cells that hold "
                                       "the delimiter")
                row = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
                rows.append((f"{path}: line {reader.line_num}", row))
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not a UTF-8 text CSV ({exc})") from None
    except csv.Error as exc:
        raise CatalogError(f"{path}: malformed CSV ({exc})") from None
    return columns, rows


def load_user_catalog(
    path: str | os.PathLike,
    taxonomy="galaxy10_decals",
    skip_bad: bool = False,
    check_images: bool = True,
    image_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Catalog from a user's CSV (or parquet) of ``filepath, label`` rows (other columns: metadata)."""
    from tqdm.auto import tqdm

    from galaxalign.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(taxonomy)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalog {path} not found")
    columns, rows = _read_rows(path)
    path_column = next((c for c in PATH_COLUMNS if c in columns), None)
    if path_column is None:
        raise CatalogError(f"{path}: missing column 'filepath' (found columns: {columns})")
    if "label" not in columns:
        raise CatalogError(
            f"{path}: missing column 'label' (class id, name or key; leave cells empty for unlabelled galaxies; "
            f"found columns: {columns})"
        )
    if not rows:
        raise CatalogError(f"{path}: catalog has no rows")
    base = Path(image_dir) if image_dir is not None else path.parent
    bad = BadRows(str(path), skip_bad)
    records, seen = [], {}
    for location, row in tqdm(rows, desc="checking images", disable=not check_images or len(rows) < 2000):
        given = row.get(path_column)
        if given is None or (isinstance(given, float) and np.isnan(given)) or str(given) == "":
            bad(location, f"empty {path_column!r}")
            continue
        try:
            file_loc = Path(str(given)).expanduser()
        except RuntimeError:  # "~name/..." where no user "name" exists on this machine
            bad(location, f"{path_column} {given!r}: its ~ names no user of this machine")
            continue
        file_loc = file_loc if file_loc.is_absolute() else base / file_loc
        try:
            label = _resolve_label(row.get("label"), taxonomy)
        except KeyError as exc:
            bad(location, str(exc.args[0]))
            continue
        galaxy_id = str(row["id"]) if row.get("id") not in (None, "") else str(given)
        if galaxy_id in seen:
            bad(location, f"id {galaxy_id!r} already used at {seen[galaxy_id]}")
            continue
        if check_images:
            try:
                check_image(file_loc)
            except ImageReadError as exc:
                bad(location, str(exc))
                continue
        seen[galaxy_id] = location
        record = {"id": galaxy_id, "label": label, "source": str(file_loc), "file_loc": str(file_loc)}
        for key, value in row.items():
            if key not in RESERVED_COLUMNS and key != path_column and key:
                record[key] = value
        records.append(record)
    if not records:
        raise CatalogError(f"{path}: no usable rows ({len(bad.skipped)} skipped as bad)")
    catalog = new_catalog(records, ("file_loc",))
    for column in catalog.columns:
        if column not in RESERVED_COLUMNS and not pd.api.types.is_numeric_dtype(catalog[column]):
            try:
                catalog[column] = pd.to_numeric(catalog[column])
            except (ValueError, TypeError):
                pass  # text metadata stays text
    return bad.finish(catalog)


def load_image_folder(
    folder: str | os.PathLike, taxonomy="galaxy10_decals", skip_bad: bool = False, check_images: bool = True
) -> pd.DataFrame:
    """Catalog of an image folder: ``folder/<class name or key>/**/*.{jpg,png,fits}``.

    Images directly in ``folder`` (not in a class subfolder) are unlabelled (label -1), so a flat
    folder of survey cutouts loads as an unlabelled catalog for similarity search.
    """
    from tqdm.auto import tqdm

    from galaxalign.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(taxonomy)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    bad = BadRows(str(folder), skip_bad)
    found: list[tuple[Path, int]] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and is_image_file(entry):
            found.append((entry, UNKNOWN_LABEL))  # OUR CHOICE: images outside class folders are unlabelled
        elif entry.is_dir():
            images = sorted(p for p in entry.rglob("*") if p.is_file() and is_image_file(p))
            if not images:
                continue
            try:
                label = taxonomy.class_id(entry.name)
            except KeyError as exc:
                for image in images:
                    bad(str(image), f"class folder {entry.name!r}: {exc.args[0]}")
                continue
            found.extend((image, label) for image in images)
    if not found:
        raise CatalogError(
            f"{folder}: no images found (expected {folder}/<class name or key>/*.jpg|png|fits; "
            f"classes of {taxonomy.name!r}: {taxonomy.class_names})"
        )
    records = []
    for image, label in tqdm(found, desc="checking images", disable=not check_images or len(found) < 2000):
        if check_images:
            try:
                check_image(image)
            except ImageReadError as exc:
                bad(str(image), str(exc))
                continue
        records.append(
            {"id": image.relative_to(folder).as_posix(), "label": label, "source": str(image), "file_loc": str(image)}
        )
    if not records:
        raise CatalogError(f"{folder}: no readable images ({len(bad.skipped)} skipped as bad)")
    return bad.finish(new_catalog(records, ("file_loc",)))

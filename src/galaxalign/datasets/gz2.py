"""Galaxy Zoo 2 from a galaxy-datasets style catalog (parquet or CSV).

Labels are galaxy-datasets' 7-class ``summary``. A catalog that already carries ``summary`` (or its
integer ``label``) is used as is; otherwise the summary is derived from the vote columns exactly as
galaxy-datasets does (mwalmsley/galaxy-datasets, replication/notebooks/gz2_b_optional_class_labels):

1. for each key question (smooth-or-featured, how-rounded, disk-edge-on, has-spiral-arms, bar):
   ``-`` if fewer than half of the galaxy's smooth-or-featured votes went down the branch that asks
   it; ``deadlock`` if its two most-voted answers tie; otherwise its most-voted answer. The questions,
   their answers and the branch each is asked on come from the decision tree (``decision_tree.yaml``,
   or a taxonomy's own): a question's branch is the smooth-or-featured answer its ``requires`` chain
   starts from (bar: disk-edge-on_no -> smooth-or-featured_featured-or-disk), the first-level
   relevance galaxy-datasets' notebook measures;
2. the five answers, joined, are looked up in a fixed table (:data:`SEMANTIC_TO_SUMMARY`);
   anything not in the table is unassigned (label -1) and dropped.

On the full GZ2 table their notebook reports smooth_inbetween 78,460 ... unassigned 11,816; the
table here is theirs verbatim (checked on unit cases; the full table is not available offline).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from galaxalign.datasets.catalog import RESERVED_COLUMNS, BadRows, CatalogError

log = logging.getLogger(__name__)

# galaxy-datasets' integer `label` order for `summary`.
GZ2_SUMMARY_CLASSES = (
    "smooth_inbetween",
    "smooth_round",
    "smooth_cigar",
    "edge_on_disk",
    "unbarred_spiral",
    "barred_spiral",
    "featured_without_bar_or_spiral",
)

# The questions galaxy-datasets' summary reads, in the order of its lookup keys. Their answers and
# dependencies are the decision tree's (one tree, read from data: ``gz2_key_questions``).
GZ2_KEY_QUESTION_KEYS = ("smooth-or-featured", "how-rounded", "disk-edge-on", "has-spiral-arms", "bar")
# Relevance threshold: the fraction of smooth-or-featured votes that must reach a question's branch.
MIN_RELEVANCE = 0.5

_F, _E = "smooth-or-featured_featured-or-disk -", "smooth-or-featured_featured-or-disk - disk-edge-on_yes"
# OUR CHOICE: galaxy-datasets' lookup table, kept verbatim so labels match theirs. It lists
# "edge-on yes, spiral yes, bar no" twice and never "edge-on yes, spiral no, bar no", so those
# edge-on galaxies stay unassigned there; we reproduce that rather than relabel their dataset.
SEMANTIC_TO_SUMMARY = {
    "smooth-or-featured_smooth how-rounded_round - - -": "smooth_round",
    "smooth-or-featured_smooth how-rounded_in-between - - -": "smooth_inbetween",
    "smooth-or-featured_smooth how-rounded_cigar - - -": "smooth_cigar",
    f"{_F} disk-edge-on_no has-spiral-arms_yes bar_no": "unbarred_spiral",
    f"{_F} disk-edge-on_no has-spiral-arms_yes bar_yes": "barred_spiral",
    f"{_F} disk-edge-on_no has-spiral-arms_no bar_no": "featured_without_bar_or_spiral",
    f"{_E} - -": "edge_on_disk",
    f"{_E} deadlock deadlock": "edge_on_disk",
    f"{_E} has-spiral-arms_yes bar_no": "edge_on_disk",
    f"{_E} has-spiral-arms_yes bar_yes": "edge_on_disk",
    f"{_E} has-spiral-arms_no bar_yes": "edge_on_disk",
}

_VOTE_COLUMN = re.compile(r"^smooth-or-featured(-gz2)?_(smooth|featured-or-disk|artifact)(_fraction)?$")
_ID_COLUMNS = ("id", "id_str", "iauname", "dr7objid", "objid")


def is_gz2_table(columns) -> bool:
    """Whether a table's columns look like a GZ2 catalog: ``summary``, GZ2 vote columns of any question
    (``<question>-gz2_<answer>``), or galaxy-datasets' GZ2 id column ``dr7objid``."""
    cols = [str(c) for c in columns]
    return ("summary" in cols or any(_VOTE_COLUMN.match(c) for c in cols) or any("-gz2_" in c for c in cols)
            or ("dr7objid" in cols and "label" not in cols))


def gz2_key_questions(tree=None) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """``question -> (answers, the smooth-or-featured answer whose branch asks it)`` from ``tree``
    (default: the shipped decision tree)."""
    from galaxalign.taxonomy import decision_tree

    tree = tree or decision_tree()
    answers = tree.answers
    out = {}
    for key in GZ2_KEY_QUESTION_KEYS:
        try:
            q = tree.question(key)
        except KeyError:
            raise CatalogError(f"decision tree {getattr(tree, 'source', '')!r} lacks GZ2 question {key!r}") from None
        branch, seen = None, set()
        reqs = q.requires
        while reqs:  # walk up the requires chain to the first question's answer
            first = reqs[0]
            if first in seen or first not in answers:
                raise CatalogError(f"decision tree: question {key!r} has a broken requires chain at {first!r}")
            seen.add(first)
            branch = first
            reqs = tree.question(answers[first].question).requires
        if branch is not None and answers[branch].question != GZ2_KEY_QUESTION_KEYS[0]:
            raise CatalogError(f"decision tree: question {key!r} is not asked below {GZ2_KEY_QUESTION_KEYS[0]!r}")
        out[key] = (tuple(a.key for a in q.answers), branch)
    return out


def _vote_column(columns, question: str, answer: str, fraction: bool) -> str | None:
    suffix = "_fraction" if fraction else ""
    for name in (f"{question}-gz2_{answer}{suffix}", f"{question}_{answer}{suffix}"):
        if name in columns:
            return name
    return None


def gz2_summary(votes: pd.DataFrame, where: str = "catalog", tree=None) -> pd.Series:
    """Derive galaxy-datasets' ``summary`` from GZ2 vote counts (or, lacking counts, fractions).

    Columns as in galaxy-datasets, with or without the ``-gz2`` campaign suffix, e.g.
    ``smooth-or-featured-gz2_smooth`` (count) or ``smooth-or-featured_smooth_fraction``.
    ``tree``: the decision tree giving the questions' answers and branches (default: the shipped one).
    Returns a Series of summary names, None where unassigned.
    """
    key_questions = gz2_key_questions(tree)
    columns = set(votes.columns)
    use_fraction = False
    wanted = [(q, a) for q, (answers, _) in key_questions.items() for a in answers]
    names = {qa: _vote_column(columns, *qa, fraction=False) for qa in wanted}
    if any(v is None for v in names.values()):
        use_fraction = True
        names = {qa: _vote_column(columns, *qa, fraction=True) for qa in wanted}
    missing = [f"{q}_{a}" for (q, a), v in names.items() if v is None]
    if missing:
        raise CatalogError(
            f"{where}: looks like a GZ2 catalog, but cannot derive the GZ2 summary label: missing vote columns {missing} "
            f"(as counts '<question>-gz2_<answer>' or fractions '<question>-gz2_<answer>_fraction')"
        )

    def values(question: str, answer: str) -> np.ndarray:
        return pd.to_numeric(votes[names[(question, answer)]], errors="coerce").fillna(0).to_numpy(np.float64)

    sf_answers = key_questions["smooth-or-featured"][0]
    if use_fraction:
        total = np.ones(len(votes))
    else:
        total_col = _vote_column(columns, "smooth-or-featured", "total-votes", fraction=False)
        total = (
            pd.to_numeric(votes[total_col], errors="coerce").fillna(0).to_numpy(np.float64)
            if total_col
            else sum(values("smooth-or-featured", a) for a in sf_answers)
        )

    parts = []
    for question, (answers, asked_after) in key_questions.items():
        table = np.stack([values(question, a) for a in answers], axis=1)
        ordered = np.sort(table, axis=1)
        semantic = np.array([f"{question}_{a}" for a in answers], dtype=object)[np.argmax(table, axis=1)]
        semantic[ordered[:, -1] == ordered[:, -2]] = "deadlock"
        if asked_after is not None:
            branch_votes = values(*asked_after.split("_", 1))
            semantic[~(branch_votes > total * MIN_RELEVANCE)] = "-"
        parts.append(semantic)
    joined = pd.Series([" ".join(p) for p in zip(*parts)], index=votes.index)
    return joined.map(SEMANTIC_TO_SUMMARY).astype(object).where(lambda s: s.notna(), None)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", low_memory=False)
    except Exception as exc:  # pandas/pyarrow raise many types on broken files
        raise CatalogError(f"{path}: cannot read catalog table ({exc})") from None
    raise CatalogError(f"{path}: unsupported catalog format {suffix!r}; use .parquet or .csv")


def _joined(base: Path, *parts: pd.Series) -> list[str | None]:
    """``base/part/...`` per row (vectorised: GZ2 has 200k rows); None where a part is empty."""
    out = pd.Series(str(base), index=parts[0].index, dtype=object)
    empty = np.zeros(len(out), dtype=bool)
    for part in parts:
        text = part.astype(object).where(part.notna(), "").astype(str)
        empty |= (text == "").to_numpy()
        out = out + os.sep + text
    return [None if e else p for p, e in zip(out.tolist(), empty)]


def _summary_ids(taxonomy, where: str) -> dict[str, int]:
    ids = {}
    for name in GZ2_SUMMARY_CLASSES:
        try:
            ids[name] = taxonomy.class_id(name)
        except KeyError:
            raise CatalogError(
                f"{where}: GZ2 summary class {name!r} is not in taxonomy {taxonomy.name!r}; load GZ2 catalogs "
                f"with the 'gz2' taxonomy or one whose classes are named {list(GZ2_SUMMARY_CLASSES)}"
            ) from None
    return ids


def load_gz2_catalog(
    path: str | os.PathLike | pd.DataFrame,
    image_dir: str | os.PathLike | None = None,
    taxonomy="gz2",
    skip_bad: bool = False,
    check_images: bool = False,
) -> pd.DataFrame:
    """Catalog of a galaxy-datasets style GZ2 table with the 7-class ``summary`` label.

    Image paths are resolved as galaxy-datasets' ``gz2()`` does: ``ROOT/images/subfolder/filename``.
    ``image_dir`` may be that ``images`` folder or the galaxy-datasets root above it (default: the
    catalog's folder). Without ``subfolder`` + ``filename`` columns, ``file_loc`` (or ``filename``):
    relative paths against ``image_dir``; an absolute ``file_loc`` that does not exist here (the
    published parquet holds its author's paths) is looked up under ``image_dir`` by its trailing
    ``subfolder/filename``. A sample of the paths is checked up front even with ``check_images`` off:
    when none exists the error names the folder to pass.
    Unassigned galaxies (label -1) are dropped; their count is in ``catalog.attrs["dropped"]``.
    ``taxonomy``'s decision tree gives the vote questions' answers and branches.
    """
    from galaxalign.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(taxonomy)
    if isinstance(path, pd.DataFrame):
        table, where, base = path.reset_index(drop=True), "GZ2 catalog", Path(image_dir or ".")
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GZ2 catalog {path} not found")
        table, where = _read_table(path).reset_index(drop=True), str(path)
        base = Path(image_dir) if image_dir is not None else path.parent
    if len(table) == 0:
        raise CatalogError(f"{where}: catalog is empty")
    to_id = _summary_ids(taxonomy, where)
    bad = BadRows(where, skip_bad)
    csv_like = where.lower().endswith((".csv", ".tsv", ".txt"))

    def location(i: int) -> str:
        return f"{where}: line {i + 2}" if csv_like else f"{where}: row {i}"

    # --- labels ---------------------------------------------------------------------------
    labels = np.full(len(table), -1, dtype=np.int64)
    invalid = np.zeros(len(table), dtype=bool)
    if "summary" in table.columns:
        summary = table["summary"].astype(object).where(table["summary"].notna(), None)
        for i, name in enumerate(summary):
            if name is None or str(name).strip() in ("", "unassigned", "None", "nan"):
                continue
            if str(name).strip() not in to_id:
                bad(location(i), f"summary {name!r} is not a GZ2 summary class {list(GZ2_SUMMARY_CLASSES)}")
                invalid[i] = True
                continue
            labels[i] = to_id[str(name).strip()]
        if "label" in table.columns:  # both given: they must agree, never a silent wrong label
            given = np.nan_to_num(pd.to_numeric(table["label"], errors="coerce").to_numpy(np.float64), nan=-1)
            names = [None if x is None else str(x).strip() for x in summary]
            expected = np.array([GZ2_SUMMARY_CLASSES.index(n) if n in to_id else -1 for n in names])
            for i in np.flatnonzero((given != expected) & ~invalid):
                bad(location(i), f"label {table['label'][i]} disagrees with summary {summary[i]!r}")
                invalid[i] = True
    elif "label" in table.columns:
        given = pd.to_numeric(table["label"], errors="coerce").to_numpy()
        for i, value in enumerate(given):
            if value == -1:
                continue
            if np.isnan(value) or value != int(value) or not 0 <= value < len(GZ2_SUMMARY_CLASSES):
                bad(location(i), f"label {table['label'][i]} is not a GZ2 summary label (-1 or 0..6)")
                invalid[i] = True
                continue
            labels[i] = to_id[GZ2_SUMMARY_CLASSES[int(value)]]
    elif is_gz2_table(table.columns):
        summary = gz2_summary(table, where, taxonomy.tree)
        table["summary"] = summary
        labels = np.array([-1 if s is None else to_id[s] for s in summary], dtype=np.int64)
    else:
        raise CatalogError(
            f"{where}: looks like a GZ2 catalog but has no labels: needs 'summary', 'label' or the GZ2 vote "
            f"columns (missing e.g. 'smooth-or-featured-gz2_smooth'; columns: {list(table.columns)[:20]})"
        )

    # --- image paths ----------------------------------------------------------------------
    file_loc = _image_paths(table, base, where, image_dir is not None)
    for i, p in enumerate(file_loc):
        if p is None and not invalid[i]:
            bad(location(i), "empty image path")
            invalid[i] = True

    # --- ids ------------------------------------------------------------------------------
    ids = None
    for column in _ID_COLUMNS:
        if column in table.columns and table[column].notna().all() and table[column].is_unique:
            ids = table[column].astype(str).to_numpy(object)
            break
    if ids is None:
        stem = Path(where).stem if not isinstance(path, pd.DataFrame) else "gz2"
        ids = np.array([f"{stem}-{i}" for i in range(len(table))], dtype=object)

    unassigned = int(((labels == -1) & ~invalid).sum())
    keep = (labels >= 0) & ~invalid
    metadata = table.drop(columns=[c for c in ("label", "file_loc") if c in table.columns])
    metadata = metadata.rename(columns={c: f"meta_{c}" for c in metadata.columns if c in RESERVED_COLUMNS})
    catalog = pd.DataFrame(
        {"id": ids, "label": labels, "source": file_loc, "file_loc": file_loc}, index=table.index
    ).join(metadata)
    catalog = catalog[keep].reset_index(drop=True)
    if check_images:
        catalog = _checked(catalog, bad)
    catalog.attrs["dropped"] = {"unassigned (label -1)": unassigned} if unassigned else {}
    if unassigned:
        log.info("%s: dropped %d unassigned galaxies (GZ2 summary label -1)", where, unassigned)
    return bad.finish(catalog)


# OUR CHOICE: up to 20 evenly spaced rows are checked for an existing image file before loading goes
# on (a full check of 200k GZ2 images takes minutes and is opt-in via check_images).
PATH_SAMPLE = 20


def _exists_share(paths: list[str | None], n: int = PATH_SAMPLE) -> tuple[int, int, list[str]]:
    picked = [p for p in paths if p is not None]
    if not picked:
        return 0, 0, []
    idx = np.unique(np.linspace(0, len(picked) - 1, min(n, len(picked))).round().astype(int))
    sample = [picked[i] for i in idx]
    return sum(os.path.isfile(p) for p in sample), len(sample), sample


def _image_paths(table: pd.DataFrame, base: Path, where: str, explicit: bool) -> list[str | None]:
    """Candidate layouts in galaxy-datasets' order; the first whose sampled files exist wins."""
    cols = set(table.columns)
    candidates: list[tuple[str, list[str | None]]] = []
    roots = [base / "images", base] if base.name != "images" else [base]
    if {"subfolder", "filename"} <= cols:
        for root in roots:
            candidates.append((f"{root}/SUBFOLDER/FILENAME", _joined(root, table["subfolder"], table["filename"])))
    if "file_loc" in cols or "filename" in cols:
        given = table["file_loc" if "file_loc" in cols else "filename"]
        text = given.astype(object).where(given.notna(), "").astype(str)
        absolute = text.map(os.path.isabs)
        if absolute.any():
            candidates.append(("file_loc as given", [t or None for t in text]))
            # the published parquet: the author's absolute paths; the same SUBFOLDER/FILENAME under ours
            tail2 = text.map(lambda t: os.sep.join(Path(t).parts[-2:]) if t else "")
            for root in roots:
                candidates.append((f"{root}/<last two parts of file_loc>", _joined(root, tail2)))
        if not absolute.all():
            for root in roots:
                candidates.append((f"{root}/FILE_LOC", [g if g and os.path.isabs(g) else r
                                                         for g, r in zip(text, _joined(root, given))]))
    if not candidates:
        raise CatalogError(f"{where}: missing column 'file_loc' (or 'subfolder' + 'filename') for image paths")
    tried, n_sampled = [], 0
    for layout, paths in candidates:
        found, n, sample = _exists_share(paths)
        if n == 0 or found:
            if found and found < n:
                log.warning("%s: %d of %d sampled image paths (%s) do not exist", where, n - found, n, layout)
            return paths
        tried.append(f"{layout} (e.g. {sample[0]})")
        n_sampled = max(n_sampled, n)
    hint = (f"pass image_dir= the folder holding the image subfolders (galaxy-datasets: ROOT/images, where "
            f"ROOT is the folder given to galaxy_datasets.gz2)")
    raise CatalogError(
        f"{where}: none of {n_sampled} sampled images exists under any layout tried: {'; '.join(tried)}. "
        f"{hint}" + ("" if explicit else "; no image_dir was given, so the catalog's own folder was searched")
    )


def _checked(catalog: pd.DataFrame, bad: BadRows) -> pd.DataFrame:
    from tqdm.auto import tqdm

    from galaxalign.datasets.images import ImageReadError, check_image

    ok = np.ones(len(catalog), dtype=bool)
    for i, file_loc in enumerate(tqdm(catalog["file_loc"], desc="checking images", disable=len(catalog) < 2000)):
        try:
            check_image(file_loc)
        except ImageReadError as exc:
            bad(f"galaxy {catalog['id'][i]}", str(exc))
            ok[i] = False
    return catalog[ok].reset_index(drop=True)

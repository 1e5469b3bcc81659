"""The symbol book: ``knowledge/symbols.yaml`` parsed and checked.

What each decision-tree answer draws is data: a mapping from an answer id to drawing primitives
with parameters, plus primitive defaults, the style and the augmentation ranges.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from galaxalign.taxonomy import KNOWLEDGE

# OUR CHOICE: the paper feeds Galaxy Zoo's own icon images; those are not shipped offline, so we draw
# look-alikes from primitives, and compose class symbols from answers (rules: the package docstring).
BASE_PRIMITIVES = ("ellipse", "disk", "edge_on", "irregular", "star")
FEATURE_PRIMITIVES = ("bulge", "ring", "arc", "bar", "spiral", "companion", "tail", "dust_lane")
PRIMITIVES = BASE_PRIMITIVES + FEATURE_PRIMITIVES
EDGE_ON_BULGES = ("none", "round", "boxy")


class SymbolError(ValueError):
    """An answer cannot be drawn: unknown, contradictory, or a malformed symbols.yaml entry."""



@dataclass(frozen=True, eq=False)   # hashed by identity: compositions are cached per book
class SymbolBook:
    """The parsed symbols.yaml: primitive defaults, per-answer drawings, style and augmentation."""

    answers: Mapping[str, dict]        # answer id -> {primitive: {param: value}}
    priorities: Mapping[str, int]      # answer id -> explicit priority (absent: tree depth)
    primitives: Mapping[str, dict]     # primitive -> default params
    default_base: dict                 # {primitive: params} used when no answer draws a base
    style: dict
    augment: dict
    multiple_choice: frozenset[str]
    source: str = "symbols.yaml"


def _check_params(where: str, prim: str, params: Any, defaults: Mapping[str, dict]) -> dict:
    if prim not in defaults:
        raise SymbolError(f"{where}: unknown primitive {prim!r}; known: {sorted(defaults)}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise SymbolError(f"{where}: parameters of {prim!r} must be a mapping, got {params!r}")
    unknown = sorted(set(params) - set(defaults[prim]))
    if unknown:
        raise SymbolError(f"{where}: primitive {prim!r} has no parameter(s) {unknown}; known: {sorted(defaults[prim])}")
    if prim == "edge_on" and "bulge" in params and params["bulge"] not in EDGE_ON_BULGES:
        raise SymbolError(f"{where}: edge_on bulge must be one of {EDGE_ON_BULGES}, got {params['bulge']!r}")
    out = dict(params)
    for name, value in out.items():
        default = defaults[prim][name]
        # YAML writes 1 for 1.0; keep float parameters float so augmentation jitters them.
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            raise SymbolError(f"{where}: {prim}.{name} must be a number, got {value!r}")
    return out


def book_from_dict(data: dict, source: str = "<dict>") -> SymbolBook:
    if not isinstance(data, dict):
        raise SymbolError(f"{source}: expected a mapping with 'primitives' and 'answers'")
    for req in ("primitives", "answers"):
        if not isinstance(data.get(req), dict):
            raise SymbolError(f"{source}: missing mapping {req!r}")
    defaults = {}
    for prim, params in data["primitives"].items():
        if prim not in PRIMITIVES:
            raise SymbolError(f"{source}: primitives: {prim!r} has no renderer; known: {list(PRIMITIVES)}")
        defaults[prim] = dict(params or {})
    missing = [p for p in PRIMITIVES if p not in defaults]
    if missing:
        raise SymbolError(f"{source}: primitives: no defaults for {missing}")
    answers, priorities = {}, {}
    for answer_id, entry in data["answers"].items():
        where = f"{source}: answers: {answer_id}"
        entry = dict(entry or {})
        if "priority" in entry:
            try:
                priorities[answer_id] = int(entry.pop("priority"))
            except (TypeError, ValueError):
                raise SymbolError(f"{where}: priority must be an integer") from None
        answers[answer_id] = {p: _check_params(where, p, v, defaults) for p, v in entry.items()}
    base = data.get("default_base") or {"disk": {}}
    default_base = {p: _check_params(f"{source}: default_base", p, v, defaults) for p, v in base.items()}
    if len(default_base) != 1 or next(iter(default_base)) not in BASE_PRIMITIVES:
        raise SymbolError(f"{source}: default_base must name exactly one base primitive of {BASE_PRIMITIVES}")
    style = {"background": [8, 10, 20], "foreground": [255, 255, 255], "supersample": 2, "blur_px": 0.9}
    style.update(data.get("style") or {})
    return SymbolBook(
        answers=answers,
        priorities=priorities,
        primitives=defaults,
        default_base=default_base,
        style=style,
        augment=dict(data.get("augment") or {}),
        multiple_choice=frozenset(data.get("multiple_choice") or ()),
        source=source,
    )


def load_symbol_book(path: str | Path) -> SymbolBook:
    """Read a user's symbols.yaml (a copy of the shipped one, edited)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"symbols file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SymbolError(f"{path}: not valid YAML: {exc}") from None
    return book_from_dict(data, str(path))


@lru_cache(maxsize=1)
def symbol_book() -> SymbolBook:
    """The shipped symbols.yaml."""
    text = resources.files(KNOWLEDGE).joinpath("symbols.yaml").read_text()
    return book_from_dict(yaml.safe_load(text), "symbols.yaml")


_BOOKS: dict[str, SymbolBook] = {}


def book_of(taxonomy) -> SymbolBook:
    """The symbol book a taxonomy carries (a user's, or the one saved with a model); the shipped one
    when it carries none."""
    data = getattr(taxonomy, "symbol_data", None)
    if data is None:
        return symbol_book()
    import json

    key = json.dumps(data, sort_keys=True, default=str)
    if key not in _BOOKS:
        _BOOKS[key] = book_from_dict(data, f"symbol book of taxonomy {taxonomy.name!r} ({taxonomy.source})")
    return _BOOKS[key]


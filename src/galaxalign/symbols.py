"""Galaxy Zoo-style schematic symbols: white, soft-edged pictograms on a dark background.

What each answer draws is data (``knowledge/symbols.yaml``): a mapping from a decision-tree answer id
to drawing primitives with parameters. A class symbol is *composed* from its answers:

1. each answer brings the answers it implies (its question's ``requires``, recursively), so
   ``spiral-winding_tight`` alone is a face-on disk with tightly wound arms;
2. answers whose implied paths choose different answers of one question contradict
   (``how-rounded_cigar`` + ``has-spiral-arms_yes``) and raise :class:`SymbolError` naming them;
3. primitive parameters merge in ascending priority (default: the answer's depth in the tree), so
   the more specific answer wins: winding sets the spiral's pitch, arm count its arms;
4. the base shape comes from the highest-priority answer that draws one.

The composition does not depend on the order of the answers. Rendering is numpy only: analytic
soft shapes evaluated on a supersampled grid, averaged down and Gaussian-blurred.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml
from scipy.ndimage import gaussian_filter

from galaxalign.taxonomy import KNOWLEDGE, ClassSpec, DecisionTree, Taxonomy, decision_tree, load_taxonomy

__all__ = [
    "SymbolError",
    "SymbolBook",
    "SymbolPlan",
    "load_symbol_book",
    "symbol_book",
    "book_of",
    "compose_symbol",
    "render_symbol",
    "render_class_symbol",
    "class_symbol_bank",
    "symbol_sheet",
    "answer_sheet",
]

# OUR CHOICE: the paper feeds Galaxy Zoo's own icon images; those are not shipped offline, so we draw
# look-alikes from primitives, and compose class symbols from answers by the rules above.
BASE_PRIMITIVES = ("ellipse", "disk", "edge_on", "irregular", "star")
FEATURE_PRIMITIVES = ("bulge", "ring", "arc", "bar", "spiral", "companion", "tail", "dust_lane")
PRIMITIVES = BASE_PRIMITIVES + FEATURE_PRIMITIVES
EDGE_ON_BULGES = ("none", "round", "boxy")


class SymbolError(ValueError):
    """An answer cannot be drawn: unknown, contradictory, or a malformed symbols.yaml entry."""


# ----------------------------------------------------------------------------------------------
# Knowledge: symbols.yaml


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


def book_of(taxonomy: Taxonomy) -> SymbolBook:
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


# ----------------------------------------------------------------------------------------------
# Composition


@dataclass(frozen=True)
class SymbolPlan:
    """A composed symbol: one base shape and features, each with its full parameter set."""

    answers: tuple[str, ...]            # the answers asked for, sorted
    base: str
    params: dict = field(default_factory=dict)   # primitive -> params (base and features)

    @property
    def features(self) -> list[str]:
        return [p for p in FEATURE_PRIMITIVES if p in self.params]


def _tree_index(tree: DecisionTree) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """answer id -> question key; question key -> required answer ids."""
    question_of = {a.id: q.key for q in tree.questions for a in q.answers}
    requires = {q.key: q.requires for q in tree.questions}
    return question_of, requires


def _implied(answer: str, question_of: dict, requires: dict) -> list[str]:
    """The answer and every answer it implies (a single `requires` chain; any-of lists stop it)."""
    chain, seen = [answer], {answer}
    current = answer
    while current in question_of:
        req = requires.get(question_of[current], ())
        if len(req) != 1 or req[0] in seen:
            break
        current = req[0]
        chain.append(current)
        seen.add(current)
    return chain


def _depth(answer: str, question_of: dict, requires: dict) -> int:
    return len(_implied(answer, question_of, requires)) - 1


def compose_symbol(
    answers: Iterable[str], book: SymbolBook | None = None, tree: DecisionTree | None = None
) -> SymbolPlan:
    """Compose a symbol from decision-tree answers (order-free). See the module docstring."""
    import copy

    book = book or symbol_book()
    tree = tree or decision_tree()
    # A copy: the cached plan is shared by every render of these answers.
    return copy.deepcopy(_compose(tuple(sorted(set(_as_answer_list(answers)))), book, tree))


def _as_answer_list(answers: Iterable[str] | str) -> list[str]:
    if isinstance(answers, str):
        answers = [a for a in answers.split(",")]
    out = [str(a).strip() for a in answers]
    if not out or any(not a for a in out):
        raise SymbolError(f"need one or more non-empty answer ids, got {list(answers)!r}")
    return out


@lru_cache(maxsize=512)
def _compose(answers: tuple[str, ...], book: SymbolBook, tree: DecisionTree) -> SymbolPlan:
    question_of, requires = _tree_index(tree)
    for a in answers:
        if a not in book.answers:
            if a in question_of:
                hint = f" (it is a decision-tree answer: add a drawing for it to {book.source})"
            else:
                close = difflib.get_close_matches(a, list(book.answers), n=3)
                hint = f"; did you mean {close}?" if close else f"; known: {sorted(book.answers)}"
            raise SymbolError(f"unknown answer {a!r}: {book.source} has no drawing for it{hint}")

    # 1-2. expand implied answers, and find contradictions between the implied paths.
    chosen: dict[str, tuple[str, str]] = {}   # question -> (answer, the asked-for answer implying it)
    expanded: set[str] = set()
    for a in answers:
        for implied in _implied(a, question_of, requires):
            expanded.add(implied)
            q = question_of.get(implied)
            if q is None or q in book.multiple_choice:
                continue
            if q in chosen and chosen[q][0] != implied:
                other, origin = chosen[q]
                raise SymbolError(
                    f"answers {origin!r} and {a!r} contradict: they need {other!r} and {implied!r}, "
                    f"two different answers to question {q!r}"
                )
            chosen[q] = (implied, a)
    for a in expanded:
        if a not in book.answers:
            raise SymbolError(f"answer {a!r} (implied by {sorted(answers)}) has no drawing in {book.source}")

    # 3. merge primitives by ascending priority; equal priorities must agree.
    # OUR CHOICE: priority = depth in the decision tree unless symbols.yaml says otherwise.
    def priority(a: str) -> int:
        return book.priorities.get(a, _depth(a, question_of, requires))

    merged: dict[str, dict] = {}
    setter: dict[tuple[str, str], tuple[int, str]] = {}   # (primitive, param) -> (priority, answer)
    base_from: dict[str, tuple[int, str]] = {}             # base primitive -> highest (priority, answer)
    for a in sorted(expanded, key=lambda x: (priority(x), x)):
        pa = priority(a)
        for prim, params in book.answers[a].items():
            target = merged.setdefault(prim, {})
            if prim in BASE_PRIMITIVES:
                base_from[prim] = max(base_from.get(prim, (pa, a)), (pa, a))
            for name, value in params.items():
                prev = setter.get((prim, name))
                if prev and prev[0] == pa and target[name] != value:
                    raise SymbolError(
                        f"answers {prev[1]!r} and {a!r} contradict: both set {prim}.{name} "
                        f"({target[name]!r} vs {value!r}) at the same priority {pa}"
                    )
                target[name] = value
                setter[(prim, name)] = (pa, a)

    # 4. the base shape: highest priority wins; a tie between different shapes is a contradiction.
    if base_from:
        ranked = sorted(base_from.items(), key=lambda kv: kv[1], reverse=True)
        base, (top, top_answer) = ranked[0]
        for other, (p, other_answer) in ranked[1:]:
            if p == top:
                raise SymbolError(
                    f"answers {top_answer!r} and {other_answer!r} contradict: one draws a {base} and the "
                    f"other a {other} as the base shape (same priority {p})"
                )
    else:
        base = next(iter(book.default_base))
        merged[base] = dict(book.default_base[base])
    params = {base: {**book.primitives[base], **merged[base]}}
    for prim in FEATURE_PRIMITIVES:
        if prim in merged:
            params[prim] = {**book.primitives[prim], **merged[prim]}
    # OUR CHOICE: a face-on disk always shows a central bulge; a bulge-size answer sets its size.
    if base == "disk" and "bulge" not in params:
        params["bulge"] = {**book.primitives["bulge"], "radius": params["disk"]["bulge_radius"]}
    return SymbolPlan(answers=answers, base=base, params=params)


# ----------------------------------------------------------------------------------------------
# Rendering


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = x - e0
    t *= 1.0 / max(e1 - e0, 1e-6)
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (3.0 - 2.0 * t)


def _frame(X, Y, angle_deg=0.0, offset=(0.0, 0.0)):
    """Coordinates in a primitive's own frame (shifted to its centre, rotated to its major axis)."""
    if not angle_deg and not any(offset):
        return X, Y
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    dx, dy = X - offset[0], Y - offset[1]
    return c * dx + s * dy, -s * dx + c * dy


def _soft_ellipse(X, Y, radius, axis_ratio, angle_deg=0.0, offset=(0.0, 0.0), softness=0.5, px=0.0):
    """A filled ellipse whose light falls smoothly from a flat core to zero at its rim."""
    if radius <= 0:
        return np.zeros_like(X)
    x, y = _frame(X, Y, angle_deg, offset)
    b = max(radius * axis_ratio, 1e-3)
    q = np.sqrt((x / radius) ** 2 + (y / b) ** 2)
    edge = max(softness, px / b)   # never sharper than a pixel across the minor axis
    return 1.0 - _smoothstep(1.0 - edge, 1.0, q)


def _log_spiral(r, theta, r0, r1, pitch_deg, width, start_angle, n_arms=1):
    """Stroke of ``n_arms`` logarithmic spiral arms from radius r0 to r1, fading out at the tip.

    Distance to an arm at fixed r is r * dtheta * sin(pitch) (the arm crosses the circle at the pitch
    angle), which keeps the whole thing vectorised: no polyline rasterisation.
    """
    tan_p = math.tan(math.radians(pitch_deg))
    safe_r = np.maximum(r, 1e-4)
    psi = theta - start_angle - np.log(safe_r / r0) / tan_p
    period = 2.0 * math.pi / n_arms
    d_ang = np.mod(psi, period)
    d_ang = np.minimum(d_ang, period - d_ang)
    dist = safe_r * d_ang * math.sin(math.radians(pitch_deg))
    taper = 1.0 - 0.45 * np.clip((r - r0) / max(r1 - r0, 1e-3), 0.0, 1.0)   # arms thin outwards
    stroke = np.exp(-0.5 * (dist / (width * taper)) ** 2)
    envelope = _smoothstep(r0 * 0.75, r0 * 1.05, r) * (1.0 - _smoothstep(r0 + 0.6 * (r1 - r0), r1, r))
    return stroke * envelope


def _draw_ellipse(X, Y, p, px):
    return p["brightness"] * _soft_ellipse(X, Y, p["radius"], p["axis_ratio"], p["angle_deg"], p["offset"], p["softness"], px)


def _draw_disk(X, Y, p, px):
    return p["brightness"] * _soft_ellipse(X, Y, p["radius"], p["axis_ratio"], p["angle_deg"], (0.0, 0.0), p["softness"], px)


def _draw_edge_on(X, Y, p, px):
    x, y = _frame(X, Y, p["angle_deg"])
    b = max(p["thickness"], px)
    q = np.sqrt((x / p["length"]) ** 2 + (y / b) ** 2)
    # A streak: bright along its middle, tapering to its tips.
    light = p["brightness"] * (1.0 - _smoothstep(0.25, 1.0, q))
    rb = p["bulge_radius"]
    if p["bulge"] == "round":
        light = light + _soft_ellipse(x, y, rb, 0.85, softness=0.55, px=px)
    elif p["bulge"] == "boxy":
        # A superellipse (|x|^4 + |y|^4): a box with rounded corners.
        qb = ((np.abs(x) / (rb * 1.05)) ** 4 + (np.abs(y) / (rb * 0.8)) ** 4) ** 0.25
        light = light + (1.0 - _smoothstep(0.75, 1.0, qb))
    return light


def _draw_irregular(X, Y, p, px):
    x, y = X - p["offset"][0], Y - p["offset"][1]
    rng = np.random.default_rng(int(p["layout_seed"]))
    theta = np.arctan2(y, x)
    r = np.hypot(x, y)
    phases = rng.uniform(0, 2 * math.pi, 3)
    a = p["asymmetry"]
    # Low-order Fourier distortion of the outline: lopsided (m=1), oval (m=2), triangular (m=3).
    outline = p["radius"] * (
        1.0 + a * (0.55 * np.cos(theta + phases[0]) + 0.35 * np.cos(2 * theta + phases[1]) + 0.25 * np.cos(3 * theta + phases[2]))
    )
    light = p["brightness"] * (1.0 - _smoothstep(0.45, 1.0, r / np.maximum(outline, 0.05)))
    for _ in range(int(p["clumps"])):
        rad = rng.uniform(0.2, 0.75) * p["radius"]
        ang = rng.uniform(0, 2 * math.pi)
        size = rng.uniform(0.09, 0.15)
        light = light + 0.45 * _soft_ellipse(x, y, size, 0.85, 0.0, (rad * math.cos(ang), rad * math.sin(ang)), 0.6, px)
    return light


def _draw_star(X, Y, p, px):
    r = np.hypot(X, Y)
    light = _soft_ellipse(X, Y, p["core_radius"], 1.0, softness=0.7, px=px) + 0.5 * np.exp(-0.5 * (r / (p["core_radius"] * 1.2)) ** 2)
    n = int(p["spikes"])
    for k in range(n):
        a = 2 * math.pi * k / n
        along = X * math.cos(a) + Y * math.sin(a)
        across = -X * math.sin(a) + Y * math.cos(a)
        fade = np.clip(1.0 - along / p["spike_length"], 0.0, 1.0) ** 1.5
        light = light + (along > 0) * fade * np.exp(-0.5 * (across / max(p["spike_width"], px)) ** 2)
    return p["brightness"] * light


def _draw_bulge(X, Y, p, px):
    return p["brightness"] * _soft_ellipse(X, Y, p["radius"], 1.0, 0.0, p["offset"], 0.6, px)


def _draw_bar(X, Y, p, px):
    x, y = _frame(X, Y, p["angle_deg"])
    dx = np.maximum(np.abs(x) - p["length"] / 2.0, 0.0)
    d = np.hypot(dx, y)
    w = max(p["width"] / 2.0, px)
    return p["brightness"] * (1.0 - _smoothstep(0.5 * w, w, d))


def _draw_ring(X, Y, p, px):
    x, y = _frame(X, Y, p["angle_deg"])
    q = np.hypot(x, y / max(p["axis_ratio"], 1e-3))
    return p["brightness"] * np.exp(-0.5 * ((q - p["radius"]) / max(p["width"] / 2.0, px)) ** 2)


def _draw_arc(X, Y, p, px):
    r, theta = np.hypot(X, Y), np.arctan2(Y, X)
    d_ang = np.angle(np.exp(1j * (theta - math.radians(p["center_angle_deg"]))))
    half = math.radians(p["span_deg"]) / 2.0
    along = 1.0 - _smoothstep(0.6 * half, half, np.abs(d_ang))
    return p["brightness"] * along * np.exp(-0.5 * ((r - p["radius"]) / max(p["width"] / 2.0, px)) ** 2)


def _draw_spiral(X, Y, p, px, r_start):
    r, theta = np.hypot(X, Y), np.arctan2(Y, X)
    w = max(p["width"] / 2.0, px)
    return p["brightness"] * _log_spiral(r, theta, r_start, p["r_end"], p["pitch_deg"], w, 0.0, int(p["arms"]))


def _draw_companion(X, Y, p, px):
    return p["brightness"] * _soft_ellipse(X, Y, p["radius"], p["axis_ratio"], p["angle_deg"], p["offset"], p["softness"], px)


def _draw_tail(X, Y, p, px):
    x, y = X - p["offset"][0], Y - p["offset"][1]
    r, theta = np.hypot(x, y), np.arctan2(y, x)
    w = max(p["width"] / 2.0, px)
    light = np.zeros_like(X)
    n = int(p["count"])
    for k in range(n):
        start = math.radians(p["start_angle_deg"]) + 2 * math.pi * k / n
        light = light + _log_spiral(r, theta, p["r_start"], p["r_end"], p["pitch_deg"], w, start, 1)
    # Debris is faint and grows fainter away from the body.
    fade = 1.0 - 0.7 * np.clip((r - p["r_start"]) / max(p["r_end"] - p["r_start"], 1e-3), 0.0, 1.0)
    return p["brightness"] * light * fade


def _dust_lane_transmission(X, Y, p, px):
    x, y = _frame(X, Y, p["angle_deg"])
    return 1.0 - p["depth"] * np.exp(-0.5 * ((y - p["offset"]) / max(p["width"] / 2.0, px)) ** 2)


_BASE_DRAW = {"ellipse": _draw_ellipse, "disk": _draw_disk, "edge_on": _draw_edge_on, "irregular": _draw_irregular, "star": _draw_star}
_LIGHT_DRAW = {"bulge": _draw_bulge, "ring": _draw_ring, "arc": _draw_arc, "bar": _draw_bar, "companion": _draw_companion, "tail": _draw_tail}


def _spiral_start(params: dict) -> float:
    """Arms start where the bar ends, or just outside the bulge."""
    start = 0.14
    if "bar" in params:
        start = max(start, params["bar"]["length"] / 2.0)
    if "bulge" in params and not any(params["bulge"]["offset"]):
        start = max(start, 0.9 * params["bulge"]["radius"])
    return min(start, 0.6 * params["spiral"]["r_end"])


def _jitter_params(params: dict, rng: np.random.Generator, aug: dict) -> dict:
    rel = float(aug.get("param_jitter", 0.0))
    fixed = set(aug.get("no_jitter", ()))
    out = {}
    for prim in params:   # insertion order is fixed (base, then FEATURE_PRIMITIVES): reproducible
        q = {}
        for name, v in params[prim].items():
            if name in fixed or isinstance(v, (bool, str)) or isinstance(v, int):
                q[name] = v
            elif isinstance(v, float):
                q[name] = v * float(rng.uniform(1 - rel, 1 + rel))
            elif isinstance(v, (list, tuple)):
                q[name] = [float(x) * float(rng.uniform(1 - rel, 1 + rel)) for x in v]
            else:
                q[name] = v
        if "axis_ratio" in q:
            q["axis_ratio"] = min(q["axis_ratio"], 1.0)
        out[prim] = q
    return out


@lru_cache(maxsize=8)
def _canvas_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an n x n canvas spanning -1..1 (y up); read-only, shared."""
    u = ((np.arange(n, dtype=np.float32) + 0.5) / n) * 2.0 - 1.0
    X, Y = np.meshgrid(u, -u)
    X.flags.writeable = False
    Y.flags.writeable = False
    return X, Y


def _draw_plan(plan: SymbolPlan, size: int, book: SymbolBook, rng: np.random.Generator | None) -> np.ndarray:
    style, aug = book.style, book.augment
    params = plan.params
    ss = max(1, int(style.get("supersample", 2)))
    # OUR CHOICE: large symbols skip supersampling: every edge is already analytically soft over at
    # least a pixel and then blurred, and the trainer renders pools of them (4x the pixels is 4x time).
    if size > int(style.get("supersample_max_px", 160)):
        ss = 1
    n = size * ss
    rotation, scale, shift, mirror = 0.0, 1.0, (0.0, 0.0), False
    blur = float(style.get("blur_px", 0.9))
    gain, bg_lift = 1.0, 0.0
    if rng is not None:
        rotation = math.radians(rng.uniform(*aug.get("rotation_deg", (0.0, 360.0))))
        mirror = bool(rng.random() < float(aug.get("mirror_probability", 0.5)))
        scale = float(rng.uniform(*aug.get("scale", (1.0, 1.0))))
        s = float(aug.get("shift", 0.0))
        shift = (float(rng.uniform(-s, s)), float(rng.uniform(-s, s)))
        stroke = float(rng.uniform(*aug.get("stroke", (1.0, 1.0))))
        blur = float(rng.uniform(*aug.get("blur_px", (blur, blur))))
        gain = float(rng.uniform(*aug.get("brightness", (1.0, 1.0))))
        bg_lift = float(rng.uniform(*aug.get("background", (0.0, 0.0))))
        params = _jitter_params(params, rng, aug)
        stroke_names = set(aug.get("stroke_params", ()))
        for prim in params:
            for name in stroke_names & set(params[prim]):
                params[prim][name] = params[prim][name] * stroke

    # Pixel-centre grid in canvas units (y up), then into symbol coordinates (undo the augmentation).
    X, Y = _canvas_grid(n)
    if rng is not None:
        U, V = (X - shift[0]) / scale, (Y - shift[1]) / scale
        c, s = math.cos(rotation), math.sin(rotation)
        X, Y = c * U + s * V, -s * U + c * V
        if mirror:
            X = -X
    px = 2.0 / n / scale   # one supersampled pixel in symbol units

    light = _BASE_DRAW[plan.base](X, Y, params[plan.base], px)
    for prim in ("ring", "arc", "bar", "bulge", "companion", "tail"):
        if prim in params:
            light = light + _LIGHT_DRAW[prim](X, Y, params[prim], px)
    if "spiral" in params:
        light = light + _draw_spiral(X, Y, params["spiral"], px, _spiral_start(params))
    if "dust_lane" in params:
        light = light * _dust_lane_transmission(X, Y, params["dust_lane"], px)
    light = np.clip(light, 0.0, 1.0)
    if ss > 1:
        light = light.reshape(size, ss, size, ss).mean(axis=(1, 3))
    sigma = blur * size / 224.0
    if sigma > 0:
        light = gaussian_filter(light, sigma, mode="constant")
    bg = np.asarray(style["background"], np.float32) / 255.0
    bg = bg + bg_lift
    fg = np.asarray(style["foreground"], np.float32) / 255.0
    rgb = (bg * 255.0) + ((fg * gain - bg) * 255.0) * light[..., None]
    np.clip(rgb, 0, 255, out=rgb)
    return np.rint(rgb, out=rgb).astype(np.uint8)


def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (tuple, list)):
        return np.random.default_rng(np.random.SeedSequence([int(x) for x in seed]))
    return np.random.default_rng(seed)


def render_symbol(
    answers: Sequence[str] | str,
    size: int = 224,
    seed: int | Sequence[int] | np.random.Generator | None = None,
    augment: bool = False,
    book: SymbolBook | None = None,
    tree: DecisionTree | None = None,
) -> np.ndarray:
    """Draw the symbol composed from ``answers`` as uint8 RGB ``(size, size, 3)``.

    ``book`` / ``tree``: the symbol book and decision tree (default: the shipped ones).

    ``augment=False`` gives the clean canonical pictogram (``seed`` unused); ``augment=True`` draws a
    random variant (rotation, mirror, scale, shift, stroke width, blur, brightness, small shape
    jitter), reproducible by ``seed``.
    """
    if int(size) < 8:
        raise SymbolError(f"symbol size must be at least 8 pixels, got {size}")
    book = book or symbol_book()
    plan = _compose(tuple(sorted(set(_as_answer_list(answers)))), book, tree or decision_tree())
    return _draw_plan(plan, int(size), book, _rng(seed) if augment else None)


def render_class_symbol(
    spec: ClassSpec,
    size: int = 224,
    variant: int = 0,
    seed: int | None = None,
    augment: bool = False,
    book: SymbolBook | None = None,
    tree: DecisionTree | None = None,
) -> np.ndarray:
    """Draw one of a class's symbols: ``spec.symbols[variant % len(spec.symbols)]``.

    With ``augment`` the random draw is seeded by ``(seed, variant)`` so every variant differs.
    """
    if not spec.symbols:
        raise SymbolError(f"class {spec.name!r} has no symbols to draw")
    answers = spec.symbols[variant % len(spec.symbols)]
    try:
        rng = None if not augment else _rng(None if seed is None else (int(seed), int(variant)))
        return render_symbol(answers, size=size, seed=rng, augment=augment, book=book, tree=tree)
    except SymbolError as exc:
        raise SymbolError(f"class {spec.id} {spec.name!r}: {exc}") from None


def class_symbol_bank(
    taxonomy: Taxonomy | str | Path,
    size: int = 224,
    n_variants: int = 8,
    seed: int = 0,
    progress: bool = False,
    book: SymbolBook | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every class's symbol variants: uint8 ``(C*n, size, size, 3)`` and int64 class ids ``(C*n,)``.

    Rows are class-major (class c's variants at ``c*n .. c*n+n-1``). Variant 0 is the clean canonical
    symbol; the others are augmented, cycling through the class's alternative symbols. Drawn with the
    taxonomy's own symbol book and decision tree unless ``book`` is given.
    """
    taxonomy = load_taxonomy(taxonomy)
    book = book or book_of(taxonomy)
    if int(n_variants) < 1:
        raise SymbolError(f"n_variants must be at least 1, got {n_variants}")
    n = int(n_variants)
    images = np.empty((taxonomy.num_classes * n, size, size, 3), np.uint8)
    ids = np.repeat(np.arange(taxonomy.num_classes, dtype=np.int64), n)
    jobs = [(c, v) for c in range(taxonomy.num_classes) for v in range(n)]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc=f"symbols ({taxonomy.name})", unit="symbol")
    for c, v in jobs:
        spec = taxonomy.by_id(c)
        # OUR CHOICE: each (seed, class, variant) seeds its own draw, so a bank is identical however
        # many variants are asked for and whichever class is rendered first.
        rng = None if v == 0 else _rng((int(seed), c, v))
        answers = spec.symbols[v % len(spec.symbols)]
        try:
            images[c * n + v] = render_symbol(answers, size=size, seed=rng, augment=v > 0, book=book, tree=taxonomy.tree)
        except SymbolError as exc:
            raise SymbolError(f"{taxonomy.name}: class {c} {spec.name!r}: {exc}") from None
    return images, ids


def symbol_sheet(taxonomy: Taxonomy | str | Path, out_png: str | Path, size: int = 128, book: SymbolBook | None = None) -> Path:
    """A labelled PNG sheet of every class symbol, a class's alternative symbols side by side."""
    taxonomy = load_taxonomy(taxonomy)
    book = book or book_of(taxonomy)
    cells = []
    for spec in taxonomy.classes:
        for k, answers in enumerate(spec.symbols):
            title = f"{spec.id}: {spec.name}" + (f" (alt {k + 1}/{len(spec.symbols)})" if len(spec.symbols) > 1 else "")
            cells.append((title, answers, lambda spec=spec, k=k: render_class_symbol(spec, size=size, variant=k, book=book,
                                                                            tree=taxonomy.tree)))
    return _sheet(cells, f"GalaxAlign class symbols: {taxonomy.name}", out_png)


def answer_sheet(out_png: str | Path, size: int = 96, book: SymbolBook | None = None,
                 tree: DecisionTree | None = None) -> Path:
    """A labelled PNG sheet of the pictogram of every answer in the symbols file, one by one."""
    book = book or symbol_book()
    tree = tree or decision_tree()
    question_of, requires = _tree_index(tree)
    cells = []
    for a in book.answers:
        implied = _implied(a, question_of, requires)[1:]
        caption = ("implies " + ", ".join(implied),) if implied else ()
        cells.append((a, caption, lambda a=a: render_symbol([a], size=size, book=book, tree=tree)))
    return _sheet(cells, "GalaxAlign pictogram of each decision-tree answer (with the answers it implies)", out_png)


def _sheet(cells: list, title: str, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galaxalign.runtime import atomic_path

    out_png = Path(out_png)
    # OUR CHOICE: a grid of at most 5 columns, read row by row; the answers are printed under each.
    ncols = min(5, len(cells))
    nrows = -(-len(cells) // ncols)
    cell_in = 1.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_in * ncols, cell_in * 1.5 * nrows), squeeze=False)
    fig.patch.set_facecolor("white")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, answers, draw) in zip(axes.flat, cells):
        ax.imshow(draw(), interpolation="nearest")
        ax.set_title(_wrap(name, 24), fontsize=8)
        ax.text(0.5, -0.04, _wrap(", ".join(answers), 34), transform=ax.transAxes, ha="center", va="top", fontsize=5.5, color="#444444")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    # A 64-colour palette keeps sheets small (they are mostly grey) without visible banding.
    sheet = Image.open(buffer).convert("RGB").quantize(colors=64)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out_png


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text

"""The rasteriser: a composed symbol drawn as uint8 RGB, numpy only.

Analytic soft shapes evaluated on a supersampled grid, averaged down and Gaussian-blurred.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from galaxalign.symbols.book import SymbolBook, SymbolError, book_of, symbol_book
from galaxalign.symbols.compose import SymbolPlan, _as_answer_list, _compose
from galaxalign.taxonomy import ClassSpec, DecisionTree, Taxonomy, decision_tree, load_taxonomy

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


def answer_symbol_bank(
    answer_sets: Sequence[Sequence[str] | Sequence[Sequence[str]]],
    size: int = 224,
    n_variants: int = 2,
    seed: int = 0,
    book: SymbolBook | None = None,
    tree: DecisionTree | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Symbol variants of arbitrary answer sets (per-galaxy paths): uint8 ``(R*n, size, size, 3)`` and
    the row of each ``(R*n,)``, row-major as :func:`class_symbol_bank`. A row is one answer set or a
    list of alternative sets (variant v draws set v mod their number, as a class's alternative
    symbols). Variant 0 is canonical; variant v of an answer set is seeded by (seed, the set's text,
    v), so a rendering depends only on its answers and is drawn once however many galaxies share them
    (``_answer_symbol``'s cache)."""
    if int(n_variants) < 1:
        raise SymbolError(f"n_variants must be at least 1, got {n_variants}")
    n = int(n_variants)
    book = book or symbol_book()
    tree = tree or decision_tree()
    images = np.empty((len(answer_sets) * n, size, size, 3), np.uint8)
    for r, row in enumerate(answer_sets):
        alternatives = [row] if not row or isinstance(row[0], str) else list(row)
        for v in range(n):
            key = tuple(sorted(set(alternatives[v % len(alternatives)])))
            images[r * n + v] = _answer_symbol(key, int(size), v, int(seed), book, tree)
    return images, np.repeat(np.arange(len(answer_sets), dtype=np.int64), n)


@lru_cache(maxsize=4096)
def _answer_symbol(answers: tuple[str, ...], size: int, variant: int, seed: int, book: SymbolBook, tree: DecisionTree) -> np.ndarray:
    import zlib

    rng = None if variant == 0 else _rng((seed, zlib.crc32(",".join(answers).encode()), variant))
    out = render_symbol(answers, size=size, seed=rng, augment=variant > 0, book=book, tree=tree)
    out.setflags(write=False)
    return out

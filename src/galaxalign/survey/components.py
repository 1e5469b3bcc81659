"""Galaxy components in flux: bulge, disk, arms, bar, rings, knots, companion, tidal tails and dust.

``paint(kind, scene, cls, scale, cx, cy)`` draws one galaxy of a survey class's ``kind`` from the
class's generating distributions (``survey_classes.yaml``) onto a :class:`Scene`: one flux layer per
colour group on the oversampled grid, plus the parameters drawn. ``band_colours`` gives each group's band
ratios. No instrument here: PSF, noise, field sources and artefacts are in ``instrument.py``.
"""
from __future__ import annotations

import math

import numpy as np

from galaxalign.survey import profiles as P
from galaxalign.survey.classes import sample

COMPONENTS = ("bulge", "disk", "arms")  # colour groups; bars use the bulge colour, knots the arm colour


class Scene:
    """Flux layers on the oversampled grid, one per colour group, plus the parameters drawn."""

    def __init__(self, grid: P.Grid, rng: np.random.Generator):
        self.grid, self.rng = grid, rng
        self.layers = {c: grid.zeros() for c in COMPONENTS}
        self.tails = grid.zeros()
        self.dust: np.ndarray | None = None
        self.params: dict[str, float] = {}

    def set(self, **values: float) -> None:
        for k, v in values.items():
            self.params.setdefault(k, float(v))  # the main galaxy's values win over a companion's


def _pa(rng: np.random.Generator) -> float:
    return rng.uniform(0, math.pi)


def _ring(scene: Scene, cls: dict, cx: float, cy: float, pa: float, incl: float, unit_px: float, flux: float,
          layer: str) -> None:
    """A ring with probability ``ring_prob``: ``ring_fraction`` of ``flux`` in a Gaussian annulus of
    radius ``ring_radius`` x ``unit_px`` (a disk scale radius, a bar length or a half-light radius)
    and width ``ring_width`` x radius, in the galaxy's plane. Classes without ``ring_prob`` draw
    nothing (their ``ring_fraction`` stays NaN: no such component); a class that could have had one
    records 0."""
    if "ring_prob" not in cls:
        return
    rng = scene.rng
    if rng.uniform() >= cls["ring_prob"]:
        scene.set(ring_fraction=0.0)
        return
    frac = sample(cls["ring_fraction"], rng)
    radius = sample(cls["ring_radius"], rng) * unit_px
    width = sample(cls["ring_width"], rng) * radius
    r, theta = P.disk_plane(scene.grid, cx, cy, pa, incl)
    pattern = P.ring(r, theta, radius, width, rng)
    scene.layers[layer] += flux * frac * pattern / max(pattern.sum(), 1e-12)
    scene.set(ring_fraction=frac, ring_radius_px=radius)


def _smooth(scene: Scene, cls: dict, scale: float, cx: float, cy: float, flux: float, main: bool = True) -> float:
    """Elliptical: Sersic body and an optional faint exponential envelope. Returns the size (px)."""
    rng = scene.rng
    r_eff = sample(cls["size"], rng) * scale
    n = sample(cls.get("sersic_n", ["uniform", 2.5, 4.5]), rng)
    q = sample(cls.get("axis_ratio", ["uniform", 0.5, 1.0]), rng)
    halo = sample(cls.get("halo_fraction", 0.0), rng)
    pa = _pa(rng)
    scene.layers["bulge"] += P.sersic(scene.grid, n, r_eff, q, pa, cx, cy, flux * (1 - halo))
    if halo > 0:
        # OUR CHOICE: the envelope shares the body's orientation, a little rounder, in disk colour.
        scene.layers["disk"] += P.thin_disk(scene.grid, 1.3 * r_eff, math.acos(min(1.0, q + 0.1)), pa, cx, cy, flux * halo)
    if main:
        # An S0-like ring lies in the envelope's plane: inclination from the body's axis ratio.
        _ring(scene, cls, cx, cy, pa, math.acos(min(1.0, q)), r_eff, flux, "disk")
        scene.set(axis_ratio=q, position_angle_deg=math.degrees(pa), sersic_n=n, r_eff_px=r_eff, halo_fraction=halo)
    return r_eff


def _disk(scene: Scene, cls: dict, scale: float, cx: float, cy: float, flux: float, main: bool = True,
          arms: bool = True, lopsided: float = 0.0) -> float:
    """Bulge + exponential disk with optional arms, bar and knots. Returns the disk scale radius (px)."""
    rng, grid = scene.rng, scene.grid
    h = sample(cls["size"], rng) * scale
    incl = math.radians(sample(cls.get("inclination_deg", ["cos_uniform", 0, 70]), rng))
    bt = sample(cls.get("bulge_fraction", ["uniform", 0.05, 0.4]), rng)
    n = sample(cls.get("sersic_n", ["uniform", 1.0, 4.0]), rng)
    pa = _pa(rng)
    q = P.projected_axis_ratio(incl)
    # OUR CHOICE: bulge half-light radius 0.2-0.6 disk scale radii, a little flattened by inclination.
    r_bulge = h * rng.uniform(0.2, 0.6)
    q_bulge = max(q, rng.uniform(0.7, 1.0))
    bx, by = cx, cy
    if lopsided > 0:
        # Disturbed: the bulge sits off the disk centre.
        off = lopsided * h * rng.uniform(0.2, 0.8)
        ang = rng.uniform(0, 2 * math.pi)
        bx, by = cx + off * math.cos(ang), cy + off * math.sin(ang)
    if bt > 0:
        scene.layers["bulge"] += P.sersic(grid, n, r_bulge, q_bulge, pa, bx, by, flux * bt)
    disk = P.thin_disk(grid, h, incl, pa, cx, cy, flux * (1 - bt))
    floc = sample(cls.get("flocculence", 0.0), rng)
    if floc > 0:
        # OUR CHOICE: patches ~0.15 disk scale radii across, the size of star-forming complexes (~0.5 kpc).
        disk = disk * P.patchy(grid, rng, 0.15 * h, floc)
    r, theta = P.disk_plane(grid, cx, cy, pa, incl)
    if lopsided > 0:
        # m=1 and m=2 distortions growing outwards: a lopsided, asymmetric disk.
        x = r / h
        mod = 1 + lopsided * (x / (1 + x)) * (np.cos(theta - rng.uniform(0, 6.3)) + 0.5 * np.cos(2 * theta - rng.uniform(0, 6.3)))
        disk = disk * np.clip(mod, 0.05, None)
    params: dict[str, float] = dict(inclination_deg=math.degrees(incl), axis_ratio=q, position_angle_deg=math.degrees(pa),
                                    sersic_n=n, r_eff_px=r_bulge, bulge_fraction=bt, disk_scale_px=h, flocculence=floc)
    n_arms, pitch, phase, r_start = 0, math.radians(20.0), rng.uniform(0, 2 * math.pi), 0.6 * h
    has_bar = "bar_strength" in cls and rng.uniform() < cls.get("bar_prob", 1.0)
    if has_bar:
        bar_s = sample(cls["bar_strength"], rng)
        bar_len = sample(cls["bar_length"], rng) * h
        bar_q = sample(cls["bar_axis_ratio"], rng)
        bar_angle = rng.uniform(0, 2 * math.pi)
        # Bar surface brightness relative to the disk's central surface brightness.
        bar = P.ferrers_bar(r, theta, bar_len, bar_q, bar_angle) * bar_s * disk.max()
        scene.layers["bulge"] += 0.6 * bar
        scene.layers["disk"] += 0.4 * bar
        r_start = bar_len
        params.update(bar_strength=bar_s, bar_length_px=bar_len, bar_axis_ratio=bar_q)
    else:
        bar_angle = phase
        params.update(bar_strength=0.0)
    if arms and "pitch_deg" in cls:
        n_arms = int(sample(cls["n_arms"], rng))
        pitch = math.radians(sample(cls["pitch_deg"], rng))
        a = sample(cls["arm_strength"], rng)
        width = sample(cls["arm_width"], rng)
        # Arms leave the bar ends: phase chosen so the arm passes theta = bar angle at r_start.
        phase = n_arms * bar_angle if has_bar else phase
        pattern = P.spiral_pattern(r, theta, n_arms, pitch, phase, width, r_start, rng)
        # Arms redistribute disk light: the arm layer is blue, the inter-arm disk keeps the rest.
        arm_light = disk * np.minimum(a * pattern, 3.0)
        scene.layers["arms"] += arm_light
        scene.layers["disk"] += disk * np.clip(1.0 - 0.5 * a * pattern.mean(), 0.2, 1.0)
        params.update(pitch_deg=math.degrees(pitch), n_arms=n_arms, arm_strength=a, arm_width=width)
    else:
        scene.layers["disk"] += disk
    if "n_knots" in cls:
        count = int(sample(cls["n_knots"], rng))
        frac = sample(cls["knot_fraction"], rng)
        if count > 0 and frac > 0:
            kr, kt, kf = P.arm_knots(rng, count, h, n_arms, pitch, phase, r_start, on_arm=n_arms > 0)
            kx, ky = P.to_sky(kr, kt, cx, cy, pa, incl)
            P.deposit(grid, kx, ky, flux * (1 - bt) * frac * kf / kf.sum(), out=scene.layers["arms"])
        params.update(n_knots=count, knot_fraction=frac)
    if main:
        # Inner rings circle the bar's ends, so a barred disk's ring radius is in bar lengths.
        unit = params["bar_length_px"] if has_bar and cls.get("ring_around_bar", False) else h
        _ring(scene, cls, cx, cy, pa, incl, unit, flux, "arms")
        scene.set(**params)
    return h


def _edge_on(scene: Scene, cls: dict, scale: float, cx: float, cy: float, flux: float) -> float:
    rng, grid = scene.rng, scene.grid
    h = sample(cls["size"], rng) * scale
    incl = math.radians(sample(cls["inclination_deg"], rng))
    hr = sample(cls["scale_height_ratio"], rng)
    bt = sample(cls["bulge_fraction"], rng)
    n = sample(cls["sersic_n"], rng)
    qb = sample(cls["bulge_axis_ratio"], rng)
    pa = _pa(rng)
    r_bulge = h * rng.uniform(0.25, 0.6)
    disk = P.thick_disk(grid, h, incl, hr, pa, cx, cy, flux * (1 - bt))
    floc = sample(cls.get("flocculence", 0.0), rng)
    if floc > 0:
        disk = disk * P.patchy(grid, rng, 0.15 * h, floc)  # patchy dust and HII regions along the disk
    scene.layers["disk"] += disk
    if bt > 0:
        scene.layers["bulge"] += P.sersic(grid, n, r_bulge, qb, pa, cx, cy, flux * bt)
    has_dust = rng.uniform() < cls.get("dust_prob", 0.0)
    tau = sample(cls["dust_tau"], rng) if has_dust else 0.0
    if has_dust:
        # The lane sits just off the mid-plane on the near side; narrower than the disk's thickness.
        width = max(0.35, 0.4 * hr * h)
        offset = (math.pi / 2 - incl) * h * rng.choice([-1, 1]) * 0.8
        scene.dust = tau * P.dust_lane(grid, cx, cy, pa, h, width, offset)
    q = math.sqrt(math.cos(incl) ** 2 + (1.5 * hr) ** 2 * math.sin(incl) ** 2)  # ~ projected thickness ratio
    scene.set(inclination_deg=math.degrees(incl), axis_ratio=min(q, 1.0), position_angle_deg=math.degrees(pa),
              sersic_n=n, r_eff_px=r_bulge, bulge_fraction=bt, disk_scale_px=h, scale_height_ratio=hr,
              dust_lane=float(has_dust), dust_tau=tau, flocculence=floc)
    return h


def _tails(scene: Scene, cls: dict, scale: float, cx: float, cy: float, size_px: float, flux: float, toward: float) -> None:
    """Tidal tails as curved particle streams; ``toward`` is the direction of the perturber (rad)."""
    rng = scene.rng
    count = int(sample(cls.get("n_tails", 0), rng))
    strength = sample(cls["tail_strength"], rng) if count else 0.0
    for k in range(count):
        # One tail points away from the perturber, a second (bridge-like) towards it.
        angle = toward + math.pi * (1 - k % 2) + rng.normal(0, 0.5)
        length = sample(cls["tail_length"], rng) * scale
        curl = rng.choice([-1, 1]) * rng.uniform(0.4, 1.8)
        # OUR CHOICE: tails start outside the body (1.2 sizes) so they read as debris, not a ring.
        x, y, w = P.tidal_tail(rng, cx, cy, 1.2 * size_px, length, angle, curl, rng.uniform(1.5, 4.0) * scale / 128 + 0.1 * length)
        P.deposit(scene.grid, x, y, flux * strength / count * w / w.sum(), out=scene.tails)
    scene.set(n_tails=count, tail_strength=strength)


def _companion(scene: Scene, cls: dict, scale: float, flux: float) -> float:
    rng = scene.rng
    ratio = sample(cls["companion_flux_ratio"], rng)
    sep = sample(cls["companion_sep"], rng) * scale
    ang = rng.uniform(0, 2 * math.pi)
    ox, oy = sep * math.cos(ang), sep * math.sin(ang)
    sub = dict(cls)
    # OUR CHOICE: companions are smaller (size ~ flux^0.5) and either smooth or disky at random.
    sub["size"] = sample(cls["size"], rng) * math.sqrt(ratio)
    if rng.uniform() < 0.5:
        sub["axis_ratio"] = ["uniform", 0.4, 1.0]
        _smooth(scene, sub, 1.0, ox, oy, flux * ratio, main=False)
    else:
        sub.pop("pitch_deg", None)
        _disk(scene, sub, 1.0, ox, oy, flux * ratio, main=False, arms=False)
    scene.set(companion_flux_ratio=ratio, companion_sep_px=sep)
    return ang  # direction of the companion: tails point away from and towards it


def paint(kind: str, scene: Scene, cls: dict, scale: float, cx: float, cy: float) -> None:
    rng = scene.rng
    if kind == "smooth":
        _smooth(scene, cls, scale, cx, cy, 1.0)
    elif kind == "spiral":
        # Real disks are mildly lopsided (m=1) too, not only disturbed ones.
        lop = sample(cls.get("lopsidedness", 0.0), rng)
        _disk(scene, cls, scale, cx, cy, 1.0, lopsided=lop)
        scene.set(asymmetry=lop)
    elif kind == "edge_on":
        _edge_on(scene, cls, scale, cx, cy, 1.0)
    elif kind == "disturbed":
        asym = sample(cls["asymmetry"], rng)
        h = _disk(scene, cls, scale, cx, cy, 1.0, arms=False, lopsided=asym)
        toward = rng.uniform(0, 2 * math.pi)
        if rng.uniform() < cls.get("companion_prob", 0.0):
            toward = _companion(scene, cls, scale, 1.0)
        _tails(scene, cls, scale, cx, cy, h, 1.0, toward)
        scene.set(asymmetry=asym)
    elif kind == "merger":
        asym = sample(cls.get("asymmetry", 0.0), rng)
        # OUR CHOICE: the primary is smooth or disky with equal odds; both are mildly lopsided.
        if rng.uniform() < 0.5:
            sub = dict(cls, axis_ratio=["uniform", 0.45, 1.0], halo_fraction=["uniform", 0.0, 0.3])
            size = _smooth(scene, sub, scale, cx, cy, 1.0)
        else:
            size = _disk(scene, cls, scale, cx, cy, 1.0, arms=False, lopsided=asym)
        toward = _companion(scene, cls, scale, 1.0)
        _tails(scene, cls, scale, cx, cy, size, 0.8, toward)
        scene.set(asymmetry=asym)
    else:  # validated in classes.py; kept for a clear message if the kinds ever grow
        raise ValueError(f"unknown galaxy kind {kind!r}")


def band_colours(obs: dict, rng: np.random.Generator, redshift: float) -> dict[str, np.ndarray]:
    """Band flux / r flux for each colour group, reddened with redshift (k-correction-ish)."""
    redden = ((1 + redshift) / 1.05) ** -obs["reddening_per_z"]
    out = {}
    for comp in COMPONENTS:
        g = sample(obs[f"colour_{comp}_g"], rng) * redden
        z = sample(obs[f"colour_{comp}_z"], rng) / redden
        out[comp] = np.array([g, 1.0, z])
    return out

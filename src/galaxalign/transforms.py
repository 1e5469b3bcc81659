"""Preprocessing: uint8 ``(H,W,3)`` images (numpy or PIL) -> normalised float tensors ``(3,S,S)``.

Transforms are small classes (picklable, so DataLoader workers can use them). Training augmentation
is batched (``GalaxyAugment``): parameters are drawn per sample in the worker, pixels are transformed
per batch on the training device; the one-image ``TrainTransform`` draws from torch's global RNG.

Crop policy (OUR CHOICE): survey cutouts are centred on the galaxy, so the shorter side is resized
to ``S`` (bilinear, antialiased) and the centre ``S x S`` kept; nothing else is cropped away.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """The (H,W,3) uint8 view of a grey (H,W), RGB or RGBA uint8 array; a clear error otherwise."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H,W,3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    return image[:, :, :3]


def to_float_tensor(image) -> torch.Tensor:
    """uint8 (H,W,3) / (H,W) numpy or PIL -> float (3,H,W) in [0,1]."""
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image.convert("RGB"))  # PIL
        except AttributeError:
            raise TypeError(f"expected a uint8 (H,W,3) array or PIL image, got {type(image).__name__}") from None
    rgb = _rgb_uint8(image)
    if not (rgb.flags.writeable and rgb.flags.c_contiguous):
        rgb = rgb.copy()  # torch refuses read-only arrays (e.g. memory-mapped HDF5 / PIL buffers)
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def central_crop(x, fraction: float):
    """The centre ``fraction`` of each side of an (..., H, W) tensor or an (H, W, ...) array's
    first two axes (``fraction`` 1: unchanged). Survey cutouts are centred on their galaxy."""
    fraction = float(fraction)
    if fraction >= 1.0:
        return x
    if not 0.0 < fraction:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    is_array = isinstance(x, np.ndarray)
    h, w = (x.shape[0], x.shape[1]) if is_array else x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[top : top + ch, left : left + cw] if is_array else x[..., top : top + ch, left : left + cw]


def resize_center_crop(x: torch.Tensor, size: int, crop: float = 1.0) -> torch.Tensor:
    """Keep the centre ``crop`` of each side, resize the shorter side to ``size`` (antialiased) and
    keep the centre square."""
    x = central_crop(x, crop)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size]


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class EvalTransform:
    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], crop: float = 1.0):
        self.image_size = int(image_size)
        self.crop = float(crop)
        self.normalize = _Normalize(mean, std)

    def __call__(self, image) -> torch.Tensor:
        return self.normalize(resize_center_crop(to_float_tensor(image), self.image_size, self.crop))


# ---------------------------------------------------------------------------------------------
# Batch augmentation on the training device.
#
# The training data path ships uint8 images (already at the training size) and, per sample, a small
# vector of augmentation parameters drawn in the DataLoader worker from the sample's own seed; the
# device then applies every augmentation to the whole batch at once. The same functions run on the
# CPU when there is no GPU, and ``TrainTransform`` (one image) is a batch of one: one code path.

# Columns of a parameter vector (``GalaxyAugment.draw``).
P_ANGLE, P_FLIP, P_ZOOM, P_GAIN, P_BRIGHTNESS, P_CONTRAST, P_BLUR, P_NOISE, P_NOISE_SEED = 0, 1, 2, 3, 6, 7, 8, 9, 10
N_PARAMS = 11
IDENTITY_PARAMS = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=np.float32)


def resize_center_crop_uint8(image: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """uint8 (H,W,3) -> uint8 (size,size,3): shorter side resized (bilinear, antialiased), centre kept.

    The worker-side half of the training transform: what travels to the device is the training size
    in uint8 (a quarter of float32's bytes)."""
    rgb = central_crop(_rgb_uint8(np.asarray(image)), crop)
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        if not (rgb.flags.writeable and rgb.flags.c_contiguous):
            rgb = rgb.copy()  # torch refuses read-only arrays (PIL buffers)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        rgb = x[0].permute(1, 2, 0).numpy()
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def _as_bchw_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) or (B,3,H,W) -> float (B,3,H,W) in [0,1], on the images' own device."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch (B,H,W,3) or (B,3,H,W), got shape {tuple(images.shape)}")
    if images.shape[1] != 3 and images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)  # a view: (B,H,W,3) memory is channels_last (B,3,H,W)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def geometric_batch(x: torch.Tensor, angle_deg: torch.Tensor, flip: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle_deg``, magnify by ``zoom`` and mirror where ``flip`` is 1, per sample, in one
    ``grid_sample``; corners repeat the border (sky or symbol background). All arguments (B,)."""
    theta = angle_deg.to(x.dtype) * (math.pi / 180.0)
    c, s = torch.cos(theta) / zoom.to(x.dtype), torch.sin(theta) / zoom.to(x.dtype)
    sign = 1.0 - 2.0 * flip.to(x.dtype)  # a mirrored output = the sampling matrix's first column negated
    zero = torch.zeros_like(c)
    mat = torch.stack([torch.stack([c * sign, -s, zero], 1), torch.stack([s * sign, c, zero], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blur_batch(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (0: a delta kernel, the image unchanged), as
    two grouped convolutions (one kernel per sample and channel)."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.to(x.dtype).clamp(min=1e-3).view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


class GalaxyAugment:
    """Augmentations that leave morphology unchanged: any rotation, flips, a mild zoom; photometric jitter.

    ``draw(rng)`` (in the DataLoader worker, from the sample's seed) returns one parameter vector;
    ``apply(images, params)`` (on the device, a whole batch) turns uint8 images into augmented,
    normalised float tensors.

    OUR CHOICE of strengths at ``strength=1`` (sim-to-real: the rendered survey and real cutouts
    differ in field of view, calibration, seeing and noise): rotation uniform in [0, 360),
    horizontal flip p=0.5, zoom (random resized crop about the centre) log-uniform in
    ``zoom`` = [0.8, 1.25]; per-channel gain (colour balance) log-uniform within
    ``1 ± channel_gain`` = 0.08; brightness and contrast factors in [0.9, 1.1]; Gaussian blur sigma in
    [0.1, 1.0] px with p=0.3; additive Gaussian noise sigma 0.01 (in [0,1] units). ``strength``
    scales the zoom range and the photometric parts; ``strength=0`` keeps only rotation and flip.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], strength: float = 1.0,
                 zoom: tuple[float, float] = (0.8, 1.25), channel_gain: float = 0.08):
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, got {strength}")
        if not (0 < zoom[0] <= zoom[1]):
            raise ValueError(f"zoom range must satisfy 0 < low <= high, got {tuple(zoom)}")
        if not 0 <= channel_gain < 1:
            raise ValueError(f"channel_gain must be in [0, 1), got {channel_gain}")
        self.image_size = int(image_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.strength = float(strength)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.channel_gain = float(channel_gain)
        self.blur_radius = max(1, int(math.ceil(2 * (0.1 + 0.9 * self.strength))))
        self._stats: dict = {}

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One sample's parameters (float32, ``N_PARAMS``), a pure function of ``rng``'s state."""
        s = self.strength
        p = IDENTITY_PARAMS.copy()
        u = rng.random(10)
        p[P_ANGLE] = u[0] * 360.0
        p[P_FLIP] = float(u[1] < 0.5)
        if s > 0:
            lo, hi = math.log(self.zoom[0]) * s, math.log(self.zoom[1]) * s
            p[P_ZOOM] = math.exp(lo + (hi - lo) * u[2])
            g = math.log1p(self.channel_gain * s)
            p[P_GAIN : P_GAIN + 3] = np.exp((2 * u[3:6] - 1) * g)
            p[P_BRIGHTNESS] = 1.0 + s * 0.1 * (2 * u[6] - 1)
            p[P_CONTRAST] = 1.0 + s * 0.1 * (2 * u[7] - 1)
            p[P_BLUR] = (0.1 + 0.9 * s * u[9]) if u[8] < 0.3 else 0.0
            p[P_NOISE] = 0.01 * s
            p[P_NOISE_SEED] = float(rng.integers(1 << 24))  # exact in float32
        return p

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._stats:
            self._stats[key] = (torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1),
                                torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1))
        mean, std = self._stats[key]
        return (x - mean) / std

    def apply(self, images: torch.Tensor, params: torch.Tensor, noise_seed: int | None = None,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """uint8 (B,S,S,3) or (B,3,S,S) + params (B, N_PARAMS) -> normalised float (B,3,S,S).

        Runs where ``images`` live. ``noise_seed`` (a host int) seeds the batch's noise; by default it
        is derived from the per-sample seeds in ``params`` when those are on the host (no device sync).
        """
        x = _as_bchw_float(images)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False)
        if noise_seed is None and self.strength > 0:
            noise_seed = int(params[:, P_NOISE_SEED].double().sum()) if params.device.type == "cpu" else 0
        host_blur = params[:, P_BLUR] > 0 if params.device.type == "cpu" else None
        p = params.to(x.device, torch.float32, non_blocking=True)
        x = geometric_batch(x, p[:, P_ANGLE], p[:, P_FLIP], p[:, P_ZOOM])
        if self.strength > 0:
            # gains, then contrast about the image mean and brightness, in one pass:
            # (g*x - m) * c + m * b  with  m = mean(g*x)  =  x * (g*c) + m * (b - c)
            gains = p[:, P_GAIN : P_GAIN + 3]
            m = (x.mean(dim=(2, 3)) * gains).mean(1)
            contrast, brightness = p[:, P_CONTRAST], p[:, P_BRIGHTNESS]
            x = torch.addcmul((m * (brightness - contrast)).view(-1, 1, 1, 1), x, (gains * contrast[:, None]).view(-1, 3, 1, 1))
            if host_blur is None:  # parameters already on the device: blur all (sigma 0 = unchanged), no sync
                x = _blur_batch(x, p[:, P_BLUR], self.blur_radius)
            elif bool(host_blur.any()):  # known on the host: blur only the samples that draw one
                idx = torch.nonzero(host_blur).flatten().to(x.device)
                x = x.index_copy(0, idx, _blur_batch(x.index_select(0, idx), p.index_select(0, idx)[:, P_BLUR], self.blur_radius))
            g = torch.Generator(device=x.device)
            g.manual_seed(int(noise_seed) % (2**63))
            noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            x = (x + noise * p[:, P_NOISE].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
        return self._normalise(x).contiguous(memory_format=memory_format)


class TrainTransform(EvalTransform):
    """One image through ``GalaxyAugment`` (a batch of one); parameters drawn from torch's global RNG."""

    def __init__(self, image_size: int, mean, std, strength: float = 1.0, zoom: tuple[float, float] = (0.8, 1.25),
                 channel_gain: float = 0.08, crop: float = 1.0):
        super().__init__(image_size, mean, std, crop)
        self.augment = GalaxyAugment(image_size, mean, std, strength, zoom, channel_gain)
        self.strength, self.zoom, self.channel_gain = self.augment.strength, self.augment.zoom, self.augment.channel_gain

    def __call__(self, image) -> torch.Tensor:
        if not isinstance(image, np.ndarray):
            image = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image
        x = torch.from_numpy(resize_center_crop_uint8(image, self.image_size, self.crop))[None]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        params = torch.from_numpy(self.augment.draw(rng))[None]
        return self.augment.apply(x, params)[0]


class SymbolAugment:
    """Training symbols on the device: a light geometric augmentation of a batch, then normalisation.

    OUR CHOICE: rotation uniform in [0, 360), flip p=0.5 and zoom in [0.9, 1.1] — a schematic's
    meaning (bulge, arms, bar, edge-on disc) is orientation-free. Shape variation itself comes from
    the symbol renderer's own augmented variants (galaxalign.symbols). Parameters are drawn on the
    symbols' device from ``generator``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.norm = GalaxyAugment(1, mean, std, strength=0.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """float (K,3,S,S) in [0,1] -> augmented, normalised (K,3,S,S)."""
        u = torch.rand(x.shape[0], 3, generator=generator, device=x.device)
        x = geometric_batch(x, u[:, 0] * 360.0, (u[:, 1] < 0.5).float(), 0.9 + 0.2 * u[:, 2])
        return self.norm._normalise(x)


class SymbolTransform(EvalTransform):
    """Symbols: resize + normalise; with ``train=True`` the ``SymbolAugment`` of a batch of one."""

    def __init__(self, image_size: int, mean, std, train: bool = False):
        super().__init__(image_size, mean, std)
        self.train = bool(train)
        self.augment = SymbolAugment(mean, std)

    def __call__(self, image) -> torch.Tensor:
        x = resize_center_crop(to_float_tensor(image), self.image_size)
        if self.train:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            return self.augment(x[None], g)[0]
        return self.normalize(x)


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], crop: float = 1.0) -> EvalTransform:
    return EvalTransform(image_size, mean, std, crop)


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], strength: float = 1.0,
                    zoom: tuple[float, float] = (0.8, 1.25), channel_gain: float = 0.08, crop: float = 1.0) -> TrainTransform:
    return TrainTransform(image_size, mean, std, strength, zoom, channel_gain, crop)


def symbol_transform(image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False) -> SymbolTransform:
    return SymbolTransform(image_size, mean, std, train)


def stack(images, transform) -> torch.Tensor:
    """Apply ``transform`` to each image of a list / (N,H,W,3) array and stack into (N,3,S,S)."""
    return torch.stack([transform(im) for im in images])

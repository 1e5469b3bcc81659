"""GalaxAlignModel: image, symbol and text encoders aligned in one embedding space.

Stage 1 (paper): one visual encoder encodes both galaxy images and schematic symbols
(``symbol_encoder is image_encoder``). Stage 2: ``separate_symbol_encoder()`` gives symbols their own
encoder, a deep copy of the image encoder at that moment, and all three are trained jointly.

The backbone (``galaxalign.backbones``) supplies the towers, tokenizer, preprocessing and initial
temperature; the model owns them from then on. While shared, the symbol encoder is not registered as
a second module, so the state dict holds its weights once (keys ``image_encoder.*``); once separate,
its weights appear under ``symbol_encoder.*``. ``load_state_dict`` accepts either layout.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from galaxalign import transforms as T
from galaxalign.backbones import DualEncoder, create_backbone, lock_image, lock_text
from galaxalign.backbones.base import HoldsNormStats, batch_norms

# CLIP caps the inverse temperature at 100 so logits cannot blow up. The cap is applied to the
# parameter after each optimiser step (the trainer, as open_clip does), never inside the forward
# pass: a clamp there has zero gradient at the cap, and OpenAI's checkpoints start exactly at ln 100,
# so their temperature could never learn (nor leave the cap once it reached it).
MAX_LOGIT_SCALE = math.log(100.0)


class GalaxAlignModel(HoldsNormStats, nn.Module):
    # Training option: every batch norm (the symbol encoder's copy too) keeps its running statistics
    # in train mode; a setting of the run, not of the architecture, so not in ``config``.
    freeze_bn_stats: bool = False

    def __init__(self, backbone: DualEncoder, symbol_encoder_shared: bool = True, num_classes: int | None = None,
                 tta: str = "none"):
        super().__init__()
        if tta not in ("none", "dihedral"):
            raise ValueError(f"model config 'tta' must be 'none' or 'dihedral', got {tta!r}")
        self.config = {
            "backbone": dict(backbone.spec),
            "symbol_encoder_shared": True,
            "num_classes": None if num_classes is None else int(num_classes),
            # test-time views: "dihedral" embeds the mean of the 8 rotations/flips (inference.encode_images)
            "tta": tta,
        }
        self.image_encoder = backbone.visual
        self.text_encoder = backbone.text
        self.logit_scale = backbone.logit_scale
        self.tokenizer = backbone.tokenizer
        self.image_size = backbone.image_size
        # centre fraction of a cutout kept before resizing (backbone spec "crop"; galaxies only, not symbols)
        self.image_crop = float(backbone.spec.get("crop", 1.0) or 1.0)
        self.embed_dim = backbone.embed_dim
        self.image_mean = backbone.image_mean
        self.image_std = backbone.image_std
        # OUR CHOICE: the image-only baseline head reads the un-normalised projected image features.
        self.classifier = nn.Linear(self.embed_dim, int(num_classes)) if num_classes else None
        if not symbol_encoder_shared:
            self.separate_symbol_encoder()

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: dict, load_weights: bool = True) -> "GalaxAlignModel":
        """Build from ``{"backbone": spec, "symbol_encoder_shared": bool, "num_classes": int|None}``.

        ``load_weights=False`` skips the backbone's pretrained weights (a state dict follows).
        """
        if not isinstance(config, dict) or "backbone" not in config:
            raise ValueError(f"model config needs a 'backbone' spec, got keys {sorted(config or {})}")
        backbone = create_backbone(config["backbone"], load_weights=load_weights)
        model = cls(
            backbone,
            symbol_encoder_shared=bool(config.get("symbol_encoder_shared", True)),
            num_classes=config.get("num_classes"),
            tta=str(config.get("tta", "none")),
        )
        if config.get("answer_paths") is not None:
            model.set_answer_paths(config["answer_paths"], config.get("answer_path_counts"))
        return model

    @property
    def answer_paths(self) -> tuple[tuple[str, ...], ...] | None:
        """The distinct decision-tree paths a per-galaxy model was aligned with (its training bank's
        rows; ``search.features`` ranks by the model's posterior over them), None for class-level models."""
        paths = self.config.get("answer_paths")
        return None if paths is None else tuple(tuple(p) for p in paths)

    @property
    def answer_path_counts(self) -> tuple[int, ...] | None:
        """How many training galaxies had each of :attr:`answer_paths` (the path prior of
        ``search.features``); None when not recorded (models trained before it was)."""
        counts = self.config.get("answer_path_counts")
        return None if counts is None else tuple(int(c) for c in counts)

    def set_answer_paths(self, paths, counts=None) -> None:
        """Record the per-galaxy training paths, and optionally how many training galaxies had each,
        in ``config`` (so checkpoints and exports carry them)."""
        if paths is None:
            self.config.pop("answer_paths", None)
            self.config.pop("answer_path_counts", None)
            return
        clean = [[str(a) for a in p] for p in paths]
        if not clean or not all(isinstance(p, list) for p in clean):
            raise ValueError("model config 'answer_paths' must be a non-empty list of answer-id lists")
        if counts is not None:
            counts = [int(c) for c in counts]
            if len(counts) != len(clean) or min(counts) < 0:
                raise ValueError(f"model config 'answer_path_counts' must be {len(clean)} non-negative counts "
                                 f"(one per answer path), got {len(counts)}")
        self.config["answer_paths"] = clean
        if counts is None:
            self.config.pop("answer_path_counts", None)
        else:
            self.config["answer_path_counts"] = counts

    @property
    def symbol_encoder_shared(self) -> bool:
        return "symbol_encoder" not in self._modules

    @property
    def symbol_encoder(self) -> nn.Module:
        """The image encoder itself while shared (stage 1); its own copy after stage 2 begins."""
        separate = self._modules.get("symbol_encoder")
        return self.image_encoder if separate is None else separate

    def separate_symbol_encoder(self) -> None:
        """Stage 2: give symbols their own encoder, initialised as a copy of the image encoder."""
        if not self.symbol_encoder_shared:
            return
        # Registered directly: add_module refuses the name because of the property above.
        self._modules["symbol_encoder"] = copy.deepcopy(self.image_encoder)
        self.config["symbol_encoder_shared"] = False

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights saved with a shared or a separate symbol encoder into either layout.

        Separate weights into a shared model separate it first (the weights say there are two
        encoders); shared weights into a separate model initialise the symbol encoder from the image
        encoder's weights, exactly what ``separate_symbol_encoder`` would do.
        """
        state_dict = dict(state_dict)
        has_symbol = any(k.startswith("symbol_encoder.") for k in state_dict)
        if has_symbol and self.symbol_encoder_shared:
            self.separate_symbol_encoder()
        elif not has_symbol and not self.symbol_encoder_shared:
            for k in [k for k in state_dict if k.startswith("image_encoder.")]:
                state_dict["symbol_encoder." + k[len("image_encoder."):]] = state_dict[k]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ----------------------------------------------------------------------------- encoding
    def tokenize(self, texts: Sequence[str]):
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = self.image_encoder(x)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_symbol(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        f = self.symbol_encoder(x)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens, normalize: bool = True) -> torch.Tensor:
        tokens = self._tokens_to(tokens)
        f = self.text_encoder(tokens)
        return F.normalize(f, dim=-1) if normalize else f

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of the image-only baseline head (``num_classes`` must be set)."""
        if self.classifier is None:
            raise RuntimeError("this model has no classifier head: build it with config num_classes=<int>")
        return self.classifier(self.encode_image(images, normalize=False))

    def scale(self) -> torch.Tensor:
        """exp(logit_scale): the factor the losses multiply cosines by (kept <= 100 by the post-step clamp)."""
        return self.logit_scale.exp()

    def forward(self, images=None, text_tokens=None, symbol_images=None, text_index=None,
                symbol_index=None) -> dict[str, Any]:
        """L2-normalised features for whatever modalities are given, plus ``logit_scale`` (exp'd).

        With ``text_index`` / ``symbol_index`` this is ``forward_features`` (once-per-class rows
        expanded per sample); going through ``forward`` lets DistributedDataParallel see the call.
        """
        return self.forward_features(images, text_tokens, text_index, symbol_images, symbol_index)

    def forward_features(
        self,
        images: torch.Tensor | None = None,
        text_tokens=None,
        text_index: torch.Tensor | None = None,
        symbol_images: torch.Tensor | None = None,
        symbol_index: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Per-sample features when texts and symbols are encoded once per distinct row.

        ``text_tokens`` / ``symbol_images`` hold the distinct rows (see ``ClassBank.batch``);
        ``text_index`` / ``symbol_index`` (B,) map each sample to its row. Indexing after encoding
        gives the same loss and gradients as encoding every sample's own copy.
        """
        out: dict[str, Any] = {"logit_scale": self.scale()}
        if images is not None:
            out["image_features"] = self.encode_image(images)
        if text_tokens is not None:
            f = self.encode_text(text_tokens)
            out["text_features"] = f if text_index is None else f[text_index.to(f.device)]
        if symbol_images is not None:
            f = self.encode_symbol(symbol_images)
            out["symbol_features"] = f if symbol_index is None else f[symbol_index.to(f.device)]
        return out

    def _tokens_to(self, tokens):
        device = self.logit_scale.device
        if isinstance(tokens, dict):
            return {k: v.to(device) for k, v in tokens.items()}
        return tokens.to(device)

    # ----------------------------------------------------------------------------- locking
    def held_norms(self) -> list[nn.Module]:
        return batch_norms(self) if self.freeze_bn_stats else []

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the visual encoder(s) but their last ``unlocked_groups`` groups (projection is last)."""
        lock_image(self.image_encoder, unlocked_groups, freeze_bn_stats)
        if not self.symbol_encoder_shared:
            lock_image(self.symbol_encoder, unlocked_groups, freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        lock_text(self.text_encoder, unlocked_layers, freeze_layer_norm)

    # ----------------------------------------------------------------------------- preprocessing
    def eval_transform(self) -> T.EvalTransform:
        return T.eval_transform(self.image_size, self.image_mean, self.image_std, self.image_crop)

    def train_transform(self, strength: float = 1.0) -> T.TrainTransform:
        return T.train_transform(self.image_size, self.image_mean, self.image_std, strength, crop=self.image_crop)

    def symbol_transform(self, train: bool = False) -> T.SymbolTransform:
        return T.symbol_transform(self.image_size, self.image_mean, self.image_std, train)

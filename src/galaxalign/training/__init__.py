"""Training: two-stage GalaxAlign fine-tuning and the baselines, from a YAML config.

``load_config(path_or_name, overrides)`` and ``train(config, progress=True)`` are the front door;
the loop, schedule, checkpoints and distributed set-up each live in their own module.
"""
from galaxalign.training.config import ConfigError, load_config, parse_override, shipped_configs
from galaxalign.training.trainer import TrainResult, train

METHODS = ("galaxalign", "image_text", "image_only", "zero_shot")

__all__ = ["load_config", "train", "TrainResult", "ConfigError", "parse_override", "shipped_configs", "METHODS"]

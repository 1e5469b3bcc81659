"""Training: two-stage GalaxAlign fine-tuning and the baselines, from a YAML config.

``load_config(path_or_name, overrides)`` and ``train(config, progress=True)`` are the front door;
the loop, schedule and checkpoints each live in their own module (process groups: galaxalign.distributed).
"""
from galaxalign.training.config import METHODS, ConfigError, load_config, parse_override, shipped_configs

__all__ = ["load_config", "train", "TrainResult", "ConfigError", "parse_override", "shipped_configs", "METHODS"]


def __getattr__(name):
    # The loop pulls in the model, datasets and data loaders; import it only when asked for, so that
    # ``.config`` can be used without it.
    if name in ("train", "TrainResult"):
        from galaxalign.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'galaxalign.training' has no attribute {name!r}")

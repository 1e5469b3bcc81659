"""Model selection: the best validation epoch of a stage (kept and restored with the feature cache)
and the best checkpoint of a run (``keep_best_checkpoint``), both by the method's selection metric
(``Method.selection_metric``: its primary classifier's validation accuracy).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from galaxalign.runtime import atomic_path


class BestEpoch:
    """The best validation epoch of a stage: its trainable weights (and normaliser buffers), kept in
    memory and in a small safetensors file (score and epoch in its metadata) so that a resumed run
    still knows it."""

    def __init__(self, path: Path, metric: str):
        self.path = path
        self.metric = metric
        self.score: float | None = None
        self.epoch: int | None = None
        self.state: dict | None = None
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
            self.state = {k: f.get_tensor(k) for k in f.keys()}
        self.score, self.epoch = float(meta["score"]), int(meta["epoch"])

    def reset(self) -> None:
        self.score = self.epoch = self.state = None
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _trainable(model: nn.Module) -> dict:
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
                if k in names or k.endswith(("feature_mean", "feature_std"))}

    def offer(self, model: nn.Module, row: dict, epoch: int) -> None:
        value = row.get(self.metric)
        if value is None or (self.score is not None and float(value) <= self.score):
            return
        from safetensors.torch import save_file

        self.score, self.epoch, self.state = float(value), int(epoch), self._trainable(model)
        with atomic_path(self.path) as tmp:
            save_file(self.state, str(tmp), metadata={"score": repr(self.score), "epoch": str(self.epoch)})

    def restore(self, model: nn.Module) -> int | None:
        """Load the best epoch's weights into ``model`` (every rank); returns that epoch or None."""
        if self.state is None:
            self._read()
        if self.state is None:
            return None
        device = next(model.parameters()).device
        missing = set(self.state) - set(model.state_dict())
        if missing:
            raise RuntimeError(f"{self.path}: best-epoch weights name parameters the model lacks: {sorted(missing)[:5]}")
        model.load_state_dict({**model.state_dict(), **{k: v.to(device) for k, v in self.state.items()}})
        return self.epoch


def new_best(row: dict, best: tuple[str, float] | None, metric: str) -> tuple[str, float] | None:
    """``(key, value)`` when the validation ``row`` beats ``best`` by ``metric`` (or, when the row lacks
    it, by its first ``val_acc*`` key); None otherwise."""
    key = metric if metric in row else next((k for k in row if k.startswith("val_acc")), None)
    if key is None:
        return None
    if best is None or row[key] > best[1]:
        return (key, float(row[key]))
    return None

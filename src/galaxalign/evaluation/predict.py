"""Classify individual inputs (galaxy images, symbol sketches, text) with a trained model.

The Python side of ``galaxalign classify``: a notebook user can call :class:`Classifier` directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from galaxalign.evaluation.classifiers import prototype_classify


class Classifier:
    """A loaded model plus its class prototypes (or head), ready to label inputs."""

    def __init__(self, model, taxonomy, prototypes: str | None = None):
        self.model = model.eval()
        self.taxonomy = taxonomy
        has_head = getattr(model, "classifier", None) is not None
        if prototypes == "head" and not has_head:
            raise ValueError("--prototypes head: this model has no classifier head (only image-only baselines do)")
        # OUR CHOICE: default to the head for an image-only model, else text and symbol prototypes fused.
        self.prototypes = prototypes or ("head" if has_head else "both")
        self._protos: dict[str, np.ndarray] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, prototypes: str | None = None) -> "Classifier":
        from galaxalign.inference import load_model

        model, taxonomy = load_model(checkpoint)
        return cls(model, taxonomy, prototypes)

    def class_prototypes(self, modality: str) -> np.ndarray:
        if modality not in self._protos:
            from galaxalign.inference import class_prototypes

            self._protos[modality] = np.asarray(class_prototypes(self.model, self.taxonomy, modality=modality), np.float32)
        return self._protos[modality]

    def _record(self, name: str, scores: np.ndarray) -> dict:
        names = self.taxonomy.class_names
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            # A broken model (NaN weights, an overflow): no class is more likely than another, and
            # NaN is not JSON. The input is reported as not classified.
            return {"file": name, "error": f"{name}: the model's class scores are not finite (NaN or infinity); "
                    "the checkpoint is broken (e.g. NaN weights from a diverged run)"}
        pid = int(np.argmax(scores))
        return {
            "file": name,
            "predicted_class": names[pid],
            "predicted_id": pid,
            "scores": {n: round(float(s), 6) for n, s in zip(names, scores)},
        }

    def score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        proto_mod = "both" if self.prototypes == "head" else self.prototypes
        return prototype_classify(emb, self.class_prototypes(proto_mod))[1]

    def classify(self, inputs: Sequence[str], modality: str = "image", batch_size: int = 32) -> Iterator[dict]:
        """Yield one record per input in order; an unreadable input yields ``{"file", "error"}``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
        if modality == "text":
            from galaxalign.inference import encode_texts

            texts = [str(t) for t in inputs]
            for s in range(0, len(texts), batch_size):
                chunk = texts[s : s + batch_size]
                emb = np.asarray(encode_texts(self.model, chunk), np.float32)
                proto_mod = "symbol" if self.prototypes in ("head",) else self.prototypes
                scores = prototype_classify(emb, self.class_prototypes(proto_mod))[1]
                for t, sc in zip(chunk, scores):
                    yield self._record(t, sc)
            return
        if modality not in ("image", "symbol"):
            raise ValueError(f"unknown modality {modality!r}; expected image, symbol or text")
        from galaxalign.datasets import read_image
        from galaxalign.inference import embed_arrays

        use_head = modality == "image" and self.prototypes == "head"
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> Iterator[dict]:
            if not pending:
                return
            images = [img for _, img in pending]
            if use_head:
                from galaxalign.evaluation.embeddings import head_scores

                scores = head_scores(self.model, images)
            else:
                scores = self.score_embeddings(np.asarray(embed_arrays(self.model, images, modality), np.float32))
            for (name, _), sc in zip(pending, scores):
                yield self._record(name, sc)
            pending.clear()

        for path in inputs:
            try:
                if not Path(path).is_file():
                    raise FileNotFoundError(f"{path}: no such file")
                image = read_image(str(path))
            except Exception as exc:  # one bad file must not stop the others
                yield from flush()  # keep output in input order
                yield {"file": str(path), "error": str(exc) if str(path) in str(exc) else f"{path}: {exc}"}
                continue
            pending.append((str(path), image))
            if len(pending) >= batch_size:
                yield from flush()
        yield from flush()


__all__ = ["Classifier"]

"""The run's logs: ``train_log.csv`` (one row per optimiser step), ``val_log.csv`` (one row per
validation) and, optionally, TensorBoard scalars. Rank 0 writes; the rows are also kept in memory
(``history``, returned by ``train``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"


class RunLog:
    """CSV (always) and TensorBoard (optional) logs, rank 0 only. On resume, rows past the checkpoint's
    step (written by the killed run after its last checkpoint) are dropped so the logs read as one run."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.out = out
        self.history: list[dict] = []
        self._headers: dict[str, list[str]] = {}
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in (TRAIN_LOG, VAL_LOG):
            path = out / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
                self._rewrite(path, rows)
                self.history.extend(_typed(r) for r in rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard not installed: CSV still has everything
                self.writer = None

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        if not rows:
            path.unlink(missing_ok=True)
            return
        fields = list(rows[0].keys())
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def _append(self, name: str, row: dict) -> None:
        """Append one CSV row. The header is read once per file and cached; the file is rewritten
        only when a row brings a column the header lacks (e.g. a loss term that starts in stage 2)."""
        path = self.out / name
        header = self._headers.get(name)
        if header is None and path.exists():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
        new_columns = [k for k in row if k not in (header or ())]
        if header is None or not path.exists():
            header = list(row)
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header, restval="")
                w.writeheader()
                w.writerow(row)
        elif new_columns:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            header = header + new_columns
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=header, restval="")
                w.writeheader()
                w.writerows(rows)
                w.writerow(row)
        else:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header, restval="").writerow(row)
        self._headers[name] = header

    def _log(self, name: str, row: dict, tag: str, keep) -> None:
        self.history.append(row)
        if not self.enabled:
            return
        self._append(name, row)
        if self.writer is not None:
            for k, v in row.items():
                if keep(k) and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{tag}/{k.removeprefix('val_')}", v, row["step"])

    def train_row(self, row: dict) -> None:
        self._log(TRAIN_LOG, row, "train", lambda k: k not in ("step", "epoch", "stage", "kind"))

    def val_row(self, row: dict) -> None:
        self._log(VAL_LOG, row, "val", lambda k: k.startswith("val_"))

    def flush(self, pending: list[dict], bar=None) -> None:
        """Read the pending steps' device scalars in ONE transfer and write their train-log rows."""
        if not pending:
            return
        keys = [list(r["_device"]) for r in pending]
        flat = torch.stack([v.reshape(()).float() for r in pending for v in r["_device"].values()]).tolist()
        at = 0
        for r, ks in zip(pending, keys):
            vals = dict(zip(ks, flat[at : at + len(ks)]))
            at += len(ks)
            scale = vals.pop("logit_scale")
            row = {k: v for k, v in r.items() if k != "_device"}
            row = {**{k: row[k] for k in ("kind", "step", "epoch", "stage")}, **{k: round(v, 6) for k, v in vals.items()},
                   "lr": row["lr"], "logit_scale": round(scale, 4), "step_seconds": row["step_seconds"],
                   "data_seconds": row["data_seconds"], "seconds": row["seconds"]}
            if self.enabled:
                self.train_row(row)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.set_postfix(loss=f"{vals.get('loss', float('nan')):.4f}")
        pending.clear()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _typed(row: dict) -> dict:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v in ("", None):
            continue
        try:
            f = float(v)
            out[k] = int(f) if k in ("step", "epoch", "stage") else f
        except ValueError:
            out[k] = v
    return out

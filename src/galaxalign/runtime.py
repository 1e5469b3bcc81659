"""Where things live and how they are written: cache folders, devices, atomic writes.

Shared by every layer (data, model, trainer, index) so that "atomic" and "cache" mean one thing.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

DEMO_DIR = Path("runs") / "demo"


def cache_dir() -> Path:
    """Cache for rendered surveys and other derived data: $GALAXALIGN_CACHE or ~/.cache/galaxalign."""
    root = Path(os.environ.get("GALAXALIGN_CACHE") or Path.home() / ".cache" / "galaxalign")
    root.mkdir(parents=True, exist_ok=True)
    return root


def pick_device(requested: str = "auto") -> "torch.device":  # noqa: F821
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available on this machine")
    return dev


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it over ``final`` (atomic on POSIX).

    A crash mid-write leaves the previous file intact and no half-written one under the final name.
    Works for files and folders (the temporary is a path only; the caller creates it).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir() and final.is_dir():
            # Swap folders: move the old one aside first, then rename, then drop the old one.
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp_path, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            if tmp_path.is_dir():
                shutil.rmtree(tmp_path, ignore_errors=True)
            else:
                tmp_path.unlink(missing_ok=True)

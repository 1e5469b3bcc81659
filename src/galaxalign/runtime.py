"""Where things live and how they are written: cache folders, devices, atomic writes.

Shared by every layer (data, model, trainer, index) so that "atomic" and "cache" mean one thing.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

DEMO_DIR = Path("runs") / "demo"


def cache_dir() -> Path:
    """Cache for rendered surveys and other derived data: $GALAXALIGN_CACHE or ~/.cache/galaxalign."""
    root = Path(os.environ.get("GALAXALIGN_CACHE") or Path.home() / ".cache" / "galaxalign")
    root.mkdir(parents=True, exist_ok=True)
    return root


DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_HELP = "auto, cpu, cuda, cuda:N (the N-th GPU) or mps"


def check_device_name(requested) -> str:
    """``requested`` if it names a device type GalaxAlign runs on (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``, ``mps``), else a ValueError saying which are; no torch import, so a bad ``--device``
    or ``device=`` is refused before any work."""
    text = str(requested).strip() if isinstance(requested, str) else None
    if text == "auto":
        return text
    kind, sep, number = (text or "").partition(":")
    if kind not in DEVICE_TYPES or (sep and not (number.isdigit() and kind == "cuda")):
        raise ValueError(f"unknown device {requested!r}: expected {DEVICE_HELP}")
    return text


def pick_device(requested: str = "auto") -> "torch.device":  # noqa: F821
    """The torch device for ``requested`` (:func:`check_device_name`); a ValueError when this machine lacks it."""
    import torch

    if check_device_name(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(str(requested).strip())
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {requested!r} requested but Apple's MPS is not available on this machine")
    return dev


# OUR CHOICE: a temporary left by a writer on another machine (shared filesystem), or in the
# naming of earlier versions that recorded no writer, counts as stale after these many seconds.
STALE_FOREIGN_SECONDS = 24 * 3600
STALE_UNNAMED_SECONDS = 15 * 60

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_OWNED = re.compile(r"^(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")
_UNNAMED = re.compile(r"^[A-Za-z0-9_]{8}$")  # tempfile.mkstemp's names, as written before


def _old_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_tree(path: str | os.PathLike) -> None:
    """Flush a file, or every file and folder under ``path``, to disk (before a rename publishes it)."""
    path = Path(path)
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                p = Path(root) / name
                if not p.is_symlink():
                    _fsync_file(p)
            _fsync_dir(Path(root))
    elif path.is_file():
        _fsync_file(path)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no libc symbol (musl before 1.2.5, old glibc)
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # kernel or filesystem without exchange: the caller swaps in two renames
    raise OSError(err, os.strerror(err), str(b))


def recover_path(final: str | os.PathLike) -> bool:
    """Repair what a crash in the middle of a folder swap left behind; True when ``final`` was restored.

    The two-rename swap (used where an atomic exchange is not available) moves ``final`` to
    ``.final.old`` and then the new folder to ``final``. Killed between the two, ``final`` is
    missing and the previous version waits under ``.final.old``: it is moved back. Killed after
    the second rename, the leftover ``.final.old`` is removed. Readers call this before opening.
    """
    final = Path(final)
    old = _old_name(final)
    if not old.exists():
        return False
    if not final.exists():
        os.replace(old, final)
        _fsync_dir(final.parent)
        return True
    shutil.rmtree(old, ignore_errors=True)
    return False


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs on this machine; None where that cannot be asked safely."""
    if os.name == "nt":
        return None  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists under another user (or cannot tell): not ours to remove
    return True


def stale_temporaries(final: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Temporaries of earlier writes of ``final`` whose writer is gone (killed, crashed).

    A temporary is named ``.NAME.HOST-PID-TOKEN.tmp``: stale when HOST is this machine and PID is
    no longer running; from another machine, or named the old way (``.NAME.XXXXXXXX.tmp``), when
    older than :data:`STALE_FOREIGN_SECONDS` / :data:`STALE_UNNAMED_SECONDS`.
    """
    final = Path(final)
    folder, prefix = final.parent, f".{final.name}."
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    stale = []
    for p in folder.iterdir():
        name = p.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        middle = name[len(prefix) : -len(".tmp")]
        try:
            age = now - p.lstat().st_mtime
        except OSError:
            continue
        owned = _OWNED.match(middle)
        if owned:
            pid = int(owned["pid"])
            if owned["host"] == _HOST and pid != os.getpid():
                alive = _pid_alive(pid)
                if alive is False or (alive is None and age > STALE_FOREIGN_SECONDS):
                    stale.append(p)
            elif age > STALE_FOREIGN_SECONDS:
                stale.append(p)
        elif _UNNAMED.match(middle) and age > STALE_UNNAMED_SECONDS:
            stale.append(p)
    return sorted(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class DiskFullError(OSError):
    """A write that ran out of disk space (errno ENOSPC); the message names the path and the sizes,
    and the previous version of what was being written is left in place."""

    def __str__(self) -> str:
        return str(self.strerror)  # one line, without the "[Errno 28]" prefix


# A write that fails with less than this much space left on its disk failed for want of space,
# whatever the library says (torch's writer reports a full disk as "unexpected pos").
NEARLY_FULL_BYTES = 1024 * 1024
_MB = 1024 * 1024


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the disk of ``path`` (or of its nearest existing parent); None if unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def _megabytes(n: int) -> str:
    return f"{max(n, 0) / _MB:.1f}"


def disk_full(final: str | os.PathLike, needed: int | None = None, exact: bool = False) -> DiskFullError:
    """The one-line error for a write of ``final`` that does not fit: "no space left on device, N MB
    needed at PATH (M MB free)"; ``needed`` is the size of the write (``exact``) or a lower bound."""
    free = free_bytes(Path(final).parent)
    need = "" if needed is None else f", {'' if exact else 'at least '}{_megabytes(needed)} MB needed"
    have = "" if free is None else f" ({_megabytes(free)} MB free)"
    return DiskFullError(errno.ENOSPC, f"no space left on device{need} at {final}{have}; "
                         "nothing was replaced: free some space and run it again")


def check_free_space(final: str | os.PathLike, needed: int) -> None:
    """Raise :class:`DiskFullError` before a write of ``needed`` bytes at ``final`` that cannot fit."""
    free = free_bytes(Path(final).parent)
    if free is not None and int(needed) > free:
        raise disk_full(final, int(needed), exact=True)


def is_disk_full(exc: BaseException, where: str | os.PathLike) -> bool:
    """Whether ``exc`` (raised while writing under ``where``) means the disk is full."""
    if isinstance(exc, DiskFullError):
        return False  # already said
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    if "no space left on device" in str(exc).lower():
        return True  # faiss and HDF5 quote strerror
    free = free_bytes(where)
    return free is not None and free < NEARLY_FULL_BYTES


def _size_of(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
        return path.lstat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success publish it under ``final``.

    A crash mid-write leaves the previous version intact and no half-written one under the final
    name. Works for files and folders (the temporary is a path only; the caller creates it). The
    temporary is flushed to disk (files and folders) before the rename, and the parent folder
    after it. A folder replaces a folder in one atomic exchange where the OS offers it, else in two
    renames that :func:`recover_path` repairs if a crash falls between them. Temporaries left by
    killed writes of the same ``final`` are removed first (:func:`stale_temporaries`).

    A full disk is an expected condition: ``needed`` (bytes, when the caller knows the size) is
    checked against the free space first, and a write that runs out of space anyway raises
    :class:`DiskFullError` ("no space left on device, N MB needed at PATH") with the previous
    version untouched and the temporary removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_path(final)
    for stale in stale_temporaries(final):
        _remove(stale)
    if needed is not None:
        check_free_space(final, needed)
    tmp_path = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp_path
        fsync_tree(tmp_path)
        if tmp_path.is_dir() and final.is_dir():
            _swap_folders(tmp_path, final)
        else:
            os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc, final.parent):
            written = _size_of(tmp_path)
            _remove(tmp_path)  # before the free space is measured for the message
            raise disk_full(final, max(int(needed or 0), written + 1)) from None
        raise
    finally:
        if tmp_path.exists() or tmp_path.is_symlink():
            _remove(tmp_path)


def _swap_folders(new: Path, final: Path) -> None:
    if _exchange(new, final):
        return  # ``new`` now holds the previous version; the caller's clean-up removes it
    old = _old_name(final)
    if old.exists():
        shutil.rmtree(old)
    os.replace(final, old)
    _fsync_dir(final.parent)
    # A crash here leaves no ``final``: recover_path() moves ``old`` back on the next open or write.
    os.replace(new, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)

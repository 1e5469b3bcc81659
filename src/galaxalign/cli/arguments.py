"""Argument types shared by the sub-commands: numbers checked when the command line is parsed,
before any work starts, so a bad flag is one line from argparse naming it."""
from __future__ import annotations

import argparse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, counts)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def bounded_int(low: int, high: int):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def tcp_port(text: str) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    return bounded_int(0, 65535)(text)


def check_out_folder(path: str, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be written: a file is in its place, a
    parent is a file, or the nearest existing parent is not writable."""
    import os
    from pathlib import Path

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    parent = p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {parent} is not writable")

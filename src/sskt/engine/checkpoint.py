"""Atomic checkpoint files: write to a temporary file, fsync, then rename over the old one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sskt.errors import UserError


def save_atomic(state: dict, path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` so that ``path`` always holds either the old or the new checkpoint,
    never a torn one (a kill mid-write leaves only the temporary file behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself is durable only once the directory entry is flushed.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs); a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}") from exc

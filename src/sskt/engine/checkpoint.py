"""Atomic checkpoint files: write to a temporary file, fsync, then rename over the old one."""

from __future__ import annotations

from pathlib import Path

import torch

from sskt.errors import UserError
from sskt.files import write_atomic


def save_atomic(state: dict, path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` so that ``path`` always holds either the old or the new checkpoint,
    never a torn one; a failed write leaves no temporary file behind."""
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs); a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}") from exc

"""Provenance of a run: the git commit and the versions of the software that shapes its numbers."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import lightning_fabric
import torch
import torchvision

import sskt


def git_commit() -> str | None:
    """The commit of the checkout sskt runs from, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(sskt.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    """Versions of the software that shapes the numbers."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning_fabric.__version__,
        "sskt": sskt.__version__,
    }

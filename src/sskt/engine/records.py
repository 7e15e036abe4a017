"""Provenance of a run: the git commit, the versions of the software that shapes its numbers, and the machine that
timed it (training seconds are only comparable between runs on the same kind of machine)."""

from __future__ import annotations

import os
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The machine's 1-minute load average (runnable processes), or NaN where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine(device: torch.device) -> dict[str, object]:
    """What timed the run: CPU model, cores, the threads torch used, and the accelerator (its name on CUDA)."""
    out: dict[str, object] = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    out["accelerator"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return out

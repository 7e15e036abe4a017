"""The run directory: resolved config, per-epoch records, summary, provenance (git commit, versions)."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path

import sskt
from sskt.config import TrainConfig
from sskt.config_io import save_config
from sskt.errors import UserError

RECORDS = "records.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
WEIGHTS = "model.safetensors"


class RunDir:
    """Paths and files of one run directory (layout in docs/CONTRACTS.md)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / RECORDS
        self.summary = self.root / SUMMARY
        self.config = self.root / CONFIG
        self.checkpoint = self.root / CHECKPOINT
        self.weights = self.root / WEIGHTS
        self.tb = self.root / "tb"

    def prepare(self, cfg: TrainConfig) -> None:
        """Create the directory and write ``config.yaml``; refuse to clobber an earlier run unless resuming."""
        if not cfg.resume and self.records.exists() and self.records.stat().st_size > 0:
            raise UserError(f"run directory {str(self.root)!r} already has records; set --resume true or pick --out")
        self.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config)

    def truncate_records(self, epochs_done: int) -> None:
        """Keep only the first ``epochs_done`` records: a run killed after writing a record but before its
        checkpoint must not list that epoch twice once it resumes."""
        kept = [r for r in read_records(self.root) if r["epoch"] <= epochs_done]
        self.records.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append_record(self, record: dict) -> None:
        with open(self.records, "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.summary.write_text(json.dumps(_finite(summary), indent=2) + "\n")


def read_records(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of a run, in order."""
    path = Path(run_dir) / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def normalise_summary(summary: dict) -> dict:
    """A summary in today's terms. Runs made before the validation split kept one ``best``, chosen on the test set
    and without ``selected_by``: that is an oracle figure, so it is read as ``best_test_oracle`` (and its epoch as
    ``best_test_oracle_epoch``), never as a validation-chosen ``best``."""
    if "best" in summary and "selected_by" not in summary:
        summary = dict(summary)
        summary["best_test_oracle"] = summary.pop("best")
        summary["best_test_oracle_epoch"] = summary.pop("best_epoch", None)
    return summary


def read_summary(run_dir: str | Path) -> dict:
    """``summary.json`` of a run, normalised (see ``normalise_summary``)."""
    return normalise_summary(json.loads((Path(run_dir) / SUMMARY).read_text()))


def _finite(obj: object) -> object:
    """JSON has no NaN/inf: write them as null so every reader can parse the records."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


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
    import lightning_fabric
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning_fabric.__version__,
        "sskt": sskt.__version__,
    }

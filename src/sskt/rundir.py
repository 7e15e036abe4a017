"""The run directory, read and written through one class: ``config.yaml`` (the resolved config),
``records.jsonl`` (one object per epoch), ``summary.json``, ``checkpoints/last.pt``, ``model.safetensors`` and
``tb/``. Layout and keys in docs/CONTRACTS.md. A leaf: the engine writes runs, and the experiments, the
``checkpoint:`` sources and ``evaluate`` read them, all through ``RunDir``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from sskt.config import TrainConfig
from sskt.config_io import drop_retired, load_config, save_config
from sskt.errors import UserError

RECORDS = "records.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
WEIGHTS = "model.safetensors"


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / RECORDS
        self.summary = self.root / SUMMARY
        self.config = self.root / CONFIG
        self.checkpoint = self.root / CHECKPOINT
        self.weights = self.root / WEIGHTS
        self.tb = self.root / "tb"

    @classmethod
    def containing(cls, path: str | Path) -> RunDir:
        """The run directory ``path`` belongs to: the directory itself, or the one holding its weights file or its
        checkpoint; a path in no run directory is a UserError."""
        path = Path(path)
        for candidate in (path, path.parent, path.parent.parent):
            if (candidate / CONFIG).is_file():
                return cls(candidate)
        raise UserError(f"{str(path)!r} is not a run directory, its {WEIGHTS}, or its {CHECKPOINT} (no {CONFIG} found)")

    # --- state ---------------------------------------------------------------------------------------------------
    def is_finished(self) -> bool:
        """The run wrote its summary."""
        return self.summary.is_file()

    def has_progress(self) -> bool:
        """The run trained at least part of an epoch's worth of state: a checkpoint or a non-empty record file."""
        return self.checkpoint.is_file() or (self.records.is_file() and self.records.stat().st_size > 0)

    # --- writing (the engine) ------------------------------------------------------------------------------------
    def prepare(self, cfg: TrainConfig) -> None:
        """Create the directory and write ``config.yaml``; refuse to clobber an earlier run unless resuming."""
        if not cfg.resume and self.records.exists() and self.records.stat().st_size > 0:
            raise UserError(f"run directory {str(self.root)!r} already has records; set --resume true or pick --out")
        self.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config)

    def truncate_records(self, epochs_done: int) -> None:
        """Keep only the first ``epochs_done`` records: a run killed after writing a record but before its
        checkpoint must not list that epoch twice once it resumes."""
        kept = [r for r in self.read_records() if r["epoch"] <= epochs_done]
        self.records.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def append_record(self, record: dict) -> None:
        with open(self.records, "a") as f:
            f.write(json.dumps(_finite(record)) + "\n")

    def write_summary(self, summary: dict) -> None:
        self.summary.write_text(json.dumps(_finite(summary), indent=2) + "\n")

    # --- reading (evaluate, reports, grids, checkpoint sources) --------------------------------------------------
    def read_records(self) -> list[dict]:
        """The per-epoch records, in order ([] before the first epoch)."""
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines() if line.strip()]

    def read_summary(self) -> dict:
        """``summary.json``, normalised (see ``normalise_summary``)."""
        return normalise_summary(json.loads(self.summary.read_text()))

    def read_config(self) -> TrainConfig:
        """``config.yaml`` as a TrainConfig (an older run's config upgraded through ``drop_retired``)."""
        return load_config(self.config)

    def read_config_dict(self) -> dict:
        """``config.yaml`` as nested plain data, upgraded like ``read_config`` (for runs whose config may name
        things this version no longer builds)."""
        return drop_retired(yaml.safe_load(self.config.read_text()) or {})


def normalise_summary(summary: dict) -> dict:
    """A summary in today's terms. Runs made before the validation split kept one ``best``, chosen on the test set
    and without ``selected_by``: that is an oracle figure, so it is read as ``best_test_oracle`` (and its epoch as
    ``best_test_oracle_epoch``), never as a validation-chosen ``best``."""
    if "best" in summary and "selected_by" not in summary:
        summary = dict(summary)
        summary["best_test_oracle"] = summary.pop("best")
        summary["best_test_oracle_epoch"] = summary.pop("best_epoch", None)
    return summary


def _finite(obj: object) -> object:
    """JSON has no NaN/inf: write them as null so every reader can parse the records."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj

"""The run directory, read and written through one class: ``config.yaml`` (the resolved config),
``records.jsonl`` (one object per epoch), ``summary.json``, ``checkpoints/last.pt``, ``model.safetensors`` and
``tb/``. Layout and keys in docs/CONTRACTS.md. A leaf: the engine writes runs, and the experiments, the
``checkpoint:`` sources and ``evaluate`` read them, all through ``RunDir``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import yaml

from sskt.config import TrainConfig
from sskt.config_io import config_changes, config_to_dict, drop_retired, load_config, save_config
from sskt.errors import UserError
from sskt.files import write_text_atomic

RECORDS = "records.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoints/last.pt"
WEIGHTS = "model.safetensors"
MODEL_CARD = "model.json"
"""The card of ``WEIGHTS`` (``sskt.trained.ModelCard``)."""
LOCK = ".train.lock"


class RunDir:
    """Paths and files of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records = self.root / RECORDS
        self.summary = self.root / SUMMARY
        self.config = self.root / CONFIG
        self.checkpoint = self.root / CHECKPOINT
        self.weights = self.root / WEIGHTS
        self.model_card = self.root / MODEL_CARD
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
        """The run wrote a summary that parses (a torn or empty one means it did not finish)."""
        try:
            return isinstance(json.loads(self.summary.read_text()), dict)
        except (OSError, ValueError):
            return False

    def has_progress(self) -> bool:
        """The run trained at least part of an epoch's worth of state: a checkpoint or a non-empty record file."""
        return self.checkpoint.is_file() or (self.records.is_file() and self.records.stat().st_size > 0)

    # --- writing (the engine) ------------------------------------------------------------------------------------
    def check(self, cfg: TrainConfig) -> None:
        """Refuse, before anything is written, to clobber an earlier run unless resuming, and to resume with
        settings that change results (``config.yaml`` is then left byte for byte as it was); a path that is a file
        or lies in a folder this process cannot write is refused too."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {str(self.root)!r} is a file, not a run directory; pick another --out")
        existing = next(p for p in (self.root, *self.root.absolute().parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"--out {str(self.root)!r} cannot be written ({str(existing)!r} is read-only)")
        if not cfg.resume and self.records.exists() and self.records.stat().st_size > 0:
            raise UserError(f"run directory {str(self.root)!r} already has records; set --resume true or pick --out")
        if cfg.resume:
            self._check_checkpoint_kept()
        if cfg.resume and self.config.is_file():
            stored = self.read_config()
            changes = config_changes(config_to_dict(stored), config_to_dict(cfg))
            if extends_training(stored, cfg):
                changes = [c for c in changes if not c.startswith("epochs:")]
            if changes:
                more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
                raise UserError(
                    f"--resume true on {str(self.root)!r} with other settings than it was trained with: "
                    f"{'; '.join(changes[:3])}{more}; resume with the stored config.yaml or pick another --out"
                )

    def _check_checkpoint_kept(self) -> None:
        """A resume needs ``last.pt`` once the run is past its first epoch: without it ``--resume true`` would
        retrain every epoch from scratch and rewrite the records of a run that may have finished. Only a run killed
        between its first record and its first checkpoint has records and legitimately no checkpoint."""
        if self.checkpoint.is_file():
            return
        epochs = max((r.get("epoch", 0) for r in self.read_records()), default=0)
        if self.is_finished() or epochs > 1:
            state = "finished" if self.is_finished() else f"trained {epochs} epochs"
            raise UserError(
                f"--resume true on {str(self.root)!r}: the run {state} but {CHECKPOINT} is missing, so it cannot "
                "continue and would retrain every epoch; restore the checkpoint, or to retrain from scratch move "
                "the folder away (or delete its records.jsonl and summary.json) and train without --resume"
            )

    def prepare(self, cfg: TrainConfig) -> None:
        """Write ``config.yaml`` (after ``check``, once every other check has passed)."""
        self.check(cfg)
        self.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory (``.train.lock``, an ``flock`` the kernel drops when the
        process dies) while the block runs; a second trainer on the same directory is a UserError naming the
        holder's pid."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"run directory {str(self.root)!r} is in use by another trainer ({holder}); wait for it or stop it"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode())
            yield
        finally:
            os.close(fd)

    def truncate_records(self, epochs_done: int) -> None:
        """Keep only the first ``epochs_done`` records: a run killed after writing a record but before its
        checkpoint must not list that epoch twice once it resumes."""
        kept = [r for r in self.read_records() if r["epoch"] <= epochs_done]
        write_text_atomic(self.records, "".join(json.dumps(r) + "\n" for r in kept))

    def append_record(self, record: dict) -> None:
        """Append one epoch's record; a failed write (a full disk) is one line naming the file, and the torn line
        it may leave is dropped on read, so the epoch reruns from the checkpoint before it."""
        try:
            with open(self.records, "a") as f:
                f.write(json.dumps(_finite(record)) + "\n")
        except OSError as exc:
            why = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror or type(exc).__name__
            raise UserError(f"{why} appending to {str(self.records)!r}; free space and resume") from exc

    def write_summary(self, summary: dict) -> None:
        write_text_atomic(self.summary, json.dumps(_finite(summary), indent=2) + "\n")

    # --- reading (evaluate, reports, grids, checkpoint sources) --------------------------------------------------
    def read_records(self) -> list[dict]:
        """The per-epoch records, in order ([] before the first epoch)."""
        if not self.records.exists():
            return []
        lines = [line for line in self.records.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                if i < len(lines) - 1:
                    raise UserError(f"{str(self.records)!r} line {i + 1} is not JSON (a damaged run record)") from None
                # A kill in the middle of the last append: that epoch was not checkpointed, so it reruns.
                warnings.warn(f"{self.records}: dropped a torn last line (an interrupted write)", stacklevel=2)
        return records

    def read_summary(self) -> dict:
        """``summary.json``, normalised (see ``normalise_summary``)."""
        return normalise_summary(json.loads(self.summary.read_text()))

    def read_config(self) -> TrainConfig:
        """``config.yaml`` as a TrainConfig (an older run's config upgraded through ``drop_retired``); YAML that
        does not parse, or holds a Python tag, is one line naming the file (nothing in it runs)."""
        with self._yaml_errors():
            return load_config(self.config)

    def read_config_dict(self) -> dict:
        """``config.yaml`` as nested plain data, upgraded like ``read_config`` (for runs whose config may name
        things this version no longer builds)."""
        with self._yaml_errors():
            return drop_retired(yaml.safe_load(self.config.read_text()) or {})

    @contextlib.contextmanager
    def _yaml_errors(self) -> Iterator[None]:
        try:
            yield
        except yaml.YAMLError as exc:
            why = " ".join(str(exc).split())[:160]
            raise UserError(f"{str(self.config)!r} is not plain YAML (a Python tag or a syntax error): {why}") from exc


def extends_training(stored: TrainConfig, cfg: TrainConfig) -> bool:
    """More epochs than ``stored`` ran, where nothing ``stored`` trained depends on the number of epochs: the
    learning-rate and alpha schedules are not cosine or FixMatch's (multistep milestones and warm-ups count epochs
    from the start, so the epochs already trained are what the longer run would have trained)."""
    by_length = {"cosine", "fixmatch"} & {cfg.optim.schedule, cfg.method.sskt.alpha_schedule}
    return cfg.epochs >= stored.epochs and not by_length


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

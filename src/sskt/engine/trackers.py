"""Experiment trackers: where a run's per-epoch numbers go besides ``records.jsonl``, which stays the source of truth
that reports read. ``TrainConfig.loggers`` names them: 'tensorboard' (``<run>/tb``) and 'csv' (``<run>/metrics.csv``)
by default; 'wandb' and 'mlflow' are opt-in extras (the ``wandb`` and ``mlflow`` extras of the package), imported
only when chosen.

Every tracker is a Fabric ``Logger``: the loop calls ``fabric.log_dict(tracker_metrics(record), step=epoch)`` on
every rank and only rank 0 writes. Names follow the ``train/``, ``val/``, ``test/`` convention (``train/loss``,
``train/lr``, ``val/acc``, ``test/acc``, a method's own terms as ``train/<term>``, costs as ``cost/<key>``).

Nothing is written before the first epoch ends (the run directory stays untouched until then); at that first call a
tracker opens its run, logs the resolved config as hyperparameters once (a new tracker run only), and logs the
epochs it missed from ``records.jsonl`` (a kill between a checkpoint and its log). A resumed run continues the same
tracker run: W&B's run id and MLflow's run id and tracking URI are kept in ``<run>/trackers.json`` (written
atomically), with the last epoch each tracker logged, so a resume adds epochs without duplicates or gaps.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightning_fabric.loggers import Logger
from lightning_fabric.utilities.rank_zero import rank_zero_only

from sskt.config import TrainConfig
from sskt.config_io import config_to_dict, flatten
from sskt.errors import UserError, check_choice, install_hint
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

TRACKERS = ("tensorboard", "csv", "wandb", "mlflow")
EXTRAS = {"wandb": "wandb", "mlflow": "mlflow"}
"""Trackers that need an optional package: logger name -> the module it imports (the extra has the same name)."""
STATE = "trackers.json"
"""Per tracker: its run's ids and the last epoch it logged."""
METRICS_CSV = "metrics.csv"
COST_KEYS = frozenset(
    {"epoch_seconds", "cpu_seconds", "load_1min", "images_per_second", "train_seconds", "images_seen"}
    | {"train_cpu_seconds", "precise_bn_seconds"}
)
"""Record keys that say what an epoch cost, not what it learnt: logged as ``cost/<key>``."""
RENAMED = {"train_loss": "train/loss", "lr": "train/lr"}


# --- names -----------------------------------------------------------------------------------------------------
def metric_name(key: str) -> str:
    """A record key as a tracker name: ``val_acc`` -> ``val/acc``, ``peer1_test_acc`` -> ``test/peer1_acc``,
    ``train_loss`` -> ``train/loss``, ``epoch_seconds`` -> ``cost/epoch_seconds``, a method's term ``aux_places``
    -> ``train/aux_places``."""
    if key in RENAMED:
        return RENAMED[key]
    if key in COST_KEYS:
        return f"cost/{key}"
    for split in ("val", "test"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key[len(split) + 1 :]}"
        if f"_{split}_" in key:  # a peer's metric: the network's prefix stays on the name
            prefix, name = key.split(f"_{split}_", 1)
            return f"{split}/{prefix}_{name}"
    return f"train/{key}"


def tracker_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch's record as tracker scalars (numbers only; ``epoch`` is the step, not a metric)."""
    return {
        metric_name(k): float(v)
        for k, v in record.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    }


# --- choosing --------------------------------------------------------------------------------------------------
def check_loggers(names: Iterable[str]) -> list[str]:
    """``names`` without repeats; an unknown name, or an extra whose package is missing, is one line."""
    names = list(dict.fromkeys(names))
    for name in names:
        check_choice("logger", name, TRACKERS)
        module = EXTRAS.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f"logger {name!r} needs its package: {install_hint(name)} (or drop it from loggers)")
    return names


def build_trackers(cfg: TrainConfig, run: RunDir) -> list[Logger]:
    """The trackers ``cfg.loggers`` names, for Fabric's ``loggers``; nothing is opened or written yet."""
    return [TRACKER_CLASSES[name](run, cfg) for name in check_loggers(cfg.loggers)]


# --- state in the run directory --------------------------------------------------------------------------------
def read_state(run: RunDir) -> dict[str, dict]:
    """``trackers.json`` ({} before any tracker logged; a damaged file is read as empty: the trackers start anew)."""
    try:
        state = json.loads((run.root / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(run: RunDir, key: str, value: dict) -> None:
    state = read_state(run) | {key: value}
    write_text_atomic(run.root / STATE, json.dumps(state, indent=2) + "\n")


# --- the common part -------------------------------------------------------------------------------------------
class Tracker(Logger):
    """A tracker of one run: opened at the first epoch it logs (rank 0 only), then one ``write`` per epoch.

    Subclasses implement ``open(state) -> state`` (start or resume the tracker's run; ``state`` is what the last
    ``open`` returned, None for a new one), ``write(metrics, epoch)``, ``hyperparams(config)`` and ``close()``."""

    key = ""

    def __init__(self, run: RunDir, cfg: TrainConfig) -> None:
        self.run, self.cfg, self.state = run, cfg, None

    @property
    def name(self) -> str:
        return "sskt"

    @property
    def version(self) -> str | None:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Fabric's hook; the trackers log the resolved config themselves when they open a new run."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            raise ValueError("sskt trackers log per epoch: pass step=epoch")
        if self.state is None:
            self._start(step)
        self.write(dict(metrics), step)
        self.state["logged"] = step
        save_state(self.run, self.key, self.state)
        if step >= self.cfg.epochs:  # the last epoch: flush and close (a longer resume reopens the same run)
            self.close()
            self.state = None

    def _start(self, step: int) -> None:
        """Open (or resume) the tracker's run; log the config once for a new one; log the epochs it missed."""
        stored = read_state(self.run).get(self.key)
        self.state = self.open(stored, step)
        if stored is None:
            self.hyperparams(config_to_dict(self.cfg))
        logged = int(self.state.get("logged", 0))
        for record in self.run.read_records():
            if logged < record["epoch"] < step:
                self.write(tracker_metrics(record), record["epoch"])
        save_state(self.run, self.key, self.state)

    def open(self, state: dict | None, step: int) -> dict:
        raise NotImplementedError

    def write(self, metrics: dict[str, float], epoch: int) -> None:
        raise NotImplementedError

    def hyperparams(self, config: dict) -> None:
        """Log the resolved config (nested plain data); the default logs nothing."""

    def close(self) -> None:
        """Flush and release the tracker's run."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self.state is not None:
            self.close()


def scalar_params(config: dict) -> dict[str, str | int | float | bool]:
    """The config as flat ``dotted.key -> scalar`` (None and lists as text): what TensorBoard and MLflow take."""
    flat = flatten(config)
    return {k: v if isinstance(v, str | int | float | bool) else json.dumps(v) for k, v in flat.items()}


# --- the trackers ----------------------------------------------------------------------------------------------
class TensorBoardTracker(Tracker):
    """Scalars and the config's hyperparameters in ``<run>/tb`` (a resume appends a new event file there)."""

    key = "tensorboard"

    def open(self, state: dict | None, step: int) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.run.tb))
        return dict(state or {})

    def write(self, metrics: dict[str, float], epoch: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()  # once an epoch: a killed run keeps its curves

    def hyperparams(self, config: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(scalar_params(config), {}):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()


class CSVTracker(Tracker):
    """``<run>/metrics.csv``: one row per epoch (``epoch`` first, then every name seen so far), rewritten atomically
    each epoch. A resume drops the rows from its first epoch on, as ``records.jsonl`` is truncated."""

    key = "csv"

    def open(self, state: dict | None, step: int) -> dict:
        path = self.run.root / METRICS_CSV
        rows = list(csv.DictReader(io.StringIO(path.read_text()))) if path.is_file() else []
        self.rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in rows if int(r["epoch"]) < step]
        return {"logged": max((int(r["epoch"]) for r in self.rows), default=0)}

    def write(self, metrics: dict[str, float], epoch: int) -> None:
        self.rows.append({"epoch": epoch, **metrics})
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.run.root / METRICS_CSV, text.getvalue())


class WandbTracker(Tracker):
    """A W&B run named after the run directory, in project ``$WANDB_PROJECT`` (default 'sskt'); its local files go
    under ``$WANDB_DIR`` or the run directory. A resume passes the stored id with ``resume='allow'``."""

    key = "wandb"

    def open(self, state: dict | None, step: int) -> dict:
        import wandb

        state = {"logged": 0, **(state or {})}
        state.setdefault("id", secrets.token_hex(6))  # W&B ids: letters and digits
        save_state(self.run, self.key, state)  # the id first: a crash inside wandb.init still resumes this run
        self.exp = wandb.init(
            id=state["id"], resume="allow", project=os.environ.get("WANDB_PROJECT", "sskt"), name=self.run.root.name,
            dir=os.environ.get("WANDB_DIR", str(self.run.root)),
        )  # fmt: skip
        return state

    def write(self, metrics: dict[str, float], epoch: int) -> None:
        self.exp.log(metrics, step=epoch)

    def hyperparams(self, config: dict) -> None:
        self.exp.config.update(config, allow_val_change=True)

    def close(self) -> None:
        self.exp.finish()


class MLflowTracker(Tracker):
    """An MLflow run named after the run directory, in experiment ``$MLFLOW_EXPERIMENT_NAME`` (default 'sskt'), on
    MLflow's tracking URI (``$MLFLOW_TRACKING_URI``); a resume reopens the stored run on the stored URI."""

    key = "mlflow"
    PARAMS_PER_CALL = 100  # MLflow's limit on parameters in one log_batch

    def open(self, state: dict | None, step: int) -> dict:
        import mlflow
        from mlflow import MlflowClient

        if state:
            self.client, self.run_id = MlflowClient(state["tracking_uri"]), state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return dict(state)
        uri = mlflow.get_tracking_uri()
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "sskt")
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=self.run.root.name).info.run_id
        return {"logged": 0, "run_id": self.run_id, "experiment_id": experiment, "tracking_uri": uri}

    def write(self, metrics: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()])

    def hyperparams(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in scalar_params(config).items()]
        for chunk in _chunks(params, self.PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=chunk)

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    return (items[i : i + size] for i in range(0, len(items), size))


TRACKER_CLASSES: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "csv": CSVTracker,
    "wandb": WandbTracker,
    "mlflow": MLflowTracker,
}

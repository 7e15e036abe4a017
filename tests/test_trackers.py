"""Trackers (sskt.engine.trackers): the default TensorBoard + CSV, and the opt-in W&B and MLflow, each offline. A
tiny run writes its metrics under the train/val/test names; a resumed run continues the same tracker run and adds
epochs without duplicates or gaps; records.jsonl stays as it was."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
from conftest import train_killed_after_first_checkpoint

from sskt.config import TrainConfig
from sskt.engine import train
from sskt.engine.trackers import METRICS_CSV, STATE, Tracker, build_trackers, metric_name, tracker_metrics
from sskt.errors import UserError
from sskt.rundir import RunDir


class Killed(Exception):
    """A kill right after the last tracker logged the first epoch (its tracker run is open, not finished)."""


def train_killed_after_first_log(cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` until every tracker has logged epoch 1, then stop as a kill would."""
    logged = Tracker.log_metrics

    def log_then_die(self, metrics, step=None) -> None:  # noqa: ANN001 - Fabric's signature
        logged(self, metrics, step)
        if self.key == cfg.loggers[-1]:
            raise Killed

    with monkeypatch.context() as mp:
        mp.setattr(Tracker, "log_metrics", log_then_die)
        with pytest.raises(Killed):
            train(cfg)


def resume(cfg: TrainConfig) -> None:
    cfg.resume = True
    train(cfg)


def csv_epochs(run: Path) -> tuple[list[int], list[str]]:
    with open(run / METRICS_CSV) as f:
        rows = list(csv.DictReader(f))
    return [int(r["epoch"]) for r in rows], list(rows[0])


# --- names and choices -----------------------------------------------------------------------------------------
def test_record_keys_become_train_val_test_names() -> None:
    record = {"epoch": 2, "train_loss": 1.5, "lr": 0.1, "val_acc": 50.0, "test_acc": 48.0, "test_loss": 1.2}
    record |= {"aux_places": 0.3, "kd_loss": 0.2, "peer1_test_acc": 40.0, "epoch_seconds": 3.0, "flag": True}
    assert tracker_metrics(record) == {
        "train/loss": 1.5, "train/lr": 0.1, "val/acc": 50.0, "test/acc": 48.0, "test/loss": 1.2,
        "train/aux_places": 0.3, "train/kd_loss": 0.2, "test/peer1_acc": 40.0, "cost/epoch_seconds": 3.0,
    }  # fmt: skip
    assert metric_name("images_seen") == "cost/images_seen" and metric_name("primary_loss") == "train/primary_loss"


def test_an_unknown_or_missing_logger_is_one_line(tmp_path, monkeypatch) -> None:
    cfg = TrainConfig(out=str(tmp_path / "run"), loggers=["tensorboard", "neptune"])
    with pytest.raises(UserError, match=r"unknown logger 'neptune'; valid choices: csv, mlflow, tensorboard, wandb"):
        build_trackers(cfg, RunDir(cfg.out))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    cfg.loggers = ["wandb"]
    with pytest.raises(UserError, match=r"logger 'wandb' needs its package: \S*pip install (-e )?'\S*\[wandb\]'"):
        build_trackers(cfg, RunDir(cfg.out))
    assert not (tmp_path / "run").exists(), "nothing is written when the trackers are chosen"


# --- the default: TensorBoard and CSV --------------------------------------------------------------------------
def tensorboard_steps(tb: Path, tag: str) -> list[int]:
    """Every step at which ``tag`` was written, over all event files (a duplicate shows twice)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for events in sorted(tb.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return sorted(steps)


def test_default_trackers_continue_a_killed_run_without_duplicates(tiny_cfg) -> None:
    """Killed after the first checkpoint but before its log: the resumed run logs that epoch from records.jsonl,
    then the others, once each."""
    assert tiny_cfg.loggers == ["tensorboard", "csv"]
    train_killed_after_first_checkpoint(tiny_cfg)
    resume(tiny_cfg)
    run = Path(tiny_cfg.out)
    epochs, columns = csv_epochs(run)
    assert epochs == [1, 2, 3]
    assert {"epoch", "train/loss", "train/lr", "test/acc", "test/loss", "cost/epoch_seconds"} <= set(columns)
    assert tensorboard_steps(run / "tb", "train/loss") == [1, 2, 3]
    assert tensorboard_steps(run / "tb", "test/acc") == [1, 2, 3]
    records = RunDir(run).read_records()
    with open(run / METRICS_CSV) as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["test/acc"]) == pytest.approx(records[-1]["test_acc"]), "the CSV repeats records.jsonl"


# --- W&B, offline ----------------------------------------------------------------------------------------------
def wandb_records(path: Path) -> list[bytes]:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then a LevelDB log (32 KiB blocks; each chunk
    has a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    data, pos, out, buf = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's trailer too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(buf)
            buf = b""
    return out


def wandb_segments(root: Path, run_id: str) -> list[dict]:
    """Per offline segment of run ``run_id``: its history rows (``_step`` and the metrics) and config keys."""
    from wandb.proto import wandb_internal_pb2 as pb

    segments = []
    for path in sorted(root.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")):
        history, config = [], set()
        for raw in wandb_records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = record.history.item  # a name with "/" is stored as its parts
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
            elif kind == "config":
                config |= {item.key for item in record.config.update}
        segments.append({"history": history, "config": config})
    return segments


def test_wandb_offline_resumes_the_same_run(tiny_cfg, tmp_path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    tiny_cfg.loggers = ["csv", "wandb"]
    train_killed_after_first_log(tiny_cfg, monkeypatch)
    wandb.finish()  # what the killed process's exit does
    resume(tiny_cfg)
    run_id = json.loads((Path(tiny_cfg.out) / STATE).read_text())["wandb"]["id"]
    segments = wandb_segments(tmp_path, run_id)
    assert len(segments) == 2, "the resumed run continues the same W&B run id"
    steps = [row["_step"] for s in segments for row in s["history"] if "train/loss" in row]
    assert steps == [1, 2, 3]
    assert all({"train/lr", "test/acc"} <= set(row) for s in segments for row in s["history"] if "_step" in row)
    assert ["optim" in s["config"] for s in segments] == [True, False], "the config is logged once"
    assert csv_epochs(Path(tiny_cfg.out))[0] == [1, 2, 3]


# --- MLflow, a file store --------------------------------------------------------------------------------------
def test_mlflow_file_store_resumes_the_same_run(tiny_cfg, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    tiny_cfg.loggers = ["mlflow"]
    train_killed_after_first_log(tiny_cfg, monkeypatch)
    resume(tiny_cfg)
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    state = json.loads((Path(tiny_cfg.out) / STATE).read_text())["mlflow"]
    runs = client.search_runs([state["experiment_id"]])
    assert [r.info.run_id for r in runs] == [state["run_id"]], "one MLflow run, continued"
    for name in ("train/loss", "train/lr", "test/acc"):
        assert [m.step for m in client.get_metric_history(state["run_id"], name)] == [1, 2, 3], name
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == "0.05"
    assert run.data.params["out"] == tiny_cfg.out, "the resolved config"

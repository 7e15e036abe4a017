"""How a run stops (issue 26, items 6, 7 and 9): a diverged loss, a Ctrl-C at any moment, and one of several
processes that dies or hangs each end in one line from one process, with the last good checkpoint kept and nothing
left running."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
from conftest import error_line

from sskt.cli import main
from sskt.config import TrainConfig
from sskt.rundir import RunDir


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--data.root", str(data), "--data.download", "false", "--data.labels_per_class", "20"]
    return [*argv, "--data.batch_size", "50", "--epochs", "3", "--progress", "false", "--out", str(out), *extra]


# --- item 9: a non-finite loss stops the run ------------------------------------------------------------------------
def test_a_nan_loss_stops_in_one_line_naming_epoch_and_step(capsys, small_fmnist, tmp_path, monkeypatch) -> None:
    """200 images at batch 50 are 4 steps an epoch: the loss turns NaN at the 6th step, epoch 2 step 2."""
    from sskt.methods.base import Method

    real, steps = Method.training_step, []

    def diverging(self, batch):
        out = real(self, batch)
        steps.append(1)
        return dataclasses.replace(out, loss=out.loss * float("nan")) if len(steps) >= 6 else out

    monkeypatch.setattr(Method, "training_step", diverging)
    out = tmp_path / "run"
    line = error_line(capsys, _train(small_fmnist, out))
    assert "training loss became nan at epoch 2, step 2" in line and "keeps epoch 1" in line
    run = RunDir(out)
    assert [r["epoch"] for r in run.read_records()] == [1], "the diverged epoch is not recorded"
    assert torch.load(run.checkpoint, weights_only=True)["epoch"] == 1, "the last good checkpoint stays"
    assert not (out / "summary.json").exists() and not (out / "model.safetensors").exists()


def test_a_diverging_learning_rate_stops_without_a_result(capsys, small_fmnist, tmp_path) -> None:
    out = tmp_path / "run"
    line = error_line(capsys, _train(small_fmnist, out, "--optim.lr", "1e30", "--epochs", "1"))
    assert "training loss became" in line and "epoch 1, step" in line and "no checkpoint was written" in line
    assert not (out / "summary.json").exists()


# --- item 7: Ctrl-C while modules load ------------------------------------------------------------------------------
def test_an_exception_after_ctrl_c_is_the_interrupt(capsys, monkeypatch) -> None:
    """A library that catches the KeyboardInterrupt mid-import raises something else: still one line, 130."""
    import sskt.cli
    from sskt import processes

    def interrupted_import(cfg):
        processes._received.set()
        raise AttributeError("partially initialized module 'scipy' has no attribute 'x'")

    monkeypatch.setattr(sskt.cli, "train", interrupted_import)
    try:
        assert main(["train", "--resume", "false"]) == 130
    finally:
        processes._received.clear()
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: ") and "\n" not in err


def test_an_interrupt_while_modules_load_is_one_line(small_fmnist, tmp_path) -> None:
    argv = [sys.executable, "-m", "sskt", *_train(small_fmnist, tmp_path / "run")]
    for delay in (0.15, 0.6):  # the package, then torch and the training stack, loading
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
        assert err.startswith("interrupted: ") and err.count("\n") == 1, err


# --- item 6: several processes --------------------------------------------------------------------------------------
def test_several_processes_get_the_configured_timeout() -> None:
    from lightning_fabric.strategies import DDPStrategy

    from sskt.engine.distributed import fabric_strategy

    assert fabric_strategy(TrainConfig()) == "auto", "one process: Fabric's own choice"
    for strategy in ("auto", "ddp", "ddp_spawn"):
        chosen = fabric_strategy(TrainConfig(devices=2, strategy=strategy, dist_timeout=42))
        assert isinstance(chosen, DDPStrategy) and chosen._timeout == timedelta(seconds=42)
    assert fabric_strategy(TrainConfig(devices=2, strategy="dp")) == "dp"


def _two_processes(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "sskt", *_train(data, out, "--epochs", "40", "--optim.schedule", "constant"),
            "--model.name", "timm:test_convnext", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
            "--threads", "1", *extra]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "records.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    return proc


def _finish(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=120)[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def test_a_process_that_dies_is_named_in_one_line_and_none_is_left(small_fmnist, tmp_path) -> None:
    """(A stopped process, SIGSTOP, is named the same way after dist_timeout: checked by hand, since a timeout short
    enough for a test also cuts the processes' start-up on a busy machine.)"""
    proc = _two_processes(small_fmnist, tmp_path / "run")
    (child,) = _children(proc.pid)
    os.kill(child, signal.SIGKILL)
    err = _finish(proc)
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "the process of rank 1 of 2 stopped" in lines[0], err[-3000:]


def test_ctrl_c_of_several_processes_is_one_line(small_fmnist, tmp_path) -> None:
    proc = _two_processes(small_fmnist, tmp_path / "run")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group
    err = _finish(proc)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert len([x for x in err.splitlines() if x.startswith("interrupted:")]) == 1, err[-3000:]

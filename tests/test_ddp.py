"""Data parallelism that shards: each process takes rows [rank::world] of every global batch, evaluation is sharded
and reduced, and two gloo processes on CPU train the same weights as one process with the same global batch.

The network is ``timm:test_convnext`` (LayerNorm): PyTorch's SyncBatchNorm runs on GPUs only, and without it a
BatchNorm network normalises each process's half batch by its own statistics, which one process cannot reproduce.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sskt.config import TrainConfig
from sskt.data.spec import Batch
from sskt.rundir import RunDir


def test_ranks_see_disjoint_rows_whose_union_is_the_global_batch() -> None:
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    batch = Batch(
        images=images,
        labels=torch.arange(4),
        indices=torch.arange(100, 110),
        num_labeled=4,
        soft={"s": torch.arange(10).view(10, 1).float()},
        strong=-torch.arange(4, 10).view(6, 1, 1, 1).float(),
    )
    shards = [batch.shard(r, 2) for r in range(2)]
    assert [s.num_labeled for s in shards] == [2, 2]
    labelled = [s.indices[: s.num_labeled].tolist() for s in shards]
    unlabelled = [s.indices[s.num_labeled :].tolist() for s in shards]
    assert sorted(labelled[0] + labelled[1]) == [100, 101, 102, 103] and not set(labelled[0]) & set(labelled[1])
    assert sorted(unlabelled[0] + unlabelled[1]) == list(range(104, 110))
    for s in shards:  # every field follows its rows
        assert torch.equal(s.images.flatten(), (s.indices - 100).float())
        assert torch.equal(s.soft["s"].flatten(), (s.indices - 100).float())
        assert torch.equal(s.strong.flatten(), -(s.indices[s.num_labeled :] - 100).float())
        assert torch.equal(s.labels, s.indices[: s.num_labeled] - 100)
    assert batch.shard(0, 1) is batch


def _argv(data: Path, out: Path, devices: int, epochs: int = 2) -> list[str]:
    cfg = TrainConfig()
    return [
        sys.executable, "-m", "sskt", "train", "--data.name", "fashion_mnist", "--data.root", str(data),
        "--data.download", "false", "--data.labels_per_class", "10", "--data.batch_size", "20",
        "--data.eval_batch_size", "50", "--epochs", str(epochs), "--optim.lr", "0.05",
        "--optim.schedule", "constant", "--model.name", "timm:test_convnext", "--accelerator", "cpu",
        "--devices", str(devices), "--strategy", "ddp" if devices > 1 else cfg.strategy, "--threads", "1",
        "--progress", "false", "--seed", "3", "--out", str(out),
    ]  # fmt: skip


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(RunDir(a).weights), load_file(RunDir(b).weights)
    assert x.keys() == y.keys()
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


@pytest.fixture(scope="module")
def one_and_two(small_fmnist, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    for devices in (1, 2):
        done = _run(_argv(small_fmnist, root / f"p{devices}", devices))
        assert done.returncode == 0, done.stderr[-2000:]
    return {"root": root, "data": small_fmnist}


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(one_and_two) -> None:
    root = one_and_two["root"]
    assert _max_diff(root / "p1", root / "p2") < 1e-5
    one, two = RunDir(root / "p1").read_summary(), RunDir(root / "p2").read_summary()
    assert one["final"]["test_acc"] == two["final"]["test_acc"], "the sharded evaluation reduces to the whole split"
    records = RunDir(root / "p2").read_records()
    assert records[-1]["images_seen"] == 2 * 100, "images_seen counts every process's rows"


def test_a_killed_two_process_run_resumes_to_the_same_result(one_and_two, tmp_path) -> None:
    argv = _argv(one_and_two["data"], tmp_path / "killed", 2, epochs=2)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = RunDir(tmp_path / "killed")
    deadline = time.monotonic() + 240
    while not run.checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # every process of the run, mid-training
    proc.wait()
    if run.is_finished():
        pytest.skip("the run finished before it could be killed")
    resumed = _run([*argv, "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _max_diff(tmp_path / "killed", one_and_two["root"] / "p2") < 1e-6
    assert [r["epoch"] for r in run.read_records()] == [1, 2]


def test_dml_peers_stay_correct_under_two_processes(small_fmnist, tmp_path) -> None:
    """Both DML networks (each its own DDP module) train the weights of the one-process run."""
    dml = ["--method.name", "dml", "--method.dml.peers", '["timm:test_convnext"]']
    for devices in (1, 2):
        done = _run([*_argv(small_fmnist, tmp_path / f"p{devices}", devices, epochs=1), *dml])
        assert done.returncode == 0, done.stderr[-2000:]
    from sskt.engine.checkpoint import load_checkpoint

    one, two = (load_checkpoint(RunDir(tmp_path / f"p{d}").checkpoint)["method"]["networks"] for d in (1, 2))
    assert set(one) == set(two) == {"target", "peer1"}
    for name in one:
        a, b = one[name]["module"], two[name]["module"]
        assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) < 1e-5, name


def test_maxl_second_order_is_refused_under_several_processes(capsys) -> None:
    from conftest import error_line

    line = error_line(capsys, ["train", "--method.name", "maxl", "--devices", "2", "--accelerator", "cpu"])
    assert "method.maxl.second_order" in line and "2 processes" in line

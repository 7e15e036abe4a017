"""Issue 26, items 2 and 3: a resume reads the inputs the run was trained on. ``last.pt`` keeps the content digest
of the data and the weights digest of every frozen network; a resume (and a grid's drift check) that finds another
folder content or other teacher weights refuses in one line, and ``--resume true`` on a run whose checkpoint was
deleted refuses instead of retraining every epoch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import _write_idx, error_line

from sskt.cli import main
from sskt.data.datasets import read_idx
from sskt.engine.checkpoint import load_checkpoint
from sskt.rundir import RunDir


def _argv(data_root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--data.root", str(data_root), "--data.download", "false", "--data.labels_per_class", "4"]
    argv += ["--data.batch_size", "20", "--epochs", "2", "--optim.schedule", "constant", "--accelerator", "cpu"]
    return [*argv, "--progress", "false", "--out", str(out), *extra]


@pytest.fixture
def data(small_fmnist: Path, tmp_path: Path) -> Path:
    """A private copy of the small Fashion-MNIST folder, so that a test may change it."""
    return Path(shutil.copytree(small_fmnist, tmp_path / "data"))


def _swap_labels(root: Path) -> None:
    """Relabel the training images (class k becomes k+1): the same files, other content."""
    path = root / "train-labels-idx1-ubyte.gz"
    _write_idx(path, (read_idx(path).long() + 1) % 10)


def _train(capsys, argv: list[str]) -> None:
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()


def test_last_pt_records_the_data_digest(data, tmp_path, capsys) -> None:
    _train(capsys, _argv(data, tmp_path / "run"))
    inputs = load_checkpoint(RunDir(tmp_path / "run").checkpoint)["inputs"]
    assert set(inputs["data"]) == {"train", "test"} and inputs["frozen"] == {}


def test_resume_refuses_the_same_folder_with_other_content(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    _train(capsys, _argv(data, out))
    config, records = (out / "config.yaml").read_bytes(), (out / "records.jsonl").read_bytes()
    _swap_labels(data)
    line = error_line(capsys, _argv(data, out, "--resume", "true", "--epochs", "3"))
    assert "other inputs" in line and "the train data" in line
    assert (out / "config.yaml").read_bytes() == config and (out / "records.jsonl").read_bytes() == records


def test_resume_refuses_another_root_with_other_content(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    _train(capsys, _argv(data, out))
    other = Path(shutil.copytree(data, tmp_path / "other"))
    _swap_labels(other)
    assert "the train data" in error_line(capsys, _argv(other, out, "--resume", "true", "--epochs", "3"))


def test_resume_accepts_the_same_content_written_another_way(data, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "run"
    _train(capsys, _argv(data, out))
    (tmp_path / "link").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    _train(capsys, _argv(Path("link"), out, "--resume", "true", "--epochs", "3"))
    assert [r["epoch"] for r in RunDir(out).read_records()] == [1, 2, 3]


def test_resume_refuses_a_teacher_whose_weights_were_swapped(data, tmp_path, capsys) -> None:
    teacher, other = tmp_path / "teacher", tmp_path / "other_teacher"
    _train(capsys, _argv(data, teacher))
    _train(capsys, _argv(data, other, "--seed", "5"))
    student = tmp_path / "student"
    kd = ["--method.name", "kd", "--method.kd.teacher", f"checkpoint:{teacher}"]
    _train(capsys, _argv(data, student, *kd))
    shutil.copy(other / "model.safetensors", teacher / "model.safetensors")
    line = error_line(capsys, _argv(data, student, *kd, "--resume", "true", "--epochs", "3"))
    assert "frozen network 'kd_teacher'" in line and "weights" in line


def test_resume_of_a_finished_run_without_its_checkpoint_is_refused(data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    _train(capsys, _argv(data, out))
    shutil.rmtree(out / "checkpoints")
    records = (out / "records.jsonl").read_bytes()
    line = error_line(capsys, _argv(data, out, "--resume", "true"))
    assert "finished" in line and "checkpoints/last.pt is missing" in line
    assert (out / "records.jsonl").read_bytes() == records and RunDir(out).is_finished()


def test_a_run_killed_before_its_first_checkpoint_still_resumes(data, tmp_path, capsys) -> None:
    """One record and no checkpoint is a kill between the first record and the first checkpoint: that resumes."""
    out = tmp_path / "run"
    _train(capsys, _argv(data, out))
    run = RunDir(out)
    shutil.rmtree(out / "checkpoints")
    run.summary.unlink()
    run.truncate_records(1)
    _train(capsys, _argv(data, out, "--resume", "true"))
    assert [r["epoch"] for r in run.read_records()] == [1, 2] and run.is_finished()

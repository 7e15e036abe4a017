"""The run directory defends itself: resume refuses other settings, every file is written atomically, a torn last
record is dropped, and one trainer at a time holds the directory (a grid's trainer dies with its grid)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_line

from sskt.cli import main
from sskt.errors import UserError
from sskt.experiments.cells import cell_state
from sskt.files import write_atomic, write_text_atomic
from sskt.rundir import LOCK, RunDir

REPO = Path(__file__).resolve().parents[1]


def _argv(data_root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--data.root", str(data_root), "--data.download", "false", "--data.labels_per_class", "4"]
    argv += ["--data.batch_size", "20", "--epochs", "2", "--optim.schedule", "constant", "--accelerator", "cpu"]
    return [*argv, "--progress", "false", "--out", str(out), *extra]


@pytest.fixture
def finished(small_fmnist: Path, tmp_path: Path, capsys) -> Path:
    out = tmp_path / "run"
    assert main(_argv(small_fmnist, out)) == 0
    capsys.readouterr()
    return out


def test_resume_refuses_other_settings_and_leaves_config_yaml_untouched(finished, small_fmnist, capsys) -> None:
    before = (finished / "config.yaml").read_bytes()
    summary = (finished / "summary.json").read_bytes()
    err = error_line(capsys, _argv(small_fmnist, finished, "--resume", "true", "--seed", "7", "--optim.lr", "0.001"))
    assert "optim.lr: 0.1 -> 0.001" in err and "seed: 0 -> 7" in err
    err = error_line(capsys, _argv(small_fmnist, finished, "--resume", "true", "--model.name", "resnet32"))
    assert "model.name: 'resnet20' -> 'resnet32'" in err
    assert (finished / "config.yaml").read_bytes() == before and (finished / "summary.json").read_bytes() == summary


def test_resume_accepts_what_changes_no_result(finished, small_fmnist, capsys) -> None:
    more = ["--resume", "true", "--threads", "1", "--data.num_workers", "0", "--progress", "false"]
    assert main(_argv(small_fmnist, finished, *more)) == 0
    # A constant schedule does not depend on the number of epochs: training longer continues the same run.
    assert main(_argv(small_fmnist, finished, "--resume", "true", "--epochs", "3")) == 0
    assert [r["epoch"] for r in RunDir(finished).read_records()] == [1, 2, 3]
    err = error_line(capsys, _argv(small_fmnist, finished, "--resume", "true", "--epochs", "2"))
    assert "epochs: 3 -> 2" in err


def test_a_torn_last_record_is_dropped_on_resume_with_a_warning(small_fmnist, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(_argv(small_fmnist, out, "--epochs", "1")) == 0
    run = RunDir(out)
    run.summary.unlink()  # as if killed after epoch 1's checkpoint, in the middle of appending epoch 2's record
    with open(run.records, "a") as f:
        f.write('{"epoch": 2, "train_lo')
    with pytest.warns(UserWarning, match="torn last line"):
        records = run.read_records()
    assert [r["epoch"] for r in records] == [1]
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(_argv(small_fmnist, out, "--resume", "true", "--epochs", "2")) == 0
    assert [r["epoch"] for r in RunDir(out).read_records()] == [1, 2]
    run.records.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        run.read_records()


def test_atomic_writes_keep_the_old_file_and_no_temporary_on_a_full_disk(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    write_text_atomic(target, '{"ok": 1}')

    def fills_the_disk(f) -> None:
        f.write(b'{"half": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=r"no space left on device writing .*summary\.json"):
        write_atomic(target, fills_the_disk)
    assert target.read_text() == '{"ok": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    with pytest.raises(KeyboardInterrupt):  # any failure cleans up, and is not turned into something else
        write_atomic(tmp_path / "x.bin", lambda f: (_ for _ in ()).throw(KeyboardInterrupt))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_full_disk_at_the_summary_is_one_line_and_the_cell_is_not_done(small_fmnist, tmp_path, capsys, monkeypatch):
    import sskt.files

    real = sskt.files.os.replace

    def full_at_summary(src, dst) -> None:
        if str(dst).endswith("summary.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(sskt.files.os, "replace", full_at_summary)
    out = tmp_path / "run"
    err = error_line(capsys, _argv(small_fmnist, out))
    assert "no space left on device writing" in err and "summary.json" in err
    assert not (out / "summary.json").exists() and cell_state(out) == "resume"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (out / "summary.json").write_text("")  # a 0-byte summary (the old failure) does not count as done either
    assert cell_state(out) == "resume"


def test_a_second_trainer_on_the_same_directory_exits_2_naming_the_holder(small_fmnist, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sskt.rundir import RunDir\n"
         "with RunDir(sys.argv[1]).locked():\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        err = error_line(capsys, _argv(small_fmnist, out))
        assert f"pid {holder.pid}" in err and "in use by another trainer" in err
        assert not (out / "config.yaml").exists(), "nothing written by the refused trainer"
    finally:
        holder.kill()
        holder.wait()
    assert main(_argv(small_fmnist, out)) == 0, "the kernel dropped the dead holder's lock"
    assert (out / LOCK).exists()


def test_a_grid_trainer_dies_with_its_grid(tmp_path: Path) -> None:
    """The grid process is killed with SIGKILL; the child it started through the cell runner goes with it."""
    script = tmp_path / "grid.py"
    script.write_text(
        "import sys\nfrom sskt.experiments.cells import run_child\n"
        "with open(sys.argv[1], 'w') as log:\n"
        "    child = 'import os, time; print(os.getpid(), flush=True); time.sleep(120)'\n"
        "    run_child([sys.executable, '-c', child], log)\n"
    )
    log = tmp_path / "child.log"
    grid = subprocess.Popen([sys.executable, str(script), str(log)])
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and log.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(log.read_text().split()[0])
        os.kill(grid.pid, signal.SIGKILL)
        grid.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the trainer outlived its grid"
    finally:
        grid.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


# --- issue 26, item 5: a full disk in the middle of a run is one line, and the old checkpoint stays ---------------
def test_torch_save_on_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import torch

    from sskt.engine.checkpoint import save_atomic

    path = tmp_path / "checkpoints" / "last.pt"
    save_atomic({"epoch": 1}, path)

    def torn(obj, f) -> None:  # what torch's zip writer raises when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 470")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(UserError, match=r"no space left on device writing .*last\.pt"):
        save_atomic({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1} and sorted(os.listdir(path.parent)) == ["last.pt"]


def test_a_full_disk_while_appending_a_record_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import builtins

    run = RunDir(tmp_path)
    real_open = builtins.open

    def full(file, mode="r", *a, **k):
        if str(file) == str(run.records) and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", full)
    with pytest.raises(UserError, match=r"no space left on device appending to .*records\.jsonl"):
        run.append_record({"epoch": 1})


def test_a_python_tag_in_a_runs_config_yaml_is_one_line(tmp_path: Path, capsys) -> None:
    """Issue 26, item 17: nothing runs, and evaluate, predict and resume say so in one line."""
    (tmp_path / "config.yaml").write_text('seed: !!python/object/apply:os.system ["echo pwned"]\n')
    for read in (RunDir(tmp_path).read_config, RunDir(tmp_path).read_config_dict):
        with pytest.raises(UserError, match="is not plain YAML"):
            read()
    assert "not plain YAML" in error_line(capsys, ["evaluate", str(tmp_path)])

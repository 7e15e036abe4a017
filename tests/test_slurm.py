"""Grids on a cluster: the cells as a job array through submitit, here with its local executor (real processes,
no SLURM), under the local runner's rules: skip when done, refuse on drift, one task per cell."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import error_line

from sskt.experiments.grid import expand, load_grid
from sskt.experiments.slurm import submit_cells, wait_for
from sskt.rundir import RunDir

submitit = pytest.importorskip("submitit")


def _grid(tmp_path: Path, data: Path, lr: float = 0.05) -> Path:
    raw = {
        "base": [
            {
                "data": {"name": "fashion_mnist", "root": str(data), "download": False, "labels_per_class": 5},
                "epochs": 1,
                "accelerator": "cpu",
                "optim.lr": lr,
            }
        ],
        "axes": {"method.name": ["scratch"]},
        "seeds": [0, 1],
        "out": str(tmp_path / "cells"),
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_job_array_runs_each_cell_once_and_a_rerun_skips_them(small_fmnist, tmp_path) -> None:
    grid_file = _grid(tmp_path, small_fmnist)
    grid = load_grid(grid_file)
    names = [c.name for c in expand(grid)]
    executor = submitit.LocalExecutor(folder=str(tmp_path / "logs"))
    executor.update_parameters(timeout_min=10)
    jobs = submit_cells(str(grid_file), grid.out, names, 1, executor)
    assert len(jobs) == 2 and len({j.job_id for j in jobs}) == 2
    assert wait_for(jobs, names) == {n: 0 for n in names}
    assert all(RunDir(grid.out / n).is_finished() for n in names)
    again = submit_cells(str(grid_file), grid.out, names, 1, executor)
    assert wait_for(again, names) == {n: "done" for n in names}, "a finished cell is skipped, not retrained"
    # The grid file now asks for another learning rate: the task refuses the finished cell instead of mixing runs.
    _grid(tmp_path, small_fmnist, lr=0.2)
    drifted = submit_cells(str(grid_file), grid.out, names[:1], 1, executor)
    assert wait_for(drifted, names[:1]) == {names[0]: 1}


def test_slurm_submission_without_slurm_is_one_line(small_fmnist, tmp_path, capsys) -> None:
    line = error_line(capsys, ["grid", "--config", str(_grid(tmp_path, small_fmnist)), "--launcher", "slurm"])
    assert "SLURM" in line


def test_an_unknown_launcher_names_the_valid_ones(small_fmnist, tmp_path, capsys) -> None:
    line = error_line(capsys, ["grid", "--config", str(_grid(tmp_path, small_fmnist)), "--launcher", "pbs"])
    assert "'pbs'" in line and "local" in line and "slurm" in line

"""Grids on a cluster: ``sskt grid --launcher slurm`` submits the cells still to run as one SLURM job array through
submitit (the optional ``slurm`` extra). Each array task runs one cell with the local runner's rules (``run_one``):
the cell's lock, skip when done, resume from its checkpoint, and the refuse-on-drift check, made again inside the
task against the grid file as it is then. The cells' run directories must be on a file system every node sees.

    sskt grid --config configs/bench/fashion_v2_search.yaml --launcher slurm \\
        --slurm.partition gpu --slurm.gpus 1 --slurm.cpus 8 --slurm.time 240 --slurm.parallel 16

A rerun after some tasks died submits only the cells still unfinished. Without ``--slurm.wait`` the command prints
the job id and returns; with it, it waits and reports like the local runner.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sskt.errors import UserError, install_hint
from sskt.experiments.cells import cell_state
from sskt.experiments.drift import check_cells
from sskt.experiments.grid import Cell, Grid, expand, load_grid, run_one, train_argv


@dataclass
class SlurmOptions:
    """Resources of each array task."""

    partition: str | None = None
    """SLURM partition (None: the cluster's default)."""
    time: int = 240
    """Time limit per task, in minutes."""
    gpus: int = 0
    """GPUs per task."""
    cpus: int = 4
    """CPU cores per task (also the cell's torch threads)."""
    mem_gb: int | None = None
    """Memory per task in GB (None: the partition's default)."""
    parallel: int = 32
    """Array tasks running at once."""
    wait: bool = False
    """Wait for every task and report; False prints the job id and returns."""


def _submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise UserError(f"--launcher slurm needs submitit: {install_hint('slurm')}") from exc
    return submitit


def slurm_executor(folder: Path, opts: SlurmOptions) -> Any:
    """A submitit executor for SLURM with ``opts``; its logs go to ``folder``."""
    executor = _submitit().AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": opts.time,
        "cpus_per_task": opts.cpus,
        "gpus_per_node": opts.gpus,
        "slurm_array_parallelism": opts.parallel,
        "name": "sskt-grid",
    }
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    executor.update_parameters(**params)
    return executor


def run_cell_task(grid_file: str, root: str, name: str, threads: int) -> int | str:
    """One array task: the named cell of the grid file, run with the local runner's rules."""
    grid = load_grid(grid_file)
    cells = {c.name: c for c in expand(grid)}
    if name not in cells:
        raise UserError(f"the grid {grid_file!r} no longer has the cell {name!r}")
    cell, out = cells[name], Path(root)
    check_cells([(cell.name, train_argv(cell, out / cell.name), out / cell.name)], cell_state)
    return run_one(cell, out, threads)


def submit_cells(grid_file: str, root: Path, names: list[str], threads: int, executor: Any) -> list[Any]:
    """Submit one task per cell name as a job array on ``executor`` (SLURM, or submitit's local executor in tests);
    returns the submitit jobs."""
    if not names:
        return []
    with executor.batch():
        jobs = [executor.submit(run_cell_task, str(grid_file), str(root), name, threads) for name in names]
    return jobs


def wait_for(jobs: list[Any], names: list[str]) -> dict[str, int | str]:
    """Each cell's outcome once its task ends: the runner's exit status, 'busy'/'done', or 1 for a task that
    raised (its error is printed)."""
    outcomes: dict[str, int | str] = {}
    for name, job in zip(names, jobs, strict=True):
        try:
            outcomes[name] = job.result()
        except Exception as exc:  # a task that died counts as a failed cell; the others are still read
            print(f"error: cell {name}: {' '.join(str(exc).split())[:300]}")
            outcomes[name] = 1
    return outcomes


def submit_grid(grid_file: str, grid: Grid, out: Path | None, cells: list[Cell], opts: SlurmOptions) -> int:
    """``--launcher slurm``: the cells of ``grid`` still to run as one job array; exit status 1 when waiting and a
    cell failed."""
    root = out or grid.out
    check_cells([(c.name, train_argv(c, root / c.name), root / c.name) for c in cells], cell_state)
    names = [c.name for c in cells if cell_state(root / c.name) != "done"]
    try:
        jobs = submit_cells(grid_file, root, names, opts.cpus, slurm_executor(root / "slurm", opts))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # no sbatch here, or SLURM refused the array
        raise UserError(f"SLURM submission failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from exc
    print(f"grid: {len(names)} cells submitted, {len(cells) - len(names)} already done" + (
        f"; job {jobs[0].job_id.split('_')[0]}, logs in {root / 'slurm'}" if jobs else ""))  # fmt: skip
    if not opts.wait:
        return 0
    failed = {n: c for n, c in wait_for(jobs, names).items() if c not in (0, "done", "busy")}
    return 1 if failed else 0

"""Grids of training runs: a base config, axes of overrides and seeds, expanded to one run directory per cell.

A grid file (YAML, read with ``yaml.safe_load``; nothing executes)::

    base:                       # preset files (relative to this file) and/or a mapping of dotted overrides
      - ../_base/cifar10.yaml
      - {epochs: 350, method.name: sskt}
    axes:                       # the cartesian product of these lists; order fixes the directory names
      model.name: [resnet20, resnet32]
      variant:                  # a value may be a mapping of coupled overrides; 'label' names it in the
        - {label: tm_ce, head.kind: tm, method.sskt.aux_loss: ce}      # directory, 'config' adds preset files
        - {label: linear_kd, head.kind: linear, method.sskt.aux_loss: kd_legacy}
    seeds: [0, 1, 2]
    out: runs/paper/cifar10     # root of the cell directories (``--out`` overrides it)

Top-level keys starting with ``x-`` are ignored: a place for YAML anchors (``&name``) that several values share.
A string value may contain ``{seed}``, replaced by the cell's seed (``checkpoint:runs/teachers/t-seed{seed}``).

Each cell runs ``python -m sskt train`` in its own process (``out/<axis values>-seed<N>/``), so cells are
isolated and can run side by side. A cell with ``summary.json`` is done and skipped; one with a checkpoint resumes.
A cell run with other settings than the grid now gives stops the grid before it starts (``sskt.experiments.drift``).
A running cell is locked (``sskt.experiments.cells``), so several grid processes, started at different times or
on hosts sharing the folder, can work through one grid together without running a cell twice. The command,
``sskt grid``, is ``sskt.experiments.grid_cli``: it picks this runner or a SLURM job array (``sskt.experiments.slurm``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import json
import shlex
import sys
import typing
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sskt.config import TrainConfig
from sskt.config_io import flatten, read_yaml
from sskt.errors import UserError, choice_error
from sskt.experiments.cells import (
    CellRunner,
    GridResult,
    cell_state,
    claim,
    release,
    subprocess_runner,
    threads_per_cell,
)
from sskt.experiments.drift import changes_if_run, check_cells
from sskt.experiments.runs import slug

GRID_KEYS = ("base", "axes", "seeds", "out")
COUPLED_KEYS = ("label", "config")


@dataclass
class Cell:
    """One run of a grid: its directory name, extra preset files, dotted overrides and seed."""

    name: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)
    configs: list[Path] = field(default_factory=list)


@dataclass
class Grid:
    """A parsed grid file. ``axes`` maps an axis name to its values (scalars or coupled-override mappings)."""

    configs: list[Path]
    overrides: dict[str, Any]
    axes: dict[str, list[Any]]
    seeds: list[int]
    out: Path
    source: Path | None = None


# --- reading ---------------------------------------------------------------------------------------------------
def check_key(key: str) -> str:
    """Raise a UserError unless ``key`` is a dotted path to a field of ``TrainConfig``."""
    cls: Any = TrainConfig
    for i, part in enumerate(key.split(".")):
        if not dataclasses.is_dataclass(cls):
            raise UserError(f"config key {key!r}: {'.'.join(key.split('.')[:i])!r} has no sub-fields")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            prefix = ".".join(key.split(".")[:i])
            raise choice_error("config key", key, [f"{prefix}.{h}" if prefix else h for h in hints])
        cls = hints[part]
    return key


def _resolve(path: str, here: Path) -> Path:
    p = Path(path).expanduser()
    p = p if p.is_absolute() else here / p
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist")
    return p.resolve()


def _split_base(base: Any, here: Path) -> tuple[list[Path], dict[str, Any]]:
    """Preset files and dotted overrides from a grid's ``base`` (a path, a mapping, or a list of them)."""
    items = base if isinstance(base, list) else [base] if base is not None else []
    configs, overrides = [], {}
    for item in items:
        if isinstance(item, str):
            configs.append(_resolve(item, here))
        elif isinstance(item, Mapping):
            overrides.update(flatten(item))
        else:
            raise UserError(f"grid base entry {item!r}: expected a preset path or a mapping of overrides")
    return configs, {check_key(k): v for k, v in overrides.items()}


def parse_grid(raw: Mapping[str, Any], here: Path = Path("."), source: Path | None = None) -> Grid:
    """Validate a grid mapping (as read from YAML); preset paths are relative to ``here``."""
    for key in raw:
        if key not in GRID_KEYS and not str(key).startswith("x-"):
            raise choice_error("grid key", key, GRID_KEYS)
    configs, overrides = _split_base(raw.get("base"), here)
    axes = dict(raw.get("axes") or {})
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"grid axis {name!r} must be a non-empty list of values, got {values!r}")
        if name == "seed":
            raise UserError("grid axis 'seed': list seeds under the top-level 'seeds' key instead")
        for v in values:
            _check_axis_value(name, v)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"grid seeds must be a non-empty list of integers, got {seeds!r}")
    out = Path(raw.get("out") or "runs/grid")
    return Grid(configs, overrides, axes, list(seeds), out, source)


def _check_axis_value(axis: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for k in flatten({k: v for k, v in value.items() if k not in COUPLED_KEYS}):
            check_key(k)
    else:
        check_key(axis)


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid YAML file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {str(path)!r} does not exist")
    raw = read_yaml(path) or {}
    if not isinstance(raw, Mapping):
        raise UserError(f"grid file {str(path)!r} must hold a mapping with keys {', '.join(GRID_KEYS)}")
    return parse_grid(raw, path.parent, path)


def is_grid_file(path: str | Path) -> bool:
    """Whether a YAML file is a grid (has ``axes`` or ``seeds``) rather than a plain TrainConfig preset."""
    raw = read_yaml(Path(path))
    return isinstance(raw, Mapping) and ("axes" in raw or "seeds" in raw)


# --- expansion ------------------------------------------------------------------------------------------------
def _scalar_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, list):
        return "_".join(_scalar_text(v) for v in value)
    if isinstance(value, Mapping):
        return "_".join(_scalar_text(v) for v in value.values())
    return str(value)


def value_label(axis: str, value: Any) -> str:
    """The directory-name part of one axis value: a coupled value's ``label`` (else its values joined), a
    string as itself, anything else prefixed by the key's last part (``alpha0.5``, ``labels_per_class100``)."""
    if isinstance(value, Mapping):
        if "label" in value:
            return slug(str(value["label"]))
        return slug(_scalar_text({k: v for k, v in value.items() if k != "config"}))
    if isinstance(value, str):
        return slug(value)
    return slug(axis.split(".")[-1] + _scalar_text(value))


def _apply(cell: Cell, value: Any, axis: str, here: Path) -> None:
    if not isinstance(value, Mapping):
        cell.overrides[axis] = value
        return
    extra = value.get("config") or []
    for path in [extra] if isinstance(extra, str) else extra:
        cell.configs.append(_resolve(path, here))
    cell.overrides.update(flatten({k: v for k, v in value.items() if k not in COUPLED_KEYS}))


def _with_seed(value: Any, seed: int) -> Any:
    return value.replace("{seed}", str(seed)) if isinstance(value, str) else value


def expand(grid: Grid) -> list[Cell]:
    """Every cell of the grid: the product of the axes (first axis slowest), then the seeds."""
    here = grid.source.parent if grid.source else Path(".")
    names = list(grid.axes)
    cells: list[Cell] = []
    for combo in itertools.product(*(grid.axes[n] for n in names)):
        for seed in grid.seeds:
            parts = [value_label(n, v) for n, v in zip(names, combo, strict=True)]
            cell = Cell("-".join([*parts, f"seed{seed}"]), seed, dict(grid.overrides), list(grid.configs))
            for n, v in zip(names, combo, strict=True):
                _apply(cell, v, n, here)
            # '{seed}' in a string value names a per-seed file, such as the KD teacher trained with the same seed
            cell.overrides = {k: _with_seed(v, seed) for k, v in cell.overrides.items()}
            cells.append(cell)
    seen: dict[str, int] = {}
    for c in cells:
        seen[c.name] = seen.get(c.name, 0) + 1
    dupes = sorted(n for n, k in seen.items() if k > 1)
    if dupes:
        raise UserError(f"grid cells share directory names {dupes[:3]}; give coupled axis values distinct 'label's")
    return cells


# --- commands -------------------------------------------------------------------------------------------------
def _arg(value: Any) -> str:
    """A command-line value jsonargparse reads back as the same YAML/JSON value."""
    return value if isinstance(value, str) else json.dumps(value)


def train_argv(cell: Cell, cell_dir: Path, threads: int | None = None, resume: bool = False) -> list[str]:
    """The ``sskt train`` arguments of a cell: its preset files, then its overrides, seed and run directory."""
    argv: list[str] = []
    for cfg in cell.configs:
        argv += ["--config", str(cfg)]
    for key, value in cell.overrides.items():
        argv += [f"--{key}", _arg(value)]
    argv += ["--seed", str(cell.seed), "--out", str(cell_dir)]
    if threads is not None:
        argv += ["--threads", str(threads), "--progress", "false"]
    if resume:
        argv += ["--resume", "true"]
    return argv


# --- running --------------------------------------------------------------------------------------------------
def select(cells: list[Cell], only: list[str] | None = None, seed_major: bool = False) -> list[Cell]:
    """The cells whose names match one of the ``only`` globs (all when None), ordered by seed first when
    ``seed_major`` (every setting gets seed 0 before any gets seed 1: a grid stopped early is still balanced)."""
    if only:
        picked = [c for c in cells if any(fnmatch.fnmatchcase(c.name, pattern) for pattern in only)]
        if not picked:
            raise UserError(f"--only {','.join(only)} matches no cell; cells: {', '.join(c.name for c in cells[:6])}"
                            + (", ..." if len(cells) > 6 else ""))  # fmt: skip
        cells = picked
    return sorted(cells, key=lambda c: c.seed) if seed_major else cells


def run_one(cell: Cell, root: Path, threads: int, runner: CellRunner = subprocess_runner) -> int | str:
    """Run one cell under its lock: 'busy' when another process holds it, 'done' when it has finished meanwhile,
    else the runner's exit status (a cell with a checkpoint resumes). Every launcher runs cells through this."""
    cell_dir = root / cell.name
    if not claim(cell_dir):
        return "busy"
    try:
        state = cell_state(cell_dir)  # again, under the lock: another process may have finished it meanwhile
        if state == "done":
            return "done"
        return runner(train_argv(cell, cell_dir, threads, resume=state == "resume"), cell_dir, threads)
    finally:
        release(cell_dir)


def run_grid(
    grid: Grid,
    out: Path | None = None,
    jobs: int = 1,
    runner: CellRunner = subprocess_runner,
    console: Any = None,
    cells: list[Cell] | None = None,
    threads: int | None = None,
) -> GridResult:
    """Run every cell (of ``cells``, default the whole grid) not yet done, ``jobs`` at a time; a failing cell is
    reported and the rest go on. A cell locked by another live grid process is left to it."""
    console = console or Console(stderr=True)
    root, threads, result = out or grid.out, threads_per_cell(jobs, threads), GridResult()
    cells = expand(grid) if cells is None else cells
    check_cells([(c.name, train_argv(c, root / c.name), root / c.name) for c in cells], cell_state)
    todo = []
    for cell in cells:
        if cell_state(root / cell.name) == "done":
            result.skipped.append(cell.name)
        else:
            todo.append(cell)
    console.print(f"grid: {len(todo)} cells to run, {len(result.skipped)} already done, {jobs} at a time -> {root}")

    def run_cell(cell: Cell) -> int | str:
        return run_one(cell, root, threads, runner)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    pool = ThreadPoolExecutor(jobs)
    try:
        with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task("cells", total=len(todo))
            futures = {pool.submit(run_cell, cell): cell for cell in todo}
            for fut in as_completed(futures):
                _record(result, futures[fut], _exit_code(fut), root, progress.console)
                progress.advance(task)
    finally:
        # On Ctrl-C the running cells get the signal too (same process group); start no new ones.
        pool.shutdown(wait=True, cancel_futures=True)
    return result


def _record(result: GridResult, cell: Cell, code: int | str, root: Path, console: Console) -> None:
    if code == "busy":
        result.busy.append(cell.name)
    elif code == "done":
        result.skipped.append(cell.name)
    elif isinstance(code, str):  # a runner's own reason for not running the cell to its end (a budget)
        result.held_back[cell.name] = code
    elif code == 0:
        result.finished.append(cell.name)
    else:
        result.failed[cell.name] = code
        console.print(f"[red]cell {cell.name} failed (exit {code}); log: {root / cell.name / 'grid.log'}")


def _exit_code(fut: Any) -> int | str:
    try:
        code = fut.result()
        return code if isinstance(code, str) else int(code)
    except Exception as exc:  # a runner that raises counts as a failed cell; the grid goes on
        print(f"error: {exc}", file=sys.stderr)
        return 1


def dry_run(
    grid: Grid, out: Path | None = None, jobs: int = 1, cells: list[Cell] | None = None, threads: int | None = None
) -> list[str]:
    """One line per cell: its state ('changed': run with other settings than the grid gives now, see
    ``sskt.experiments.drift``) and the command that would run it."""
    root, threads = out or grid.out, threads_per_cell(jobs, threads)
    lines = []
    for cell in expand(grid) if cells is None else cells:
        state = cell_state(root / cell.name)
        argv = train_argv(cell, root / cell.name, threads, resume=state == "resume")
        if changes_if_run(argv, root / cell.name, state):
            state = "changed"
        lines.append(f"[{state}] {shlex.join(['python', '-m', 'sskt', 'train', *argv])}")
    return lines

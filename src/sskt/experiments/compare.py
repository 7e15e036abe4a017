"""``sskt compare``: the benchmark's protocol (../docs BENCHMARK.md section 1) run on the user's data in one command.

From the user's run config it builds grids (``sskt.experiments.grid``; written to ``<out>/grids/`` so ``sskt grid``
or a SLURM array can run them too) and runs them within a machine-time budget:

1. A validation split when the config has none (``VAL_FRACTION`` of the smallest class's spare images, at most
   ``VAL_MAX`` per class): it chooses every epoch, row and schedule; the test set chooses nothing.
2. The candidate rows, every one with the same help (the EMA of the weights, precise BN): scratch, SSKT, KD from the
   adapted teacher and the DHO-style dual head; with ``data.unlabeled`` their variants on the unlabelled pool and
   FixMatch. The adapted teacher is an L-BFGS linear probe on the config's first source, trained first as its own
   cell for each seed (the labelled subset changes with the seed).
3. Successive halving on the search seed: every row at a short schedule, the better half by validation accuracy
   at twice the schedule, until ``SURVIVORS`` rows remain; their next doubling is the config's ``epochs``. The pick is
   the top of the last rung, so the seeds that chose it never confirm it.
4. The survivors and scratch + EMA on fresh seeds at the config's ``epochs``: ``--seeds`` (3) or as many as the
   budget allows, every row's seed before any row's next one.
5. The standard report (``sskt.experiments.report``) over the confirmed runs, headed by the pick and its paired
   95% interval against scratch + EMA.

The budget is machine time: the seconds of every cell this comparison ran, over all its invocations (a ledger in
``<out>/ledger.json``; cells run elsewhere count their ``wall_seconds``). A cell's time is estimated from its row's
finished cells (start-up plus seconds per epoch); a cell that cannot finish in what is left is not started, and a
cell whose first epochs show it will not finish is stopped (resumable with a larger budget). The search keeps back
the confirmation's cost on ``MIN_SEEDS`` seeds (half the budget until it has measured its rows). Whatever did not fit
is listed on the terminal, in ``compare.json`` and in the report. A rerun redoes nothing finished, like a grid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser
from rich.console import Console

from sskt.config import SourceConfig, TrainConfig
from sskt.config_io import parse_train_args
from sskt.errors import UserError, check_choice
from sskt.experiments.cells import CellRunner, GridResult, _die_with_parent, cell_state
from sskt.experiments.grid import Cell, Grid, expand, load_grid, parse_grid, run_grid, select
from sskt.experiments.report import write_report
from sskt.experiments.slurm import SlurmOptions, submit_grid
from sskt.experiments.stats import paired_diff, summarize
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

SEARCH_SEED = 100
"""The seed that chooses (benchmark v3's); the fresh seeds that confirm are 0, 1, 2, ..."""
MIN_SEEDS = 2
"""Fewest fresh seeds that give a paired interval: what the search leaves room for."""
SURVIVORS = 2
"""Rows the successive halving hands to the confirmation (scratch + EMA is confirmed besides, as the reference)."""
EVALS = 10
"""Evaluations per schedule (eval_every = epochs / EVALS): enough points for validation to choose the epoch."""
VAL_MAX, VAL_FRACTION = 100, 5
"""A validation split made here: 1/VAL_FRACTION of the smallest class's spare images, at most VAL_MAX per class."""
DEFAULT_EMA, DEFAULT_PRECISE_BN = 0.999, 16
"""The help every row gets when the config gives none: benchmark v3's EMA decay and precise-BN batches."""
DEFAULT_SOURCE = "efficientnet_lite0.imagenet"
CONFIRM_SHARE = 0.5
"""Share of the budget the search leaves for the confirmation before it has measured a row."""
POLL_SECONDS = 0.5
LAUNCHERS = ("local", "slurm")
TEACHER = "probe"


@dataclass(frozen=True)
class Row:
    """One candidate: a method with the config's settings, the EMA and precise BN."""

    name: str
    title: str
    method: str
    pool: bool = False
    """Reads the unlabelled pool (``data.unlabeled``); the others train on the labels alone."""
    teacher: bool = False
    """Distils the adapted teacher (the L-BFGS probe cell of its seed)."""
    source: bool = False
    """Reads the config's sources (SSKT's auxiliary tasks)."""


ROWS = {
    r.name: r
    for r in (
        Row("scratch", "scratch + EMA", "scratch"),
        Row("sskt", "SSKT + EMA", "sskt", source=True),
        Row("kd", "KD from the adapted teacher + EMA", "kd", teacher=True),
        Row("dho", "DHO-style dual head + EMA", "dho", teacher=True),
        Row("sskt_pool", "SSKT with the unlabelled pool + EMA", "sskt", pool=True, source=True),
        Row("kd_pool", "KD from the adapted teacher with the unlabelled pool + EMA", "kd", pool=True, teacher=True),
        Row("dho_pool", "DHO-style dual head with the unlabelled pool + EMA", "dho", pool=True, teacher=True),
        Row("fixmatch", "FixMatch + EMA", "fixmatch", pool=True),
        Row("kd_sskt", "KD + SSKT + EMA", "kd+sskt", teacher=True, source=True),
    )
}
DEFAULT_ROWS = ("scratch", "sskt", "kd", "dho")
POOL_ROWS = ("sskt_pool", "kd_pool", "dho_pool", "fixmatch")


# --- arguments -----------------------------------------------------------------------------------------------------
def parser() -> ArgumentParser:
    p = ArgumentParser(prog="sskt compare", description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--config", type=str, required=True, help="The run's YAML config (data, target, sources, epochs).")
    p.add_argument("--budget", type=str, default="3h", help="Machine time for every cell together: 3h, 90m, 1h30m.")
    p.add_argument("--methods", type=str, nargs="+", default=None, help=f"Rows besides scratch: {', '.join(ROWS)}.")
    p.add_argument("--seeds", type=int, default=3, help="Fresh seeds that confirm the survivors (at most).")
    p.add_argument("--search-seed", type=int, default=SEARCH_SEED, help="The seed that chooses.")
    p.add_argument("--launcher", type=str, default="local", help="'local' (here) or 'slurm' (waits for each stage).")
    p.add_argument("--out", type=str, default="compare", help="Folder for the cells, grids, report, compare.json.")
    p.add_class_arguments(SlurmOptions, "slurm", help="SLURM resources per cell (with --launcher slurm)")
    return p


def parse_budget(text: str) -> float:
    """Seconds in ``"3h"``, ``"90m"``, ``"1h30m"``, ``"45s"`` or ``"0.5h"``; anything else is a one-line UserError."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise UserError(f"--budget {text!r}: expected a duration such as 3h, 90m, 1h30m or 600s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"--budget {text!r} must be longer than 0s")
    return seconds


def choose_rows(cfg: TrainConfig, methods: list[str] | None) -> list[Row]:
    """``methods`` (default: the four labelled rows, and the pool rows with ``data.unlabeled``) with scratch first."""
    names = methods or [*DEFAULT_ROWS, *(POOL_ROWS if cfg.data.unlabeled else ())]
    for name in names:
        check_choice("--methods row", name, ROWS)
        if ROWS[name].pool and not cfg.data.unlabeled:
            raise UserError(f"--methods {name} needs data.unlabeled in the config (e.g. 'rest'), got None")
    return [ROWS[n] for n in dict.fromkeys(["scratch", *names])]


def duration(seconds: float) -> str:
    """``"1h 05m"``, ``"3.5 min"`` or ``"42 s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def n_epochs(epochs: int) -> str:
    return f"{epochs} epoch" + ("" if epochs == 1 else "s")


# --- the plan ------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What the comparison runs: the rows, their shared overrides, the schedules and the seeds."""

    config: Path
    cfg: TrainConfig
    rows: list[Row]
    common: dict[str, Any]
    """Overrides every candidate row gets: the validation split, the EMA decay, precise BN."""
    sources: list[dict]
    epochs: int
    rungs: list[int]
    """The search's schedule per rung (epochs)."""
    search_seed: int
    fresh: list[int]
    budget: float
    out: Path
    notes: list[str] = field(default_factory=list)


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan from the command's options; bad input is a one-line UserError before anything is written."""
    config = Path(args.config).expanduser().resolve()
    cfg = parse_train_args(["--config", str(config)])
    if cfg.epochs < 1 or args.seeds < 1:
        raise UserError(f"epochs and --seeds must be at least 1, got {cfg.epochs} and {args.seeds}")
    rows, budget = choose_rows(cfg, args.methods), parse_budget(args.budget)
    common, notes = shared_help(cfg)
    sources = [asdict(s) for s in cfg.sources] or [asdict(SourceConfig(name=DEFAULT_SOURCE))]
    if not cfg.sources and any(r.source or r.teacher for r in rows):
        notes.append(f"the config names no source: SSKT and the adapted teacher use {DEFAULT_SOURCE}")
    rungs = schedule(len(rows), cfg.epochs)
    fresh = [s for s in range(args.seeds + 1) if s != args.search_seed][: args.seeds]
    return Plan(config, cfg, rows, common, sources, cfg.epochs, rungs, args.search_seed, fresh, budget,
                Path(args.out).resolve(), notes)  # fmt: skip


def schedule(n_rows: int, epochs: int) -> list[int]:
    """Epochs per rung: halve ``n_rows`` down to ``SURVIVORS``, doubling the schedule so that the survivors' next
    doubling is ``epochs`` (4 rows at 40 epochs: one rung at 20; 8 rows: 10, then 20)."""
    rungs = max(1, math.ceil(math.log2(max(n_rows, 1) / SURVIVORS))) if n_rows > SURVIVORS else 1
    return [max(1, epochs // 2 ** (rungs - r)) for r in range(rungs)]


def shared_help(cfg: TrainConfig) -> tuple[dict[str, Any], list[str]]:
    """The overrides every row gets and the notes that say what they add to the config."""
    common: dict[str, Any] = {
        "ema.decay": cfg.ema.decay or DEFAULT_EMA,
        "precise_bn": cfg.precise_bn or DEFAULT_PRECISE_BN,
    }
    notes = [f"every row gets the EMA of its weights (decay {common['ema.decay']}) and precise BN "
             f"({common['precise_bn']} batches)"]  # fmt: skip
    if cfg.data.val_per_class:
        notes.append(f"the config's validation split ({cfg.data.val_per_class} images per class) chooses every "
                     "epoch, row and schedule")  # fmt: skip
    else:
        common["data.val_per_class"], counts = validation_size(cfg)
        notes.append(f"the config has no validation split: {common['data.val_per_class']} images per class "
                     f"({common['data.val_per_class'] * len(counts)} in all) are held out of the training images "
                     "to choose every epoch, row and schedule")  # fmt: skip
    return common, notes


def validation_size(cfg: TrainConfig) -> tuple[int, list[int]]:
    """Images per class to hold out: a fifth of the smallest class's images beyond its labelled ones (a half when
    ``labels_per_class`` is set), at most ``VAL_MAX``; with the per-class counts."""
    import torch

    from sskt.data import build_dataset

    labels = build_dataset(cfg.data).train.labels
    counts = torch.bincount(labels.long().flatten()[labels.long().flatten() >= 0]).tolist()
    lpc = cfg.data.labels_per_class
    spare = min(counts) - (lpc or 0)
    size = min(VAL_MAX, spare // (2 if lpc else VAL_FRACTION))
    if size < 1:
        raise UserError(f"too few training images for a validation split: the smallest class has {min(counts)} "
                        f"and data.labels_per_class is {lpc}; set data.val_per_class in the config")  # fmt: skip
    return size, counts


# --- grids ---------------------------------------------------------------------------------------------------------
def row_value(plan: Plan, row: Row, epochs: int, root: Path, label: str) -> dict[str, Any]:
    """One row's coupled axis value: its method, schedule, sources, teacher and pool."""
    value: dict[str, Any] = {"label": label, "method.name": row.method, "epochs": epochs}
    value |= {"eval_every": max(1, epochs // EVALS), "sources": plan.sources if row.source else []}
    if row.teacher:
        value["method.kd.teacher"] = f"checkpoint:{root / TEACHER}-seed{{seed}}"
    if row.pool:
        value["data.unlabeled_ratio"] = max(1, plan.cfg.data.unlabeled_ratio)
    else:
        value["data.unlabeled"], value["data.unlabeled_ratio"] = None, 0
    return value


def teacher_value(plan: Plan) -> dict[str, Any]:
    """The adapted teacher: the linear-evaluation probe on the first source, fitted by L-BFGS, L2 on validation."""
    return {"label": TEACHER, "method.name": "probe", "method.probe.solver": "lbfgs", "epochs": 1, "eval_every": 1,
            "precise_bn": 0, "ema.decay": 0.0, "cache.enabled": False, "sources": plan.sources[:1],
            "data.unlabeled": None, "data.unlabeled_ratio": 0}  # fmt: skip


def stage_grid(plan: Plan, name: str | None, rows: list[Row], epochs: int, seeds: list[int], search: bool) -> Grid:
    """The grid of one stage, written to ``<out>/grids/<name>.yaml`` (what a SLURM task reads back; ``name`` None:
    an estimate's grid, kept in memory): the teacher first when a row needs it, then the rows; search cells are named
    ``<row>_e<epochs>``, confirmation cells ``<row>``."""
    root = plan.out / ("search" if search else "confirm")
    values = [teacher_value(plan)] if any(r.teacher for r in rows) else []
    values += [row_value(plan, r, epochs, root, f"{r.name}_e{epochs}" if search else r.name) for r in rows]
    raw = {"base": [str(plan.config), plan.common], "axes": {"row": values}, "seeds": seeds, "out": str(root)}
    if name is None:
        return parse_grid(raw)
    path = plan.out / "grids" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, f"# written by sskt compare; run by it, or by sskt grid --config {path.name}\n"
                      + yaml.safe_dump(raw, sort_keys=False))  # fmt: skip
    return load_grid(path)


# --- time: the ledger and the estimates ----------------------------------------------------------------------------
def row_of(name: str) -> str:
    """The row a cell name belongs to (``kd_pool_e20-seed100`` -> ``kd_pool``; the teacher's is ``probe``)."""
    return re.sub(r"(_e\d+)?-seed-?\d+$", "", name)


class Ledger:
    """Seconds each cell's runs took (``search/<cell>``, ``confirm/<cell>``), over every invocation of this
    comparison, in ``<out>/ledger.json``: what the budget counts."""

    def __init__(self, out: Path) -> None:
        self.path = out / "ledger.json"
        self.cells: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def add(self, key: str, seconds: float) -> None:
        self.cells[key] = self.cells.get(key, 0.0) + seconds
        write_text_atomic(self.path, json.dumps(self.cells, indent=1) + "\n")


def cell_seconds(plan: Plan, ledger: Ledger) -> dict[str, float]:
    """Seconds per cell: the ledger's, else a finished run's own ``wall_seconds`` (a SLURM task's)."""
    found = dict(ledger.cells)
    for key in ("search", "confirm"):
        for summary in sorted((plan.out / key).glob("*/summary.json")):
            rel, run = f"{key}/{summary.parent.name}", RunDir(summary.parent)
            if rel not in found and run.is_finished():
                found[rel] = float(run.read_summary().get("wall_seconds") or 0.0)
    return found


@dataclass(frozen=True)
class Rate:
    """A row's measured cost: seconds before its first epoch (start-up, data, sources, cache) and per epoch."""

    startup: float
    per_epoch: float

    def seconds(self, epochs: int) -> float:
        return self.startup + epochs * self.per_epoch


def cell_rate(run: RunDir, took: float) -> Rate | None:
    """A finished cell: its ``wall_seconds / epochs`` per epoch and what it took beyond ``wall_seconds`` as start-up.
    A stopped one: all it took over the epochs it recorded (errs long). None before its first epoch."""
    if run.is_finished():
        summary = run.read_summary()
        wall, epochs = float(summary.get("wall_seconds") or 0.0), int(summary.get("epochs") or 1)
        return Rate(max(0.0, took - wall), wall / max(epochs, 1))
    done = len(run.read_records()) if run.has_progress() else 0
    return Rate(0.0, took / done) if done else None


def measured_rates(plan: Plan, seconds: dict[str, float]) -> dict[str, Rate]:
    """Per row, the slowest start-up and pace of its cells (an estimate that errs long, and only grows: a rerun
    never finds room that an earlier invocation did not)."""
    rates: dict[str, Rate] = {}
    for rel, took in seconds.items():
        new = cell_rate(RunDir(plan.out / rel), took)
        if new is None:
            continue
        row, old = row_of(Path(rel).name), rates.get(row_of(Path(rel).name))
        rates[row] = new if old is None else Rate(max(old.startup, new.startup), max(old.per_epoch, new.per_epoch))
    return rates


@dataclass
class Clock:
    """The budget's bookkeeping: seconds per cell so far and the rows' measured rates."""

    plan: Plan
    ledger: Ledger
    now: Callable[[], float] = time.monotonic
    seconds: dict[str, float] = field(default_factory=dict)
    rates: dict[str, Rate] = field(default_factory=dict)

    def refresh(self) -> None:
        self.seconds = cell_seconds(self.plan, self.ledger)
        self.rates = measured_rates(self.plan, self.seconds)

    def spent(self, prefix: str = "") -> float:
        """Seconds of the cells whose key starts with ``prefix`` (``"search/"``; all by default)."""
        return sum(v for k, v in self.seconds.items() if k.startswith(prefix))

    def estimate(self, cell: Cell, root: Path, guess: bool = False, whole: bool = False) -> float | None:
        """Seconds the cell still needs (0 when done; ``whole``: as if it had not run). None when its row was never
        measured, unless ``guess``: then the slowest measured row's rate (None while nothing is measured)."""
        run = RunDir(root / cell.name)
        if run.is_finished() and not whole:
            return 0.0
        rate = self.rates.get(row_of(cell.name))
        if rate is None and guess and self.rates:
            rate = Rate(max(r.startup for r in self.rates.values()), max(r.per_epoch for r in self.rates.values()))
        if rate is None:
            return None
        done = len(run.read_records()) if run.has_progress() and not whole else 0
        return rate.seconds(max(0, int(cell.overrides.get("epochs", 1)) - done))

    def cost(self, cells: list[Cell], root: Path, whole: bool = False) -> float | None:
        """The cells' estimated seconds together, guessing unmeasured rows; None while nothing is measured."""
        found = [self.estimate(c, root, guess=True, whole=whole) for c in cells]
        return None if any(f is None for f in found) else sum(f or 0.0 for f in found)


# --- running a stage -----------------------------------------------------------------------------------------------
def watched(argv: list[str], cell_dir: Path, threads: int, epochs: int, limit: float) -> int | str:
    """The grid's subprocess runner (``sskt.experiments.cells.subprocess_runner``: the same command, environment and
    log) that stops its cell once its first epochs show it cannot finish within ``limit`` seconds."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.monotonic()
    with open(cell_dir / "grid.log", "a") as log:
        cmd = [sys.executable, "-m", "sskt", "train", *argv]
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        try:
            return watch(child, RunDir(cell_dir), epochs, started, limit)
        finally:
            if child.poll() is None:  # Ctrl-C or an error here: the trainer goes too, its checkpoint stays
                child.terminate()
                child.wait()


def watch(child: subprocess.Popen, run: RunDir, epochs: int, started: float, limit: float) -> int | str:
    """Wait for ``child``; after each epoch project its end (the seconds so far, plus the epochs left at the pace
    of the epochs seen, or at the first one's training seconds) and stop it when that passes ``limit``."""
    first, seen = len(run.read_records()), []
    while child.poll() is None:
        time.sleep(POLL_SECONDS)
        records = run.read_records()
        if len(records) - first <= len(seen):
            continue
        seen += [time.monotonic()] * (len(records) - first - len(seen))
        pace = (seen[-1] - seen[0]) / (len(seen) - 1) if len(seen) > 1 else float(records[-1]["epoch_seconds"])
        projected = time.monotonic() - started + (epochs - len(records)) * pace
        if projected > limit:
            child.terminate()
            child.wait()
            return (
                f"stopped after epoch {len(records)} of {epochs}: needs ~{duration(projected)}, {duration(limit)} left"
            )
    return child.returncode


@dataclass
class Stage:
    """The runner of one stage's grid: the budget's gate before each cell, the ledger after it."""

    clock: Clock
    root: Path
    cells: list[Cell]
    allowance: float
    """Seconds the cells counted by ``counted`` may take in all (the search keeps the confirmation's share back)."""
    counted: str
    """The ledger prefix whose seconds count against ``allowance``: ``"search/"``, or ``""`` (everything)."""
    inner: CellRunner | None = None
    """A plain grid runner (tests run cells in-process); None: ``watched``."""

    def gate(self, cell: Cell) -> str | None:
        """Why the cell must not start now, or None."""
        teacher = self.root / f"{TEACHER}-seed{cell.seed}"
        if "method.kd.teacher" in cell.overrides and not RunDir(teacher).is_finished():
            return f"left out: its adapted teacher {teacher.name} did not finish"
        need, left = self.clock.estimate(cell, self.root), self.allowance - self.clock.spent(self.counted)
        if left <= 0 or (need is not None and need > left):
            return f"left out: needs ~{duration(need or 0)}, {duration(max(left, 0))} of the budget left"
        return None

    def __call__(self, argv: list[str], cell_dir: Path, threads: int) -> int | str:
        cell = next(c for c in self.cells if c.name == cell_dir.name)
        self.clock.refresh()
        why = self.gate(cell)
        if why:
            return why
        start, limit = self.clock.now(), self.allowance - self.clock.spent(self.counted)
        try:
            if self.inner is not None:
                return self.inner(argv, cell_dir, threads)
            return watched(argv, cell_dir, threads, int(cell.overrides.get("epochs", 1)), limit)
        finally:
            self.clock.ledger.add(f"{self.root.name}/{cell.name}", self.clock.now() - start)
            self.clock.refresh()


# --- the comparison ------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What a comparison's stages share."""

    plan: Plan
    clock: Clock
    console: Console
    runner: CellRunner | None = None
    launcher: str = "local"
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    left_out: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, markup=False, highlight=False)


def run_stage(ctx: Context, grid: Grid, cells: list[Cell], allowance: float, counted: str) -> None:
    """Run ``cells`` of ``grid`` (here one at a time through the gate, or on SLURM) and note what was left out."""
    if ctx.launcher == "slurm":
        result = submit_stage(ctx, grid, cells, allowance, counted)
    else:
        stage = Stage(ctx.clock, grid.out, cells, allowance, counted, ctx.runner)
        result = run_grid(grid, grid.out, 1, runner=stage, console=ctx.console, cells=cells)
    ctx.clock.refresh()
    for name, why in result.held_back.items():
        ctx.left_out.append(f"{grid.out.name}/{name}: {why}")
    for name, code in result.failed.items():
        ctx.left_out.append(f"{grid.out.name}/{name}: failed (exit {code}; log {grid.out / name / 'grid.log'})")


def submit_stage(ctx: Context, grid: Grid, cells: list[Cell], allowance: float, counted: str) -> GridResult:
    """SLURM: submit the cells whose estimates fit in turn (unmeasured rows go), each task's time limit at most what
    is left, and wait: the next stage needs this one's results."""
    result, planned, fits = GridResult(), ctx.clock.spent(counted), []
    for cell in cells:
        need = ctx.clock.estimate(cell, grid.out) or 0.0
        if planned + need > allowance:
            result.held_back[cell.name] = f"left out: needs ~{duration(need)}, {duration(allowance - planned)} left"
            continue
        planned, fits = planned + need, [*fits, cell]
    opts = SlurmOptions(**{**asdict(ctx.slurm), "wait": True})
    opts.time = max(1, min(opts.time, math.ceil((allowance - ctx.clock.spent(counted)) / 60)))
    teachers = [c for c in fits if row_of(c.name) == TEACHER]
    for batch in (teachers, [c for c in fits if c not in teachers]):  # a row's teacher must exist before it starts
        if batch and submit_grid(str(grid.source), grid, grid.out, batch, opts):
            result.failed.update({c.name: 1 for c in batch if cell_state(grid.out / c.name) != "done"})
    return result


def validation_of(run_dir: Path) -> float | None:
    """The validation headline at the run's validation-chosen epoch, or None when it did not finish."""
    run = RunDir(run_dir)
    if not run.is_finished():
        return None
    summary = run.read_summary()
    value = (summary.get("best") or {}).get(summary.get("selected_by") or "val_acc")
    return float(value) if isinstance(value, (int, float)) else None


def ranked(plan: Plan, scores: dict[str, float | None]) -> list[str]:
    """Rows with a score, best first; a tie goes to the row listed first (scratch, then the simpler methods)."""
    order = [r.name for r in plan.rows]
    return sorted((n for n, v in scores.items() if v is not None), key=lambda n: (-scores[n], order.index(n)))


def confirm_rows(plan: Plan, survivors: list[str]) -> list[Row]:
    """The survivors and scratch + EMA, the reference every pick is paired with, in the rows' order."""
    wanted = {"scratch", *survivors}
    return [r for r in plan.rows if r.name in wanted]


def confirmation_reserve(ctx: Context, top: list[str]) -> float:
    """Seconds the search leaves for confirming its current top rows on ``MIN_SEEDS`` fresh seeds: their whole
    estimate once measured (it only grows, so a rerun is never more generous), else ``CONFIRM_SHARE`` of the budget."""
    plan = ctx.plan
    if not top:
        return CONFIRM_SHARE * plan.budget
    grid = stage_grid(plan, None, confirm_rows(plan, top[:SURVIVORS]), plan.epochs, plan.fresh[:MIN_SEEDS], False)
    need = ctx.clock.cost(expand(grid), grid.out, whole=True)
    return CONFIRM_SHARE * plan.budget if need is None else need


def score_rung(ctx: Context, grid: Grid, cells: list[Cell], last: bool) -> dict[str, Any]:
    """The rung's validation scores, its ranking and the rows it keeps (the better half; ``SURVIVORS`` at the end)."""
    scores = {row_of(c.name): validation_of(grid.out / c.name) for c in cells if row_of(c.name) != TEACHER}
    order = ranked(ctx.plan, scores)
    keep = order[: SURVIVORS if last else max(SURVIVORS, math.ceil(len(order) / 2))]
    shown = ", ".join(f"{n} {scores[n]:.2f}" for n in order) or "no row finished"
    ctx.say(f"  validation: {shown}; keep {', '.join(keep) or 'none'}")
    return {"epochs": int(cells[-1].overrides["epochs"]), "val": scores, "order": order, "kept": keep}


def search(ctx: Context) -> tuple[list[str], list[dict]]:
    """Successive halving on the search seed; returns the survivors, best first, and every rung's scores."""
    plan, alive, rungs = ctx.plan, list(ctx.plan.rows), []
    for r, epochs in enumerate(plan.rungs):
        grid = stage_grid(plan, f"search_rung{r + 1}", alive, epochs, [plan.search_seed], search=True)
        cells = expand(grid)
        allowance = plan.budget - confirmation_reserve(ctx, rungs[-1]["order"] if rungs else [])
        need = ctx.clock.cost(cells, grid.out)
        if r and (need is None or ctx.clock.spent("search/") + need > allowance):
            ctx.left_out.append(f"search rung {r + 1} ({len(alive)} rows at {n_epochs(epochs)}): needs "
                                f"~{duration(need or 0)}, {duration(allowance - ctx.clock.spent('search/'))} left "
                                f"besides the confirmation's share; rung {r} chooses")  # fmt: skip
            break
        first = " (the adapted teacher first)" if any(a.teacher for a in alive) else ""
        ctx.say(f"search rung {r + 1}/{len(plan.rungs)}: {len(alive)} rows at {n_epochs(epochs)}{first}")
        run_stage(ctx, grid, cells, allowance, "search/")
        rungs.append(score_rung(ctx, grid, cells, last=r == len(plan.rungs) - 1))
        alive = [ROWS[n] for n in rungs[-1]["kept"]]
        if not alive:
            break
    return (rungs[-1]["order"][:SURVIVORS] if rungs else []), rungs


def affordable_seeds(ctx: Context, rows: list[Row], decided: list[int]) -> list[int]:
    """``decided`` and, in order, every further fresh seed whose cells' estimate fits in what the budget has left."""
    plan = ctx.plan
    grid = stage_grid(plan, None, rows, plan.epochs, plan.fresh, search=False)
    cells, left, chosen = expand(grid), plan.budget - ctx.clock.spent(), list(decided)
    left -= ctx.clock.cost([c for c in cells if c.seed in decided], grid.out) or 0.0
    for seed in [s for s in plan.fresh if s not in decided]:
        need = ctx.clock.cost([c for c in cells if c.seed == seed], grid.out)
        if need is not None and need > left:
            break
        chosen, left = [*chosen, seed], left - (need or 0.0)
    return chosen


def confirm(ctx: Context, survivors: list[str]) -> list[int]:
    """The survivors and scratch + EMA at the config's epochs on as many fresh seeds as the budget allows, every
    row's seed before any row's next; asked again after each round, so a rerun finds no room left. Returns them."""
    plan, seeds = ctx.plan, []
    rows = confirm_rows(plan, survivors)
    for _ in plan.fresh:
        more = affordable_seeds(ctx, rows, seeds)
        if more == seeds:
            break
        ctx.say(
            f"confirm: {', '.join(r.name for r in rows)} at {n_epochs(plan.epochs)} on fresh seed(s) {more}"
            + (f" (the budget allows {len(more)} of the {len(plan.fresh)} asked)" if more != plan.fresh else "")
        )
        seeds = more
        grid = stage_grid(plan, "confirm", rows, plan.epochs, seeds, search=False)
        run_stage(ctx, grid, select(expand(grid), seed_major=True), plan.budget - ctx.clock.spent("search/"),
                  "confirm/")  # fmt: skip
    dropped = [s for s in plan.fresh if s not in seeds]
    if dropped:
        ctx.left_out.append(f"fresh seed(s) {dropped}: the budget allows {len(seeds)} of the {len(plan.fresh)} asked")
    return seeds


# --- the verdict and the outputs -----------------------------------------------------------------------------------
def confirmed(plan: Plan, row: str) -> dict[int, float]:
    """The row's test headline at its validation-chosen epoch, per fresh seed that finished."""
    out = {}
    for seed in plan.fresh:
        run = RunDir(plan.out / "confirm" / f"{row}-seed{seed}")
        if run.is_finished():
            summary = run.read_summary()
            value = (summary.get("best") or {}).get(summary.get("headline") or "test_acc")
            if isinstance(value, (int, float)):
                out[seed] = float(value)
    return out


def verdict(plan: Plan, survivors: list[str]) -> dict[str, Any]:
    """The pick (the search's top row) with its confirmed figure and paired 95% interval against scratch + EMA; when
    scratch + EMA is the pick, the runner-up's interval says by how much the best other row trails it."""
    if not survivors:
        return {"pick": None, "sentence": "nothing finished within the budget: no pick"}
    pick = survivors[0]
    other = pick if pick != "scratch" else next((s for s in survivors if s != "scratch"), None)
    ref, mine = confirmed(plan, "scratch"), confirmed(plan, pick)
    text = f"pick: {ROWS[pick].title} (chosen by validation on seed {plan.search_seed}); "
    text += f"confirmed test: {summarize(list(mine.values())).format()}" if mine else "not confirmed on a fresh seed"
    out: dict[str, Any] = {"pick": pick, "title": ROWS[pick].title, "confirmed": mine, "scratch": ref}
    diff = paired_diff(confirmed(plan, other), ref) if other else None
    if diff is not None and diff.n:
        whose = "" if other == pick else f"; the runner-up, {ROWS[other].title},"
        text += f"{whose} paired difference to scratch + EMA: {diff.format()}"
        text += " (one seed: no interval)" if diff.n < 2 else ""
        out["against_scratch"] = {"row": other, "mean": diff.mean, "low": diff.low, "high": diff.high, "n": diff.n}
    return out | {"sentence": text}


def section(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the report's head: the pick, the search, the seeds, the budget and what was left out."""
    lines = ["## sskt compare", "", f"**{result['verdict']['sentence']}**", ""]
    lines += [f"- {note}" for note in result["notes"]]
    for i, rung in enumerate(result["rungs"]):
        scores = ", ".join(f"{n} {v:.2f}" if v is not None else f"{n} -" for n, v in rung["val"].items())
        lines.append(f"- search rung {i + 1} ({rung['epochs']} epochs, seed {result['search_seed']}), validation: "
                     f"{scores}; kept {', '.join(rung['kept']) or 'none'}")  # fmt: skip
    lines.append(f"- the pick is the search's top row on seed {result['search_seed']}, whose runs never confirm; "
                 "the report's own 'Chosen by validation' line below reads the fresh seeds' validation")  # fmt: skip
    lines += [f"- confirmed on {len(result['seeds'])} fresh seed(s) {result['seeds']}; budget "
              f"{duration(result['budget_seconds'])}, spent {duration(result['spent_seconds'])}", ""]  # fmt: skip
    if result["left_out"]:
        lines += ["Left out (did not fit the budget, or failed):", ""] + [f"- {x}" for x in result["left_out"]] + [""]
    return lines


def write_outputs(out: Path, result: dict[str, Any]) -> Path | None:
    """``compare.json``, and the standard report over the confirmed runs (the search's when none was confirmed)
    in ``<out>/report``, headed by the comparison's section; returns the report's path."""
    roots = [out / k for k in ("confirm", "search") if any((out / k).glob("*/summary.json"))]
    report = write_report(roots[0], out / "report") if roots else None
    if report is not None:
        head, _, rest = report.read_text().partition("\n")
        write_text_atomic(report, "\n".join([head, "", *section(result), rest]))
    write_text_atomic(out / "compare.json", json.dumps(result | {"report": report and str(report)}, indent=2) + "\n")
    return report


def compare(args: argparse.Namespace, console: Console, runner: CellRunner | None = None,
            now: Callable[[], float] = time.monotonic) -> dict[str, Any]:  # fmt: skip
    """Plan, search, confirm, write; returns what ``compare.json`` holds. ``runner`` and ``now`` replace the watched
    subprocess and the monotonic clock (tests run cells in-process on a clock they advance)."""
    check_choice("launcher", args.launcher, LAUNCHERS)
    plan = make_plan(args)
    plan.out.mkdir(parents=True, exist_ok=True)
    clock = Clock(plan, Ledger(plan.out), now)
    clock.refresh()
    ctx = Context(plan, clock, console, runner, args.launcher, SlurmOptions(**vars(args.slurm)))
    ctx.say(f"sskt compare: rows {', '.join(r.name for r in plan.rows)}; budget {duration(plan.budget)}, "
            f"{duration(clock.spent())} spent before; search seed {plan.search_seed}; out {plan.out}")  # fmt: skip
    for note in plan.notes:
        ctx.say(f"  {note}")
    survivors, rungs = search(ctx)
    seeds = confirm(ctx, survivors) if survivors else []
    clock.refresh()
    result = {
        "config": str(plan.config), "rows": [r.name for r in plan.rows], "notes": plan.notes,
        "search_seed": plan.search_seed, "rungs": rungs, "survivors": survivors, "seeds": seeds,
        "verdict": verdict(plan, survivors), "left_out": ctx.left_out,
        "budget_seconds": plan.budget, "spent_seconds": clock.spent(),
    }  # fmt: skip
    report = write_outputs(plan.out, result)
    result["report"] = str(report) if report else None
    return result


def show(result: dict[str, Any], console: Console) -> None:
    """The verdict, what was left out, the time, and where the report is."""
    lines = [result["verdict"]["sentence"]]
    lines += [f"left out: {x}" for x in result["left_out"]] or ["left out: nothing"]
    lines.append(f"spent {duration(result['spent_seconds'])} of the {duration(result['budget_seconds'])} budget; "
                 + (f"report: {result['report']}" if result["report"] else "no finished run to report"))  # fmt: skip
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def compare_main(argv: list[str]) -> int:
    """``sskt compare --config my.yaml [--budget 3h] [--methods ...] [--seeds 3] [--launcher local|slurm]
    [--out DIR]``."""
    args = parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    show(compare(args, console), console)
    return 0

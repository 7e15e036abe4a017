"""``sskt compare``'s time: the ledger of what each cell took, the estimates made from it, and the runner that
gates each cell of a stage on the budget and stops one whose first epochs show it cannot finish."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sskt.experiments.cells import CellRunner, _die_with_parent
from sskt.experiments.compare_plan import TEACHER, Plan, duration
from sskt.experiments.grid import Cell
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

POLL_SECONDS = 0.5
"""Seconds between looks at a watched cell's records."""


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

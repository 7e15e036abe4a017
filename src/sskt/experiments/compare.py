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

The rows, the plan and the grids are in ``compare_plan``; the ledger, the estimates and the runner that gates and
watches each cell are in ``compare_time``; this module runs the stages and writes the verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser
from rich.console import Console

from sskt.errors import check_choice
from sskt.experiments.cells import CellRunner, GridResult, cell_state
from sskt.experiments.compare_plan import (
    ROWS,
    SEARCH_SEED,
    SURVIVORS,
    TEACHER,
    Plan,
    Row,
    duration,
    make_plan,
    n_epochs,
    parse_budget,
    schedule,
    stage_grid,
)
from sskt.experiments.compare_time import Clock, Ledger, Stage, row_of, watch
from sskt.experiments.grid import Cell, Grid, expand, run_grid, select
from sskt.experiments.report import write_report
from sskt.experiments.slurm import SlurmOptions, submit_grid
from sskt.experiments.stats import paired_diff, summarize
from sskt.files import write_text_atomic
from sskt.rundir import RunDir

__all__ = ["compare", "compare_main", "parse_budget", "parser", "row_of", "schedule", "show", "watch"]

MIN_SEEDS = 2
"""Fewest fresh seeds that give a paired interval: what the search leaves room for."""
CONFIRM_SHARE = 0.5
"""Share of the budget the search leaves for the confirmation before it has measured a row."""
LAUNCHERS = ("local", "slurm")


# --- arguments -----------------------------------------------------------------------------------------------------
def parser() -> ArgumentParser:
    """``sskt compare``'s options (bad values raise instead of exiting: the CLI turns them into one line)."""
    p = ArgumentParser(prog="sskt compare", description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--config", type=str, required=True, help="The run's YAML config (data, target, sources, epochs).")
    p.add_argument("--budget", type=str, default="3h", help="Machine time for every cell together: 3h, 90m, 1h30m.")
    p.add_argument("--methods", type=str, nargs="+", default=None, help=f"Rows besides scratch: {', '.join(ROWS)}.")
    p.add_argument(
        "--fixed-weights",
        action="store_true",
        help="Keep the config's loss weights (SSKT's alpha, KD's lam) instead of searching them.",
    )
    p.add_argument("--seeds", type=int, default=3, help="Fresh seeds that confirm the survivors (at most).")
    p.add_argument("--search-seed", type=int, default=SEARCH_SEED, help="The seed that chooses.")
    p.add_argument("--launcher", type=str, default="local", help="'local' (here) or 'slurm' (waits for each stage).")
    p.add_argument("--out", type=str, default="compare", help="Folder for the cells, grids, report, compare.json.")
    p.add_class_arguments(SlurmOptions, "slurm", help="SLURM resources per cell (with --launcher slurm)")
    return p


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
    """Rows with a score, best first; a tie goes to the row listed first (scratch, then the simpler methods; a row's
    own weight before its variants)."""
    order = [r.name for r in plan.candidates]
    return sorted((n for n, v in scores.items() if v is not None), key=lambda n: (-scores[n], order.index(n)))


def confirm_rows(plan: Plan, survivors: list[str]) -> list[Row]:
    """The survivors and scratch + EMA, the reference every pick is paired with, in the rows' order."""
    wanted = {"scratch", *survivors}
    return [r for r in plan.candidates if r.name in wanted]


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
    best = {}  # each row's best setting: ``order`` is best first
    for name in order:
        best.setdefault(ctx.plan.family(name), name)
    weights = [n for n in order if n not in best.values()]
    order = list(best.values())
    keep = order[: SURVIVORS if last else max(SURVIVORS, math.ceil(len(order) / 2))]
    shown = ", ".join(f"{n} {scores[n]:.2f}" for n in order) or "no row finished"
    beaten = f" (loss weights beaten: {', '.join(weights)})" if weights else ""
    ctx.say(f"  validation: {shown}; keep {', '.join(keep) or 'none'}{beaten}")
    return {"epochs": int(cells[-1].overrides["epochs"]), "val": scores, "order": order, "kept": keep}


def search(ctx: Context) -> tuple[list[str], list[dict]]:
    """Successive halving on the search seed; returns the survivors, best first, and every rung's scores."""
    plan, alive, rungs = ctx.plan, list(ctx.plan.candidates), []
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
        rows = len({plan.family(a.name) for a in alive})
        settings = f" ({len(alive)} settings)" if len(alive) > rows else ""
        ctx.say(f"search rung {r + 1}/{len(plan.rungs)}: {rows} rows{settings} at {n_epochs(epochs)}{first}")
        run_stage(ctx, grid, cells, allowance, "search/")
        rungs.append(score_rung(ctx, grid, cells, last=r == len(plan.rungs) - 1))
        alive = [plan.row(n) for n in rungs[-1]["kept"]]
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
    text = f"pick: {plan.row(pick).title} (chosen by validation on seed {plan.search_seed}); "
    text += f"confirmed test: {summarize(list(mine.values())).format()}" if mine else "not confirmed on a fresh seed"
    out: dict[str, Any] = {"pick": pick, "title": plan.row(pick).title, "confirmed": mine, "scratch": ref}
    diff = paired_diff(confirmed(plan, other), ref) if other else None
    if diff is not None and diff.n:
        whose = "" if other == pick else f"; the runner-up, {plan.row(other).title},"
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

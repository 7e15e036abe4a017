"""What a gain costs: test accuracy against training time, and every group at equal training budgets.

A run's figure at budget ``t`` is the test headline at the epoch its validation split chooses among the evaluated
epochs whose cumulative training seconds (``train_seconds`` in records.jsonl; evaluation excluded) fit within
``t``: what a user who stops training at ``t`` and keeps the validation-best checkpoint gets. The budgets of the
table are per seed: the training seconds at which that seed's scratch run converged (its validation-chosen epoch),
and 2x and 4x that. A seed whose runs all trained on one machine is then read like for like even when the seeds
ran on machines of different speeds (a benchmark that spans sessions); a group whose time relative to its seed's
scratch run varies across seeds (a run timed on another machine, or beside heavier work) is flagged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sskt.experiments.plots import learning_curves
from sskt.experiments.runs import Run, load_run
from sskt.experiments.stats import Summary, paired_diff, summarize

BUDGET_FACTORS = (1, 2, 4)


def timed_records(run: Run) -> list[dict]:
    """The run's records with ``train_seconds`` as its cost so far: the training steps' seconds (summed from
    ``epoch_seconds`` for runs recorded before the field), precise BN's so far, and what the run needed before its
    first step (``overhead_seconds``: its soft-label cache's build, its teacher's fitting)."""
    total, bn, out = 0.0, 0.0, []
    overhead = overhead_seconds(run)
    for record in run.records:
        total += float(record.get("epoch_seconds") or 0.0)
        bn = float(record.get("precise_bn_seconds", bn))
        steps = float(record.get("train_seconds", total))
        out.append({**record, "train_seconds": steps + bn + overhead})
    return out


def overhead_seconds(run: Run) -> float:
    """Seconds a run paid before training that a user running it alone pays too: building the soft-label cache it
    reads (one per frozen network; every run that reads a cache is charged its whole build), and its KD teacher's
    training cost."""
    teacher = run.config.get("method.kd.teacher")
    cost = float(run.summary.get("cache_build_seconds") or 0.0)
    if isinstance(teacher, str) and teacher.startswith("checkpoint:"):
        cost += teacher_seconds(Path(teacher.removeprefix("checkpoint:")))
    return cost


@functools.cache
def teacher_seconds(path: Path) -> float:
    """A teacher run's training cost: its steps, precise BN, an L-BFGS probe's fit (features included) and its own
    cache; 0 when ``path`` holds no finished run (a teacher whose records are not in this checkout)."""
    if not (path / "summary.json").is_file():
        return 0.0
    run = load_run(path)
    last = run.records[-1] if run.records else {}
    steps = sum(float(r.get("epoch_seconds") or 0.0) for r in run.records)
    extras = ("precise_bn_seconds", "probe_fit_seconds")
    return steps + sum(float(last.get(k) or 0.0) for k in extras) + float(run.summary.get("cache_build_seconds") or 0.0)


def chosen_within(run: Run, seconds: float, val: str, test: str) -> tuple[float, float] | None:
    """``(val, test)`` at the validation-chosen epoch among those trained within ``seconds`` (None: none fits)."""
    fits = [r for r in timed_records(run) if val in r and test in r and r["train_seconds"] <= seconds]
    best = max(fits, key=lambda r: r[val]) if fits else None  # max keeps the earliest of equal epochs
    return None if best is None else (best[val], best[test])


def at_budget(run: Run, seconds: float, val: str, test: str) -> float | None:
    """``test`` at the validation-chosen epoch among those trained within ``seconds`` (None: none fits yet)."""
    chosen = chosen_within(run, seconds, val, test)
    return None if chosen is None else chosen[1]


def families(groups: Sequence) -> dict[str, list]:
    """Groups that differ only in ``epochs`` (a search over the schedule's length), by a label without it."""
    found: dict[str, list] = {}
    for g in groups:
        key = json.dumps({k: v for k, v in g.setting.items() if k != "epochs"}, sort_keys=True, default=str)
        found.setdefault(key, []).append(g)
    out = {}
    for members in found.values():
        g = members[0]
        label = "-".join(v for a, v in g.levels.items() if a != "epochs") if len(members) > 1 else g.label
        out[label or g.label] = members
    return out


def family_at_budget(members: Sequence, seconds: Mapping[int, float], val: str, test: str) -> dict[int, float]:
    """Per seed: ``test`` of the member (schedule length) whose validation-chosen epoch within the seed's budget
    (``seconds[seed]``; seeds without one are left out) has the best ``val``: validation chooses the number of
    epochs as it chooses the epoch."""
    best: dict[int, tuple[float, float]] = {}
    for g in members:
        for run in g.runs:
            if run.seed not in seconds:
                continue
            chosen = chosen_within(run, seconds[run.seed], val, test)
            if chosen is not None and (run.seed not in best or chosen[0] > best[run.seed][0]):
                best[run.seed] = chosen
    return {seed: t for seed, (_, t) in best.items()}


def converged_seconds(run: Run) -> float | None:
    """Training seconds up to the run's validation-chosen epoch."""
    epoch = run.summary.get("best_epoch")
    records = timed_records(run)
    return records[epoch - 1]["train_seconds"] if isinstance(epoch, int) and 0 < epoch <= len(records) else None


def time_curve(
    runs: Sequence[Run], val: str, test: str, points: int = 40, unit: Mapping[int, float] | None = None
) -> tuple[list[float], list[Summary]]:
    """Time and the budget figure's summary over ``runs`` at each, from the time every run has a figure to the
    longest run's end. Time is in minutes, or with ``unit`` in multiples of ``unit[seed]`` seconds (runs of seeds
    without one are left out)."""
    scale = unit if unit is not None else {run.seed: 60.0 for run in runs}
    runs = [run for run in runs if run.seed in scale]
    if not runs:
        return [], []
    start = max(min(r["train_seconds"] for r in timed_records(run) if val in r) / scale[run.seed] for run in runs)
    end = max(timed_records(run)[-1]["train_seconds"] / scale[run.seed] for run in runs)
    grid = [start + (end - start) * i / (points - 1) for i in range(points)] if end > start else [start]
    values = [[at_budget(run, t * scale[run.seed], val, test) for run in runs] for t in grid]
    return grid, [summarize([v for v in vs if v is not None]) for vs in values]


def _timed(group) -> list[Run]:  # noqa: ANN001 - report.Group (imported there from here)
    return [r for r in group.runs if any(k in rec for rec in r.records for k in ("val_acc", "val_ap", "val_map"))]


def reference_scratch(rows: Sequence, val: str):  # noqa: ANN201 - report.Row/Group (report imports this module)
    """The scratch group validation prefers (highest ``val`` at its chosen epoch), or None."""
    scratch = [r for r in rows if r.group.method == "scratch" and r.has_val_choice and val in r.best and r.best[val].n]
    return max(scratch, key=lambda r: r.best[val].mean).group if scratch else None


def budget_section(rows: Sequence, metric: str, val: str) -> list[str]:
    """Markdown lines: every row's group at scratch's converged time and 2x, 4x it, with paired differences to
    scratch at the same budget. Empty without a scratch group that chose its epochs on validation (the one
    validation prefers, when a search holds several)."""
    groups, scratch = [r.group for r in rows], reference_scratch(rows, val)
    converged = seed_budgets(scratch) if scratch else {}
    if not converged:
        return []
    base = sum(converged.values()) / len(converged)
    budgets = [{seed: f * s for seed, s in converged.items()} for f in BUDGET_FACTORS]
    head = " | ".join(f"{f}x = {f * base / 60:.1f} min" for f in BUDGET_FACTORS)
    spread = f"{min(converged.values()) / 60:.1f}-{max(converged.values()) / 60:.1f}"
    lines = [
        "## At equal training time",
        "",
        f"`{metric}` at the epoch validation chooses among those trained within each budget (and, where a method ran "
        "several schedule lengths, at the length validation chooses); the budgets are per seed: the training time at "
        f"which that seed's scratch run converged ({base / 60:.1f} min, mean over {len(converged)} seeds, "
        f"{spread} min), and 2x and 4x that; the headings give the means; `-` where no evaluated epoch fits. A run "
        "stopped at a budget is mid-schedule (its learning rate not yet annealed): a schedule that fits the budget "
        "whole is the fair reading. Differences pair by seed with scratch.",
        "",
        *speed_warning(groups, scratch),
        *shared_machine_lines(groups),
        f"| group | {head} |",
        "|---|" + "---|" * len(budgets),
    ]
    fams = families(groups)
    scratch_family = next(members for members in fams.values() if scratch in members)
    for label, members in fams.items():
        cells = []
        for b in budgets:
            mine = family_at_budget(members, b, val, metric)
            ref = family_at_budget(scratch_family, b, val, metric)
            if not mine:
                cells.append("-")
                continue
            text = summarize(list(mine.values())).format()
            if members is not scratch_family and len(set(mine) & set(ref)) >= 2:
                text += f"; {paired_diff(mine, ref).format()}"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


SPEED_SPREAD = 1.25
"""Above this ratio of the largest to the smallest of a group's per-seed speeds relative to scratch, the time columns
say that they mix machines or loads."""


def seconds_per_epoch(run: Run) -> float | None:
    """The run's mean seconds per training epoch (its steps alone: the machine's speed, not its overheads)."""
    if not run.records:
        return None
    steps = run.records[-1].get("train_seconds") or sum(float(r.get("epoch_seconds") or 0) for r in run.records)
    return float(steps) / len(run.records)


def seed_budgets(scratch) -> dict[int, float]:  # noqa: ANN001 - report.Group
    """Per seed: the training seconds at which the seed's scratch run converged (its validation-chosen epoch)."""
    found = {run.seed: converged_seconds(run) for run in scratch.runs}
    return {seed: s for seed, s in found.items() if s is not None}


def relative_speeds(group, scratch) -> dict[int, float]:  # noqa: ANN001 - report.Group
    """Per seed: the group's seconds per epoch over its seed's scratch run's (the machine's speed cancels)."""
    ref = {run.seed: seconds_per_epoch(run) for run in scratch.runs}
    mine = {run.seed: seconds_per_epoch(run) for run in group.runs}
    return {seed: s / ref[seed] for seed, s in mine.items() if s and ref.get(seed)}


def speed_warning(groups: Sequence, scratch) -> list[str]:  # noqa: ANN001 - report.Group
    """Markdown lines naming the groups whose time relative to their seed's scratch run varies more than
    ``SPEED_SPREAD`` across seeds: a run timed on another machine than its seed's scratch run, or beside heavier
    work, so its figures at the per-seed budgets are not like for like."""
    spread = {}
    for g in groups:
        ratios = list(relative_speeds(g, scratch).values()) if g is not scratch else []
        if len(ratios) >= 2 and max(ratios) > SPEED_SPREAD * min(ratios):
            spread[g.label] = max(ratios) / min(ratios)
    if not spread:
        return []
    named = ", ".join(f"{label} ({ratio:.2f}x)" for label, ratio in spread.items())
    return [
        f"**Mixed speeds:** the runs of {named} trained this far apart across seeds in seconds per epoch relative to "
        "their seed's scratch run (largest against smallest ratio): some were timed on another machine than their "
        "scratch run, or beside heavier work, so their figures at a budget are not like for like (the machines are "
        "listed at the end).",
        "",
    ]


LOAD_MARGIN = 0.5
"""A run's mean 1-minute load above the machine's cores plus this: something else wanted the cores too."""
CPU_SHARE_FLOOR = 0.75
"""A run's CPU seconds over wall seconds below this fraction of the threads it could use: it did not get them."""


def shared_machine(run: Run) -> str | None:
    """Why ``run`` shared its machine, from its epoch records (``cpu_seconds``, ``epoch_seconds``, ``load_1min``)
    and its summary's machine (``cores``, ``threads``); None when it did not, or when it recorded neither (runs
    recorded before the fields)."""
    recs = [r for r in run.records if {"cpu_seconds", "epoch_seconds", "load_1min"} <= r.keys()]
    box = run.summary.get("machine") or {}
    cores, threads = box.get("cores"), box.get("threads")
    if not recs or not cores or not threads:
        return None
    load = sum(r["load_1min"] for r in recs) / len(recs)
    share = sum(r["cpu_seconds"] for r in recs) / max(sum(r["epoch_seconds"] for r in recs), 1e-9)
    usable = min(threads, cores)
    if load > cores + LOAD_MARGIN:
        return f"mean load {load:.1f} on {cores} cores"
    if share < CPU_SHARE_FLOOR * usable:
        return f"{share:.2f} CPU s per wall s on {usable} threads"
    return None


def on_cpu_clock(run: Run) -> Run | None:
    """``run`` with its time read in CPU seconds: each record's ``epoch_seconds`` and ``train_seconds`` become its
    ``cpu_seconds`` and ``train_cpu_seconds`` (a run timed beside other work then costs what it computed, not what it
    waited). None for a run recorded before the fields: it cannot be read on this clock."""
    if not run.records or not all("cpu_seconds" in r and "train_cpu_seconds" in r for r in run.records):
        return None
    # Precise BN's running total is wall time: left out here rather than mixed in (the overheads stay wall seconds).
    records = [
        {k: v for k, v in r.items() if k != "precise_bn_seconds"}
        | {"epoch_seconds": r["cpu_seconds"], "train_seconds": r["train_cpu_seconds"]}
        for r in run.records
    ]
    return dataclasses.replace(run, records=records)


CLOCKS = ("wall", "cpu")


def on_clock(runs: list[Run], clock: str) -> tuple[list[Run], int]:
    """``runs`` with their times on ``clock`` ('wall' leaves them as they are), and how many had to be left out."""
    if clock == "wall":
        return runs, 0
    clocked = [c for r in runs if (c := on_cpu_clock(r)) is not None]
    return clocked, len(runs) - len(clocked)


def shared_machine_lines(groups: Sequence) -> list[str]:
    """Markdown lines naming every run that shared its machine and why (empty when none did)."""
    found = [(g.label, run.seed, why) for g in groups for run in g.runs if (why := shared_machine(run))]
    if not found:
        return []
    named = "; ".join(f"{label} seed {seed} ({why})" for label, seed, why in found)
    return [
        f"**Shared machine:** {named}. Their training seconds include waiting for other work; "
        "`--clock cpu` reads every budget in CPU seconds instead.",
        "",
    ]


def time_plots(rows: Sequence, metric: str, val: str, out: Path) -> list[Path]:  # noqa: ANN001 - report.Row
    """``<metric>_vs_time.png``: every group's validation-chosen test figure against training minutes; and
    ``<metric>_vs_budget.png``: the same against multiples of the seed's scratch run's converged time (the
    per-seed budgets of the table, where the machine's speed cancels)."""
    groups, scratch = [r.group for r in rows], reference_scratch(rows, val)
    budgets = seed_budgets(scratch) if scratch else {}
    title = f"{metric} at the validation-chosen epoch vs training time (mean +- std)"
    plots = [(None, "time", "training minutes")]
    if budgets:
        plots.append((budgets, "budget", "training time / the seed's scratch converged time"))
    paths = []
    for unit, name, xlabel in plots:
        curves = {g.label: time_curve(_timed(g), val, metric, unit=unit) for g in groups}
        curves = {k: v for k, v in curves.items() if v[0] and not all(math.isnan(s.mean) for s in v[1])}
        if curves:
            paths.append(learning_curves(curves, out / f"{metric}_vs_{name}.png", metric, xlabel=xlabel, title=title))
    return paths


def chosen_by_validation(rows: Sequence, val: str) -> list[str]:
    """Markdown lines naming the group a search would pick: the highest validation headline at the chosen epoch."""
    scored = [r for r in rows if r.has_val_choice and val in r.best and r.best[val].n]
    if not scored:
        return ["No run held out a validation split: nothing here is chosen without the test set.", ""]
    top = max(scored, key=lambda r: r.best[val].mean)
    return [
        f"Chosen by validation: **{top.group.label}** has the highest `{val}` at its chosen epoch "
        f"({top.best[val].format()}); the test columns report, they choose nothing.",
        "",
    ]


REFERENCE_METHODS = ("probe",)
"""Groups that are context, not competitors (the adapted teacher itself)."""


def _by_val(rows: Sequence, val: str):  # noqa: ANN202 - report.Row
    return max(rows, key=lambda r: r.best[val].mean)


def strongest_section(rows: Sequence, metric: str, val: str) -> list[str]:
    """Markdown lines: the SSKT-family group validation prefers against the strongest other group (the adapted
    teacher excluded), and every group's paired difference to that baseline at its validation-chosen epoch."""
    scored = [r for r in rows if r.has_val_choice and val in r.best and r.best[val].n]
    family = [r for r in scored if "sskt" in r.group.method.split("+")]
    others = [r for r in scored if r not in family and r.group.method not in REFERENCE_METHODS]
    if not family or not others:
        return []
    top, rival = _by_val(family, val), _by_val(others, val)
    diff = paired_diff(top.group.metric("best", metric), rival.group.metric("best", metric))
    verdict = "above zero" if diff.n >= 2 and diff.low > 0 else "not above zero"
    lines = [
        "## Against the strongest baseline",
        "",
        f"Validation prefers **{top.group.label}** in the SSKT family (`{val}` {top.best[val].format()}) and "
        f"**{rival.group.label}** among the other methods ({rival.best[val].format()}). Paired difference of "
        f"`{metric}` at the validation-chosen epochs: **{diff.format()}**, an interval {verdict}.",
        "",
        f"| group | `{metric}` (validation-chosen epoch) | paired difference to {rival.group.label} |",
        "|---|---|---|",
    ]
    ref = rival.group.metric("best", metric)
    for r in scored:
        mine = r.group.metric("best", metric)
        text = paired_diff(mine, ref).format() if r is not rival and len(set(mine) & set(ref)) >= 2 else "-"
        lines.append(f"| {r.group.label} | {r.best[metric].format()} | {text} |")
    return lines + [""]

"""Reports over run directories: group runs that differ only in seed, summarise them, compare them to scratch.

Everything is read from the run directories alone (``config.yaml``, ``records.jsonl``, ``summary.json``; layout in
docs/CONTRACTS.md), so a report can be regenerated from the files at any time. ``sskt report RUNS_DIR`` writes
``report.md``, ``report.csv`` and PNG plots. Grouping the runs and naming the groups is ``report_groups``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from sskt.errors import UserError, check_choice, choice_error
from sskt.experiments.budget import (
    CLOCKS,
    budget_section,
    chosen_by_validation,
    on_clock,
    strongest_section,
    time_plots,
)
from sskt.experiments.plots import bar_chart, learning_curves
from sskt.experiments.regime_map import write_regime_map
from sskt.experiments.report_groups import Group, _freeze, group_runs
from sskt.experiments.runs import Run, collect_runs, provenance, slug
from sskt.experiments.stats import PairedDiff, Summary, paired_diff, summarize

# Keys a method brings with it: a group's scratch counterpart agrees with it on everything else.
METHOD_PREFIXES = ("method.", "head.", "sources", "cache.", "data.unlabeled", "ema.", "strong_views.")
# Keys of a schedule's length, which validation may choose per method.
SCHEDULE_KEYS = ("epochs", "eval_every")
HEADLINE_METRICS = ("test_acc", "test_ap", "test_map")


# --- grouping --------------------------------------------------------------------------------------------------
def _base(group: Group, ignored: tuple[str, ...]) -> str:
    """The group's setting without the keys that start with one of ``ignored``, frozen for comparison."""
    return _freeze({k: v for k, v in group.setting.items() if not k.startswith(ignored)})


def scratch_counterpart(group: Group, groups: Sequence[Group]) -> Group | None:
    """The scratch group with the same setting apart from method-specific keys, if exactly one exists; failing
    that, the one scratch group that differs at most in its schedule's length (a headline where validation chose
    each method's epochs)."""
    if group.method == "scratch":
        return None
    for ignored in (METHOD_PREFIXES, METHOD_PREFIXES + SCHEDULE_KEYS):
        matches = [g for g in groups if g.method == "scratch" and _base(g, ignored) == _base(group, ignored)]
        if matches:
            return matches[0] if len(matches) == 1 else None
    return None


def headline_metric(runs: Sequence[Run]) -> str:
    """The metric the table leads with: the runs' own headline (``summary["headline"]``, e.g. a video run's
    ``test_video_acc`` rather than its clip-level ``test_acc``), else for older summaries test accuracy (or AP for
    multi-label), else the first test metric."""
    names: list[str] = []
    for r in runs:
        names += [k for k in (r.summary.get("final") or {}) if k not in names]
    own = [r.summary["headline"] for r in runs if r.summary.get("headline") in names]
    for name in [*own, *HEADLINE_METRICS]:
        if name in names:
            return name
    tests = [n for n in names if n.startswith("test_")]
    if not (tests or names):
        raise UserError("no metrics in the runs' summary.json files ('final' is empty)")
    return (tests or names)[0]


# --- tables ----------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One group's statistics: per metric at the final epoch, at the validation-chosen epoch ('best', empty for runs
    without a validation split) and at the test-chosen oracle epoch, and the paired differences to scratch on the
    headline metric."""

    group: Group
    final: dict[str, Summary]
    best: dict[str, Summary]
    best_epoch: Summary
    oracle: dict[str, Summary]
    wall_seconds: Summary
    diff_final: PairedDiff | None
    diff_best: PairedDiff | None
    diff_oracle: PairedDiff | None

    @property
    def has_val_choice(self) -> bool:
        return any(s.n for s in self.best.values())


def metric_names(runs: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for r in runs:
        names += [k for k, v in (r.summary.get("final") or {}).items() if k not in names and _is_num(v)]
    return names


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def build_rows(groups: Sequence[Group], metric: str) -> list[Row]:
    """Statistics of every group; differences pair each non-scratch group with its scratch counterpart by seed."""
    names = metric_names([r for g in groups for r in g.runs])
    rows = []
    for g in groups:
        ref = scratch_counterpart(g, groups)

        def diff(which: str, g: Group = g, ref: Group | None = ref) -> PairedDiff | None:
            return paired_diff(g.metric(which, metric), ref.metric(which, metric)) if ref else None

        rows.append(
            Row(
                g,
                {m: summarize(list(g.metric("final", m).values())) for m in names},
                {m: summarize(list(g.metric("best", m).values())) for m in names},
                summarize(g.field("best_epoch")),
                {m: summarize(list(g.metric("best_test_oracle", m).values())) for m in names},
                summarize(g.field("wall_seconds")),
                diff("final"),
                diff("best"),
                diff("best_test_oracle"),
            )
        )
    return rows


def selection_metric(metric: str) -> str:
    """The validation metric that chose the epoch reported next to test ``metric`` (``test_acc`` -> ``val_acc``)."""
    return metric.replace("test_", "val_", 1) if "test_" in metric else f"val_{metric}"


def markdown_table(rows: Sequence[Row], metric: str) -> str:
    """The headline table: mean +- std (n) at the final epoch and at the validation-chosen epoch, and the paired
    differences to scratch. Runs without a validation split show the test-chosen oracle instead, labelled so."""
    val = selection_metric(metric)
    oracle = not any(r.has_val_choice for r in rows)
    chosen = f"oracle {metric} (best test epoch)" if oracle else f"{metric} at val-chosen epoch"
    head = ["group", "method", f"final {metric}", chosen]
    head += ["oracle epoch"] if oracle else [f"{val} (chooses)", "chosen epoch"]  # nothing was chosen without val
    head += ["wall min"]
    head += ["final - scratch [95% CI] (n)", f"{'oracle' if oracle else 'val-chosen'} - scratch [95% CI] (n)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        wall = Summary(r.wall_seconds.mean / 60, r.wall_seconds.std / 60, r.wall_seconds.n)
        at = r.oracle if oracle else r.best
        epoch = summarize(r.group.field("best_test_oracle_epoch")) if oracle else r.best_epoch
        cells = [r.group.label, r.group.method, r.final[metric].format(), at[metric].format()]
        cells += [] if oracle else [r.best[val].format() if val in r.best else "-"]
        cells += [epoch.format(1), wall.format(1)]
        cells += [d.format() if d else "-" for d in (r.diff_final, r.diff_oracle if oracle else r.diff_best)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One flat dict per group: every metric's final/best mean, std, n; wall time; the paired differences."""
    out = []
    for r in rows:
        row: dict[str, Any] = {"group": r.group.label, "method": r.group.method, "n": len(r.group.runs)}
        row.update(r.group.levels)
        for which, stats in (("final", r.final), ("best", r.best), ("oracle", r.oracle)):
            for m, s in stats.items():
                row.update({f"{which}_{m}_mean": s.mean, f"{which}_{m}_std": s.std, f"{which}_{m}_n": s.n})
        row.update({"best_epoch_mean": r.best_epoch.mean, "wall_seconds_mean": r.wall_seconds.mean})
        for which, d in (("final", r.diff_final), ("best", r.diff_best), ("oracle", r.diff_oracle)):
            if d is not None:
                row.update({f"{which}_diff_mean": d.mean, f"{which}_diff_low": d.low, f"{which}_diff_high": d.high})
                row[f"{which}_diff_n"] = d.n
        out.append(row)
    return out


def curve(group: Group, metric: str) -> tuple[list[int], list[Summary]]:
    """Per-epoch values of ``metric`` over the group's seeds: ``(epochs, [Summary per epoch])``."""
    by_epoch: dict[int, list[float]] = {}
    for r in group.runs:
        for rec in r.records:
            if _is_num(rec.get(metric)):
                by_epoch.setdefault(int(rec["epoch"]), []).append(float(rec[metric]))
    epochs = sorted(by_epoch)
    return epochs, [summarize(by_epoch[e]) for e in epochs]


# --- writing ---------------------------------------------------------------------------------------------------
def write_plots(groups: Sequence[Group], rows: Sequence[Row], metric: str, out: Path) -> list[Path]:
    """A bar chart per grid axis (final-epoch metric, error bars = std over seeds) and the learning curves."""
    paths = []
    # an axis with a single value has nothing to compare
    axes = [a for a in dict.fromkeys(a for g in groups for a in g.levels) if len({g.levels.get(a) for g in groups}) > 1]
    for axis in axes:
        bars: dict[str, dict[str, Summary]] = {}
        for r in rows:
            others = " ".join(v for a, v in r.group.levels.items() if a != axis)
            bars.setdefault(r.group.levels.get(axis, "-"), {})[others] = r.final[metric]
        paths.append(bar_chart(bars, out / f"bars_{slug(axis)}.png", f"final {metric} by {axis}", metric, axis))
    curves = {g.label: curve(g, metric) for g in groups}
    paths.append(learning_curves(curves, out / f"curves_{metric}.png", metric))
    return paths + time_plots(rows, metric, selection_metric(metric), out)


def write_report(
    runs_dir: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    plots: bool = True,
    metric: str | None = None,
    drop_seeds: Sequence[int] = (),
    clock: str = "wall",
    regime_map: bool = False,
) -> Path:
    """Read every finished run under ``runs_dir`` (one folder, or several: e.g. a search's folder plus the benchmark's
    scratch runs it should be compared with; a run found twice counts once) and write ``report.md``, ``report.csv``
    and plots to ``out`` (default: the first folder); ``metric`` overrides the headline metric. ``drop_seeds``
    leaves out the runs of those seeds: the seeds that chose a setting, which must not confirm it. ``clock`` 'cpu'
    reads every time in CPU seconds (runs recorded without them are left out, and said so); ``regime_map`` adds
    benchmark v3's map (``regime_map/README.md`` and its figures) for runs named ``<regime>-<row>-seed<N>``.
    Returns the path of ``report.md``."""
    import csv

    roots = [Path(runs_dir)] if isinstance(runs_dir, str | Path) else [Path(r) for r in runs_dir]
    runs, unfinished = collect_runs(roots)
    dropped = sorted({r.seed for r in runs if r.seed in set(drop_seeds)})
    runs = [r for r in runs if r.seed not in set(drop_seeds)]
    runs, unclocked = on_clock(runs, clock)
    root = roots[0]
    if not runs:
        raise UserError(f"no finished runs (summary.json + config.yaml) under {', '.join(map(str, roots))}")
    dest = Path(out) if out else root
    dest.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    metric = metric or headline_metric(runs)
    if metric not in metric_names(runs):
        raise choice_error("metric", metric, metric_names(runs))
    rows = build_rows(groups, metric)
    table = csv_rows(rows)
    fields = list(dict.fromkeys(k for row in table for k in row))
    with open(dest / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    pictures = write_plots(groups, rows, metric, dest) if plots else []
    names = ", ".join(map(str, roots))
    text = _markdown(names, runs, unfinished, rows, metric, [p.relative_to(dest) for p in pictures])
    if drop_seeds:
        text = text.replace("\n\n", f"\n\n{_dropped_note(drop_seeds, dropped)}\n\n", 1)
    if clock == "cpu":
        note = f"Times are CPU seconds; {unclocked} run(s) recorded without them are left out" if unclocked else ""
        text = text.replace("\n\n", f"\n\n{note or 'Times are CPU seconds'} (overheads stay in wall seconds).\n\n", 1)
    if regime_map:
        write_regime_map(runs, dest / "regime_map", metric)
    (dest / "report.md").write_text(text)
    return dest / "report.md"


def _dropped_note(asked: Sequence[int], dropped: Sequence[int]) -> str:
    """What ``--drop-seed`` left out, and which of the seeds it named no run had (a typo must not read as done)."""
    missing = [s for s in asked if s not in dropped]
    note = f"Runs of seed(s) {', '.join(map(str, dropped))} are left out." if dropped else "No run is left out:"
    return note + (f" no run has seed(s) {', '.join(map(str, missing))} (--drop-seed)." if missing else "")


_INTRO = (
    "Metric `{metric}`: mean +- sample std (n seeds) at the final epoch and at the epoch each run's validation split "
    "chose (`best`, selected by `{val}`; the test set chose nothing). Runs without a validation split have no "
    "chosen epoch; for them the table shows the best test epoch, an oracle figure chosen on the test set, and says "
    "so. Differences to scratch pair runs by seed with the scratch group of the same setting; the interval is a 95% "
    "Student-t interval over the paired differences."
)


def _markdown(
    root: str, runs: list[Run], unfinished: list[Path], rows: list[Row], metric: str, pictures: list[Path]
) -> str:
    lines = [f"# Report: {root}", ""]
    lines.append(f"{len(runs)} finished runs in {len(rows)} group(s) (runs that differ only in seed).")
    hours = sum(r.summary.get("wall_seconds") or 0.0 for r in runs) / 3600
    lines.append(f"Their wall times add up to {hours:.1f} h (runs that shared the machine count in full each).")
    if unfinished:
        lines.append(f"{len(unfinished)} unfinished run directories ignored: {', '.join(p.name for p in unfinished)}")
    lines += ["", _INTRO.format(metric=metric, val=selection_metric(metric)), "", markdown_table(rows, metric), ""]
    val = selection_metric(metric)
    lines += chosen_by_validation(rows, val) + budget_section(rows, metric, val) + strongest_section(rows, metric, val)
    others = [m for m in rows[0].final if m != metric] if rows else []
    if others:
        lines += ["Other final-epoch metrics:", ""]
        lines += ["| group | " + " | ".join(others) + " |", "|" + "---|" * (len(others) + 1)]
        lines += ["| " + " | ".join([r.group.label] + [r.final[m].format() for m in others]) + " |" for r in rows]
        lines.append("")
    lines += ["## Provenance", "", *provenance(runs), ""]
    if pictures:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.as_posix()})" for p in pictures] + [""]
    return "\n".join(lines)


def seed_list(text: str) -> list[int]:
    """``"0,3"`` -> ``[0, 3]``; anything but comma-separated integers is a one-line UserError."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--drop-seed takes comma-separated integer seeds such as 0,3; got {text!r}") from None


def report_main(argv: list[str] | None = None) -> int:
    """``sskt report RUNS_DIR [RUNS_DIR ...] [--out DIR] [--metric NAME] [--no-plots] [--drop-seed N[,N...]]``."""
    parser = ArgumentParser(
        prog="sskt report", description="Tables and plots from run directories.", allow_abbrev=False
    )
    parser.exit_on_error = False
    parser.add_argument("runs_dir", nargs="+", type=str, help="folders holding run directories (any depth)")
    parser.add_argument("--out", type=str | None, default=None, help="where the report goes (default: the first)")
    parser.add_argument("--metric", type=str | None, default=None, help="headline metric (default: test_acc)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--clock", type=str, default="wall", help="time axis: 'wall' seconds or 'cpu' seconds")
    parser.add_argument("--regime-map", action="store_true", help="add benchmark v3's regime map (regime_map/)")
    parser.add_argument(
        "--drop-seed", type=str, default="", metavar="N[,N...]",
        help="leave out the runs of these seeds: the seeds that chose a setting never confirm it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_choice("--clock", args.clock, CLOCKS)
    path = write_report(
        args.runs_dir, args.out, not args.no_plots, args.metric, seed_list(args.drop_seed), args.clock, args.regime_map
    )
    print(path)
    return 0

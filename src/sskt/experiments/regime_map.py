"""Benchmark v3's regime map: where transfer pays, from the records of grids whose cells are named
``<regime>-<row>-seed<N>``.

A regime is a label budget and a source resolution, ``l<labels per class>_s<source px>`` (``l10_s224``); a row that
uses no source (scratch + EMA, FixMatch, DML, MAXL) runs once per label budget as ``l<labels>`` and stands in every
regime of that budget. Per regime, every row's test figure at its validation-chosen epoch (``summary.best``) is
summarised over seeds, with paired differences to scratch + EMA and to the strongest row outside the SSKT family
(chosen by validation, the adapted teacher excluded: it is a reference, not a competitor). The source's headroom is
the adapted teacher's validation accuracy minus scratch + EMA's, both means over the regime's seeds.

Two figures: the best SSKT-family row's paired gain over the best other row against the headroom, one labelled point
per regime; and test accuracy against labels per class, one line per row, one panel per source resolution.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sskt.experiments.plots import _pyplot, _save
from sskt.experiments.runs import Run
from sskt.experiments.stats import PairedDiff, Summary, paired_diff, summarize

CELL = re.compile(r"^(?P<regime>l\d+(?:_s\d+)?)-(?P<row>.+)-seed(?P<seed>\d+)$")
REGIME = re.compile(r"^l(?P<labels>\d+)(?:_s(?P<px>\d+))?$")
ROW_PX = re.compile(r"^s(?P<px>\d+)_(?P<row>.+)$")
SCRATCH, TEACHER = "scratch_ema", "teacher"
"""Row labels of the reference rows: scratch + EMA (the baseline every row pairs with) and the adapted teacher."""
SSKT_FAMILY = re.compile(r"(^|_)sskt(_|$)")
"""Rows whose label names SSKT's auxiliary heads (``sskt``, ``sskt_pool``, ``kd_sskt_pool``)."""


@dataclass(frozen=True)
class Regime:
    labels: int
    px: int | None
    """Source resolution; None for rows that use no source."""

    @classmethod
    def parse(cls, text: str) -> Regime:
        m = REGIME.match(text)
        if not m:
            raise ValueError(f"regime {text!r} is not l<labels>_s<px> or l<labels>")
        return cls(int(m["labels"]), int(m["px"]) if m["px"] else None)

    @property
    def name(self) -> str:
        return f"l{self.labels}" + (f"_s{self.px}" if self.px else "")


def cell_of(run: Run) -> tuple[Regime, str, int] | None:
    """``(regime, row label, seed)`` of a run named like a v3 cell, else None. The source resolution may lead the
    row instead of closing the regime, as the v3 grids name their cells (regime axis ``l10``, row ``s224_sskt``):
    ``l10-s224_sskt-seed0`` is row ``sskt`` of regime ``l10_s224``, like ``l10_s224-sskt-seed0``."""
    m = CELL.match(run.path.name)
    if not m:
        return None
    regime, row = m["regime"], m["row"]
    lead = ROW_PX.match(row)
    if lead and "_s" not in regime:
        regime, row = f"{regime}_s{lead['px']}", lead["row"]
    return Regime.parse(regime), row, int(m["seed"])


def figures(run: Run, metric: str, val: str) -> tuple[float, float] | None:
    """``(val, test)`` at the run's validation-chosen epoch, or None before it finished."""
    best = run.summary.get("best") or {}
    return (best[val], best[metric]) if val in best and metric in best else None


def by_regime(runs: Sequence[Run], metric: str = "test_acc", val: str = "val_acc") -> dict[Regime, dict]:
    """Per regime with a source: row label -> seed -> (val, test). Source-free rows of a label budget join every
    regime of that budget."""
    table: dict[Regime, dict[str, dict[int, tuple[float, float]]]] = {}
    shared: dict[int, dict[str, dict[int, tuple[float, float]]]] = {}
    for run in runs:
        cell, got = cell_of(run), figures(run, metric, val)
        if cell is None or got is None:
            continue
        regime, row, seed = cell
        home = table.setdefault(regime, {}) if regime.px else shared.setdefault(regime.labels, {})
        home.setdefault(row, {})[seed] = got
    for regime, rows in table.items():
        for row, seeds in shared.get(regime.labels, {}).items():
            rows.setdefault(row, seeds)
    return table


@dataclass
class RegimeResult:
    """One regime's rows, its headroom and the verdict of its best SSKT-family row."""

    regime: Regime
    rows: dict[str, Summary]
    to_scratch: dict[str, PairedDiff]
    rival: str | None
    """The strongest row outside the SSKT family by mean validation accuracy (teacher and scratch included as
    candidates except the teacher)."""
    to_rival: dict[str, PairedDiff]
    headroom: float | None
    best_sskt: str | None
    gain: PairedDiff | None
    """The best SSKT-family row (by validation) against the rival, paired over seeds."""


def _by_val(rows: Mapping[str, Mapping[int, tuple[float, float]]], names: Sequence[str]) -> str | None:
    scored = {n: summarize([v for v, _ in rows[n].values()]).mean for n in names if rows[n]}
    return max(scored, key=scored.get) if scored else None


def _tests(seeds: Mapping[int, tuple[float, float]]) -> dict[int, float]:
    return {s: t for s, (_, t) in seeds.items()}


def headroom(rows: Mapping[str, Mapping[int, tuple[float, float]]]) -> float | None:
    """The adapted teacher's mean validation accuracy minus scratch + EMA's (None without both)."""
    if not rows.get(TEACHER) or not rows.get(SCRATCH):
        return None
    mean_val = {n: summarize([v for v, _ in rows[n].values()]).mean for n in (TEACHER, SCRATCH)}
    return mean_val[TEACHER] - mean_val[SCRATCH]


def analyse(regime: Regime, rows: Mapping[str, Mapping[int, tuple[float, float]]]) -> RegimeResult:
    """Summaries, paired differences, the rival, the headroom and the SSKT family's verdict for one regime."""
    tests = {n: _tests(s) for n, s in rows.items()}
    family = [n for n in rows if SSKT_FAMILY.search(n)]
    rival = _by_val(rows, [n for n in rows if n not in family and n != TEACHER])
    best = _by_val(rows, family)
    scratch = tests.get(SCRATCH, {})
    return RegimeResult(
        regime=regime,
        rows={n: summarize(list(t.values())) for n, t in tests.items()},
        to_scratch={n: paired_diff(t, scratch) for n, t in tests.items() if n != SCRATCH},
        rival=rival,
        to_rival={n: paired_diff(t, tests[rival]) for n, t in tests.items() if rival and n != rival},
        headroom=headroom(rows),
        best_sskt=best,
        gain=paired_diff(tests[best], tests[rival]) if best and rival else None,
    )


def analyse_all(runs: Sequence[Run], metric: str = "test_acc", val: str = "val_acc") -> list[RegimeResult]:
    """Every regime's result, by label budget then source resolution."""
    table = by_regime(runs, metric, val)
    return [analyse(r, table[r]) for r in sorted(table, key=lambda r: (r.labels, r.px or 0))]


def regime_table(result: RegimeResult, metric: str) -> list[str]:
    """Markdown lines: the regime's rows with both paired columns."""
    rival = result.rival or "-"
    lines = [
        f"### {result.regime.name}: {result.regime.labels} labels per class, source at {result.regime.px} px",
        "",
        f"Headroom (teacher's validation accuracy minus scratch + EMA's): {_signed(result.headroom)}. "
        f"Strongest row outside the SSKT family, by validation: **{rival}**.",
        "",
        f"| row | `{metric}` (validation-chosen epoch) | paired difference to {SCRATCH} | to {rival} |",
        "|---|---|---|---|",
    ]
    for name, summary in sorted(result.rows.items(), key=lambda kv: -kv[1].mean):
        a = result.to_scratch.get(name)
        b = result.to_rival.get(name)
        lines.append(f"| {name} | {summary.format()} | {a.format() if a else '-'} | {b.format() if b else '-'} |")
    return lines + ["", verdict(result), ""]


def verdict(result: RegimeResult) -> str:
    """One sentence on whether the best SSKT-family row beats every other row in this regime."""
    if result.gain is None or result.gain.n < 2:
        return "Not enough paired seeds for a verdict yet."
    above = result.gain.low > 0
    return f"Best SSKT-family row **{result.best_sskt}** against **{result.rival}**: {result.gain.format()}; " + (
        "the interval is above zero: SSKT's heads pay here." if above else "the interval is not above zero."
    )


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f} points"


def gain_plot(results: Sequence[RegimeResult], path: Path) -> Path | None:
    """x = headroom, y = the best SSKT-family row's paired gain over the best other row (95% interval bars)."""
    points = [r for r in results if r.headroom is not None and r.gain is not None and r.gain.n >= 1]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in points:
        err = [[r.gain.mean - r.gain.low], [r.gain.high - r.gain.mean]] if r.gain.n >= 2 else None
        ax.errorbar([r.headroom], [r.gain.mean], yerr=err, fmt="o", capsize=4)
        ax.annotate(r.regime.name, (r.headroom, r.gain.mean), textcoords="offset points", xytext=(6, 4))
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("source headroom: teacher val acc - scratch + EMA val acc (points)")
    ax.set_ylabel("best SSKT-family row - best other row (test, paired)")
    ax.set_title("Where SSKT pays: one point per regime, 95% intervals")
    return _save(fig, path)


def accuracy_plot(results: Sequence[RegimeResult], path: Path) -> Path | None:
    """Test accuracy against labels per class, one line per row, one panel per source resolution."""
    resolutions = sorted({r.regime.px for r in results})
    if not resolutions:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(resolutions), figsize=(6 * len(resolutions), 4.4), sharey=True, squeeze=False)
    for ax, px in zip(axes[0], resolutions, strict=True):
        mine = sorted((r for r in results if r.regime.px == px), key=lambda r: r.regime.labels)
        for row in sorted({n for r in mine for n in r.rows}):
            pts = [(r.regime.labels, r.rows[row]) for r in mine if row in r.rows and r.rows[row].n]
            ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[p[1].std for p in pts], label=row,
                        marker="o", capsize=3)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("labels per class")
        ax.set_title(f"source at {px} px")
    axes[0][0].set_ylabel("test accuracy (%), mean +- std over seeds")
    axes[0][-1].legend(fontsize=8)
    return _save(fig, path)


def write_regime_map(runs: Sequence[Run], out: Path, metric: str = "test_acc", val: str = "val_acc") -> Path:
    """``out/README.md`` with every regime's table and verdict, and the two figures beside it."""
    results = analyse_all(runs, metric, val)
    out.mkdir(parents=True, exist_ok=True)
    plots = [gain_plot(results, out / "gain_vs_headroom.png"), accuracy_plot(results, out / "acc_vs_labels.png")]
    lines = ["# Benchmark v3: the regime map", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None] + [""]
    for result in results:
        lines += regime_table(result, metric)
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path

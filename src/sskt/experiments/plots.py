"""Saved plots (matplotlib, Agg backend: no display needed): bar charts with error bars and learning curves.

The functions take plain numbers, not run directories, so they plot whatever the report computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from sskt.experiments.stats import Summary


def _pyplot():  # noqa: ANN202 - matplotlib's module type
    import matplotlib

    matplotlib.use("Agg")  # files only; must be chosen before pyplot is imported
    import matplotlib.pyplot as plt

    return plt


def bar_chart(bars: Mapping[str, Mapping[str, Summary]], path: Path, title: str, ylabel: str, xlabel: str = "") -> Path:
    """Grouped bars: one cluster per key of ``bars`` (an axis value), one bar per series inside it, height the
    mean and error bar the std over seeds. ``bars[cluster][series] = Summary``."""
    plt = _pyplot()
    clusters = list(bars)
    series = list(dict.fromkeys(s for c in clusters for s in bars[c]))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(clusters) * max(1, len(series)) ** 0.5 + 2), 3.6))
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i, c in enumerate(clusters) if name in bars[c]]
        stats = [bars[c][name] for c in clusters if name in bars[c]]
        ax.bar(xs, [s.mean for s in stats], width, yerr=[s.std for s in stats], capsize=3, label=name or None)
    ax.set_xticks(range(len(clusters)), clusters, rotation=20, ha="right")
    lows = [s.mean - s.std for c in clusters for s in bars[c].values()]
    highs = [s.mean + s.std for c in clusters for s in bars[c].values()]
    if lows:  # zoom on the spread: accuracies differ by points, not tens of points
        pad = 0.15 * (max(highs) - min(lows)) + 0.5
        ax.set_ylim(min(lows) - pad, max(highs) + pad)
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def learning_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[Summary]]],
    path: Path,
    ylabel: str,
    xlabel: str = "epoch",
    title: str | None = None,
) -> Path:
    """One line per group: the mean over seeds at each x (epoch, or minutes) with a band of +- one std."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for i, (label, (epochs, stats)) in enumerate(curves.items()):
        if not epochs:
            continue
        mean = [s.mean for s in stats]
        style = ("-", "--", ":")[(i // 10) % 3]  # the 10 colours repeat: the line style tells them apart
        (line,) = ax.plot(epochs, mean, label=label, linewidth=1.2, linestyle=style)
        lo = [s.mean - s.std for s in stats]
        hi = [s.mean + s.std for s in stats]
        ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or f"{ylabel} per {xlabel} (mean +- std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - matplotlib Figure
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def signed_bars(values: Mapping[str, float], path: Path, title: str, ylabel: str) -> Path:
    """One bar per key from zero, green above and red below, with a line at zero: differences such as a source's
    headroom over a reference, where the sign is the message (so the axis always shows 0)."""
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 3), 4.4))  # room for long labels
    colours = ["tab:green" if values[n] > 0 else "tab:red" for n in names]
    ax.bar(range(len(names)), [values[n] for n in names], 0.6, color=colours)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set(title=title, ylabel=ylabel)
    return _save(fig, path)

"""A few runs side by side: a table of final/best test metrics and wall time, and their learning curves.

Pure functions of the run directories' ``records.jsonl`` and ``summary.json`` (``sskt curves RUN... --plot FILE``).
"""

from __future__ import annotations

import json
from pathlib import Path

from sskt.errors import UserError


def _read_run(run: Path) -> tuple[dict, list[dict]]:
    summary_path, records_path = run / "summary.json", run / "records.jsonl"
    if not summary_path.is_file() or not records_path.is_file():
        raise UserError(f"run {str(run)!r} has no summary.json/records.jsonl (not trained yet?)")
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
    return json.loads(summary_path.read_text()), records


def run_rows(runs: list[str | Path], metric: str = "test_acc") -> list[dict]:
    """One row per run: name, method, final and best ``metric``, best epoch, wall seconds."""
    rows = []
    for run in map(Path, runs):
        summary, _ = _read_run(run)
        rows.append(
            {
                "run": run.name,
                "method": summary.get("method"),
                "final": summary["final"].get(metric),
                "best": summary["best"].get(metric),
                "best_epoch": summary.get("best_epoch"),
                "wall_seconds": summary.get("wall_seconds"),
            }
        )
    return rows


def print_table(rows: list[dict], metric: str = "test_acc") -> None:
    """Render ``run_rows`` as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metric} (final epoch / best epoch)")
    for col in ("run", "method", "final", "best (epoch)", "wall time"):
        table.add_column(col, justify="left" if col in ("run", "method") else "right")
    for r in rows:
        best = f"{r['best']:.2f} ({r['best_epoch']})" if r["best"] is not None else "-"
        final = f"{r['final']:.2f}" if r["final"] is not None else "-"
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] is not None else "-"
        table.add_row(r["run"], str(r["method"]), final, best, wall)
    Console().print(table)


def plot_curves(runs: list[str | Path], path: str | Path, metric: str = "test_acc") -> None:
    """Save test ``metric`` and the primary training loss per epoch for every run as one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for run in map(Path, runs):
        _, records = _read_run(run)
        evaluated = [r for r in records if r.get(metric) is not None]
        ax_metric.plot([r["epoch"] for r in evaluated], [r[metric] for r in evaluated], marker=".", label=run.name)
        # SSKT's total loss includes its auxiliary terms; the primary (label) loss compares across methods.
        losses = [r.get("primary_loss", r["train_loss"]) for r in records]
        ax_loss.plot([r["epoch"] for r in records], losses, marker=".", label=run.name)
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"{metric} on the test split")
    ax_loss.set(xlabel="epoch", ylabel="primary loss", title="training loss on the labels", yscale="log")
    for ax in (ax_metric, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_main(argv: list[str]) -> int:
    """``sskt curves RUN [RUN ...] [--plot FILE] [--metric NAME]``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sskt curves", description="Compare runs: table and learning curves.")
    parser.exit_on_error = False
    parser.add_argument("runs", nargs="+", type=str, help="Run directories.")
    parser.add_argument("--plot", type=str | None, default=None, help="Save learning curves to this PNG.")
    parser.add_argument("--metric", type=str, default="test_acc", help="Metric to compare.")
    args = parser.parse_args(argv)
    print_table(run_rows(args.runs, args.metric), args.metric)
    if args.plot:
        plot_curves(args.runs, args.plot, args.metric)
        print(f"curves saved to {args.plot}")
    return 0

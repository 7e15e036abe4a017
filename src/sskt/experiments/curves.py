"""A few runs side by side: a table of final and validation-chosen test metrics and wall time, and their learning
curves (test and, where the runs held a validation split out, validation).

Pure functions of the run directories' ``records.jsonl`` and ``summary.json`` (``sskt curves RUN... --plot FILE``).
"""

from __future__ import annotations

from pathlib import Path

from sskt.errors import UserError
from sskt.rundir import RECORDS, SUMMARY, RunDir


def _read_run(path: Path) -> tuple[dict, list[dict]]:
    run = RunDir(path)
    if not run.is_finished() or not run.records.is_file():
        raise UserError(f"run {str(path)!r} has no {SUMMARY}/{RECORDS} (not trained yet?)")
    return run.read_summary(), run.read_records()


def run_rows(runs: list[str | Path], metric: str = "test_acc") -> list[dict]:
    """One row per run: name, method, final ``metric``, ``metric`` at the validation-chosen epoch and that epoch (None
    without a validation split), the test-chosen oracle and its epoch, wall seconds."""
    rows = []
    for run in map(Path, runs):
        summary, _ = _read_run(run)
        rows.append(
            {
                "run": run.name,
                "method": summary.get("method"),
                "final": summary["final"].get(metric),
                "best": (summary.get("best") or {}).get(metric),
                "best_epoch": summary.get("best_epoch"),
                "selected_by": summary.get("selected_by"),
                "oracle": (summary.get("best_test_oracle") or {}).get(metric),
                "oracle_epoch": summary.get("best_test_oracle_epoch"),
                "wall_seconds": summary.get("wall_seconds"),
            }
        )
    return rows


def print_table(rows: list[dict], metric: str = "test_acc") -> None:
    """Render ``run_rows`` as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    oracle = all(r["best"] is None for r in rows)
    chosen = "oracle: best test epoch" if oracle else "at val-chosen epoch"
    table = Table(title=f"{metric}: final epoch / {chosen}")
    for col in ("run", "method", "final", f"{chosen} (epoch)", "wall time"):
        table.add_column(col, justify="left" if col in ("run", "method") else "right")
    for r in rows:
        value, epoch = (r["oracle"], r["oracle_epoch"]) if oracle else (r["best"], r["best_epoch"])
        best = f"{value:.2f} ({epoch})" if value is not None else "-"
        final = f"{r['final']:.2f}" if r["final"] is not None else "-"
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] is not None else "-"
        table.add_row(r["run"], str(r["method"]), final, best, wall)
    if oracle:
        table.caption = "no run held out a validation split (data.val_per_class): the best epoch was chosen on test"
    Console().print(table)


def plot_curves(runs: list[str | Path], path: str | Path, metric: str = "test_acc") -> None:
    """Save test ``metric`` (solid; its validation counterpart dashed, where recorded) and the primary training loss
    per epoch for every run as one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for run in map(Path, runs):
        _, records = _read_run(run)
        evaluated = [r for r in records if r.get(metric) is not None]
        x, y = [r["epoch"] for r in evaluated], [r[metric] for r in evaluated]
        line = ax_metric.plot(x, y, marker=".", label=run.name)
        val = metric.replace("test_", "val_", 1)
        on_val = [r for r in records if r.get(val) is not None] if val != metric else []
        if on_val:  # dashed, same colour: the curve that chooses the epoch
            x, y = [r["epoch"] for r in on_val], [r[val] for r in on_val]
            ax_metric.plot(x, y, ls="--", color=line[0].get_color(), label=f"{run.name} ({val})")
        # SSKT's total loss includes its auxiliary terms; the primary (label) loss compares across methods.
        losses = [r.get("primary_loss", r["train_loss"]) for r in records]
        ax_loss.plot([r["epoch"] for r in records], losses, marker=".", label=run.name)
    ax_metric.set(xlabel="epoch", ylabel=metric, title=f"{metric} (dashed: validation)")
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

"""Why does DML with the paper's alternating updates trail simultaneous updates on the offline benchmark? (not a test)

Trains the benchmark's DML cell (``configs/bench/fashion_limited.yaml``: ResNet20 target, ResNet20 peer, lr 0.05,
batch 64, 100 labels per class, so 16 steps per epoch) for ``--epochs`` epochs twice in one process, once with the
paper's alternating order and once with simultaneous updates (optionally with ``--warmup`` epochs of learning-rate
warm-up), and records, at every step, the target's prediction on that step's batch before its update:
cross-entropy to the labels, mean top-class probability and the number of distinct predicted classes. A collapse
shows as a high top-class probability with a cross-entropy above chance (ln 10 = 2.30) and one or two predicted
classes. Prints a table, saves a plot of the per-step traces and, with ``--json PATH``, every figure.

    .venv/bin/python benchmarks/dml_order.py --epochs 3 --plot benchmarks/results/dml_order.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from sskt.config_io import parse_train_args
from sskt.engine import train
from sskt.experiments.grid import expand, load_grid, train_argv
from sskt.methods import METHODS
from sskt.methods.dml import DML, forward_keep_stats

GRID = Path(__file__).resolve().parents[1] / "configs" / "bench" / "fashion_limited.yaml"
TRACES: list[dict[str, float]] = []


@METHODS.register("dml_traced")
class TracedDML(DML):
    """DML that appends the target's pre-update prediction statistics on every batch to ``TRACES``. The extra
    target forward this costs (the step's own forward is inside ``DML.training_step``) is fine for a diagnostic."""

    def training_step(self, batch):
        with torch.no_grad():
            z = forward_keep_stats(self.raw_nets[0], batch.labeled_images)
            p, y = z.softmax(1), batch.labels
            TRACES.append(
                {
                    "ce": F.cross_entropy(z, y).item(),
                    "top_p": p.max(1).values.mean().item(),
                    "classes": float(z.argmax(1).unique().numel()),
                }
            )
        return super().training_step(batch)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0, help="optim.warmup_epochs for both runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", type=Path, default=None, help="PNG of the per-step traces")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def run_order(args: argparse.Namespace, alternate: bool, out: Path) -> dict:
    cell = next(c for c in expand(load_grid(GRID)) if c.name == f"dml-seed{args.seed}")
    overrides = {
        "method.name": "dml_traced",
        "method.dml.alternate": str(alternate).lower(),
        "optim.warmup_epochs": args.warmup,
        "epochs": args.epochs,
        "eval_every": args.epochs,
    }
    argv = train_argv(cell, out, threads=args.threads) + [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cfg = parse_train_args(argv)
    TRACES.clear()
    summary = train(cfg)
    steps = list(TRACES)
    first = steps[: len(steps) // args.epochs]
    return {
        "order": "alternating" if alternate else "simultaneous",
        "steps": steps,
        "test_acc": summary["final"]["test_acc"],
        "first_epoch_max_ce": max(s["ce"] for s in first),
        "first_epoch_max_top_p": max(s["top_p"] for s in first),
        "collapsed_steps": sum(s["classes"] <= 2 and s["ce"] > math.log(10) for s in steps[3:]),
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        for ax, key in zip(axes, ("ce", "top_p"), strict=True):
            ax.plot([s[key] for s in r["steps"]], label=r["order"])
    axes[0].axhline(math.log(10), color="grey", linestyle=":", label="chance (ln 10)")
    axes[0].set(xlabel="step", ylabel="target CE on the batch, before its update")
    axes[1].set(xlabel="step", ylabel="target mean top-class probability")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_order(args, alt, Path(tmp) / str(alt)) for alt in (True, False)]
    print(f"\n{args.epochs} epochs, seed {args.seed}, warm-up {args.warmup} epochs")
    print("| order | max CE, epoch 1 | max top-class p, epoch 1 | collapsed steps | test acc |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['order']} | {r['first_epoch_max_ce']:.2f} | {r['first_epoch_max_top_p']:.2f} "
            f"| {r['collapsed_steps']} of {len(r['steps'])} | {r['test_acc']:.2f} |"
        )
    if args.plot:
        plot(results, args.plot)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": {**vars(args), "plot": str(args.plot), "json": str(args.json)}, "results": results}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

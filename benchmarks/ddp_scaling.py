"""Does data parallelism scale? Rows per second of 1 and N processes with the same global batch (not a test).

In one invocation: the same run (Fashion-MNIST, ``--labels-per-class`` labels per class, ResNet20, global batch
``--batch-size``) trained by 1 process and by ``--processes`` gloo processes on CPU (``--devices N --strategy ddp``,
one torch thread each, so N processes use N cores), each for ``--epochs`` epochs. The figure is the mean of
``images_per_second`` (rows of the global batch trained per second, summed over the processes) over the epochs
after the first, and its ratio N-process / 1-process: N means perfect scaling. Both runs must also end with the
same test accuracy up to the BatchNorm difference (each process normalises its own rows). ``--json PATH`` writes
the figures.

    .venv/bin/python benchmarks/ddp_scaling.py --json benchmarks/results/ddp_scaling.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sskt.engine.records import versions


def run(args: argparse.Namespace, out: Path, processes: int) -> dict:
    argv = [
        sys.executable, "-m", "sskt", "train", "--data.name", "fashion_mnist", "--data.labels_per_class",
        str(args.labels_per_class), "--data.batch_size", str(args.batch_size), "--epochs", str(args.epochs),
        "--eval_every", str(args.epochs), "--optim.lr", "0.05", "--accelerator", "cpu", "--threads", "1",
        "--progress", "false", "--out", str(out), "--devices", str(processes),
        "--strategy", "ddp" if processes > 1 else "auto",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{processes}-process run failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    rates = [r["images_per_second"] for r in records[1:]] or [records[0]["images_per_second"]]
    return {"rows_per_second": statistics.mean(rates), "test_acc": summary["final"]["test_acc"]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--labels-per-class", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sskt-ddp-") as tmp:
        one = run(args, Path(tmp) / "p1", 1)
        many = run(args, Path(tmp) / f"p{args.processes}", args.processes)
    ratio = many["rows_per_second"] / one["rows_per_second"]
    print(f"1 process:  {one['rows_per_second']:.0f} rows/s, test acc {one['test_acc']:.2f}")
    print(f"{args.processes} processes: {many['rows_per_second']:.0f} rows/s, test acc {many['test_acc']:.2f}")
    print(f"scaling: {ratio:.2f}x with {args.processes} processes (ideal {args.processes}x)")
    if args.json:
        meta = {"platform": platform.platform(), "processor": platform.processor(), **versions()}
        result = {"one": one, "many": many, "processes": args.processes, "ratio": ratio, "machine": meta}
        Path(args.json).write_text(json.dumps({**result, "settings": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How a training run shares the machine (not a test): epoch time beside other work, as a ratio to the same run
alone, with the old thread defaults (OpenMP's default wait policy: workers spin) and the new ones (sskt sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads).

Cases, each timed in this one process's run so that the machine's speed cancels in the ratios:
- alone: one run, torch's default threads (one per core);
- busy: the same run beside one single-threaded busy process (``while True: pass``);
- second: two such runs at once (the figure is the mean of both);
- grid2: two runs at once with ``--threads 1`` each, as ``sskt grid --jobs 2`` runs its cells.
Two things at once on two cores leave each half the machine, so the fair ratio is 2 in every case; a case is
within its fair share at 2.5 (1.25 times fair) or less.

A run is killed once ``--epochs`` epochs are recorded; its figure is the mean ``epoch_seconds`` of the epochs
after the first (the first includes warm-up). The old defaults are emulated by importing torch before sskt with
the variable unset, so libgomp starts with its own default; the new ones by ``python -m sskt``.

    .venv/bin/python benchmarks/contention.py --json benchmarks/results/contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"scratch": "configs/demo/scratch.yaml", "sskt": "configs/demo/sskt.yaml"}
OLD = "import sys, torch; from sskt.cli import main; sys.exit(main(sys.argv[1:]))"
BUSY = "while True: pass"


SETTINGS = {
    "old": (True, {}),
    "new": (False, {}),
    "spin1k": (True, {"GOMP_SPINCOUNT": "1000"}),
    "spin3k": (True, {"GOMP_SPINCOUNT": "3000"}),
    "spin5k": (True, {"GOMP_SPINCOUNT": "5000"}),
    "spin10k": (True, {"GOMP_SPINCOUNT": "10000"}),
    "spin30k": (True, {"GOMP_SPINCOUNT": "30000"}),
}
"""Setting -> (import torch before sskt, extra environment): 'old' is OpenMP's default, 'new' sskt's; the spin
variants bound how long a waiting worker spins before it sleeps (libgomp's ``GOMP_SPINCOUNT``, default 300,000)."""


def trainer(setting: str, config: str, out: Path, threads: int | None) -> subprocess.Popen:
    """Start one training run (60 epochs asked, killed early) under ``setting`` (a key of SETTINGS)."""
    torch_first, extra = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | extra
    args = ["train", "--config", str(ROOT / config), "--out", str(out), "--epochs", "60", "--eval_every", "60"]
    args += ["--progress", "false"] + (["--threads", str(threads)] if threads else [])
    if threads:  # what the grid's runner adds for its cells
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    head = ["-c", OLD] if torch_first else ["-m", "sskt"]
    return subprocess.Popen([sys.executable, *head, *args], env=env, stdout=subprocess.DEVNULL, cwd=ROOT)


def epochs_recorded(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def wait_for_epochs(procs: list[tuple[subprocess.Popen, Path]], epochs: int, timeout: float) -> list[float]:
    """Wait until every run recorded ``epochs`` epochs, kill them all, return each run's mean epoch seconds
    (epochs 2..N)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(epochs_recorded(out)) >= epochs for _, out in procs):
            break
        if any(p.poll() not in (None, 0) for p, _ in procs):
            raise RuntimeError("a training run failed: " + ", ".join(str(out) for _, out in procs))
        time.sleep(0.5)
    for p, _ in procs:
        p.kill()
        p.wait()
    means = []
    for _, out in procs:
        recs = epochs_recorded(out)[1:epochs]
        means.append(sum(r["epoch_seconds"] for r in recs) / max(1, len(recs)))
    return means


def run_case(case: str, setting: str, config: str, tmp: Path, epochs: int) -> float:
    """Mean epoch seconds of the measured run(s) in ``case``."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if case == "busy" else None
    try:
        count, threads = (2, 1) if case == "grid2" else (2, None) if case == "second" else (1, None)
        outs = [tmp / f"{case}-{setting}-{Path(config).stem}-{i}" for i in range(count)]
        procs = [(trainer(setting, config, out, threads), out) for out in outs]
        means = wait_for_epochs(procs, epochs, timeout=1800)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return sum(means) / len(means)


def load_average() -> float:
    return os.getloadavg()[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not counted)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--settings", nargs="+", default=["old", "new"], choices=list(SETTINGS))
    p.add_argument("--cases", nargs="+", default=["alone", "busy", "second", "grid2"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    cases = args.cases
    result = {"machine": machine(), "load_at_start": load_average(), "epochs": args.epochs, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            for setting in args.settings:
                seconds = {c: run_case(c, setting, CONFIGS[config], Path(tmp), args.epochs) for c in cases}
                row = {c: {"epoch_seconds": s, "ratio_to_alone": s / seconds["alone"]} for c, s in seconds.items()}
                result["rows"][f"{config} {setting}"] = row
                print(config, setting, {c: f"{s:.2f}s x{s / seconds['alone']:.2f}" for c, s in seconds.items()})
    result["load_at_end"] = load_average()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def machine() -> dict:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "unknown",
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

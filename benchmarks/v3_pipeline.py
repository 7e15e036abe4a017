"""Benchmark v3 in one resumable command: every step of the protocol in order, each a grid that resumes where it
stopped, so a later session (or a restarted machine) runs ``run`` again and nothing finished is redone.

Per label budget (10, then 25, then 100: each regime completes before the next starts):

1. the search seed's adapted teachers (``teachers.yaml``, seed 100);
2. the search (``search_l<L>.yaml``): the search seed chooses each row's setting and schedule on validation;
3. the fresh grids written from the search (``v3_fresh.py``: ``fresh_l<L>.yaml``, ``fresh_l<L>_top.yaml``);
4. the fresh seeds' teachers (seeds 0-4);
5. seeds 0-2 of every row, then seeds 3-4 of the rows the regime map's verdict pairs.

After budget 10, the cached-against-online check (``cache_check.yaml``). Teachers whose weights are missing (a
fresh checkout: weights never go to git) are trained again first. A step whose grid reports failed cells is
run once more (a failed cell reruns from its last checkpoint); a second failure stops the pipeline with the step's
name. ``status`` prints each step's finished and total cells; ``commit`` commits the records of finished cells
(config.yaml, grid.log, model.json, records.jsonl, summary.json: never weights or unfinished cells).

    .venv/bin/python benchmarks/v3_pipeline.py status
    nohup .venv/bin/python benchmarks/v3_pipeline.py run > /tmp/v3.log 2>&1 &
    .venv/bin/python benchmarks/v3_pipeline.py commit
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
V3 = ROOT / "configs" / "bench" / "v3"
SSKT = [str(ROOT / ".venv" / "bin" / "sskt")]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BUDGETS = (10, 25, 100)
KEPT = ("config.yaml", "grid.log", "model.json", "records.jsonl", "summary.json")
RECORDS = ROOT / "benchmarks" / "records"
PARALLEL = ["--jobs", "2", "--threads", "1"]


@dataclass
class Step:
    name: str
    config: Path
    args: list[str]

    def command(self) -> list[str]:
        return [*SSKT, "grid", "--config", str(self.config), *self.args]


def steps() -> list[Step | Path]:
    """The protocol's steps in order; a Path is a search whose fresh grids must be written before the next step."""
    out: list[Step | Path] = []
    for labels in BUDGETS:
        search = V3 / f"search_l{labels}.yaml"
        out += [
            Step(f"l{labels} teachers (search seed)", V3 / "teachers.yaml", ["--only", f"l{labels}_*-seed100"]),
            Step(f"l{labels} search", search, PARALLEL),
            search,
            Step(f"l{labels} teachers (fresh seeds)", V3 / "teachers.yaml", ["--only", f"l{labels}_*-seed[0-4]"]),
            Step(f"l{labels} fresh seeds 0-2", V3 / f"fresh_l{labels}.yaml", PARALLEL),
            Step(f"l{labels} fresh seeds 3-4", V3 / f"fresh_l{labels}_top.yaml", PARALLEL),
        ]
        if labels == 10:
            out.append(Step("cached against online", V3 / "cache_check.yaml", PARALLEL))
    return out


def write_fresh(search: Path) -> None:
    """Write the fresh grids of a finished search (once: they are committed and never rewritten)."""
    fresh = search.with_name(search.name.replace("search_", "fresh_"))
    if not fresh.is_file():
        subprocess.run([PYTHON, str(ROOT / "benchmarks" / "v3_fresh.py"), str(search)], check=True, cwd=ROOT)


def restore_teachers() -> None:
    """A teacher whose record is in git but whose weights are not (a fresh checkout: weights are never committed)
    is moved out of the way, so its grid step trains it again into the same folder (the KD and DHO rows name it);
    git then shows whether its figures changed."""
    for cell in sorted((RECORDS / "fashion_v3_teachers").glob("*-teacher-seed*")):
        if (cell / "summary.json").is_file() and not (cell / "model.safetensors").is_file():
            aside = Path(tempfile.mkdtemp(prefix=f"{cell.name}-committed-"))
            shutil.move(str(cell), str(aside / cell.name))
            print(f"teacher {cell.name} has its record but not its weights: retraining it (record kept in {aside})")


def run() -> int:
    restore_teachers()
    for step in steps():
        if isinstance(step, Path):
            write_fresh(step)
            continue
        for attempt in (1, 2):
            print(f"== {step.name} (attempt {attempt}): {' '.join(step.command())}", flush=True)
            if subprocess.run(step.command(), cwd=ROOT).returncode == 0:
                break
        else:
            print(f"v3 pipeline stopped: step {step.name!r} still has failed cells; see their grid.log", flush=True)
            return 1
    print("v3 pipeline: every step finished", flush=True)
    return 0


def status() -> int:
    for step in steps():
        if isinstance(step, Path):
            continue
        if not step.config.is_file():
            print(f"{step.name}: not written yet")
            continue
        dry = subprocess.run([*step.command(), "--dry-run"], cwd=ROOT, capture_output=True, text=True)
        states = [line.split("]")[0].lstrip("[") for line in dry.stdout.splitlines() if line.startswith("[")]
        counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states), key=lambda s: s != "done"))
        print(f"{step.name}: {counts or dry.stderr.strip()}")
    return 0


def commit() -> int:
    """Commit the kept files of every finished cell under benchmarks/records/fashion_v3_*."""
    files = [
        str(cell / name)
        for cell in sorted(RECORDS.glob("fashion_v3_*/*"))
        if (cell / "summary.json").is_file()
        for name in KEPT
        if (cell / name).is_file()
    ]
    if not files:
        return 0
    subprocess.run(["git", "add", *files], cwd=ROOT, check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=ROOT).returncode == 0:
        print("no new finished cells")
        return 0
    subprocess.run(["git", "commit", "-q", "-m", "Benchmark v3 records: finished cells"], cwd=ROOT, check=True)
    print("committed the finished cells")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("run", "status", "commit"))
    args = parser.parse_args(argv)
    return {"run": run, "status": status, "commit": commit}[args.action]()


if __name__ == "__main__":
    sys.exit(main())

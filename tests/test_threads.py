"""Threads that yield on a shared machine, and timings that say what they measured: the OpenMP wait policy sskt
sets before torch loads (a user's own setting wins), and the report's shared-machine flag and CPU clock on
fabricated records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sskt.experiments.budget import on_cpu_clock, shared_machine, shared_machine_lines
from sskt.experiments.runs import Run
from sskt.threads import yield_when_waiting

PRINT_POLICY = "import sskt, os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy_in_a_fresh_interpreter(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    out = subprocess.run([sys.executable, "-c", PRINT_POLICY], env=clean, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_sskt_makes_waiting_openmp_workers_sleep() -> None:
    assert _policy_in_a_fresh_interpreter() == "PASSIVE"


def test_the_users_own_wait_policy_wins() -> None:
    assert _policy_in_a_fresh_interpreter(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    env = {"OMP_WAIT_POLICY": "active"}
    assert yield_when_waiting(env) == {} and env == {"OMP_WAIT_POLICY": "active"}
    assert yield_when_waiting({}) == {"OMP_WAIT_POLICY": "PASSIVE"}


def _run(epochs: list[tuple[float, float, float]], cores: int = 2, threads: int = 2) -> Run:
    """A run whose epochs took (wall seconds, CPU seconds, 1-minute load at the end)."""
    records, wall, cpu = [], 0.0, 0.0
    for i, (w, c, load) in enumerate(epochs):
        wall, cpu = wall + w, cpu + c
        records.append(
            {"epoch": i + 1, "epoch_seconds": w, "train_seconds": wall, "cpu_seconds": c, "train_cpu_seconds": cpu,
             "load_1min": load}
        )  # fmt: skip
    return Run(Path("r"), {}, records, {"seed": 0, "machine": {"cores": cores, "threads": threads}})


def test_a_run_alone_is_not_flagged() -> None:
    assert shared_machine(_run([(2.0, 3.8, 2.0), (2.1, 3.9, 2.1)])) is None
    assert shared_machine(_run([(2.0, 1.9, 2.0)], threads=1)) is None, "a 1-thread grid cell beside another"


def test_a_run_beside_other_work_is_flagged_by_load_or_by_cpu_share() -> None:
    by_load = shared_machine(_run([(4.0, 3.9, 3.2), (4.1, 3.9, 3.4)]))
    assert by_load is not None and "load 3.3 on 2 cores" in by_load
    by_share = shared_machine(_run([(6.0, 4.0, 2.2), (6.5, 4.1, 2.3)]))
    assert by_share is not None and "0.65 CPU s per wall s on 2 threads" in by_share


def test_records_without_the_fields_are_not_judged() -> None:
    old = Run(Path("r"), {}, [{"epoch": 1, "epoch_seconds": 5.0}], {"seed": 0, "machine": {"cores": 2}})
    assert shared_machine(old) is None and on_cpu_clock(old) is None


def test_the_report_names_the_runs_that_shared_the_machine() -> None:
    class Group:
        label = "scratch"
        runs = [_run([(2.0, 3.8, 2.0)]), _run([(4.0, 3.9, 3.5)])]

    lines = shared_machine_lines([Group()])
    assert lines and "scratch seed 0 (mean load 3.5 on 2 cores)" in lines[0]
    assert shared_machine_lines([type("G", (), {"label": "x", "runs": [_run([(2.0, 3.8, 2.0)])]})()]) == []


def test_the_cpu_clock_reads_budgets_in_cpu_seconds() -> None:
    run = on_cpu_clock(_run([(4.0, 3.0, 2.0), (5.0, 3.5, 2.0)]))
    assert [r["train_seconds"] for r in run.records] == [3.0, 6.5]
    assert [r["epoch_seconds"] for r in run.records] == [3.0, 3.5]


def test_a_run_records_cpu_seconds_and_load_beside_wall_seconds(tiny_cfg) -> None:
    from sskt.engine import train
    from sskt.rundir import RunDir

    summary = train(tiny_cfg)
    records = RunDir(tiny_cfg.out).read_records()
    for record in records:
        assert record["cpu_seconds"] > 0 and record["load_1min"] >= 0
        assert record["train_cpu_seconds"] >= record["cpu_seconds"]
    assert summary["cpu_seconds"] == pytest.approx(records[-1]["train_cpu_seconds"])
    machine = summary["machine"]
    assert machine["cpu"] and machine["threads"] >= 1
    assert machine["peak_load_1min"] == max(r["load_1min"] for r in records)

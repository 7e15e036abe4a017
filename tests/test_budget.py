"""Cost in reports: the validation-chosen test figure within a training budget, scratch's converged time, the
equal-budget table and the accuracy-against-time figure, on fabricated run directories with known numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from sskt.config import SourceConfig, TrainConfig
from sskt.experiments.budget import at_budget, converged_seconds, time_curve
from sskt.experiments.report import write_report
from sskt.experiments.runs import load_run

# (train_seconds, val_acc, test_acc) per evaluated epoch
SCRATCH = [(5, 70, 71), (10, 80, 81), (15, 79, 80), (20, 78, 79)]  # validation chooses epoch 2, at 10 s
SSKT = [(10, 60, 61), (20, 75, 76), (30, 85, 86), (40, 86, 87)]


def _run(root: Path, method: str, seed: int, curve: list[tuple[int, int, int]]) -> Path:
    cfg = TrainConfig(seed=seed, epochs=len(curve), out=str(root / f"{method}-seed{seed}"))
    cfg.method.name = method
    if method != "scratch":
        cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet")]
    run = Path(cfg.out)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    records = [
        {"epoch": e + 1, "epoch_seconds": 5.0, "train_seconds": t, "val_acc": v + seed, "test_acc": a + seed}
        for e, (t, v, a) in enumerate(curve)
    ]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    best = max(range(len(curve)), key=lambda i: curve[i][1])
    summary = {
        "final": {"val_acc": curve[-1][1] + seed, "test_acc": curve[-1][2] + seed},
        "best": {"val_acc": curve[best][1] + seed, "test_acc": curve[best][2] + seed},
        "best_epoch": best + 1,
        "selected_by": "val_acc",
        "wall_seconds": 60.0,
        "train_seconds": curve[-1][0],
        "seed": seed,
        "method": method,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_figure_within_a_budget_is_chosen_on_validation(tmp_path) -> None:
    run = load_run(_run(tmp_path, "sskt", 0, SSKT))
    assert at_budget(run, 5, "val_acc", "test_acc") is None, "no evaluated epoch fits in 5 s"
    assert at_budget(run, 10, "val_acc", "test_acc") == 61
    assert at_budget(run, 29, "val_acc", "test_acc") == 76
    assert at_budget(run, 1000, "val_acc", "test_acc") == 87
    assert converged_seconds(load_run(_run(tmp_path, "scratch", 0, SCRATCH))) == 10


def test_report_tabulates_equal_budgets_and_plots_accuracy_against_time(tmp_path) -> None:
    for seed in (0, 1):
        _run(tmp_path, "scratch", seed, SCRATCH)
        _run(tmp_path, "sskt", seed, SSKT)
    text = write_report(tmp_path).read_text()
    section = text.split("## At equal training time", 1)[1].split("## Against the strongest baseline", 1)[0]
    assert "that seed's scratch run converged (0.2 min, mean over 2 seeds, 0.2-0.2 min)" in section
    lines = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    # budgets 10, 20 and 40 s: scratch keeps its epoch-2 figure (81, 82 by seed); SSKT gets 61/62, 76/77, 87/88.
    assert "| 81.50 +- 0.71 (2) | 81.50 +- 0.71 (2) | 81.50 +- 0.71 (2) |" in lines["scratch"]
    sskt = lines["sskt"].split(" | ")[1:]
    assert sskt[0].startswith("61.50 +- 0.71 (2); -20.00") and sskt[1].startswith("76.50 +- 0.71 (2); -5.00")
    assert sskt[2].startswith("87.50 +- 0.71 (2); +6.00")
    assert (tmp_path / "test_acc_vs_time.png").stat().st_size > 1000
    assert (tmp_path / "test_acc_vs_budget.png").stat().st_size > 1000


def test_report_sets_the_sskt_family_against_the_strongest_baseline(tmp_path) -> None:
    """Validation prefers sskt in the family and scratch (the only other method) outside it; at their validation-
    chosen epochs sskt scores 87/88 and scratch 81/82, a paired +6.00 on both seeds."""
    for seed in (0, 1):
        _run(tmp_path, "scratch", seed, SCRATCH)
        _run(tmp_path, "sskt", seed, SSKT)
    text = write_report(tmp_path).read_text()
    section = text.split("## Against the strongest baseline", 1)[1].split("Other final-epoch metrics", 1)[0]
    assert "**+6.00 [+6.00, +6.00] (2)**, an interval above zero" in section
    assert "| sskt | 87.50 +- 0.71 (2) | +6.00 [+6.00, +6.00] (2) |" in section


def test_validation_chooses_the_schedule_length_within_a_budget(tmp_path) -> None:
    """SSKT ran 2 and 4 epochs; at every budget validation prefers the 2-epoch schedule (val 91 > 86), so the
    family's figure is its test accuracy (51/52), in one row for both lengths."""
    short = [(5, 90, 50), (10, 91, 51)]
    for seed in (0, 1):
        _run(tmp_path, "scratch", seed, SCRATCH)
        _run(tmp_path / "long", "sskt", seed, SSKT)
        _run(tmp_path / "short", "sskt", seed, short)
    text = write_report(tmp_path).read_text()
    section = text.split("## At equal training time", 1)[1].split("## Against the strongest baseline", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| group")]
    assert len(rows) == 2, rows
    (sskt,) = [r for r in rows if "sskt" in r]
    assert sskt.count("51.50 +- 0.71 (2); -30.00") == 3


def _equal_time(root: Path) -> str:
    return write_report(root).read_text().split("## At equal training time", 1)[1].split("## Against", 1)[0]


def test_a_seed_timed_on_a_slower_machine_reads_the_same_at_its_own_budgets(tmp_path) -> None:
    """Seed 1 ran wholly on a machine twice as slow: the budgets are per seed (its scratch run converged at 20 s,
    not 10 s), so every figure at a budget is the one an even machine gives, and nothing is flagged."""
    for root, slow in ((tmp_path / "slow", 2), (tmp_path / "even", 1)):
        for method, curve in (("scratch", SCRATCH), ("sskt", SSKT)):
            _run(root, method, 0, curve)
            _run(root, method, 1, [(slow * t, v, a) for t, v, a in curve])
    slow, even = _equal_time(tmp_path / "slow"), _equal_time(tmp_path / "even")
    table = [line for line in slow.splitlines() if line.startswith("| sskt") or line.startswith("| scratch")]
    assert table and all(line in even for line in table), (table, even)
    assert "Mixed speeds" not in slow and "0.2-0.3 min" in slow
    # the figure against multiples of the seed's scratch converged time: the same curve from both machines
    curves = []
    for root in (tmp_path / "slow", tmp_path / "even"):
        runs = [load_run(root / f"sskt-seed{seed}") for seed in (0, 1)]
        unit = {seed: converged_seconds(load_run(root / f"scratch-seed{seed}")) for seed in (0, 1)}
        x, stats = time_curve(runs, "val_acc", "test_acc", points=5, unit=unit)
        curves.append((x, [(s.mean, s.n) for s in stats]))
    assert curves[0] == curves[1] and curves[0][0] == [1.0, 1.75, 2.5, 3.25, 4.0], curves


def test_a_run_timed_apart_from_its_seeds_scratch_run_is_flagged(tmp_path) -> None:
    """Seed 1's scratch run took twice as long per epoch but its SSKT run did not (another machine, or heavier
    work beside it): SSKT's speed relative to its seed's scratch run is 2x apart across seeds, and the budget
    section names it with the ratio; scratch itself is not named."""
    _run(tmp_path, "scratch", 0, SCRATCH)
    _run(tmp_path, "scratch", 1, [(2 * t, v, a) for t, v, a in SCRATCH])
    for seed in (0, 1):
        _run(tmp_path, "sskt", seed, SSKT)
    warning = _equal_time(tmp_path).split("| group", 1)[0]
    assert "**Mixed speeds:** the runs of sskt (2.00x) trained" in warning
    assert "scratch (" not in warning

"""Grids (expansion, names, resume-skipping), statistics on known numbers, and reports from fabricated runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sskt.config import SourceConfig, TrainConfig
from sskt.errors import UserError
from sskt.experiments import curves
from sskt.experiments.cells import LOCK, claim, release
from sskt.experiments.grid import expand, load_grid, parse_grid, run_grid, select, train_argv
from sskt.experiments.grid_cli import grid_main
from sskt.experiments.report import group_runs, headline_metric, scratch_counterpart, write_report
from sskt.experiments.runs import load_run, provenance
from sskt.experiments.stats import paired_diff, summarize, t_quantile_975


def _write_grid(tmp_path: Path, raw: dict) -> Path:
    (tmp_path / "preset.yaml").write_text("epochs: 2\n")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


GRID = {
    "base": ["preset.yaml", {"data": {"labels_per_class": 10}, "optim.lr": 0.05}],
    "axes": {
        "variant": [
            {"label": "scratch", "method.name": "scratch"},
            {"method.name": "sskt", "head.kind": "tm"},
        ],
        "method.sskt.alpha": [0.5, 1],
    },
    "seeds": [0, 3],
    "out": "runs/x",
}


# --- grid expansion --------------------------------------------------------------------------------------------
def test_expand_is_the_product_with_readable_stable_names(tmp_path: Path) -> None:
    cells = expand(load_grid(_write_grid(tmp_path, GRID)))
    assert len(cells) == 2 * 2 * 2
    names = [c.name for c in cells]
    assert names[:4] == [
        "scratch-alpha0.5-seed0",
        "scratch-alpha0.5-seed3",
        "scratch-alpha1-seed0",
        "scratch-alpha1-seed3",
    ]
    assert "sskt_tm-alpha1-seed3" in names  # a coupled value without a label is named by its values
    assert names == [c.name for c in expand(load_grid(tmp_path / "grid.yaml"))]  # stable across loads
    tm = next(c for c in cells if c.name == "sskt_tm-alpha0.5-seed0")
    assert tm.overrides == {
        "data.labels_per_class": 10,
        "optim.lr": 0.05,
        "method.name": "sskt",
        "head.kind": "tm",
        "method.sskt.alpha": 0.5,
    }
    assert tm.seed == 0 and tm.configs == [(tmp_path / "preset.yaml").resolve()]


def test_coupled_value_can_add_a_preset_and_list_values(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text("epochs: 3\n")
    sources = [{"name": "resnet50.imagenet"}, {"name": "resnet50.places365"}]
    raw = {"axes": {"src": [{"label": "PI", "config": "extra.yaml", "sources": sources}]}, "seeds": [1]}
    (cell,) = expand(load_grid(_write_grid(tmp_path, raw)))
    assert cell.name == "PI-seed1"
    assert cell.configs == [(tmp_path / "extra.yaml").resolve()]
    argv = train_argv(cell, tmp_path / cell.name)
    assert json.loads(argv[argv.index("--sources") + 1]) == sources


def test_seed_placeholder_names_per_seed_files() -> None:
    grid = parse_grid({"base": {"method.kd.teacher": "checkpoint:runs/t/teacher-seed{seed}"}, "seeds": [2, 4]})
    assert [c.overrides["method.kd.teacher"] for c in expand(grid)] == [
        "checkpoint:runs/t/teacher-seed2",
        "checkpoint:runs/t/teacher-seed4",
    ]


def test_grid_rejects_bad_keys_and_colliding_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="method.alpah"):
        parse_grid({"axes": {"method.alpah": [1]}})
    with pytest.raises(UserError, match="axis"):
        parse_grid({"axis": {}})
    with pytest.raises(UserError, match="distinct"):
        expand(parse_grid({"axes": {"v": [{"method.name": "kd"}, {"label": "kd", "method.sskt.alpha": 2}]}}))


def test_train_argv_passes_overrides_seed_out_and_resume(tmp_path: Path) -> None:
    cell = expand(parse_grid({"base": {"method.kd.legacy": True, "data.subset_seed": None}, "seeds": [7]}))[0]
    argv = train_argv(cell, tmp_path / "c", threads=2, resume=True)
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    assert pairs["--method.kd.legacy"] == "true" and pairs["--data.subset_seed"] == "null"
    assert pairs["--seed"] == "7" and pairs["--out"] == str(tmp_path / "c")
    assert pairs["--threads"] == "2" and pairs["--resume"] == "true"


# --- grid running ----------------------------------------------------------------------------------------------
class FakeRunner:
    """Records what it was asked to run; 'trains' by writing summary.json, or fails for chosen cells."""

    def __init__(self, fail: str = "") -> None:
        self.calls: dict[str, list[str]] = {}
        self.fail = fail

    def __call__(self, argv: list[str], cell_dir: Path, threads: int) -> int:
        self.calls[cell_dir.name] = argv
        if self.fail and self.fail in cell_dir.name:
            return 3
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "summary.json").write_text("{}")
        return 0


def test_finished_cells_are_skipped_and_checkpointed_ones_resume(tmp_path: Path) -> None:
    grid = load_grid(_write_grid(tmp_path, GRID))
    out = tmp_path / "runs"
    (out / "scratch-alpha0.5-seed0").mkdir(parents=True)
    (out / "scratch-alpha0.5-seed0" / "summary.json").write_text("{}")
    (out / "scratch-alpha1-seed3" / "checkpoints").mkdir(parents=True)
    (out / "scratch-alpha1-seed3" / "checkpoints" / "last.pt").write_bytes(b"")
    (out / "sskt_tm-alpha1-seed0").mkdir(parents=True)  # killed after its first record, before any checkpoint
    (out / "sskt_tm-alpha1-seed0" / "records.jsonl").write_text('{"epoch": 1}\n')
    runner = FakeRunner()
    result = run_grid(grid, out, jobs=2, runner=runner)
    assert result.skipped == ["scratch-alpha0.5-seed0"] and not result.failed
    assert len(runner.calls) == 7 and "scratch-alpha0.5-seed0" not in runner.calls
    assert runner.calls["scratch-alpha1-seed3"][-2:] == ["--resume", "true"]
    assert runner.calls["sskt_tm-alpha1-seed0"][-2:] == ["--resume", "true"]
    assert "--resume" not in runner.calls["scratch-alpha1-seed0"]
    again = FakeRunner()
    assert len(run_grid(grid, out, runner=again).skipped) == 8 and not again.calls  # a rerun redoes nothing


def test_a_failing_cell_is_reported_and_the_grid_goes_on(tmp_path: Path) -> None:
    grid = load_grid(_write_grid(tmp_path, GRID))
    result = run_grid(grid, tmp_path / "runs", runner=FakeRunner(fail="sskt_tm-alpha1"))
    assert sorted(result.failed) == ["sskt_tm-alpha1-seed0", "sskt_tm-alpha1-seed3"]
    assert len(result.finished) == 6


HOLD = "import sys, time; from pathlib import Path; from sskt.experiments.cells import claim; "
HOLD += "assert claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"


def _holder(cell: Path) -> subprocess.Popen:
    """Another process that claims ``cell`` and holds it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(cell)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_cell_locked_by_a_live_process_is_left_to_it_and_a_dead_ones_lock_is_free(tmp_path: Path) -> None:
    grid = load_grid(_write_grid(tmp_path, GRID))
    out = tmp_path / "runs"
    busy, crashed = out / "scratch-alpha1-seed0", out / "scratch-alpha1-seed3"
    holder = _holder(busy)
    killed = _holder(crashed)
    killed.kill()  # SIGKILL: no clean-up ran; its lock file stays, but the kernel dropped the lock
    killed.wait()
    assert (crashed / LOCK).exists()
    try:
        runner = FakeRunner()
        result = run_grid(grid, out, jobs=2, runner=runner)
        assert result.busy == ["scratch-alpha1-seed0"] and "scratch-alpha1-seed0" not in runner.calls
        assert "scratch-alpha1-seed3" in result.finished and len(result.finished) == 7
        assert not (crashed / LOCK).exists() and (busy / LOCK).exists()  # released after running; the live one kept
    finally:
        holder.kill()
        holder.wait()
    again = FakeRunner()
    run_grid(grid, out, jobs=2, runner=again, threads=1)
    assert list(again.calls) == ["scratch-alpha1-seed0"] and again.calls["scratch-alpha1-seed0"][-4:-2] == [
        "--threads", "1"
    ]  # fmt: skip


def test_claim_is_exclusive_until_released(tmp_path: Path) -> None:
    cell = tmp_path / "c"
    assert claim(cell) and not claim(cell)  # even the holder cannot claim it twice
    assert (cell / LOCK).read_text() == f"{socket.gethostname()} {os.getpid()}"
    release(cell)
    assert not (cell / LOCK).exists()
    (cell / LOCK).write_text("elsewhere.example 1")  # a lock file nobody holds (left by a crash) is free
    assert claim(cell)
    release(cell)
    release(cell)  # releasing a cell this process does not hold does nothing
    holder = _holder(cell)
    try:
        assert not claim(cell)
    finally:
        holder.kill()
        holder.wait()
    assert claim(cell)
    release(cell)


def test_only_and_seed_major_pick_and_order_cells(tmp_path: Path) -> None:
    cells = expand(load_grid(_write_grid(tmp_path, GRID)))
    assert [c.name for c in select(cells, ["scratch-*"])] == [
        "scratch-alpha0.5-seed0", "scratch-alpha0.5-seed3", "scratch-alpha1-seed0", "scratch-alpha1-seed3"
    ]  # fmt: skip
    ordered = select(cells, None, seed_major=True)
    assert [c.seed for c in ordered] == [0, 0, 0, 0, 3, 3, 3, 3] and ordered[0].name == "scratch-alpha0.5-seed0"
    assert [c.name for c in select(cells, ["*-alpha1-seed3", "nothing*"])] == [
        "scratch-alpha1-seed3", "sskt_tm-alpha1-seed3"
    ]  # fmt: skip
    with pytest.raises(UserError, match=r"--only kd-\* matches no cell; cells: scratch-alpha0.5-seed0"):
        select(cells, ["kd-*"])


def test_dry_run_lists_every_cell_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write_grid(tmp_path, GRID)
    assert grid_main(["--config", str(path), "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and all(line.startswith("[new] python -m sskt train") for line in lines)
    assert not (tmp_path / "r").exists()


# --- statistics ------------------------------------------------------------------------------------------------
def test_summary_is_mean_and_sample_std() -> None:
    s = summarize([90.0, 91.0, 95.0])
    assert s.mean == pytest.approx(92.0) and s.n == 3
    assert s.std == pytest.approx(math.sqrt(((90 - 92) ** 2 + (91 - 92) ** 2 + (95 - 92) ** 2) / 2))
    assert summarize([4.0]).std == 0.0 and summarize([]).n == 0


def test_paired_difference_interval_by_hand() -> None:
    a = {0: 85.0, 1: 84.0, 2: 86.5, 9: 99.0}  # seed 9 has no partner and is left out
    b = {0: 84.0, 1: 83.0, 2: 85.3}
    d = paired_diff(a, b)
    diffs = [1.0, 1.0, 1.2]
    half = 4.302653 * statistics.stdev(diffs) / math.sqrt(3)  # t_{0.975} with 2 degrees of freedom
    assert d.n == 3 and d.mean == pytest.approx(statistics.mean(diffs))
    assert (d.low, d.high) == (pytest.approx(d.mean - half), pytest.approx(d.mean + half))
    assert d.significant and not paired_diff({0: 1.0, 1: 2.0}, {0: 0.0, 1: 2.5}).significant
    assert paired_diff({0: 1.0}, {0: 0.0}).n == 1 and math.isnan(paired_diff({0: 1.0}, {0: 0.0}).low)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 31, 60, 200])
def test_t_quantile_leaves_2_5_percent_in_each_tail(df: int) -> None:
    q = t_quantile_975(df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    steps = 20000  # midpoint rule on [0, q] of the t density; symmetric, so the central mass is twice that
    h = q / steps
    mass = sum(math.exp(log_c - (df + 1) / 2 * math.log1p(((i + 0.5) * h) ** 2 / df)) for i in range(steps)) * h
    assert 2 * mass == pytest.approx(0.95, abs=2e-4)


# --- reports ---------------------------------------------------------------------------------------------------
FINAL = {"scratch": [80.0, 81.0, 82.5], "sskt": [81.0, 82.0, 84.0]}


def _fabricate(root: Path, method: str, seed: int, final: float, head: str = "linear", val: bool = False) -> Path:
    """A finished run directory. ``val``: today's summary with a validation-chosen 'best' (test acc final - 0.5 at
    epoch 2, where val_acc peaks); else the layout of runs made before the validation split, whose 'best' was
    chosen on the test set (final + 1)."""
    cfg = TrainConfig(seed=seed, epochs=3, out=str(root / f"{method}-seed{seed}"))
    cfg.method.name = method
    if method != "scratch":
        cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet")]
        cfg.head.kind = head
    run = Path(cfg.out)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    recs = [{"epoch": e, "train_loss": 1.0 / e, "test_acc": final - 3 + e} for e in (1, 2, 3)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary = {
        "final": {"test_acc": final, "test_loss": 0.5},
        "best": {"test_acc": final + 1},
        "best_epoch": 2,
    }
    if val:
        summary = {
            "final": {"val_acc": 70.0, "test_acc": final, "test_loss": 0.5},
            "best": {"val_acc": 75.0 + (method == "sskt"), "test_acc": final - 0.5, "test_loss": 0.6},
            "best_epoch": 2,
            "selected_by": "val_acc",
            "best_test_oracle": {"val_acc": 70.0, "test_acc": final + 1, "test_loss": 0.5},
            "best_test_oracle_epoch": 3,
        }
    summary |= {
        "wall_seconds": 60.0 * (seed + 1),
        "seed": seed,
        "git_commit": "abc123def4567890",
        "versions": {"torch": "2.14.1"},
        "method": method,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_groups_differ_only_in_seed_and_pair_with_scratch(tmp_path: Path) -> None:
    runs = [load_run(_fabricate(tmp_path, m, s, v[s])) for m, v in FINAL.items() for s in range(3)]
    groups = group_runs(runs)
    assert [g.label for g in groups] == ["scratch", "sskt"] and all(len(g.runs) == 3 for g in groups)
    assert scratch_counterpart(groups[1], groups) is groups[0]
    assert scratch_counterpart(groups[0], groups) is None


def _set_config(run: Path, **changes: object) -> Path:
    config = yaml.safe_load((run / "config.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_a_headline_pairs_with_the_scratch_run_whose_schedule_validation_chose(tmp_path: Path) -> None:
    """Validation chose 200 epochs for scratch and 3 for SSKT: still each other's pair; a scratch run that differs
    in anything but the schedule's length (here the learning rate) is not."""
    scratch = [_set_config(_fabricate(tmp_path, "scratch", s, 80.0), epochs=200, eval_every=20) for s in range(2)]
    sskt = [_fabricate(tmp_path, "sskt", s, 81.0) for s in range(2)]
    groups = group_runs([load_run(r) for r in scratch + sskt])
    assert scratch_counterpart(groups[1], groups) is groups[0]
    for r in scratch:
        _set_config(r, optim__lr=0.2)
    groups = group_runs([load_run(r) for r in scratch + sskt])
    assert scratch_counterpart(groups[1], groups) is None


def test_provenance_names_the_machines_that_timed_the_runs(tmp_path: Path) -> None:
    runs = [_fabricate(tmp_path, "scratch", s, 80.0) for s in range(3)]
    summary = json.loads((runs[0] / "summary.json").read_text())
    summary["machine"] = {"cpu": "AMD EPYC", "cores": 2, "threads": 1, "accelerator": "cpu"}
    (runs[0] / "summary.json").write_text(json.dumps(summary))
    lines = provenance([load_run(r) for r in runs])
    assert "- machines (runs): AMD EPYC, 2 cores, 1 threads, cpu (1); not recorded (2)" in lines


def test_runs_made_before_a_config_field_existed_group_with_newer_runs(tmp_path: Path) -> None:
    """A field added later (here ``precise_bn``) is absent from an older run's config.yaml; it counts as its default."""
    old = _fabricate(tmp_path, "scratch", 0, 80.0)
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["precise_bn"]
    (old / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    new = _fabricate(tmp_path, "scratch", 1, 81.0)
    groups = group_runs([load_run(old), load_run(new)])
    assert len(groups) == 1 and len(groups[0].runs) == 2


def test_report_files_from_fabricated_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            _fabricate(runs, method, seed, v)
    (runs / "killed-seed0").mkdir()
    (runs / "killed-seed0" / "config.yaml").write_text("seed: 0\n")
    md = write_report(runs, tmp_path / "rep")
    text = md.read_text()
    sskt = summarize(FINAL["sskt"])
    assert f"{sskt.mean:.2f} +- {sskt.std:.2f} (3)" in text
    best = summarize([v + 1 for v in FINAL["sskt"]])
    assert f"{best.mean:.2f} +- {best.std:.2f} (3)" in text
    diffs = [a - b for a, b in zip(FINAL["sskt"], FINAL["scratch"], strict=True)]
    half = 4.302653 * statistics.stdev(diffs) / math.sqrt(3)
    mean = statistics.mean(diffs)
    assert f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (3)" in text
    assert "abc123def456" in text and "2.14.1" in text and "killed-seed0" in text
    with open(tmp_path / "rep" / "report.csv") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    assert float(rows["sskt"]["final_test_acc_mean"]) == pytest.approx(sskt.mean)
    assert float(rows["sskt"]["final_diff_low"]) == pytest.approx(mean - half)
    assert rows["scratch"]["final_diff_mean"] == ""
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["bars_method.name+sources.png", "curves_test_acc.png"]
    assert all((tmp_path / "rep" / p).stat().st_size > 1000 for p in pngs)
    assert all(f"({p})" in text for p in pngs)


def test_report_labels_test_chosen_figures_as_oracles(tmp_path: Path) -> None:
    """Runs made before the validation split: their 'best' was chosen on the test set, and the report says so."""
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            _fabricate(tmp_path / "old", method, seed, v)
    text = write_report(tmp_path / "old", plots=False).read_text()
    assert "oracle test_acc (best test epoch)" in text and "oracle - scratch" in text
    assert "val-chosen" not in text.split("## Provenance")[0].split("|", 1)[1]
    assert "No run held out a validation split" in text
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    assert "oracle epoch" in header and "chosen epoch" not in header, "no epoch was chosen without validation"


def test_report_shows_the_validation_chosen_epoch_and_what_chose_it(tmp_path: Path) -> None:
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            _fabricate(tmp_path / "new", method, seed, v, val=True)
    text = write_report(tmp_path / "new", plots=False).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    assert "test_acc at val-chosen epoch" in header and "val_acc (chooses)" in header and "oracle" not in header
    chosen = summarize([v - 0.5 for v in FINAL["sskt"]])
    assert f"{chosen.mean:.2f} +- {chosen.std:.2f} (3)" in text
    assert "Chosen by validation: **sskt**" in text
    rows = curves.run_rows([tmp_path / "new" / "sskt-seed0"])
    assert rows[0]["best"] == FINAL["sskt"][0] - 0.5 and rows[0]["oracle"] == FINAL["sskt"][0] + 1


def test_a_video_report_leads_with_the_runs_own_headline(tmp_path: Path) -> None:
    """A video run's summary names ``test_video_acc`` as its headline; the clip-level ``test_acc`` beside it (and
    first in the table's usual order) does not lead the report."""
    for seed, v in enumerate(FINAL["scratch"]):
        run = _fabricate(tmp_path / "video", "scratch", seed, v)
        summary = json.loads((run / "summary.json").read_text())
        summary["final"] |= {"test_video_acc": v + 5}
        summary["headline"] = "test_video_acc"
        (run / "summary.json").write_text(json.dumps(summary))
    runs = [load_run(p) for p in sorted((tmp_path / "video").iterdir())]
    assert headline_metric(runs) == "test_video_acc"
    assert headline_metric([dataclasses.replace(r, summary=r.summary | {"headline": None}) for r in runs]) == "test_acc"
    text = write_report(tmp_path / "video", plots=False).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| group"))
    assert "test_video_acc" in header and "test_acc" not in header.replace("test_video_acc", "")
    video = summarize([v + 5 for v in FINAL["scratch"]])
    assert f"{video.mean:.2f} +- {video.std:.2f} (3)" in text


def test_report_without_runs_or_with_a_bad_metric_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no finished runs"):
        write_report(tmp_path)
    _fabricate(tmp_path, "scratch", 0, 80.0)
    with pytest.raises(UserError, match="test_acc, test_loss"):
        write_report(tmp_path, metric="test_ac", plots=False)
    assert "final test_loss" in write_report(tmp_path, metric="test_loss", plots=False).read_text()


def test_report_over_several_folders_pairs_a_search_with_scratch_elsewhere_and_counts_a_run_once(
    tmp_path: Path,
) -> None:
    search, bench = tmp_path / "search", tmp_path / "bench"
    for seed, v in enumerate(FINAL["sskt"]):
        _fabricate(search, "sskt", seed, v)
    for seed, v in enumerate(FINAL["scratch"]):
        _fabricate(bench, "scratch", seed, v)
    alone = write_report(search, tmp_path / "alone", plots=False).read_text()
    assert "[" not in alone.split("| sskt |")[1].splitlines()[0]  # no scratch here: no paired interval
    md = write_report([search, bench, bench / "scratch-seed0"], plots=False)
    assert md == search / "report.md"  # written to the first folder
    text = md.read_text()
    assert "6 finished runs in 2 group(s)" in text  # scratch-seed0 named twice, counted once
    assert "add up to 0.2 h" in text  # each seed's fabricated run lasts 1, 2, 3 min: 2 x 6 min = 0.2 h
    mean = statistics.mean(a - b for a, b in zip(FINAL["sskt"], FINAL["scratch"], strict=True))
    assert f"{mean:+.2f} [" in text
    with pytest.raises(UserError, match="nowhere"):
        write_report([search, tmp_path / "nowhere"])


def test_an_axis_set_by_more_than_two_keys_is_named_setting(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _fabricate(runs, "scratch", 0, 80.0)
    _fabricate(runs, "sskt", 0, 81.0)
    tm = _fabricate(tmp_path / "other", "sskt", 0, 82.0, head="tm")
    tm.rename(runs / "sskt_tm-seed0")  # method.name, sources and head.kind vary along one axis of cell names
    text = write_report(runs, tmp_path / "rep").read_text()
    assert sorted(p.name for p in (tmp_path / "rep").glob("bars_*.png")) == ["bars_setting.png"]
    assert "(bars_setting.png)" in text


def test_runs_whose_teacher_path_names_their_own_seed_are_one_setting(tmp_path: Path) -> None:
    runs = []
    for seed in (0, 1, 12):
        run = _fabricate(tmp_path, "kd", seed, 80.0 + seed)
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["method"]["kd"]["teacher"] = f"checkpoint:runs/teachers/t-seed{seed}"
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        runs.append(load_run(run))
    assert len(group_runs(runs)) == 1
    config = yaml.safe_load((tmp_path / "kd-seed1" / "config.yaml").read_text())
    config["method"]["kd"]["teacher"] = "checkpoint:runs/teachers/t-seed2"  # another seed's teacher: not a replicate
    (tmp_path / "kd-seed1" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert len(group_runs([runs[0], load_run(tmp_path / "kd-seed1"), runs[2]])) == 2


def test_report_can_leave_out_the_seeds_that_chose_a_setting(tmp_path: Path) -> None:
    from sskt.experiments.report import report_main

    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            _fabricate(tmp_path / "runs", method, seed, v)
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--no-plots", "--drop-seed", "0"]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Runs of seed(s) 0 are left out." in text and "4 finished runs in 2 group(s)" in text
    kept = paired_diff({s: FINAL["sskt"][s] for s in (1, 2)}, {s: FINAL["scratch"][s] for s in (1, 2)})
    assert kept.format() in text and kept.n == 2
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "r7"), "--no-plots", "--drop-seed", "7"]) == 0
    text = (tmp_path / "r7" / "report.md").read_text()
    assert "No run is left out: no run has seed(s) 7" in text and "are left out" not in text


def test_a_torn_summary_counts_as_unfinished_not_as_a_crash(tmp_path: Path) -> None:
    for method, values in FINAL.items():
        for seed, v in enumerate(values):
            _fabricate(tmp_path / "runs", method, seed, v)
    (tmp_path / "runs" / "sskt-seed2" / "summary.json").write_text("")  # a disk that filled up mid-write
    text = write_report(tmp_path / "runs", plots=False).read_text()
    assert "5 finished runs" in text and "unfinished run directories ignored: sskt-seed2" in text

"""``sskt compare``: the successive-halving search and the confirmation within a budget, on the tiny colour folder.

The budget's seconds come from a clock the tests advance per cell, so what fits is the same on a busy machine as on
a free one: real training (in-process, a few epochs) with a fixed charge per cell, and a stand-in trainer that writes
finished runs with chosen validation accuracies, to see the search pick by validation and the budget leave out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import error_line, make_colour_cfg
from rich.console import Console

from sskt.config import TrainConfig
from sskt.config_io import parse_train_args, save_config
from sskt.engine import train
from sskt.experiments import compare as compare_module
from sskt.experiments import compare_time
from sskt.experiments.compare import compare, parse_budget, parser, row_of, schedule, watch
from sskt.experiments.compare_plan import ROWS, variants
from sskt.rundir import RunDir


def _config(colour_folder: Path, tmp_path: Path, epochs: int = 4, unlabeled: bool = False) -> Path:
    """The colour folder at ``epochs``, no validation split (compare makes one), SSKT's source at 32 px, KD's lam 1."""
    cfg = make_colour_cfg(colour_folder, tmp_path / "unused", "sskt")
    cfg.epochs, cfg.method.kd.lam = epochs, 1.0
    if unlabeled:
        cfg.data.labels_per_class, cfg.data.unlabeled, cfg.data.unlabeled_ratio = 12, "rest", 1
    path = tmp_path / "my.yaml"
    save_config(cfg, path)
    return path


def _run(argv: list[str], runner, now) -> tuple[dict, str]:  # noqa: ANN001 - a CellRunner and a clock
    """``compare`` with ``runner`` and ``now``; its result and what it printed."""
    out = io.StringIO()
    result = compare(parser().parse_args(argv), Console(file=out, width=200), runner, now)
    compare_module.show(result, Console(file=out, width=200))
    return result, out.getvalue()


class Charged:
    """Trains each cell in-process, then times it as a machine of fixed speed would: 5 s to start and 1 s an epoch on
    the clock, ``wall_seconds`` 1 s an epoch in its summary (what the estimates read), however busy this machine is."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def clock(self) -> float:
        return self.now

    def __call__(self, argv: list[str], cell_dir: Path, threads: int) -> int:
        self.calls.append(cell_dir.name)
        cfg = parse_train_args(argv)
        cfg.threads = 1  # torch came before sskt's OMP_WAIT_POLICY here: two spinning threads crawl beside other work
        train(cfg)
        run = RunDir(cell_dir)
        run.write_summary(run.read_summary() | {"wall_seconds": float(cfg.epochs)})
        self.now += 5.0 + cfg.epochs
        return 0


def _search_pick(out: Path) -> str:
    """The row the search seed's validation prefers among the last rung's cells (ties to the row listed first)."""
    order = ["scratch", "sskt", "kd", "dho"]
    scores = {}
    for run_dir in (out / "search").glob("*_e1-seed100"):
        summary = RunDir(run_dir).read_summary()
        scores[row_of(run_dir.name)] = summary["best"]["val_acc"]
    return min(scores, key=lambda r: (-scores[r], order.index(r)))


def test_compare_finishes_within_its_budget_picks_by_validation_and_resumes(
    colour_folder: Path, tmp_path: Path
) -> None:
    config, out, trainer = _config(colour_folder, tmp_path, epochs=2), tmp_path / "cmp", Charged()
    # the search: 6 s for the teacher and 6 s for each row at 1 epoch (30 s); a fresh seed: 14 s for scratch and
    # SSKT, up to 27 s with the teacher and three rows; 70 s leaves room for two seeds at most, one at least
    argv = ["--config", str(config), "--budget", "70s", "--out", str(out), "--fixed-weights"]
    result, printed = _run(argv, trainer, trainer.clock)

    # the search: the teacher, then four rows at half the schedule on seed 100; a validation split made here
    assert trainer.calls[:5] == ["probe-seed100", "scratch_e1-seed100", "sskt_e1-seed100", "kd_e1-seed100",
                                 "dho_e1-seed100"]  # fmt: skip
    assert "4 images per class (16 in all)" in printed
    assert RunDir(out / "search" / "scratch_e1-seed100").read_config().data.val_per_class == 4
    assert result["verdict"]["pick"] == result["survivors"][0] == _search_pick(out)
    # within the budget, and what did not fit is named on the terminal, in compare.json and in the report
    assert result["spent_seconds"] <= 70 == result["budget_seconds"]
    assert 1 <= len(result["seeds"]) < 3
    missing = [s for s in (0, 1, 2) if s not in result["seeds"]]
    assert f"left out: fresh seed(s) {missing}" in printed
    report = (out / "report" / "report.md").read_text()
    assert "## sskt compare" in report and f"fresh seed(s) {missing}" in report and "pick:" in report
    assert (out / "report" / "test_acc_vs_time.png").is_file()
    assert json.loads((out / "compare.json").read_text())["verdict"]["pick"] == result["verdict"]["pick"]
    for seed in result["seeds"]:
        assert RunDir(out / "confirm" / f"scratch-seed{seed}").is_finished()
        assert RunDir(out / "confirm" / f"{result['survivors'][0]}-seed{seed}").read_config().epochs == 2

    # a rerun redoes nothing and comes to the same answer
    ran = len(trainer.calls)
    again, _ = _run(argv, trainer, trainer.clock)
    assert len(trainer.calls) == ran
    assert (again["verdict"], again["seeds"], again["left_out"]) == (result["verdict"], result["seeds"],
                                                                     result["left_out"])  # fmt: skip


VAL = {"scratch": 80, "sskt": 82, "kd": 85, "dho": 84, "sskt_pool": 86, "kd_pool": 83, "dho_pool": 81, "fixmatch": 79,
       "sskt_a0.5": 88, "kd_l0.5": 80}  # fmt: skip


class StandIn:
    """Writes a finished run instead of training: the row's validation accuracy (KD gains 6 points from 2 epochs on,
    so the second rung reorders the first), a test accuracy that varies with the seed, and 2 s + 1 s per epoch on the
    clock (``wall_seconds`` 1 s per epoch: the estimates are exact)."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def clock(self) -> float:
        return self.now

    def __call__(self, argv: list[str], cell_dir: Path, threads: int) -> int:
        cfg, row = parse_train_args(argv), row_of(cell_dir.name)
        self.calls.append(cell_dir.name)
        val = 90.0 if row == "probe" else VAL[row] + (6 if row == "kd" and cfg.epochs >= 2 else 0)
        test = val - 2 + (cfg.seed * 7 + len(row)) % 3 * 0.5
        run, metrics = RunDir(cell_dir), {"val_acc": val, "test_acc": test}
        save_config(cfg, run.config)
        for epoch in range(1, cfg.epochs + 1):
            run.append_record({"epoch": epoch, "epoch_seconds": 1.0, "train_seconds": float(epoch)} | metrics)
        run.write_summary({"final": metrics, "best": metrics, "best_epoch": cfg.epochs, "selected_by": "val_acc",
                           "best_test_oracle": metrics, "best_test_oracle_epoch": cfg.epochs, "seed": cfg.seed,
                           "epochs": cfg.epochs, "wall_seconds": float(cfg.epochs), "train_seconds": float(cfg.epochs),
                           "method": cfg.method.name, "headline": "test_acc"})  # fmt: skip
        self.now += 2.0 + cfg.epochs
        return 0


@pytest.mark.parametrize(
    ("budget", "rungs", "pick", "seeds"),
    [
        # rung 1: 8 rows at 1 epoch (27 s with the teacher); rung 2: 4 rows at 2 (16 s); a seed: the teacher and
        # 3 rows at 4 epochs (21 s). 100 s: both rungs, and 2 seeds of the 3 asked.
        ("100s", 2, "kd", [0, 1]),
        # 60 s: rung 2 would eat the confirmation's share, so rung 1 chooses; one seed fits, and says it has no interval
        ("1m", 1, "sskt_pool", [0]),
    ],
)
def test_the_search_halves_by_validation_and_the_budget_leaves_out_what_does_not_fit(
    colour_folder: Path, tmp_path: Path, budget: str, rungs: int, pick: str, seeds: list[int]
) -> None:
    config, out, trainer = _config(colour_folder, tmp_path, unlabeled=True), tmp_path / "cmp", StandIn()
    argv = ["--config", str(config), "--budget", budget, "--out", str(out), "--fixed-weights"]
    result, printed = _run(argv, trainer, trainer.clock)

    assert [r["epochs"] for r in result["rungs"]] == [1, 2][:rungs]
    assert result["rungs"][0]["kept"] == ["sskt_pool", "kd", "dho", "kd_pool"]
    assert result["verdict"]["pick"] == pick and result["seeds"] == seeds
    assert result["spent_seconds"] <= parse_budget(budget)
    left = [s for s in (0, 1, 2) if s not in seeds]
    assert f"left out: fresh seed(s) {left}: the budget allows {len(seeds)} of the 3 asked" in printed
    confirmed = sorted(p.name for p in (out / "confirm").iterdir() if RunDir(p).is_finished())
    rows = ["kd", "probe", "scratch", "sskt_pool"]
    assert confirmed == sorted(f"{r}-seed{s}" for r in rows for s in seeds)
    if rungs == 1:
        assert any(x.startswith("search rung 2 (4 rows at 2 epochs)") for x in result["left_out"])
        assert "(one seed: no interval)" in printed
    else:
        assert result["verdict"]["against_scratch"]["n"] == 2

    ran = len(trainer.calls)
    again, _ = _run(argv, trainer, trainer.clock)
    assert len(trainer.calls) == ran and again["seeds"] == seeds and again["verdict"] == result["verdict"]


def test_the_first_rung_searches_each_rows_loss_weight_and_the_best_goes_on(
    colour_folder: Path, tmp_path: Path
) -> None:
    config, out, trainer = _config(colour_folder, tmp_path), tmp_path / "cmp", StandIn()
    argv = ["--config", str(config), "--budget", "10m", "--out", str(out), "--seeds", "2"]
    result, printed = _run(argv, trainer, trainer.clock)

    # one rung at 2 epochs: four rows, six settings (SSKT's alpha and KD's lam at 1 and 0.5)
    searched = sorted(c for c in trainer.calls if c.endswith("_e2-seed100"))
    assert searched == sorted(f"{r}_e2-seed100" for r in ["scratch", "sskt", "sskt_a0.5", "kd", "kd_l0.5", "dho"])
    assert "search rung 1/1: 4 rows (6 settings) at 2 epochs" in printed
    tried = "sskt's alpha 1, sskt's alpha 0.5, kd's lam 1, kd's lam 0.5"
    assert f"each loss weight is searched on the first rung ({tried})" in printed
    assert RunDir(out / "search" / "sskt_e2-seed100").read_config().method.sskt.alpha == 1.0
    assert RunDir(out / "search" / "kd_l0.5_e2-seed100").read_config().method.kd.lam == 0.5
    # each row goes on at its best weight: SSKT at alpha 0.5 (88 > 82), KD at its own (91 > 80)
    (rung,) = result["rungs"]
    assert rung["order"] == ["kd", "sskt_a0.5", "dho", "scratch"] and rung["kept"] == ["kd", "sskt_a0.5"]
    assert "loss weights beaten: sskt, kd_l0.5" in printed
    assert result["verdict"]["pick"] == "kd"
    # the confirmation trains the chosen setting under its own name
    assert RunDir(out / "confirm" / "sskt_a0.5-seed0").read_config().method.sskt.alpha == 0.5
    assert not (out / "confirm" / "sskt-seed0").exists()


def test_schedule_and_budget() -> None:
    assert schedule(4, 40) == [20] and schedule(8, 40) == [10, 20] and schedule(2, 40) == [20]
    assert schedule(5, 4) == [1, 2] and schedule(1, 1) == [1]
    assert parse_budget("3h") == 10800 and parse_budget("1h30m") == 5400 and parse_budget("45s") == 45
    assert parse_budget("0.5h") == 1800


class _Child:
    """A trainer that writes one record, of a 5 s epoch, at each poll until it is stopped."""

    def __init__(self, run: RunDir) -> None:
        self.run, self.stopped, self.returncode = run, False, None

    def poll(self) -> int | None:
        if self.stopped:
            return -15
        self.run.append_record({"epoch": len(self.run.read_records()) + 1, "epoch_seconds": 5.0})
        return None

    def terminate(self) -> None:
        self.stopped = True

    def wait(self) -> int:
        return -15


def test_a_cell_whose_first_epoch_shows_it_cannot_finish_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare_time, "POLL_SECONDS", 0.0)
    run = RunDir(tmp_path / "cell")
    run.root.mkdir()
    child = _Child(run)
    why = watch(child, run, epochs=100, started=compare_module.time.monotonic(), limit=60.0)  # type: ignore[arg-type]
    assert child.stopped and why.startswith("stopped after epoch 1 of 100: needs ~8.") and why.endswith("1.0 min left")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "3 hours"], "--budget '3 hours': expected a duration such as 3h, 90m, 1h30m or 600s"),
        (["--methods", "sskt", "mixup"], "unknown --methods row 'mixup'; valid choices:"),
        (["--methods", "fixmatch"], "--methods fixmatch needs data.unlabeled in the config"),
        (["--launcher", "ssh"], "unknown launcher 'ssh'; valid choices: local, slurm"),
    ],
)
def test_bad_input_is_one_line(
    colour_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    config = _config(colour_folder, tmp_path)
    err = error_line(capsys, ["compare", "--config", str(config), "--out", str(tmp_path / "c"), *args])
    assert expected in err
    assert not (tmp_path / "c").exists()


def test_the_searched_weights_start_from_the_configs_own() -> None:
    cfg = TrainConfig()
    cfg.method.kd.lam = 0.9
    kd = [(v.name, dict(v.settings)["method.kd.lam"], v.family) for v in variants(ROWS["kd"], cfg, fixed=False)]
    assert kd == [("kd", 0.9, ""), ("kd_l1", 1.0, "kd"), ("kd_l0.5", 0.5, "kd")]
    assert variants(ROWS["kd"], cfg, fixed=True) == [ROWS["kd"]]
    assert variants(ROWS["dho"], cfg, fixed=False) == [ROWS["dho"]]

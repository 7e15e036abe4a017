"""Benchmark v3's regime map on fabricated runs with known numbers: rows grouped by regime (source-free rows shared
across resolutions), headroom, the rival chosen by validation, paired verdicts, and the report with its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sskt.experiments.regime_map import Regime, analyse_all, by_regime, cell_of, write_regime_map
from sskt.experiments.runs import Run

# row -> (val, test) on seed 0; seed s adds s to both and, for the rows in JITTER, a little more to the test figure
L10_S224 = {"teacher": (80, 79), "sskt": (74, 73), "kd_pool": (76, 75), "dho": (75, 74.5)}
L10 = {"scratch_ema": (70, 69), "fixmatch": (72, 71)}
L100_S224 = {"teacher": (84, 83), "sskt": (86, 85.5), "kd_pool": (85, 84)}
L100 = {"scratch_ema": (85, 84)}
JITTER = {"sskt": [0.0, 0.2, -0.1], "kd_pool": [0.0, -0.3, 0.1]}


def _runs(regime: str, rows: dict) -> list[Run]:
    out = []
    for row, (v, t) in rows.items():
        for seed in range(3):
            test = t + seed + JITTER.get(row, [0, 0, 0])[seed]
            summary = {"seed": seed, "best": {"val_acc": v + seed, "test_acc": test}, "best_epoch": 3}
            out.append(Run(Path(f"{regime}-{row}-seed{seed}"), {}, [], summary))
    return out


@pytest.fixture
def runs() -> list[Run]:
    return _runs("l10_s224", L10_S224) + _runs("l10", L10) + _runs("l100_s224", L100_S224) + _runs("l100", L100)


def test_source_free_rows_stand_in_every_regime_of_their_label_budget(runs) -> None:
    table = by_regime(runs)
    assert set(table) == {Regime(10, 224), Regime(100, 224)}
    assert set(table[Regime(10, 224)]) == {"teacher", "sskt", "kd_pool", "dho", "scratch_ema", "fixmatch"}
    assert table[Regime(10, 224)]["scratch_ema"][2] == (72, 71)


def test_each_regime_gets_headroom_rival_and_verdict(runs) -> None:
    low, high = analyse_all(runs)
    assert low.regime == Regime(10, 224) and low.headroom == pytest.approx(10.0)
    assert low.rival == "kd_pool", "highest validation outside the SSKT family, teacher excluded"
    assert low.best_sskt == "sskt"
    assert low.gain.mean == pytest.approx(-2.0 + (0.2 + 0.3 - 0.1 - 0.1) / 3) and low.gain.high < 0
    assert low.to_scratch["sskt"].mean == pytest.approx(4.0 + 0.1 / 3)
    assert high.headroom == pytest.approx(-1.0)
    assert high.rival == "kd_pool" and high.best_sskt == "sskt"
    assert high.gain.low > 0, "sskt leads kd_pool by 1.5 points on every seed give or take 0.5"


def test_the_report_holds_every_regime_and_both_figures(runs, tmp_path) -> None:
    readme = write_regime_map(runs, tmp_path)
    text = readme.read_text()
    assert "### l10_s224" in text and "### l100_s224" in text
    assert "![gain_vs_headroom](gain_vs_headroom.png)" in text
    assert (tmp_path / "gain_vs_headroom.png").stat().st_size > 1000
    assert (tmp_path / "acc_vs_labels.png").stat().st_size > 1000
    assert "SSKT's heads pay here" in text and "the interval is not above zero" in text


def test_sskt_report_writes_the_regime_map_and_reads_cpu_seconds(tmp_path) -> None:
    import json

    import yaml

    from sskt.config import TrainConfig
    from sskt.experiments.report import report_main

    for name, (v, t) in {"l10-scratch_ema": (70, 69), "l10_s224-sskt": (74, 73), "l10_s224-teacher": (80, 79)}.items():
        for seed in (0, 1):
            run = tmp_path / "runs" / f"{name}-seed{seed}"
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "method": {"name": "scratch"}}))
            rec = {"epoch": 1, "epoch_seconds": 2.0, "train_seconds": 2.0, "cpu_seconds": 3.0, "train_cpu_seconds": 3.0,
                   "load_1min": 1.0, "val_acc": v + seed, "test_acc": t + seed}  # fmt: skip
            (run / "records.jsonl").write_text(json.dumps(rec) + "\n")
            summary = {"seed": seed, "best": {"val_acc": v + seed, "test_acc": t + seed}, "best_epoch": 1,
                       "final": {"val_acc": v + seed, "test_acc": t + seed}, "selected_by": "val_acc"}  # fmt: skip
            (run / "summary.json").write_text(json.dumps(summary))
    assert TrainConfig  # the runs' config.yaml holds overrides of it
    out = tmp_path / "report"
    assert report_main([str(tmp_path / "runs"), "--out", str(out), "--clock", "cpu", "--regime-map"]) == 0
    assert "Times are CPU seconds" in (out / "report.md").read_text()
    assert "### l10_s224" in (out / "regime_map" / "README.md").read_text()


def test_cells_named_as_the_v3_grids_name_them_land_in_their_regime() -> None:
    summary = {"seed": 0, "best": {"val_acc": 70.0, "test_acc": 69.0}}
    for name, want in {
        "l10-s224_sskt_pool-seed0": (Regime(10, 224), "sskt_pool"),
        "l10_s224-sskt_pool-seed0": (Regime(10, 224), "sskt_pool"),
        "l10-scratch_ema-seed0": (Regime(10, None), "scratch_ema"),
        "l25-s64_kd_sskt_pool-seed3": (Regime(25, 64), "kd_sskt_pool"),
    }.items():
        regime, row, seed = cell_of(Run(Path(name), {}, [], summary))
        assert (regime, row) == want and seed == int(name[-1])

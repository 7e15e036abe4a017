"""``sskt advise`` end to end on the tiny offline Fashion-MNIST: one real source (EfficientNet-Lite0 at 32 px), a
fabricated ``--reference`` run, the outputs it writes, the feature cache's reuse, a reference trained here, and
one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import error_line, make_tiny_cfg

from sskt.config import SourceConfig, TrainConfig
from sskt.config_io import save_config
from sskt.engine import train
from sskt.errors import UserError
from sskt.experiments import advise as advise_module
from sskt.experiments.advise import advise_main
from sskt.files import write_text_atomic
from sskt.sources import features, linear_eval

SOURCE = "efficientnet_lite0.imagenet"
REFERENCE_ACC = 55.0


def _config(small_fmnist: Path, tmp_path: Path) -> tuple[TrainConfig, Path]:
    """The tiny run (20 labels per class) with 10 validation images per class and the cache in ``tmp_path``."""
    cfg = make_tiny_cfg(small_fmnist, tmp_path / "run")
    cfg.data.val_per_class = 10
    cfg.cache.dir = str(tmp_path / "cache")
    path = tmp_path / "my.yaml"
    save_config(cfg, path)
    return cfg, path


def _reference(cfg: TrainConfig, folder: Path, summary: dict | None = None) -> Path:
    """A finished run at ``folder``: ``cfg`` as its config.yaml and a summary whose best val_acc is 55."""
    save_config(cfg, folder / "config.yaml")
    summary = summary or {"best": {"val_acc": REFERENCE_ACC}, "best_epoch": 3, "selected_by": "val_acc"}
    write_text_atomic(folder / "summary.json", json.dumps({"method": "scratch", "wall_seconds": 9.0} | summary))
    return folder


@pytest.fixture(autouse=True)
def _one_l2(monkeypatch: pytest.MonkeyPatch) -> None:
    """One L2 strength instead of the grid's nine: the probe's fits were 16 of advise's 18 seconds here."""
    monkeypatch.setattr(linear_eval, "L2_GRID", (0.1,))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images ``features.extract`` computed, one entry per call."""
    calls: list[int] = []
    real = features.extract

    def counting(source, spec, indices, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(len(indices))
        return real(source, spec, indices, *args, **kwargs)

    monkeypatch.setattr(features, "extract", counting)
    return calls


def test_advise_writes_the_ranking_and_reuses_the_cached_features(
    small_fmnist: Path, tmp_path: Path, counted: list[int], capsys: pytest.CaptureFixture
) -> None:
    cfg, config = _config(small_fmnist, tmp_path)
    ref, out = _reference(cfg, tmp_path / "ref"), tmp_path / "advice"
    argv = ["--config", str(config), "--sources", SOURCE, "--input-sizes", "32", "--reference", str(ref)]
    assert advise_main([*argv, "--out", str(out)]) == 0
    assert counted == [300]  # 200 labelled + 100 validation images, once

    result = json.loads((out / "advise.json").read_text())
    assert (result["labeled"], result["validation"], result["num_classes"]) == (200, 100, 10)
    assert result["reference"] | {"how": "given", "val_acc": REFERENCE_ACC} == result["reference"]
    (row,) = result["rows"]
    assert (row["source"], row["input_size"], row["rank"], row["label"]) == (SOURCE, 32, 1, f"{SOURCE} at 32 px")
    assert (row["feature_dim"], row["source_classes"]) == (1280, 1000)
    assert 10 < row["probe_val_acc"] <= 100 and row["probe_l2"] == 0.1
    assert row["headroom"] == pytest.approx(row["probe_val_acc"] - REFERENCE_ACC)
    assert row["logme"] < 0 and row["leep"] < 0 and row["nce"] <= 0 and row["h_score"] > 0
    assert row["features_cached"] is False and row["seconds"]["features"] > 0
    assert row["sentence"] == advise_module.sentence(row) and row["sentence"].startswith(f"{SOURCE} at 32 px: ")
    assert (out / "advise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert row["sentence"] in printed and result["verdict"] in printed

    assert advise_main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert counted == [300]  # the second call computed no features
    again = json.loads((tmp_path / "again" / "advise.json").read_text())["rows"][0]
    assert again["features_cached"] is True and again["seconds"]["features"] == 0
    assert again["probe_val_acc"] == row["probe_val_acc"] and again["logme"] == row["logme"]


@pytest.mark.parametrize(
    ("headroom", "noise", "expected"),
    [
        (6.1, 2.0, "s at 224 px: +6.1 points of headroom, likely to help; try kd and sskt"),
        (-4.7, 2.0, "s at 224 px: no headroom (-4.7 points): scratch + EMA is the pick"),
        (0.0, 2.0, "s at 224 px: no headroom (+0.0 points): scratch + EMA is the pick"),
        (1.0, 2.0, "within the validation noise (+-2.0); it may help"),
    ],
)
def test_the_sentence_follows_the_headroom(headroom: float, noise: float, expected: str) -> None:
    said = advise_module.sentence({"headroom": headroom, "noise": noise, "label": "s at 224 px"})
    assert expected in said


def test_a_reference_still_improving_when_it_stopped_never_makes_a_likely_to_help(tmp_path: Path) -> None:
    """The reference's validation accuracy rose by more than half a point (or two validation images) over the last
    quarter of its training: it was still learning, its accuracy is a lower bound, so advise calls the headroom an
    upper bound and asks for a longer reference. How often it was evaluated does not change the verdict."""
    from sskt.files import write_text_atomic

    def run(vals: list[float], every: int = 5) -> Path:
        folder = tmp_path / f"{every}-{'-'.join(map(str, vals))}"
        folder.mkdir()
        lines = [json.dumps({"epoch": every * (i + 1), "val_acc": v}) for i, v in enumerate(vals)]
        write_text_atomic(folder / "records.jsonl", "\n".join(lines) + "\n")
        return folder

    improving = advise_module.still_improving
    assert improving(run([73.0, 77.1, 79.2, 80.5])) == (True, pytest.approx(1.3))
    steady = [73.0 + 0.35 * i for i in range(20)]  # evaluated every epoch: +0.35 a step, +1.75 over the last quarter
    assert improving(run(steady, every=1)) == (True, pytest.approx(0.35 * 5))
    assert improving(run([69.0, 69.4, 69.5, 69.6])) == (True, None)  # +0.2: converged
    assert improving(run([70.0, 72.0, 71.0, 71.5])) == (True, None)  # the best was earlier
    assert improving(run([70.0, 71.0, 71.0, 72.0]), n_val=100) == (True, None)  # one point: one image of 100
    assert improving(run([70.0]))[0] is False and improving(tmp_path / "no-records") == (False, None)
    said = advise_module.sentence({"headroom": 5.2, "noise": 1.7, "label": "s at 224 px"}, improving=1.3)
    assert "still improving" in said and "likely to help" not in said and "--reference-epochs" in said


def test_a_reference_is_trained_when_none_is_given_and_reused_after(
    small_fmnist: Path, tmp_path: Path, counted: list[int]
) -> None:
    _, config = _config(small_fmnist, tmp_path)
    out = tmp_path / "advice"
    argv = ["--config", str(config), "--sources", SOURCE, "--input-sizes", "32", "--out", str(out)]
    assert advise_main([*argv, "--reference-epochs", "1"]) == 0
    ref = json.loads((out / "advise.json").read_text())["reference"]
    assert (ref["how"], ref["epochs"], ref["method"]) == ("trained", 1, "scratch + EMA")
    assert ref["seconds"] > 0 and ref["note"] == "trained here for 1 epochs (EMA decay 0.999)"
    assert (ref["convergence_checked"], ref["still_improving"]) == (False, None)  # one evaluation: nothing to compare
    summary = json.loads((out / "reference" / "summary.json").read_text())
    assert ref["val_acc"] == summary["best"]["val_acc"]
    assert advise_main([*argv, "--reference-epochs", "1"]) == 0
    assert json.loads((out / "advise.json").read_text())["reference"]["how"] == "reused"
    assert counted == [300]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sources", "nope.imagenet9"], "unknown source 'nope.imagenet9'; valid choices:"),
        (["--input-sizes", "0"], "--input-sizes must be positive pixel counts, got [0]"),
        (["--reference-epochs", "0"], "--reference-epochs must be at least 1, got 0"),
        (["--data.no_such_field", "1"], "no_such_field"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_arguments_are_one_line_errors(small_fmnist: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    _, config = _config(small_fmnist, tmp_path)
    argv = (extra + ["--config", str(config)]) if extra == ["stray"] else ["--config", str(config), *extra]
    with pytest.raises(UserError, match=None) as caught:
        advise_main(argv)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_reference_that_does_not_match_is_refused_before_any_work(
    small_fmnist: Path, tmp_path: Path, counted: list[int]
) -> None:
    cfg, config = _config(small_fmnist, tmp_path)
    other = make_tiny_cfg(small_fmnist, tmp_path / "x")
    other.data.val_per_class, other.data.labels_per_class = 10, 5
    mismatched = _reference(other, tmp_path / "other")
    no_val = _reference(cfg, tmp_path / "noval", {"final": {"test_acc": 50.0}})
    base = ["--config", str(config), "--sources", SOURCE, "--input-sizes", "32", "--out", str(tmp_path / "o")]
    with pytest.raises(UserError, match=r"differs from the config in: data.labels_per_class \(5 vs 20\)"):
        advise_main([*base, "--reference", str(mismatched)])
    with pytest.raises(UserError, match="has no validation accuracy"):
        advise_main([*base, "--reference", str(no_val)])
    with pytest.raises(UserError, match="is not a finished run"):
        advise_main([*base, "--reference", str(tmp_path / "missing")])
    assert counted == []


def test_advise_needs_a_validation_split(small_fmnist: Path, tmp_path: Path) -> None:
    cfg = make_tiny_cfg(small_fmnist, tmp_path / "run")
    save_config(cfg, tmp_path / "my.yaml")
    with pytest.raises(UserError, match="needs a validation split: set data.val_per_class"):
        advise_main(["--config", str(tmp_path / "my.yaml"), "--out", str(tmp_path / "o")])


def test_the_cli_runs_advise_and_turns_bad_input_into_one_line(
    small_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sskt.cli import main

    cfg, config = _config(small_fmnist, tmp_path)
    ref, out = _reference(cfg, tmp_path / "ref"), tmp_path / "advice"
    argv = ["advise", "--config", str(config), "--input-sizes", "32", "--reference", str(ref), "--out", str(out)]
    assert main(argv) == 0 and (out / "advise.json").is_file()
    assert "efficientnet_lite0.imagenet at 32 px" in capsys.readouterr().out  # the default source
    line = error_line(capsys, ["advise", "--config", str(config), "--sources", "nope.imagenet9"])
    assert "unknown source 'nope.imagenet9'; valid choices:" in line


def test_a_source_trained_on_the_task_ranks_above_one_with_random_weights(small_fmnist: Path, tmp_path: Path) -> None:
    # Informative: resnet20 trained on all 50 non-validation images per class. Uninformative: the same network after
    # one epoch at lr 1e-9, i.e. its random initial weights. Both serve as checkpoint: sources; the reference is
    # scratch + EMA trained here on the 20 labels per class.
    from sskt.engine import train

    informative, random = make_tiny_cfg(small_fmnist, tmp_path / "good"), make_tiny_cfg(small_fmnist, tmp_path / "bad")
    informative.data.labels_per_class, random.optim.lr, random.epochs = None, 1e-9, 1
    for run in (informative, random):
        run.data.val_per_class = 10
        train(run)
    _, config = _config(small_fmnist, tmp_path)
    sources = [f"checkpoint:{tmp_path / 'good'}", f"checkpoint:{tmp_path / 'bad'}"]
    out = tmp_path / "advice"
    assert (
        advise_main(["--config", str(config), "--sources", *sources, "--reference-epochs", "3", "--out", str(out)]) == 0
    )
    rows = json.loads((out / "advise.json").read_text())["rows"]
    assert [r["source"] for r in rows] == sources
    assert rows[0]["headroom"] > 0 and rows[0]["probe_val_acc"] > rows[1]["probe_val_acc"] + 5
    assert rows[0]["leep"] > rows[1]["leep"] and rows[0]["nce"] > rows[1]["nce"]


def test_the_lbfgs_teacher_reads_the_features_advise_cached(
    small_fmnist: Path, tmp_path: Path, counted: list[int]
) -> None:
    """advise and the adapted teacher of the same split share one forward of the source over its images."""
    cfg, config = _config(small_fmnist, tmp_path)
    ref, out = _reference(cfg, tmp_path / "ref"), tmp_path / "advice"
    argv = ["--config", str(config), "--sources", SOURCE, "--input-sizes", "32", "--reference", str(ref)]
    assert advise_main([*argv, "--out", str(out)]) == 0
    assert counted == [300]
    advised = json.loads((out / "advise.json").read_text())["rows"][0]

    cfg.out, cfg.epochs, cfg.precise_bn = str(tmp_path / "teacher"), 1, 0
    cfg.method.name, cfg.sources = "probe", [SourceConfig(name=SOURCE, input_size=32, bn_mode="eval")]
    cfg.method.probe.solver, cfg.method.probe.l2 = "lbfgs", [0.1]
    summary = train(cfg)
    assert counted == [300]  # the teacher's fit computed no features
    assert summary["final"]["probe_l2"] == 0.1
    # The same fit on the same features; the run's accuracy comes from its own forward (100 images: 1 point each).
    assert abs(summary["final"]["val_acc"] - advised["probe_val_acc"]) <= 2.0


def test_a_second_lbfgs_probe_reads_the_evaluation_features_the_first_computed(
    small_fmnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation and test images are the same for every seed: the second probe (another labelled draw) runs
    the source on none of them, and scores what a probe without the memo scores."""
    from sskt.sources.probe import ProbeNet

    seen: list[int] = []

    def counting(self, x):  # noqa: ANN001, ANN202
        compute = lambda images: (seen.append(len(images)), self.bank(images)["features"].float())[1]  # noqa: E731
        return compute(x) if self.memo is None else self.memo(x, compute)

    monkeypatch.setattr(ProbeNet, "features", counting)
    cfg, _ = _config(small_fmnist, tmp_path)
    cfg.epochs, cfg.precise_bn, cfg.method.name = 1, 0, "probe"
    cfg.sources = [SourceConfig(name=SOURCE, input_size=32, bn_mode="eval")]
    cfg.method.probe.solver, cfg.method.probe.l2 = "lbfgs", [0.1]
    runs = {}
    for name, seed, memo in (("first", 1, True), ("second", 2, True), ("plain", 2, False)):
        cfg.out, cfg.seed, cfg.method.probe.feature_cache = str(tmp_path / name), seed, memo
        seen.clear()
        runs[name] = (train(cfg)["final"], sum(seen))
    (_, n_first), (second, n_second), (plain, n_plain) = runs["first"], runs["second"], runs["plain"]
    assert n_first > 0 and n_second == 0 and n_plain > 0  # the memo served every evaluated image of the second
    assert abs(second["test_acc"] - plain["test_acc"]) <= 0.5 and abs(second["val_acc"] - plain["val_acc"]) <= 2.0

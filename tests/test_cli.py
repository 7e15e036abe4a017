"""The ``sskt`` command line: listing, parsing presets and overrides, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import error_line

from sskt.cli import COMMANDS, main, parse_train_args
from sskt.engine import check_config

REPO = Path(__file__).resolve().parents[1]


def test_list_prints_one_registered_name_per_line(capsys) -> None:
    assert main(["list", "methods"]) == 0
    names = capsys.readouterr().out.split()
    assert {"scratch", "sskt"} <= set(names)
    for what in ("models", "sources", "datasets"):
        assert main(["list", what]) == 0
        assert capsys.readouterr().out.strip()


def test_presets_then_dotted_overrides(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text("epochs: 5\ndata:\n  labels_per_class: 50\n  batch_size: 32\n")
    (tmp_path / "b.yaml").write_text("data:\n  batch_size: 16\nsources:\n  - name: resnet50.imagenet\n")
    argv = ["--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml"), "--data.labels_per_class", "7"]
    cfg = parse_train_args(argv)
    assert (cfg.epochs, cfg.data.batch_size, cfg.data.labels_per_class) == (5, 16, 7)
    assert cfg.sources[0].name == "resnet50.imagenet" and cfg.sources[0].bn_mode == "eval"


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "demo").glob("*.yaml")), ids=lambda p: p.stem)
def test_demo_presets_parse_and_resolve(preset: Path) -> None:
    check_config(parse_train_args(["--config", str(preset)]))


def test_train_help_lists_fields_with_their_docstrings(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--data.labels_per_class" in out and "labelled training images per class" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model.name", "resnet7"], "resnet20"),
        (["--data.name", "mnist9"], "fashion_mnist"),
        (["--method.name", "sskt", "--sources", '[{"name": "nosuch"}]'], "efficientnet_lite0.imagenet"),
        (["--data.batch_size", "many"], "data.batch_size"),
        (["--data.nope", "1"], "data.nope"),
        (["--method.name", "dml", "--method.dml.peers", '["resnet7"]'], "resnet56"),
        (["--method.name", "maxl", "--method.maxl.generator", "vgg7"], "vgg16_bn"),
        (["--method.name", "kd"], "method.kd.teacher"),
        # Literal choices: the parser itself rejects them and names the valid values.
        (["--method.sskt.aux_loss", "l2"], "'ce', 'kd', 'kd_legacy', 'focal'"),
        (["--head.kind", "mlp"], "'linear', 'tm'"),
        (["--method.sskt.alpha_schedule", "step"], "'constant', 'warmup', 'cosine'"),
        (["--sources", '[{"name": "resnet18.imagenet", "bn_mode": "frozen"}]'], "'eval', 'train'"),
        (["--precision", "8-bit"], "'bf16-mixed'"),
        (["--cache.dtype", "int8"], "'float16', 'float32'"),
    ],
)
def test_bad_names_and_values_exit_2_naming_the_choices(capsys, tmp_path, argv, expected) -> None:
    err = error_line(capsys, ["train", "--out", str(tmp_path / "run"), *argv])
    assert expected in err


def test_missing_data_folder_exits_2(capsys, tmp_path) -> None:
    argv = ["train", "--out", str(tmp_path / "run"), "--data.name", "imagefolder", "--data.root", str(tmp_path / "no")]
    assert "no" in error_line(capsys, argv)


def test_corrupt_checkpoint_source_exits_2(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    sources = f'[{{"name": "checkpoint:{bad}"}}]'
    argv = ["train", "--out", str(tmp_path / "run"), "--method.name", "sskt", "--sources", sources]
    assert str(bad) in error_line(capsys, argv)


def test_too_many_labels_per_class_exits_2(capsys, tmp_path, small_fmnist) -> None:
    argv = ["train", "--out", str(tmp_path / "run"), "--data.root", str(small_fmnist), "--data.download", "false"]
    err = error_line(capsys, [*argv, "--data.labels_per_class", "1000"])
    assert "1000" in err


def test_unknown_command_lists_the_commands(capsys) -> None:
    err = error_line(capsys, ["trian"])
    assert all(name in err for name in COMMANDS)


def test_debug_shows_the_exception() -> None:
    from sskt.errors import UserError

    with pytest.raises(UserError):
        main(["--debug", "list", "colours"])


def test_console_script_in_a_real_process() -> None:
    cmd = [sys.executable, "-m", "sskt.cli"]
    ok = subprocess.run([*cmd, "list", "methods"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "sskt" in ok.stdout.split()
    bad = subprocess.run([*cmd, "train", "--model.name", "resnet7"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr and "resnet20" in bad.stderr


def test_tiny_run_with_a_validation_split_selects_on_it(capsys, tmp_path, small_fmnist) -> None:
    """The acceptance run: ``--data.val_per_class 2`` records val_acc every evaluation and chooses 'best' on it."""
    out = tmp_path / "run"
    argv = ["train", "--data.root", str(small_fmnist), "--data.download", "false", "--data.labels_per_class", "5"]
    argv += ["--data.val_per_class", "2", "--data.batch_size", "25", "--epochs", "3", "--optim.schedule", "cosine"]
    argv += ["--accelerator", "cpu", "--progress", "false", "--out", str(out)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert all("val_acc" in r and "test_acc" in r for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected_by"] == "val_acc"
    chosen = records[summary["best_epoch"] - 1]
    assert chosen["val_acc"] == max(r["val_acc"] for r in records)
    assert summary["best"]["test_acc"] == chosen["test_acc"] and summary["best"]["val_acc"] == chosen["val_acc"]


def test_run_without_a_validation_split_has_no_best(capsys, tmp_path, small_fmnist) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data.root", str(small_fmnist), "--data.download", "false", "--data.labels_per_class", "5"]
    argv += ["--epochs", "2", "--accelerator", "cpu", "--progress", "false", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "best" not in summary and "selected_by" not in summary
    assert summary["best_test_oracle_epoch"] in (1, 2) and "test_acc" in summary["best_test_oracle"]

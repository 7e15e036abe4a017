"""Every shipped YAML under configs/ loads and validates without training.

A plain preset is parsed as ``sskt train --config FILE``; a grid is expanded and each axis value is parsed in at
least one cell (every value once, the other axes at their first value: the full product would parse hundreds of
identical names). Each parsed config then goes through ``check_config``, which resolves every name.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from sskt.config_io import parse_train_args
from sskt.engine import check_config
from sskt.experiments.grid import Cell, Grid, expand, is_grid_file, load_grid, train_argv

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))


def covering_cells(grid: Grid) -> list[Cell]:
    """Cells that use every axis value at least once: the first cell, then one axis changed at a time."""
    first = {name: values[:1] for name, values in grid.axes.items()}
    grids = [dataclasses.replace(grid, axes=first, seeds=grid.seeds[:1])]
    for name, values in grid.axes.items():
        for value in values[1:]:
            grids.append(dataclasses.replace(grid, axes={**first, name: [value]}, seeds=grid.seeds[:1]))
    return [cell for g in grids for cell in expand(g)]


def _validate(argv: list[str]) -> None:
    check_config(parse_train_args(argv))


def test_configs_are_shipped() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in FILES}
    assert "bench/fashion_limited.yaml" in names
    for group in ("cifar10", "cifar100", "stl10", "voc2007", "imagenet", "video", "maxl_cifar10"):
        assert {f"paper/{group}_faithful.yaml", f"paper/{group}_corrected.yaml"} <= names, group


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_loads_and_validates(path: Path, tmp_path: Path) -> None:
    if not is_grid_file(path):
        _validate(["--config", str(path), "--out", str(tmp_path / "run")])
        return
    grid = load_grid(path)
    for cell in covering_cells(grid):
        _validate(train_argv(cell, tmp_path / cell.name))


# --- fidelity of the paper presets ----------------------------------------------------------------------------------
PAPER = CONFIGS / "paper"
PAPER_GRIDS = sorted(p for p in PAPER.glob("*_*.yaml") if not p.name.startswith(("maxl", "teachers")))


def _cell_settings(path: Path) -> list[dict]:
    """The overrides of every cell of a grid at its first seed."""
    grid = load_grid(path)
    return [cell.overrides for cell in expand(dataclasses.replace(grid, seeds=grid.seeds[:1]))]


@pytest.mark.parametrize("path", PAPER_GRIDS, ids=lambda p: p.name)
def test_paper_grids_offer_every_row_the_paper_picks_its_best_from(path: Path) -> None:
    """Sources P, I and P+I, times linear or TM head, times aux loss ce or kd, for every target of the group."""
    grid = yaml.safe_load(path.read_text())
    aliases = {v["name"]: k for k, v in grid["x-sources"].items()}
    kd = "kd_legacy" if path.name.endswith("_faithful.yaml") else "kd"
    cells = _cell_settings(path)
    models = {c.get("model.name") for c in cells}
    for model in models:
        found = {
            ("".join(sorted(aliases[s["name"]] for s in c["sources"])), c["head.kind"], c["method.sskt.aux_loss"])
            for c in cells
            if c.get("method.name") == "sskt" and c.get("model.name") == model
        }
        wanted = {(s, h, a) for s in ("I", "P", "IP") for h in ("linear", "tm") for a in ("ce", kd)}
        assert wanted <= found, (model, sorted(wanted - found))


@pytest.mark.parametrize("path", PAPER_GRIDS, ids=lambda p: p.name)
def test_the_kd_baseline_is_batchmean_hinton_kd_in_every_preset(path: Path) -> None:
    for cell in _cell_settings(path):
        assert cell.get("method.kd.legacy") in (None, False), "kd_legacy belongs to SSKT's own 'kd' rows only"
    assert "method.kd.legacy: true" not in path.read_text()


def test_every_paper_preset_runs_and_names_its_figures() -> None:
    for path in [*PAPER.glob("*.yaml"), *(PAPER / "_base").glob("*.yaml")]:
        assert "NOT RUNNABLE" not in path.read_text(), path.name
    for path in [*PAPER.glob("voc2007_*.yaml"), *PAPER.glob("video_*.yaml")]:
        assert "Should reproduce" in path.read_text(), path.name
    teachers = load_grid(PAPER / "teachers.yaml")
    assert [v["label"] for v in teachers.axes["dataset"]] == ["cifar10", "cifar100", "stl10", "voc2007"]


def representative_rows(rows: list) -> list:
    """One row per kind of setting the step tests must exercise: the method, the head, the auxiliary loss, the
    number of sources and their BatchNorm mode and input (the rest of a preset's rows repeat these kinds)."""
    kinds: dict[str, dict] = {}
    for row in rows:
        sources = row.get("sources") or []
        key = json.dumps([row.get("method.name"), row.get("head.kind"), row.get("method.sskt.aux_loss"), len(sources)])
        kinds.setdefault(key, row)
    return list(kinds.values())


def test_the_voc_presets_train_a_step_on_voc_format_data(tmp_path: Path) -> None:
    """Every kind of row of both VOC presets (the first seed, ResNet18) trains one step on a tiny synthetic VOC
    tree with the data root overridden: scratch, KD (from a teacher trained here), DML and the SSKT rows (their ResNet50
    ImageNet/Places sources, whose weights need the network, replaced by the offline EfficientNet-Lite0)."""
    from test_voc import write_voc

    from sskt.config_io import parse_train_args
    from sskt.engine import train

    root = write_voc(tmp_path / "data", per_split=8)
    small = ["--data.root", str(root), "--data.download", "false", "--data.image_size", "32", "--data.batch_size",
             "8", "--data.eval_batch_size", "8", "--epochs", "1", "--accelerator", "cpu", "--progress", "false",
             "--data.val_per_class", "null"]  # fmt: skip
    teacher = tmp_path / "teacher"
    train(parse_train_args(["--config", str(PAPER / "_base" / "voc2007.yaml"), *small, "--out", str(teacher)]))
    for preset in ("voc2007_faithful.yaml", "voc2007_corrected.yaml"):
        grid = load_grid(PAPER / preset)
        axes = {**grid.axes, "model.name": ["resnet18"], "row": representative_rows(grid.axes["row"])}
        cells = expand(dataclasses.replace(grid, axes=axes, seeds=[0]))
        for cell in cells:
            argv = train_argv(cell, tmp_path / preset / cell.name)
            argv = [a.replace("runs/paper/teachers/voc2007-seed0", str(teacher)) for a in argv]
            sources = [i for i, a in enumerate(argv) if a == "--sources"]
            for i in sources:  # the offline source in place of hub weights (ResNet50 ImageNet/Places), fed 32 px
                argv[i + 1] = re.sub(r'"name": "resnet50\.\w+"', '"name": "efficientnet_lite0.imagenet"', argv[i + 1])
                argv[i + 1] = argv[i + 1].replace('"input_size": 224', '"input_size": 32')
            summary = train(parse_train_args([*argv, *small]))
            assert 0 <= summary["final"]["test_ap_example"] <= 100, cell.name


def test_corrected_presets_choose_on_validation_and_faithful_ones_say_they_cannot() -> None:
    for group in ("cifar10", "cifar100", "stl10", "imagenet"):
        assert all(c.get("data.val_per_class") for c in _cell_settings(PAPER / f"{group}_corrected.yaml"))
        assert "oracle" in (PAPER / f"{group}_faithful.yaml").read_text()


def test_maxl_presets_state_how_maxl_runs() -> None:
    faithful = {
        c["label"]: c for c in yaml.safe_load((PAPER / "maxl_cifar10_faithful.yaml").read_text())["axes"]["row"]
    }
    maxl = faithful["maxl"]
    assert maxl["method.maxl.two_pass"] and maxl["method.maxl.mask_floor"] == 1e-8
    assert maxl["method.maxl.inner_lr_follows_schedule"] and maxl["method.primary_loss"] == "focal"
    corrected = yaml.safe_load((PAPER / "maxl_cifar10_corrected.yaml").read_text())["axes"]["row"]
    maxl = next(r for r in corrected if r["label"] == "maxl")
    assert maxl["method.maxl.two_pass"] is False and maxl["method.maxl.mask_floor"] == 0.0
    assert maxl["method.primary_loss"] == "focal"


def test_offline_benchmark_and_demo_hold_out_a_validation_split() -> None:
    for preset in ("demo/scratch.yaml", "demo/sskt.yaml"):
        assert yaml.safe_load((CONFIGS / preset).read_text())["data"]["val_per_class"] == 100
    for grid in ("bench/fashion_limited.yaml", "bench/fashion_teacher.yaml", "bench/fashion_search3.yaml"):
        assert all(c.get("data.val_per_class") == 100 for c in _cell_settings(CONFIGS / grid)), grid


def test_the_video_presets_train_a_step_on_ucf_format_data(tmp_path: Path) -> None:
    """Every kind of row of both video presets trains one step on tiny UCF101-format frame folders (the ucf101
    cells from scratch, and the Kinetics fine-tuning cell of the scratch row with its download turned off); the ResNet50
    ImageNet/Places sources, whose weights need the network, are replaced by the offline EfficientNet-Lite0."""
    from test_video import write_ucf

    from sskt.config_io import parse_train_args
    from sskt.engine import train

    root = write_ucf(tmp_path / "data", per_class=2, frames=8)
    small = ["--data.root", str(root), "--data.download", "false", "--data.image_size", "32", "--data.clip_len", "8",
             "--data.batch_size", "2", "--data.eval_batch_size", "4", "--data.num_workers", "0", "--epochs", "1",
             "--accelerator", "cpu", "--progress", "false", "--model.pretrained", "false",
             "--head.width", "16"]  # fmt: skip
    for preset in ("video_faithful.yaml", "video_corrected.yaml"):
        grid = load_grid(PAPER / preset)
        axes = {**grid.axes, "dataset": grid.axes["dataset"][:1], "row": representative_rows(grid.axes["row"])}
        cells = expand(dataclasses.replace(grid, axes={**axes, "init": axes["init"][:1]}, seeds=[0]))
        cells += expand(dataclasses.replace(grid, axes={**axes, "init": axes["init"][1:], "row": axes["row"][:1]}))
        for cell in cells:
            argv = train_argv(cell, tmp_path / preset / cell.name)
            for i in [i for i, a in enumerate(argv) if a == "--sources"]:
                argv[i + 1] = re.sub(r'"name": "resnet50\.\w+"', '"name": "efficientnet_lite0.imagenet"', argv[i + 1])
                argv[i + 1] = argv[i + 1].replace('"input_size": 224', '"input_size": 32')
            summary = train(parse_train_args([*argv, *small]))
            assert 0 <= summary["final"]["test_video_acc"] <= 100, cell.name

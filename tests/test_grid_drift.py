"""A grid refuses to skip or resume a cell whose run used other settings than the grid gives now."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sskt.config_io import parse_train_args, save_config
from sskt.errors import UserError
from sskt.experiments.drift import config_changes
from sskt.experiments.grid import dry_run, expand, load_grid, run_grid, train_argv

GRID = {
    "base": [{"epochs": 2, "data.labels_per_class": 10, "method.name": "sskt", "optim.lr": 0.05}],
    "axes": {"method.sskt.alpha": [0.5, 1.0]},
    "seeds": [0],
}


def _grid(tmp_path: Path, **changes: object) -> Path:
    raw = {**GRID, "base": [{**GRID["base"][0], **changes}]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _finish_cells(grid_path: Path, out: Path) -> None:
    """Stand-ins for finished runs: each cell's resolved config.yaml (as ``sskt train`` writes it) and a summary."""
    for cell in expand(load_grid(grid_path)):
        cell_dir = out / cell.name
        cell_dir.mkdir(parents=True)
        save_config(parse_train_args(train_argv(cell, cell_dir, threads=1)), cell_dir / "config.yaml")
        (cell_dir / "summary.json").write_text("{}")


def _no_runs(argv: list[str], cell_dir: Path, threads: int) -> int:
    raise AssertionError(f"no cell should run, but {cell_dir.name} did")


def test_changes_name_the_field_and_ignore_where_and_how_fast() -> None:
    stored = {
        "out": "a",
        "threads": 1,
        "method": {"sskt": {"alpha": 1.0}, "name": "sskt"},
        "data": {"root": "/x", "seed": 0},
    }
    now = {
        "out": "b",
        "threads": 2,
        "method": {"sskt": {"alpha": 0.5}, "name": "sskt"},
        "data": {"root": "/y", "seed": 0},
    }
    assert config_changes(stored, now) == ["method.sskt.alpha: 1.0 -> 0.5"]
    assert config_changes(stored, stored) == []


def test_unchanged_finished_cells_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    _finish_cells(_grid(tmp_path), out)
    result = run_grid(load_grid(_grid(tmp_path)), out, runner=_no_runs)
    assert sorted(result.skipped) == ["alpha0.5-seed0", "alpha1.0-seed0"]


def test_a_changed_base_stops_the_grid_before_any_cell_runs(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    _finish_cells(_grid(tmp_path), out)
    changed = load_grid(_grid(tmp_path, **{"optim.lr": 0.1}))
    stale = r"2 cell\(s\) ran with other settings.*alpha0\.5-seed0 \(optim\.lr: 0\.05 -> 0\.1\)"
    with pytest.raises(UserError, match=stale):
        run_grid(changed, out, runner=_no_runs)
    lines = dry_run(changed, out)
    assert len(lines) == 2 and all(line.startswith("[changed]") for line in lines)


def test_an_interrupted_cell_with_other_settings_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    _finish_cells(_grid(tmp_path), out)
    cell = out / "alpha1.0-seed0"
    (cell / "summary.json").unlink()
    (cell / "records.jsonl").write_text('{"epoch": 1}\n')
    (out / "alpha0.5-seed0" / "config.yaml").write_text("no_such_field: 1\n")  # written by another version
    with pytest.raises(UserError, match=r"alpha0\.5-seed0 \(config\.yaml no longer reads.*alpha1\.0-seed0 \(epochs"):
        run_grid(load_grid(_grid(tmp_path, epochs=3)), out, runner=_no_runs)


def _strip_field(cell_dir: Path, block: str, name: str) -> None:
    config = yaml.safe_load((cell_dir / "config.yaml").read_text())
    del config[block][name]
    (cell_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_runs_made_before_crop_padding_existed_padded_by_an_eighth_of_the_image(tmp_path: Path) -> None:
    """An old 32 px run padded by 4, as today: it is skipped. An old STL10 run padded by 96 // 8 = 12: the grid that
    now pads by 4 refuses to count it as the same setting."""
    out = tmp_path / "runs"
    _finish_cells(_grid(tmp_path), out)
    for cell_dir in out.iterdir():
        _strip_field(cell_dir, "data", "crop_padding")
    assert sorted(run_grid(load_grid(_grid(tmp_path)), out, runner=_no_runs).skipped) == [
        "alpha0.5-seed0",
        "alpha1.0-seed0",
    ]
    stl = tmp_path / "stl"
    stl.mkdir()
    _finish_cells(_grid(stl, **{"data.name": "stl10"}), tmp_path / "stl_runs")
    for cell_dir in (tmp_path / "stl_runs").iterdir():
        _strip_field(cell_dir, "data", "crop_padding")
    with pytest.raises(UserError, match=r"data.crop_padding: 12 -> 4"):
        run_grid(load_grid(_grid(stl, **{"data.name": "stl10"})), tmp_path / "stl_runs", runner=_no_runs)


def test_runs_made_when_sskt_fields_were_flat_read_as_the_sskt_block(tmp_path: Path) -> None:
    """Older runs wrote method.alpha (and temperature, aux_loss, the alpha schedule) flat; the grid that now sets
    method.sskt.alpha to the same value skips them, and to another value refuses them."""
    out = tmp_path / "runs"
    _finish_cells(_grid(tmp_path), out)
    for cell_dir in out.iterdir():
        config = yaml.safe_load((cell_dir / "config.yaml").read_text())
        config["method"].update(config["method"].pop("sskt"))  # the old, flat layout
        (cell_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "alpha" in yaml.safe_load((out / "alpha0.5-seed0" / "config.yaml").read_text())["method"]
    assert sorted(run_grid(load_grid(_grid(tmp_path)), out, runner=_no_runs).skipped) == [
        "alpha0.5-seed0",
        "alpha1.0-seed0",
    ]
    with pytest.raises(UserError, match=r"method.sskt.temperature: 1.0 -> 3.0"):
        run_grid(load_grid(_grid(tmp_path, **{"method.sskt.temperature": 3.0})), out, runner=_no_runs)


# --- issue 26, item 2: a grid compares what its finished cells read, not only their settings ------------------
def _data_grid(tmp_path: Path, data_root: Path, **extra: object) -> Path:
    base = {"epochs": 1, "data.root": str(data_root), "data.download": False, "data.labels_per_class": 4,
            "data.batch_size": 20, "accelerator": "cpu", "optim.schedule": "constant", **extra}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": [base], "axes": {"optim.lr": [0.05]}, "seeds": [0]}, sort_keys=False))
    return path


def _train_cells(grid_path: Path, out: Path) -> None:
    from sskt.cli import main

    for cell in expand(load_grid(grid_path)):
        assert main(["train", *train_argv(cell, out / cell.name, threads=1)]) == 0


def test_a_finished_cell_whose_data_changed_under_the_same_root_stops_the_grid(small_fmnist, tmp_path) -> None:
    import shutil

    from conftest import _write_idx

    from sskt.data.datasets import read_idx

    data = Path(shutil.copytree(small_fmnist, tmp_path / "data"))
    grid, out = _data_grid(tmp_path, data), tmp_path / "runs"
    _train_cells(grid, out)
    run_grid(load_grid(grid), out, runner=_no_runs)  # unchanged: skipped
    labels = data / "train-labels-idx1-ubyte.gz"
    _write_idx(labels, (read_idx(labels).long() + 1) % 10)
    with pytest.raises(UserError, match=r"ran with other settings.*the train data"):
        run_grid(load_grid(grid), out, runner=_no_runs)


def test_a_cell_without_recorded_inputs_compares_the_resolved_data_root(small_fmnist, tmp_path, monkeypatch) -> None:
    """Cells made before last.pt recorded its inputs (here: checkpoint deleted) fall back on data.root; a path
    written another way (a symlink) is no change."""
    import shutil

    grid, out = _data_grid(tmp_path, small_fmnist), tmp_path / "runs"
    _train_cells(grid, out)
    for cell in out.iterdir():
        shutil.rmtree(cell / "checkpoints")
    (tmp_path / "link").symlink_to(small_fmnist)
    run_grid(load_grid(_data_grid(tmp_path, tmp_path / "link")), out, runner=_no_runs)
    other = Path(shutil.copytree(small_fmnist, tmp_path / "other"))
    with pytest.raises(UserError, match=r"data\.root: .* -> .*other"):
        run_grid(load_grid(_data_grid(tmp_path, other)), out, runner=_no_runs)

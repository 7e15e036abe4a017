"""Every shipped YAML under configs/ loads and validates without training.

A plain preset is parsed as ``sskt train --config FILE``; a grid is expanded and each axis value is parsed in at
least one cell (every value once, the other axes at their first value: the full product would parse hundreds of
identical names). Each parsed config then goes through ``check_config``, which resolves every name.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest

from sskt.errors import UserError
from sskt.experiments.grid import Cell, Grid, expand, is_grid_file, load_grid, train_argv

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))

# Names the architecture promises (docs ARCHITECTURE.md) whose registration has not landed yet. A preset naming
# one of them is an expected failure until it lands; any other unknown name is a real error.
PENDING = {"voc2007", "ucf101", "hmdb51", "r3d_18"}


def _train_api():
    try:
        from sskt.cli import parse_train_args
        from sskt.engine import check_config
    except ImportError as exc:  # the CLI or engine layer is not written yet
        pytest.skip(f"parse_train_args/check_config not available yet: {exc}")
    return parse_train_args, check_config


@pytest.fixture(autouse=True)
def _one_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the ``sskt train`` parser once: building it costs more than parsing, and a grid parses many cells."""
    import sskt.cli

    if hasattr(sskt.cli, "train_parser"):
        monkeypatch.setattr(sskt.cli, "train_parser", functools.lru_cache(maxsize=1)(sskt.cli.train_parser))


def covering_cells(grid: Grid) -> list[Cell]:
    """Cells that use every axis value at least once: the first cell, then one axis changed at a time."""
    first = {name: values[:1] for name, values in grid.axes.items()}
    grids = [dataclasses.replace(grid, axes=first, seeds=grid.seeds[:1])]
    for name, values in grid.axes.items():
        for value in values[1:]:
            grids.append(dataclasses.replace(grid, axes={**first, name: [value]}, seeds=grid.seeds[:1]))
    return [cell for g in grids for cell in expand(g)]


def _validate(argv: list[str]) -> None:
    parse_train_args, check_config = _train_api()
    cfg = parse_train_args(argv)
    try:
        check_config(cfg)
    except UserError as exc:
        m = re.match(r"unknown \w+ '([^']+)'", str(exc))
        if m and m[1] in PENDING:
            pytest.xfail(f"not registered yet: {exc}")
        raise
    except ImportError as exc:  # a registry module (e.g. sskt.sources) is still being written
        pytest.skip(f"registry not available yet: {exc}")


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

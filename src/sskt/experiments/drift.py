"""Cells whose finished or interrupted run used other settings than the grid gives now.

A grid skips a cell that has ``summary.json`` and resumes one that has a checkpoint. If the grid file, or a preset it
names, changed since that run, skipping would report the old setting under the new one's name, and resuming would
mix two settings in one run. So before it runs anything the grid compares each existing cell's ``config.yaml`` with
the config the cell's command resolves to now, and refuses when a field that changes results differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sskt.config import TrainConfig
from sskt.config_io import config_changes, config_to_dict, parse_train_args
from sskt.errors import UserError
from sskt.rundir import RunDir


def cell_changes(argv: list[str], cell_dir: Path) -> list[str]:
    """How the config ``sskt train argv`` resolves to now differs from the one stored in ``cell_dir``.

    Fields added to TrainConfig after the run take their defaults on both sides; a stored config that no longer
    parses counts as a change."""
    try:
        stored: TrainConfig = RunDir(cell_dir).read_config()
    except UserError as exc:
        return [f"config.yaml no longer reads ({exc})"]
    return config_changes(config_to_dict(stored), config_to_dict(parse_train_args(argv)))


def changes_if_run(argv: list[str], cell_dir: Path, state: str) -> list[str]:
    """``cell_changes`` for a cell that is done or interrupted (``state``) and has a ``config.yaml``; [] otherwise."""
    if state == "new" or not RunDir(cell_dir).config.is_file():
        return []
    return cell_changes(argv, cell_dir)


def check_cells(cells: list[tuple[str, list[str], Path]], state: Callable[[Path], str]) -> None:
    """Raise a one-line UserError naming every (name, argv, dir) cell that is done or interrupted with other
    settings than ``argv`` gives now; new cells and cells without a ``config.yaml`` pass."""
    stale = []
    for name, argv, cell_dir in cells:
        changes = changes_if_run(argv, cell_dir, state(cell_dir))
        if changes:
            more = f" (+{len(changes) - 2} more)" if len(changes) > 2 else ""
            stale.append(f"{name} ({'; '.join(changes[:2])}{more})")
    if stale:
        raise UserError(
            f"{len(stale)} cell(s) ran with other settings than the grid gives now: {', '.join(stale[:3])}"
            + (", ..." if len(stale) > 3 else "")
            + "; move those folders away (or undo the change) and rerun"
        )

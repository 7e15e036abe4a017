"""Cells whose finished or interrupted run used other settings than the grid gives now.

A grid skips a cell that has ``summary.json`` and resumes one that has a checkpoint. If the grid file, or a preset it
names, changed since that run, skipping would report the old setting under the new one's name, and resuming would
mix two settings in one run. So before it runs anything the grid compares each existing cell's ``config.yaml`` with
the config the cell's command resolves to now, and refuses when a field that changes results differs, or when the
data or a frozen network (a KD teacher) holds other content under the same path than the run's ``last.pt`` recorded.
"""

from __future__ import annotations

import dataclasses
import json
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
    """``cell_changes`` and ``cell_input_changes`` for a cell that is done or interrupted (``state``) and has a
    ``config.yaml``; [] otherwise."""
    if state == "new" or not RunDir(cell_dir).config.is_file():
        return []
    return cell_changes(argv, cell_dir) or cell_input_changes(argv, cell_dir)


def cell_input_changes(argv: list[str], cell_dir: Path) -> list[str]:
    """What the cell's run read that differs now, though its config does not: ``data.root`` counts as no setting
    (where the data lives), so the data's content digest and every frozen network's weights digest, as its
    ``last.pt`` recorded them, are compared with those the grid's command reads now. A cell without recorded inputs
    (no checkpoint, or one made before sskt recorded them) compares the resolved ``data.root`` instead."""
    # The engine is imported here, where a grid has finished cells to check: at the top it would cost every
    # `sskt grid --help` the whole training stack (torch, torchvision, torchmetrics; issue 29).
    from sskt.engine.checkpoint import input_changes, stored_inputs
    from sskt.engine.loop import resolve_paths

    run = RunDir(cell_dir)
    cfg = resolve_paths(parse_train_args(argv))
    try:
        stored = stored_inputs(run.checkpoint)
    except UserError as exc:
        return [f"checkpoints/last.pt no longer reads ({exc})"]
    if stored is None:
        old = run.read_config().data.root
        return [] if old == cfg.data.root else [f"data.root: {old!r} -> {cfg.data.root!r}"]
    try:
        now = _inputs_now(cfg)
    except UserError as exc:
        return [f"its data or frozen networks no longer load ({exc})"]
    return input_changes(stored, now)


_BUILT: dict[str, object] = {}
"""What ``_inputs_now`` built, by the JSON of what built it: cells of one grid share their data and teachers."""


def _memo(key: object, build: Callable[[], object]) -> object:
    text = json.dumps(key, sort_keys=True, default=str)
    if text not in _BUILT:
        _BUILT[text] = build()
    return _BUILT[text]


def _inputs_now(cfg: TrainConfig) -> dict:
    """``run_inputs`` of a run of ``cfg`` as it would start now (nothing downloaded, nothing trained)."""
    from sskt.data import TrainStream, build_dataset
    from sskt.engine.checkpoint import run_inputs, split_digest, stream_splits
    from sskt.methods import METHODS
    from sskt.sources.base import build_source

    data = dataclasses.replace(cfg.data, download=False)
    spec = _memo(("data", dataclasses.asdict(data)), lambda: build_dataset(data))
    stream = TrainStream(spec, data, cfg.seed)
    splits = stream_splits(spec, stream)
    digests = {
        n: _memo(("digest", n, dataclasses.asdict(data), id(s)), lambda s=s: split_digest(s)) for n, s in splits.items()
    }
    configs = METHODS.get(cfg.method.name).frozen_networks(cfg)
    frozen = {
        k: _memo(("net", dataclasses.asdict(c), spec.mean, spec.std), lambda c=c: build_source(c, spec.mean, spec.std))
        for k, c in configs.items()
    }
    inputs = run_inputs({}, frozen)
    return inputs | {"data": {n: d for n, d in digests.items() if d is not None}}


def check_cells(cells: list[tuple[str, list[str], Path]], state: Callable[[Path], str]) -> None:
    """Raise a one-line UserError naming every (name, argv, dir) cell that is done or interrupted with other
    settings than ``argv`` gives now; new cells and cells without a ``config.yaml`` pass."""
    stale = []
    _BUILT.clear()  # data and networks as they are now, not as an earlier check in this process found them
    try:
        for name, argv, cell_dir in cells:
            changes = changes_if_run(argv, cell_dir, state(cell_dir))
            if changes:
                more = f" (+{len(changes) - 2} more)" if len(changes) > 2 else ""
                stale.append(f"{name} ({'; '.join(changes[:2])}{more})")
    finally:
        _BUILT.clear()
    if stale:
        raise UserError(
            f"{len(stale)} cell(s) ran with other settings than the grid gives now: {', '.join(stale[:3])}"
            + (", ..." if len(stale) > 3 else "")
            + "; move those folders away (or undo the change) and rerun"
        )

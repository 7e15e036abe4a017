"""A user's own trained classifier as a source: ``checkpoint:<run dir>`` or ``checkpoint:<weights file>``.

Above ``sskt.sources`` and beside ``sskt.trained``, which builds the network: a trained run is loaded in one place.
``sskt.sources`` registers the ``checkpoint:`` prefix with a factory that imports this module when such a source is
first built, so importing the sources never imports the runs' loader (no import circle).

A run directory written by ``sskt train`` holds ``model.safetensors`` (the trained target without its auxiliary
heads, or a probe's source with its classifier) and ``model.json``, its card; ``sskt.trained`` builds the network
from the two, without the dataset. A run without a card (finished before sskt wrote one), or a bare
``.safetensors``/``.pt`` state dict, needs a ``config.yaml`` beside it: its ``model.name`` names the architecture
and its data section the normalisation. The source is the network's primary classifier: its label space is the
target dataset's, and it expects images normalised with that dataset's mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sskt import trained
from sskt.config import DataConfig
from sskt.data import build_dataset
from sskt.data.datasets import STATS
from sskt.errors import UserError
from sskt.rundir import CONFIG, RunDir
from sskt.sources.base import Pretrained
from sskt.sources.weights import State, load_state_file

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def _locate(path: str) -> tuple[Path, RunDir]:
    """(weights file, the folder holding its config and card) for a run directory or a weights file."""
    p = Path(path).expanduser()
    if p.is_dir():
        return RunDir(p).weights, RunDir(p)
    if p.is_file():
        return p, RunDir(p.parent)
    raise UserError(f"checkpoint {path!r} does not exist (give a run directory or a .safetensors/.pt file)")


def _read_config(run: RunDir, what: str) -> dict[str, Any]:
    path = str(run.config)
    if not run.config.is_file():
        raise UserError(f"{what}: no {CONFIG} at {path!r} (it names the architecture and the dataset)")
    try:
        cfg = run.read_config_dict()
        return {"model": cfg["model"]["name"], "data": cfg["data"], "sources": cfg.get("sources")}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserError(f"{what}: {path!r} has no model.name and data section ({type(exc).__name__})") from exc


def _dataset_stats(data: dict[str, Any], what: str) -> Stats:
    """The mean/std the checkpoint's target was trained with: written in its data section (a hand-made config.yaml
    for a foreign state dict), else sskt.data's table of dataset statistics, else those of the dataset built from
    the data section (without downloading; folders and VOC compute theirs)."""
    if "mean" in data and "std" in data:
        return tuple(data["mean"]), tuple(data["std"])
    if data.get("name") in STATS:
        mean, std = STATS[data["name"]]
        return tuple(mean), tuple(std)

    fields = {k: v for k, v in data.items() if k in DataConfig.__dataclass_fields__}
    try:
        spec = build_dataset(DataConfig(**{**fields, "download": False}))
    except UserError as exc:
        raise UserError(f"{what}: cannot find the normalisation of dataset {data.get('name')!r}: {exc}") from exc
    return tuple(spec.mean), tuple(spec.std)


def _without_card(run: RunDir, state: State, what: str) -> tuple[trained.Logits, Stats]:
    """The network and normalisation of a run without a card, from its ``config.yaml``."""
    cfg = _read_config(run, what)
    fields = trained.legacy_fields(cfg["model"], cfg["sources"], state, what)
    stats = _dataset_stats(cfg["data"], what)
    return trained.build_network(fields["architecture"], fields["source"], stats, state, what), stats


def checkpoint_source(path: str, weights: str | None = None) -> Pretrained:
    """The primary classifier of a trained network (``weights`` overrides the weights file)."""
    what = f"source 'checkpoint:{path}'"
    weights_path, run = _locate(path)
    state = load_state_file(Path(weights) if weights is not None else weights_path, what)
    if run.model_card.is_file():  # a run finished by this version: its card says all, no dataset is built
        card = trained.read_card(run.model_card)
        net, (mean, std) = trained.network(card, state, what), (tuple(card.mean), tuple(card.std))
    else:
        net, (mean, std) = _without_card(run, state, what)
    return Pretrained(net.net, mean, std, trained.num_classes(state, what))

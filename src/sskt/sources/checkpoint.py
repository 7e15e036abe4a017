"""A user's own trained classifier as a source: ``checkpoint:<run dir>`` or ``checkpoint:<weights file>``.

A run directory written by ``sskt train`` holds ``config.yaml`` (which names the architecture and the dataset) and
``model.safetensors`` (the trained target, auxiliary heads included). A bare ``.safetensors``/``.pt`` state dict
needs a ``config.yaml`` beside it for the same two facts. The source is the target's primary classifier: its label
space is the target dataset's, and it expects images normalised with that dataset's mean/std. A linear-probe run
(``method.name: probe``) is rebuilt as its config's source with the trained classifier on its features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sskt.config import DataConfig, HeadConfig, ModelConfig
from sskt.data import build_dataset
from sskt.data.datasets import STATS
from sskt.errors import UserError
from sskt.modelcard import MODEL_CARD, read_model_card
from sskt.models import build_target
from sskt.rundir import CONFIG, RunDir
from sskt.sources.base import SOURCES, Pretrained
from sskt.sources.weights import State, load_into, load_state_file

AUX_PREFIX = "aux."  # the Target's auxiliary heads (sskt.models.target); they play no part in the primary logits


def _locate(path: str) -> tuple[Path, Path]:
    """(weights file, config file) for a run directory or a weights file."""
    p = Path(path).expanduser()
    if p.is_dir():
        return RunDir(p).weights, RunDir(p).config
    if p.is_file():
        return p, RunDir(p.parent).config
    raise UserError(f"checkpoint {path!r} does not exist (give a run directory or a .safetensors/.pt file)")


def _read_config(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{what}: no {CONFIG} at {str(path)!r} (it names the architecture and the dataset)")
    try:
        cfg = RunDir(path.parent).read_config_dict()
        method = (cfg.get("method") or {}).get("name", "scratch")
        return {"model": cfg["model"]["name"], "data": cfg["data"], "method": method, "sources": cfg.get("sources")}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserError(f"{what}: {str(path)!r} has no model.name and data section ({type(exc).__name__})") from exc


def _num_classes(state: State, what: str) -> int:
    weight = state.get("fc.weight")
    if weight is None or weight.dim() != 2:
        raise UserError(f"{what}: the weights have no primary classifier 'fc.weight' [num_classes, features]")
    return int(weight.shape[0])


def _dataset_stats(data: dict[str, Any], what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


@SOURCES.register_prefix("checkpoint:")
def checkpoint_source(path: str, weights: str | None = None) -> Pretrained:
    """The primary classifier of a trained target (``weights`` overrides the weights file)."""
    what = f"source 'checkpoint:{path}'"
    weights_path, config_path = _locate(path)
    if weights is not None:
        weights_path = Path(weights)
    state = load_state_file(weights_path, what)
    card_path = config_path.parent / MODEL_CARD
    if card_path.is_file():  # a run finished by this version: its card says all, no dataset is built
        card = read_model_card(card_path)
        data = {"mean": card.mean, "std": card.std}
        cfg = {"model": card.architecture, "method": card.method, "sources": [card.source], "data": data}
    else:
        cfg = _read_config(config_path, what)
    state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
    num_classes = _num_classes(state, what)
    mean, std = _dataset_stats(cfg["data"], what)
    if cfg["method"] == "probe":  # the run's source with its trained linear classifier (sskt.methods.probe)
        from sskt.methods.probe import probe_from_run  # methods build on sources: imported when needed

        if not cfg["sources"]:
            raise UserError(f"{what}: a probe run's config has no sources")
        return Pretrained(probe_from_run(cfg["sources"][0], (mean, std), state, what), mean, std, num_classes)
    net = build_target(ModelConfig(name=cfg["model"]), num_classes, {}, HeadConfig())
    load_into(net, state, what)
    return Pretrained(net, mean, std, num_classes, None)

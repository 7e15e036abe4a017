"""Resolving, saving, loading and flattening run configurations: the one module that turns presets and overrides
into a ``TrainConfig`` and a ``TrainConfig`` into YAML and back. A leaf below the engine: the CLI, the engine and the
experiments all import it, and it imports none of them. YAML is read with ``safe_load`` only: config files never
execute code.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sskt.config import TrainConfig
from sskt.errors import UserError
from sskt.files import write_text_atomic

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def flatten(value: Mapping[str, Any], prefix: str = "", lists: bool = False) -> dict[str, Any]:
    """Nested mappings to dotted keys: ``{data: {batch_size: 64}}`` -> ``{"data.batch_size": 64}``. With ``lists``,
    a list of mappings (``sources``) becomes ``sources[i].field`` keys too; otherwise lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping):
            flat.update(flatten(item, dotted, lists))
        elif lists and isinstance(item, list) and item and all(isinstance(v, Mapping) for v in item):
            for i, v in enumerate(item):
                flat.update(flatten(v, f"{dotted}[{i}]", lists))
        else:
            flat[dotted] = item
    return flat


# Keys that change where or how fast a run goes, not what it computes: runs differing only in these (and the seed)
# are replicates of one setting.
NON_SETTING_KEYS = frozenset(
    {"seed", "out", "resume", "progress", "threads", "data.root", "data.download", "data.num_workers"}
    | {"data.eval_batch_size", "cache.dir", "cache.build", "loggers"}
)


IGNORED = NON_SETTING_KEYS - {"seed"}
"""Fields that say where a run lives or how fast it goes, not what it computes (the report's list, but a cell's
seed is part of what it computes)."""


def config_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every dotted field (outside ``IGNORED``) whose value differs."""
    old, new = flatten(stored), flatten(current)
    keys = sorted(k for k in set(old) | set(new) if k not in IGNORED and old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def _did_you_mean(message: str, parser: ArgumentParser) -> str:
    """``" (did you mean --epochs?)"`` for the unknown flags an 'unrecognized arguments' message names."""
    if "unrecognized arguments" not in message:
        return ""
    known = [s for s in parser._option_string_actions if s.startswith("--")]
    close = [m for flag in re.findall(r"--[\w.\-]+", message) for m in difflib.get_close_matches(flag, known, n=2)]
    return f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""


def _WideHelp(prog: str):  # noqa: N802 (an argparse formatter_class is called like a class)
    """jsonargparse's help formatter at 120 columns and a 40-column flag field: most fields fit on one line."""
    from jsonargparse import DefaultHelpFormatter

    return DefaultHelpFormatter(prog, width=120, max_help_position=40)


def train_parser() -> ArgumentParser:
    """``sskt train``: every TrainConfig field as a dotted flag, YAML presets via ``--config`` (repeatable)."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    # The help text of each flag is the field's docstring in config.py (needs docstring-parser, a dependency of
    # jsonargparse[signatures]).
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(
        prog="sskt train",
        usage="sskt train [--config PRESET.yaml ...] [--<field>[.<field>] VALUE ...]   (fields below)",
        description="Train one run. Presets (--config, repeatable, later wins) hold overrides only; any field can "
        "be overridden with a dotted flag such as --data.labels_per_class 100.",
        exit_on_error=False,
        allow_abbrev=False,  # --epoch must not silently mean --epochs
        formatter_class=_WideHelp,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML preset with overrides (repeatable).")
    parser.add_class_arguments(TrainConfig)
    return parser


@functools.cache
def _cached_train_parser() -> ArgumentParser:
    """Building the parser costs ~0.3 s; a grid checking its cells' configs parses dozens of command lines."""
    return train_parser()


def parse_train_args(argv: Sequence[str]) -> TrainConfig:
    """Parse ``sskt train`` arguments (presets first, then dotted overrides) into a TrainConfig; an unknown flag is
    one line that suggests the closest known ones."""
    from jsonargparse import ArgumentError

    parser = _cached_train_parser()
    try:
        values = parser.parse_args(list(argv)).as_dict()
    except ArgumentError as exc:
        raise UserError(" ".join(str(exc).split()) + _did_you_mean(str(exc), parser)) from exc
    values.pop("config", None)
    return config_from_dict(TrainConfig, values)


def config_to_dict(cfg: Any) -> dict:
    """A dataclass config as nested plain dicts/lists."""
    return dataclasses.asdict(cfg)


def _build(tp: Any, value: Any) -> Any:
    """Rebuild ``value`` as type ``tp`` where ``tp`` is a dataclass or a list/optional of one."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and args and isinstance(value, list):
        return [_build(args[0], v) for v in value]
    if origin in (typing.Union, types.UnionType) and value is not None:
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value) if len(inner) == 1 else value
    return value


def config_from_dict(cls: type, data: dict) -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys are a UserError naming the valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"unknown {cls.__name__} key {unknown[0]!r}; valid keys: {', '.join(names)}")
    return cls(**{k: _build(hints[k], v) for k, v in data.items()})


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file; a syntax error or a tag that would build a Python object is one line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{str(path)!r}{where} is not plain YAML: {problem}") from exc


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


RETIRED = {("data", "unlabeled_primary")}
"""Fields older runs wrote that no longer exist because nothing ever read them: dropped when an old ``config.yaml``
is read, so its run still evaluates, serves as a ``checkpoint:`` source and passes the grid's drift check."""


SSKT_FIELDS = ("alpha", "temperature", "aux_loss", "alpha_schedule", "alpha_warmup_epochs", "alpha_floor")
"""SSKT's fields, which older runs wrote flat under ``method`` and now live in ``method.sskt``."""

STRONG_VIEW_FIELDS = ("ops", "magnitude_bins", "cutout")
"""The strong view's fields, which older runs wrote under ``method.fixmatch`` and now live in ``strong_views``."""

NATIVE_SIZES = {"stl10": 96}
"""Image side of the datasets whose default crop padding changed (the rest ran at 32 px: 4 px then and now)."""


def drop_retired(data: dict) -> dict:
    """An older run's config in today's terms (a copy): ``RETIRED`` fields dropped, SSKT's flat ``method`` fields
    moved into ``method.sskt``, ``method.ema_decay`` moved to ``ema.decay``, ``method.fixmatch``'s strong-view
    fields moved to ``strong_views``, and fields added since then whose default is not what that run did set to
    what it did:

    - ``data.crop_padding``: runs made before it padded by ``image_size // 8`` (12 px for STL10's 96 px images), so
      the grid's drift check and the report's grouping see that, not today's 4;
    - ``method.kd.label_weight``: KD runs (a method name with a 'kd' part) made before it weighed the label loss by
      ``1 - lam`` (null), not 1; other methods never read it, so they keep the default."""
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for block, name in RETIRED:
        if isinstance(data.get(block), dict):
            data[block].pop(name, None)
    if isinstance(data.get("method"), dict):
        _upgrade_method(data)
    block = data.get("data")
    if isinstance(block, dict) and "crop_padding" not in block:
        name = block.get("name")
        side = (block.get("image_size") or 32) if name == "imagefolder" else NATIVE_SIZES.get(name, 32)
        block["crop_padding"] = side // 8
    return data


def _upgrade_method(data: dict) -> None:
    """``drop_retired``'s moves inside ``method`` (a copy already): SSKT's flat fields, the EMA's decay, KD's form."""
    method = data["method"]
    moved = {k: method.pop(k) for k in SSKT_FIELDS if k in method}
    if moved:
        method["sskt"] = {**moved, **(method.get("sskt") or {})}
    if "ema_decay" in method:
        data["ema"] = {"decay": method.pop("ema_decay"), **(data.get("ema") or {})}
    if isinstance(method.get("fixmatch"), Mapping):
        method["fixmatch"] = fixmatch = dict(method["fixmatch"])
        views = {k: fixmatch.pop(k) for k in STRONG_VIEW_FIELDS if k in fixmatch}
        if views:
            data["strong_views"] = {**views, **(data.get("strong_views") or {})}
    if "kd" in str(method.get("name", "")).split("+"):
        method["kd"] = {"label_weight": None, **(method.get("kd") or {})}


def load_config(path: str | Path) -> TrainConfig:
    """Read a run's ``config.yaml`` back into a TrainConfig (fields in ``RETIRED`` are dropped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    return config_from_dict(TrainConfig, drop_retired(yaml.safe_load(path.read_text()) or {}))

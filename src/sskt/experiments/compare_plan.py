"""``sskt compare``'s plan: the candidate rows, the options read into a ``Plan`` (schedules, seeds, the help every
row gets, a validation split) and the grids each stage writes and runs."""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sskt.config import SourceConfig, TrainConfig
from sskt.config_io import parse_train_args
from sskt.errors import UserError, check_choice
from sskt.experiments.grid import Grid, load_grid, parse_grid
from sskt.files import write_text_atomic

SEARCH_SEED = 100
"""The seed that chooses (benchmark v3's); the fresh seeds that confirm are 0, 1, 2, ..."""
SURVIVORS = 2
"""Rows the successive halving hands to the confirmation (scratch + EMA is confirmed besides, as the reference)."""
EVALS = 10
"""Evaluations per schedule (eval_every = epochs / EVALS): enough points for validation to choose the epoch."""
VAL_MAX, VAL_FRACTION = 100, 5
"""A validation split made here: 1/VAL_FRACTION of the smallest class's spare images, at most VAL_MAX per class."""
DEFAULT_EMA, DEFAULT_PRECISE_BN = 0.999, 16
"""The help every row gets when the config gives none: benchmark v3's EMA decay and precise-BN batches."""
DEFAULT_SOURCE = "efficientnet_lite0.imagenet"
TEACHER = "probe"


@dataclass(frozen=True)
class Row:
    """One candidate: a method with the config's settings, the EMA and precise BN."""

    name: str
    title: str
    method: str
    pool: bool = False
    """Reads the unlabelled pool (``data.unlabeled``); the others train on the labels alone."""
    teacher: bool = False
    """Distils the adapted teacher (the L-BFGS probe cell of its seed)."""
    source: bool = False
    """Reads the config's sources (SSKT's auxiliary tasks)."""
    settings: tuple[tuple[str, Any], ...] = ()
    """Overrides of this candidate's loss weight (a variant of the searched ones)."""
    family: str = ""
    """The row this is a variant of ('' for the row itself)."""


ROWS = {
    r.name: r
    for r in (
        Row("scratch", "scratch + EMA", "scratch"),
        Row("sskt", "SSKT + EMA", "sskt", source=True),
        Row("kd", "KD from the adapted teacher + EMA", "kd", teacher=True),
        Row("dho", "DHO-style dual head + EMA", "dho", teacher=True),
        Row("sskt_pool", "SSKT with the unlabelled pool + EMA", "sskt", pool=True, source=True),
        Row("kd_pool", "KD from the adapted teacher with the unlabelled pool + EMA", "kd", pool=True, teacher=True),
        Row("dho_pool", "DHO-style dual head with the unlabelled pool + EMA", "dho", pool=True, teacher=True),
        Row("fixmatch", "FixMatch + EMA", "fixmatch", pool=True),
        Row("kd_sskt", "KD + SSKT + EMA", "kd+sskt", teacher=True, source=True),
    )
}
DEFAULT_ROWS = ("scratch", "sskt", "kd", "dho")
WEIGHTS: dict[str, tuple[str, str, str, tuple[float, ...]]] = {
    "sskt": ("method.sskt.alpha", "a", "alpha", (1.0, 0.5)),
    "kd": ("method.kd.lam", "l", "lam", (1.0, 0.5)),
    "kd+sskt": ("method.kd.lam", "l", "lam", (1.0, 0.5)),
}
"""The loss weight searched per method on the first rung: its key, the cell tag, its name and the values tried
besides the config's own (benchmark v3's: SSKT's alpha 1 or 0.5; KD's lam 1 or 0.5 in METHOD.md section 9's form).
The DHO row chooses its own fusion weights on validation; scratch and FixMatch have no weight searched here."""
POOL_ROWS = ("sskt_pool", "kd_pool", "dho_pool", "fixmatch")


# --- arguments -----------------------------------------------------------------------------------------------------
def parse_budget(text: str) -> float:
    """Seconds in ``"3h"``, ``"90m"``, ``"1h30m"``, ``"45s"`` or ``"0.5h"``; anything else is a one-line UserError."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise UserError(f"--budget {text!r}: expected a duration such as 3h, 90m, 1h30m or 600s")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise UserError(f"--budget {text!r} must be longer than 0s")
    return seconds


def choose_rows(cfg: TrainConfig, methods: list[str] | None) -> list[Row]:
    """``methods`` (default: the four labelled rows, and the pool rows with ``data.unlabeled``) with scratch first."""
    names = methods or [*DEFAULT_ROWS, *(POOL_ROWS if cfg.data.unlabeled else ())]
    for name in names:
        check_choice("--methods row", name, ROWS)
        if ROWS[name].pool and not cfg.data.unlabeled:
            raise UserError(f"--methods {name} needs data.unlabeled in the config (e.g. 'rest'), got None")
    return [ROWS[n] for n in dict.fromkeys(["scratch", *names])]


def duration(seconds: float) -> str:
    """``"1h 05m"``, ``"3.5 min"`` or ``"42 s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def n_epochs(epochs: int) -> str:
    return f"{epochs} epoch" + ("" if epochs == 1 else "s")


# --- the plan ------------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What the comparison runs: the rows, their shared overrides, the schedules and the seeds."""

    config: Path
    cfg: TrainConfig
    rows: list[Row]
    common: dict[str, Any]
    """Overrides every candidate row gets: the validation split, the EMA decay, precise BN."""
    sources: list[dict]
    epochs: int
    rungs: list[int]
    """The search's schedule per rung (epochs)."""
    search_seed: int
    fresh: list[int]
    budget: float
    out: Path
    notes: list[str] = field(default_factory=list)
    candidates: list[Row] = field(default_factory=list)
    """The first rung's candidates: every row, and each searched weight's variants right after their row."""

    def __post_init__(self) -> None:
        self.candidates = self.candidates or list(self.rows)

    def row(self, name: str) -> Row:
        """The row or variant called ``name``."""
        return next(r for r in self.candidates if r.name == name)

    def family(self, name: str) -> str:
        """The row a candidate belongs to (itself for a row)."""
        return self.row(name).family or name


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan from the command's options; bad input is a one-line UserError before anything is written."""
    config = Path(args.config).expanduser().resolve()
    cfg = parse_train_args(["--config", str(config)])
    if cfg.epochs < 1 or args.seeds < 1:
        raise UserError(f"epochs and --seeds must be at least 1, got {cfg.epochs} and {args.seeds}")
    rows, budget = choose_rows(cfg, args.methods), parse_budget(args.budget)
    common, notes = shared_help(cfg)
    sources = [asdict(s) for s in cfg.sources] or [asdict(SourceConfig(name=DEFAULT_SOURCE))]
    if not cfg.sources and any(r.source or r.teacher for r in rows):
        notes.append(f"the config names no source: SSKT and the adapted teacher use {DEFAULT_SOURCE}")
    rungs = schedule(len(rows), cfg.epochs)
    fresh = [s for s in range(args.seeds + 1) if s != args.search_seed][: args.seeds]
    candidates = [v for r in rows for v in variants(r, cfg, getattr(args, "fixed_weights", False))]
    if len(candidates) > len(rows):
        tried = ", ".join(dict.fromkeys(weight_text(r) for r in candidates if r.settings))
        notes.append(f"each loss weight is searched on the first rung ({tried}); the best of each row goes on")
    return Plan(config, cfg, rows, common, sources, cfg.epochs, rungs, args.search_seed, fresh, budget,
                Path(args.out).resolve(), notes, candidates)  # fmt: skip


def variants(row: Row, cfg: TrainConfig, fixed: bool) -> list[Row]:
    """``row`` at the config's own loss weight (same name) and, unless ``fixed``, at the other searched values
    (``<row>_<tag><value>``, e.g. ``sskt_a0.5``)."""
    if fixed or row.method not in WEIGHTS:
        return [row]
    key, tag, what, values = WEIGHTS[row.method]
    own = float(_lookup(cfg, key))
    out = [replace(row, settings=((key, own),))]
    for v in (v for v in values if v != own):
        out.append(replace(row, name=f"{row.name}_{tag}{v:g}", title=f"{row.title} ({what} {v:g})",
                           settings=((key, v),), family=row.name))  # fmt: skip
    return out


def weight_text(row: Row) -> str:
    """``"kd's lam 0.5"``: the searched weight a candidate runs at."""
    key, _, what, _ = WEIGHTS[row.method]
    return f"{row.family or row.name}'s {what} {dict(row.settings)[key]:g}"


def _lookup(cfg: TrainConfig, dotted: str) -> Any:
    """The config value at ``a.b.c``."""
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def schedule(n_rows: int, epochs: int) -> list[int]:
    """Epochs per rung: halve ``n_rows`` down to ``SURVIVORS``, doubling the schedule so that the survivors' next
    doubling is ``epochs`` (4 rows at 40 epochs: one rung at 20; 8 rows: 10, then 20)."""
    rungs = max(1, math.ceil(math.log2(max(n_rows, 1) / SURVIVORS))) if n_rows > SURVIVORS else 1
    return [max(1, epochs // 2 ** (rungs - r)) for r in range(rungs)]


def shared_help(cfg: TrainConfig) -> tuple[dict[str, Any], list[str]]:
    """The overrides every row gets and the notes that say what they add to the config."""
    common: dict[str, Any] = {
        "ema.decay": cfg.ema.decay or DEFAULT_EMA,
        "precise_bn": cfg.precise_bn or DEFAULT_PRECISE_BN,
    }
    notes = [f"every row gets the EMA of its weights (decay {common['ema.decay']}) and precise BN "
             f"({common['precise_bn']} batches)"]  # fmt: skip
    if cfg.data.val_per_class:
        notes.append(f"the config's validation split ({cfg.data.val_per_class} images per class) chooses every "
                     "epoch, row and schedule")  # fmt: skip
    else:
        common["data.val_per_class"], counts = validation_size(cfg)
        notes.append(f"the config has no validation split: {common['data.val_per_class']} images per class "
                     f"({common['data.val_per_class'] * len(counts)} in all) are held out of the training images "
                     "to choose every epoch, row and schedule")  # fmt: skip
    return common, notes


def validation_size(cfg: TrainConfig) -> tuple[int, list[int]]:
    """Images per class to hold out: a fifth of the smallest class's images beyond its labelled ones (a half when
    ``labels_per_class`` is set), at most ``VAL_MAX``; with the per-class counts."""
    import torch

    from sskt.data import build_dataset

    labels = build_dataset(cfg.data).train.labels
    counts = torch.bincount(labels.long().flatten()[labels.long().flatten() >= 0]).tolist()
    lpc = cfg.data.labels_per_class
    spare = min(counts) - (lpc or 0)
    size = min(VAL_MAX, spare // (2 if lpc else VAL_FRACTION))
    if size < 1:
        raise UserError(f"too few training images for a validation split: the smallest class has {min(counts)} "
                        f"and data.labels_per_class is {lpc}; set data.val_per_class in the config")  # fmt: skip
    return size, counts


# --- grids ---------------------------------------------------------------------------------------------------------
def row_value(plan: Plan, row: Row, epochs: int, root: Path, label: str) -> dict[str, Any]:
    """One row's coupled axis value: its method, schedule, sources, teacher and pool."""
    value: dict[str, Any] = {"label": label, "method.name": row.method, "epochs": epochs}
    value |= {"eval_every": max(1, epochs // EVALS), "sources": plan.sources if row.source else []}
    value |= dict(row.settings)
    if row.teacher:
        value["method.kd.teacher"] = f"checkpoint:{root / TEACHER}-seed{{seed}}"
    if row.pool:
        value["data.unlabeled_ratio"] = max(1, plan.cfg.data.unlabeled_ratio)
    else:
        value["data.unlabeled"], value["data.unlabeled_ratio"] = None, 0
    return value


def teacher_value(plan: Plan) -> dict[str, Any]:
    """The adapted teacher: the linear-evaluation probe on the first source, fitted by L-BFGS, L2 on validation."""
    return {"label": TEACHER, "method.name": "probe", "method.probe.solver": "lbfgs", "epochs": 1, "eval_every": 1,
            "precise_bn": 0, "ema.decay": 0.0, "cache.enabled": False, "sources": plan.sources[:1],
            "data.unlabeled": None, "data.unlabeled_ratio": 0}  # fmt: skip


def stage_grid(plan: Plan, name: str | None, rows: list[Row], epochs: int, seeds: list[int], search: bool) -> Grid:
    """The grid of one stage, written to ``<out>/grids/<name>.yaml`` (what a SLURM task reads back; ``name`` None:
    an estimate's grid, kept in memory): the teacher first when a row needs it, then the rows; search cells are named
    ``<row>_e<epochs>``, confirmation cells ``<row>``."""
    root = plan.out / ("search" if search else "confirm")
    values = [teacher_value(plan)] if any(r.teacher for r in rows) else []
    values += [row_value(plan, r, epochs, root, f"{r.name}_e{epochs}" if search else r.name) for r in rows]
    raw = {"base": [str(plan.config), plan.common], "axes": {"row": values}, "seeds": seeds, "out": str(root)}
    if name is None:
        return parse_grid(raw)
    path = plan.out / "grids" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, f"# written by sskt compare; run by it, or by sskt grid --config {path.name}\n"
                      + yaml.safe_dump(raw, sort_keys=False))  # fmt: skip
    return load_grid(path)

"""The reference of ``sskt advise``: the target alone, scratch + EMA, on the config's labels and validation split.

A finished run given as ``--reference RUN`` (refused when its labels, validation split or target differ), else a
finished ``<out>/reference``, else one trained there now. Whether it had converged is judged by its validation gain
over the last quarter of its training (``still_improving``): a reference still learning makes every headroom over it
optimistic.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from sskt.config import EMAConfig, MethodConfig, TrainConfig
from sskt.engine import train
from sskt.errors import UserError
from sskt.rundir import RunDir

REFERENCE_EMA = 0.999
"""EMA decay of the reference run trained here when the config sets none (FixMatch's default)."""

SPLIT_FIELDS = ("data.name", "data.labels_per_class", "data.val_per_class", "data.val_seed", "data.image_size")


def split_identity(cfg: TrainConfig) -> dict:
    """What decides the labelled and validation images and the target: the fields a reference must share."""
    data = cfg.data
    fields = {f: getattr(data, f.split(".")[1]) for f in SPLIT_FIELDS}
    return fields | {"subset seed": cfg.seed if data.subset_seed is None else data.subset_seed, "model": cfg.model.name}


def read_reference(path: str, cfg: TrainConfig, source: str) -> dict:
    """The validation accuracy of a finished run at ``path`` (its validation-chosen ``best``), refusing a run
    whose labels, validation split or target differ from ``cfg``'s."""
    run = RunDir(path)
    if not run.is_finished():
        raise UserError(f"--reference {path!r} is not a finished run (no readable summary.json)")
    summary = run.read_summary()
    if "val_acc" not in summary.get("best", {}):
        raise UserError(f"--reference {path!r} has no validation accuracy: train it with data.val_per_class set")
    note = "its config.yaml is missing, so its split was not checked"
    if run.config.is_file():
        stored, ours = split_identity(run.read_config()), split_identity(cfg)
        differ = [f"{k} ({stored[k]} vs {ours[k]})" for k in ours if stored[k] != ours[k]]
        if differ:
            raise UserError(f"--reference {path!r} differs from the config in: {', '.join(differ)}")
        note = "same labels, validation split and target"
    return {
        "val_acc": float(summary["best"]["val_acc"]),
        "run": str(path),
        "how": source,
        "method": summary.get("method"),
        "epochs": summary.get("best_epoch"),
        "seconds": summary.get("wall_seconds"),
        "note": note,
    }


IMPROVING_POINTS = 0.5
"""A reference whose validation accuracy rose by more than this (points; or two validation images' worth, whichever
is more) over the last quarter of its training was still learning when it stopped. The 20-epoch reference of the
demo's settings rose 1.3 points over its last quarter and stood 5.4 below a converged run (80.5 against v2's 85.9)."""


def still_improving(path: str | Path, n_val: int = 1000) -> tuple[bool, float | None]:
    """Whether the run's convergence could be checked, and its validation gain over the last quarter of training
    (the last evaluation minus the best at or before 75% of its epochs, so the figure does not depend on how often
    it was evaluated) when that gain is above ``IMPROVING_POINTS`` or two of ``n_val`` images; None otherwise. A
    reference still improving underestimates scratch + EMA, so every headroom over it is optimistic. Unchecked:
    no readable evaluation records, or none at or before three quarters of training."""
    try:
        vals = [(int(r["epoch"]), float(r["val_acc"])) for r in RunDir(path).read_records() if "val_acc" in r]
    except UserError:
        return False, None
    if not vals:
        return False, None
    earlier = [v for e, v in vals if e <= 0.75 * vals[-1][0]]
    if not earlier:
        return False, None
    gain = vals[-1][1] - max(earlier)
    return True, gain if gain > max(IMPROVING_POINTS, 200 / max(n_val, 1)) else None


def reference_config(cfg: TrainConfig, out: Path, epochs: int | None) -> TrainConfig:
    """Scratch + EMA on the config's data and target: no sources, no unlabelled pool, EMA 0.999 unless set."""
    ref = copy.deepcopy(cfg)
    ref.method = MethodConfig(name="scratch", primary_loss=cfg.method.primary_loss)
    ref.sources, ref.cache.enabled = [], False
    ref.data.unlabeled, ref.data.unlabeled_ratio = None, 0
    ref.ema = EMAConfig(decay=REFERENCE_EMA if cfg.ema.decay is None else cfg.ema.decay, warmup=cfg.ema.warmup)
    ref.epochs, ref.out = epochs or cfg.epochs, str(out / "reference")
    return ref


def reference(cfg: TrainConfig, args: argparse.Namespace, out: Path) -> dict:
    """``--reference``, else a finished ``<out>/reference``, else scratch + EMA trained there now (resumed when a
    previous advise stopped part-way)."""
    if args.reference:
        return read_reference(args.reference, cfg, "given")
    ref = reference_config(cfg, out, args.reference_epochs)
    run = RunDir(ref.out)
    if run.is_finished():
        return read_reference(ref.out, cfg, "reused")
    ref.resume = run.has_progress()
    summary = train(ref)
    return {
        "val_acc": float(summary["best"]["val_acc"]),
        "run": ref.out,
        "how": "trained",
        "method": "scratch + EMA",
        "epochs": ref.epochs,
        "seconds": summary.get("wall_seconds"),
        "note": f"trained here for {ref.epochs} epochs (EMA decay {ref.ema.decay})",
    }

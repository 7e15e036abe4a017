"""``sskt advise``: which pretrained sources can help a small target on the user's data, in minutes, before training.

Per source and input size it reads the frozen source's penultimate features and logits of the labelled and
validation images (``sskt.sources.features``, cached), fits the L-BFGS linear probe on the labelled features and
measures it on the validation split (``sskt.sources.linear_eval``), and computes LogME, LEEP, NCE and H-score
(``sskt.sources.scores``; ../docs METHOD.md section 12). The reference is the target alone, scratch + EMA, on the same
labels and validation split: a finished run (``--reference RUN``, its validation-chosen ``best.val_acc``) or a
run trained here into ``<out>/reference`` (``advise_reference``, which also judges whether it had converged). Then

    headroom = probe validation accuracy - reference validation accuracy   (points)

ranks the sources. The rule behind the sentence, "headroom > 0: the source's features, read linearly, know more about
the task than the target learns alone, so distilling from it may help", is benchmark v2's lesson (negative headroom,
no gain); across regimes it is measured by benchmarks/advise_evidence.py (so far v2 and part of v3: ``RULE``).

Writes ``advise.json`` and ``advise.png`` (headroom per source) into ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from sskt.config import SourceConfig, TrainConfig
from sskt.config_io import parse_train_args
from sskt.data import build_dataset
from sskt.data.spec import DatasetSpec
from sskt.data.stream import TrainSplit, train_split
from sskt.errors import UserError
from sskt.experiments.advise_args import parser, print_help, split_argv, wants_help
from sskt.experiments.advise_reference import read_reference, reference, still_improving
from sskt.experiments.plots import signed_bars
from sskt.files import write_text_atomic
from sskt.sources import SOURCES, Source, build_source, features, linear_eval, scores
from sskt.sources.cache.key import cache_root

DEFAULT_SOURCE = "efficientnet_lite0.imagenet"
RULE = (
    "headroom = probe validation accuracy - scratch + EMA validation accuracy; headroom > 0 suggests the source can "
    "help (try kd and sskt), headroom <= 0 that scratch + EMA is the pick. Evidence so far (docs/advise_evidence.md, "
    "benchmarks/advise_evidence.py): in benchmark v2 (headroom -4.1) no SSKT or KD row gained; in benchmark v3 at "
    "10 labels per class with the source at 224 px (headroom +7.4) SSKT with the unlabelled pool gained +4.1 "
    "[+1.9, +6.3] over scratch + EMA on 3 fresh seeds. One regime each way, one dataset: a hint, not a validated "
    "rule, and no score's rank correlation with the gains is claimed. LogME, LEEP, NCE and H-score were validated "
    "in their papers against fine-tuning accuracy only."
)


@dataclass
class Candidate:
    """One source at one input size."""

    config: SourceConfig
    label: str
    """``"<name> at <size> px"``."""


# --- arguments -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, TrainConfig]:
    """advise's options and the training config they name; bad values are one-line UserErrors."""
    own, overrides = split_argv(argv)
    try:
        args = parser().parse_args(own)
    except argparse.ArgumentError as exc:
        raise UserError(" ".join(str(exc).split())) from exc
    if any(size < 1 for size in args.input_sizes or ()):
        raise UserError(f"--input-sizes must be positive pixel counts, got {args.input_sizes}")
    if args.reference_epochs is not None and args.reference_epochs < 1:
        raise UserError(f"--reference-epochs must be at least 1, got {args.reference_epochs}")
    for name in args.sources or ():
        SOURCES.require(name, "source")
    return args, parse_train_args(overrides)


def check_task(cfg: TrainConfig, spec: DatasetSpec) -> None:
    """advise needs a single-label image task and a validation split to measure the probe and the reference on."""
    if spec.task != "single_label":
        raise UserError(f"sskt advise handles single-label image tasks; {spec.name!r} is {spec.task!r}")
    if not cfg.data.val_per_class:
        raise UserError("sskt advise needs a validation split: set data.val_per_class (e.g. 10), got None")


# --- candidates ----------------------------------------------------------------------------------------------------
def candidates(cfg: TrainConfig, names: list[str] | None, sizes: list[int] | None) -> list[Candidate]:
    """Every (source, input size) to assess. Sources: ``names``, else the config's, else EfficientNet-Lite0.
    Sizes: ``sizes``, else the config's ``input_size`` for a configured source, else the source's native size.
    A configured source keeps its weights and input scale; BatchNorm always runs on its running statistics."""
    configured = {s.name: s for s in cfg.sources}
    names = names or list(configured) or [DEFAULT_SOURCE]
    out = []
    for name in names:
        base = replace(configured.get(name, SourceConfig(name=name)), bn_mode="eval", resize_factor=None)
        for size in sizes or [configured[name].input_size if name in configured else None]:
            label = f"{name} at {size} px" if size else f"{name} at its default size"
            out.append(Candidate(replace(base, input_size=size), label))
    return out


def build(candidate: Candidate, spec: DatasetSpec) -> Source:
    """The frozen source; without a size, at its native size when it declares one (else the target's)."""
    source = build_source(candidate.config, spec.mean, spec.std)
    if candidate.config.input_size is None and source.native_size:
        candidate.config = replace(candidate.config, input_size=source.native_size)
        source = build_source(candidate.config, spec.mean, spec.std)
    if candidate.config.input_size is None:
        candidate.label = f"{candidate.config.name} at {spec.image_size} px"
    else:
        candidate.label = f"{candidate.config.name} at {candidate.config.input_size} px"
    return source


# --- one source ----------------------------------------------------------------------------------------------------
def assess(candidate: Candidate, spec: DatasetSpec, split: TrainSplit, cfg: TrainConfig, show: bool) -> dict:
    """Probe validation accuracy, scores and timings of one candidate (features from the cache when there)."""
    started = time.perf_counter()
    source = build(candidate, spec)
    root = cache_root(cfg.cache)
    wanted = torch.cat([split.labeled, split.val])
    found = features.source_features(source, spec, wanted, root, cfg.data.eval_batch_size, device_of(cfg), show)
    (f_l, s_l), (f_v, _) = found.rows(split.labeled), found.rows(split.val)
    y_l, y_v = spec.train.labels[split.labeled], spec.train.labels[split.val]
    t_probe = time.perf_counter()
    fit = linear_eval.choose_l2((f_l, y_l), (f_v, y_v), spec.num_classes, grid=linear_eval.L2_GRID)
    t_scores = time.perf_counter()
    row = {
        "source": candidate.config.name,
        "input_size": candidate.config.input_size,
        "label": candidate.label,
        "feature_dim": int(f_l.shape[1]),
        "source_classes": int(s_l.shape[1]),
        "probe_val_acc": round(fit.val_acc[fit.l2], 4),
        "probe_l2": fit.l2,
        **transfer_scores(f_l, s_l, y_l, spec.num_classes),
        "features_cached": found.cached,
    }
    done = time.perf_counter()
    row["seconds"] = {
        "features": found.seconds,
        "probe": t_scores - t_probe,
        "scores": done - t_scores,
        "total": done - started,
    }
    return row


def transfer_scores(feats: Tensor, logits: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """LogME and H-score on the features, LEEP and NCE on the source's logits, all on the labelled images."""
    return {
        "logme": scores.logme(feats, labels, num_classes),
        "leep": scores.leep(logits, labels, num_classes),
        "nce": scores.nce(logits, labels, num_classes),
        "h_score": scores.h_score(feats, labels, num_classes),
    }


def device_of(cfg: TrainConfig) -> str:
    """Where the sources run: CUDA when the config allows it and one is there, else the CPU."""
    return "cuda" if cfg.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() else "cpu"


# --- the verdict ---------------------------------------------------------------------------------------------------
def noise_points(p1: float, p2: float, n: int) -> float:
    """One standard error, in points, of the difference of two accuracies p1, p2 (percent) each measured on the same
    n validation images, treated as independent: ``100 sqrt((q1 (1 - q1) + q2 (1 - q2)) / n)`` with q = p / 100.
    A rough yardstick (the two classifiers' errors are correlated, which makes the true one smaller)."""
    q1, q2 = p1 / 100, p2 / 100
    return 100 * math.sqrt((q1 * (1 - q1) + q2 * (1 - q2)) / max(n, 1))


def sentence(row: dict, improving: float | None = None) -> str:
    """One plain sentence from a row's headroom and its noise; ``improving``: the reference's gain over its last
    quarter when it stopped still improving (its headroom is then an upper bound, and never 'likely to help')."""
    h, noise, label = row["headroom"], row["noise"], row["label"]
    if h <= 0:
        return f"{label}: no headroom ({h:+.1f} points): scratch + EMA is the pick"
    if improving is not None:
        return (
            f"{label}: {h:+.1f} points of headroom over a reference still improving when it stopped "
            f"(+{improving:.1f} over its last quarter), so at most that; train the reference longer "
            "(--reference-epochs, or --reference RUN of a converged run) before choosing"
        )
    if h <= noise:
        return (
            f"{label}: {h:+.1f} points of headroom, within the validation noise (+-{noise:.1f}); it may help: "
            "try kd and sskt against scratch + EMA"
        )
    return f"{label}: {h:+.1f} points of headroom, likely to help; try kd and sskt"


def rank(rows: list[dict], ref_acc: float, n_val: int, improving: float | None = None) -> list[dict]:
    """Headroom, noise, sentence and rank of every row, best headroom first."""
    for row in rows:
        row["headroom"] = row["probe_val_acc"] - ref_acc
        row["noise"] = noise_points(row["probe_val_acc"], ref_acc, n_val)
        row["sentence"] = sentence(row, improving)
    rows = sorted(rows, key=lambda r: -r["headroom"])
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def verdict(rows: list[dict]) -> str:
    """The one line over all sources."""
    if not rows or rows[0]["headroom"] <= 0:
        return "no source has headroom: scratch + EMA is the pick"
    return f"best: {rows[0]['sentence']}"


# --- output --------------------------------------------------------------------------------------------------------
def table(result: dict) -> Table:
    """The terminal table: one line per source and size, ranked."""
    ref = result["reference"]
    t = Table(title=f"sskt advise: {result['dataset']}, reference scratch + EMA {ref['val_acc']:.1f}% ({ref['how']})")
    for name in ("#", "source", "probe val %", "headroom", "LogME", "LEEP", "NCE", "H-score", "seconds"):
        t.add_column(name, justify="left" if name == "source" else "right")
    for r in result["rows"]:
        cached = " (cached)" if r["features_cached"] else ""
        t.add_row(
            str(r["rank"]), r["label"], f"{r['probe_val_acc']:.1f}", f"{r['headroom']:+.1f} +-{r['noise']:.1f}",
            f"{r['logme']:.3f}", f"{r['leep']:.3f}", f"{r['nce']:.3f}", f"{r['h_score']:.2f}",
            f"{r['seconds']['total']:.1f}{cached}",
        )  # fmt: skip
    return t


def write_outputs(result: dict, out: Path) -> None:
    """``advise.json`` and ``advise.png`` (headroom per source and size) in ``out``."""
    write_text_atomic(out / "advise.json", json.dumps(result, indent=2) + "\n")
    bars = {r["label"]: r["headroom"] for r in result["rows"]}
    ref = result["reference"]["val_acc"]
    signed_bars(bars, out / "advise.png", f"headroom over scratch + EMA ({ref:.1f}% val)", "probe - reference (points)")


def show(result: dict, console: Console) -> None:
    """The table, one sentence per source, and the verdict."""
    console.print(table(result))
    lines = [f"  {row['sentence']}" for row in result["rows"]] + [result["verdict"]]
    ref = result["reference"]
    improving = ref.get("still_improving")
    learning = f"; still improving over its last quarter (+{improving:.1f} points)" if improving is not None else ""
    if not ref.get("convergence_checked", True):
        learning = "; its convergence was not checked (no evaluation records before its last quarter)"
    lines.append(f"reference: {ref['note']}{learning}; wrote {result['out']}/advise.json and advise.png")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


# --- the command ---------------------------------------------------------------------------------------------------
def advise(args: argparse.Namespace, cfg: TrainConfig, console: Console) -> dict:
    """Assess every candidate, get the reference, rank, and return the result (written by the caller)."""
    started = time.perf_counter()
    out = Path(args.out)
    spec = build_dataset(cfg.data)
    check_task(cfg, spec)
    split = train_split(spec, cfg)
    todo = candidates(cfg, args.sources, args.input_sizes)
    ref = read_reference(args.reference, cfg, "given") if args.reference else None  # bad input before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = []
    for i, candidate in enumerate(todo, 1):
        console.print(f"[{i}/{len(todo)}] {candidate.label}", soft_wrap=True, markup=False, highlight=False)
        rows.append(assess(candidate, spec, split, cfg, cfg.progress))
    ref = ref or reference(cfg, args, out)
    ref["convergence_checked"], ref["still_improving"] = still_improving(ref["run"], len(split.val))
    rows = rank(rows, ref["val_acc"], len(split.val), ref["still_improving"])
    return {
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "labeled": len(split.labeled),
        "validation": len(split.val),
        "labels_per_class": cfg.data.labels_per_class,
        "reference": ref,
        "rows": rows,
        "verdict": verdict(rows),
        "rule": RULE,
        "seconds": time.perf_counter() - started,
        "out": str(out),
    }


def advise_main(argv: list[str]) -> int:
    """``sskt advise --config my.yaml [--sources a b] [--input-sizes 64 224] [--reference RUN] [--out DIR]``."""
    if wants_help(argv):
        return print_help(argv)
    args, cfg = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # a log file: do not fold the table
    result = advise(args, cfg, console)
    write_outputs(result, Path(args.out))
    show(result, console)
    return 0

"""``train(cfg)``: one run on Lightning Fabric, from config to summary. The loop is flat; one comment per phase."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
from lightning_fabric import Fabric
from torch import Tensor

from sskt.config import TrainConfig
from sskt.data import DatasetSpec, TrainStream, build_dataset
from sskt.engine.checkpoint import INPUTS, check_inputs, load_checkpoint, run_inputs, save_atomic, stream_splits
from sskt.engine.checks import check_config
from sskt.engine.distributed import fabric_strategy, peers_watched
from sskt.engine.evaluation import calibration_data, eval_splits, evaluate_splits, headline_metric
from sskt.engine.precise_bn import recompute_bn_stats
from sskt.engine.progress import EpochProgress, epoch_line
from sskt.engine.records import git_commit, load_average, machine, versions
from sskt.engine.seeding import rng_state, seed_everything, set_rng_state
from sskt.engine.soft_cache import attach_cache, frozen_networks
from sskt.engine.trackers import build_trackers, tracker_metrics
from sskt.engine.weights import save_target
from sskt.errors import UserError
from sskt.methods import METHODS, Method, MethodContext
from sskt.rundir import RunDir


def build_fabric(cfg: TrainConfig, run: RunDir) -> Fabric:
    """Fabric with the run's devices and precision, logging to the trackers ``cfg.loggers`` names (a bad name or a
    missing extra is refused here, before anything is written)."""
    return Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=fabric_strategy(cfg),
        precision=cfg.precision,
        loggers=build_trackers(cfg, run),
    )


def train(cfg: TrainConfig) -> dict:
    """Train one run into ``cfg.out`` and return its summary (also written to ``summary.json``)."""
    check_config(cfg)
    cfg = resolve_paths(cfg)
    run = RunDir(cfg.out)
    run.check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    fabric = build_fabric(cfg, run)
    with peers_watched(fabric, cfg.dist_timeout):  # another process that stops is one line naming it
        fabric.launch()
        # Nothing is written into the run directory before the data, the networks and the sources are built.
        spec, stream, method = build_parts(cfg, fabric)
        with run.locked() if fabric.is_global_zero else contextlib.nullcontext():
            return _train(cfg, run, fabric, (spec, stream, method), started)


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its data and cache folders made absolute, so the stored ``config.yaml`` (and ``evaluate``)
    works from any directory."""
    data = dataclasses.replace(
        cfg.data, root=str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else None
    )
    cache = dataclasses.replace(
        cfg.cache, dir=str(Path(cfg.cache.dir).expanduser().resolve()) if cfg.cache.dir else None
    )
    return dataclasses.replace(cfg, data=data, cache=cache)


def _train(cfg: TrainConfig, run: RunDir, fabric: Fabric, parts: tuple, started: float) -> dict:
    """``train`` once everything is built and the run directory is locked."""
    spec, stream, method = parts
    inputs = run_inputs(stream_splits(spec, stream), method.ctx.frozen)
    if cfg.resume:  # other data or frozen weights under the same paths: refused before config.yaml is rewritten
        check_inputs(run.checkpoint, inputs, run.root)
    if fabric.is_global_zero:
        run.prepare(cfg)
    splits = eval_splits(
        spec, stream.val_indices, cfg.data.eval_batch_size, fabric.device, cfg.data.num_workers,
        fabric.global_rank, fabric.world_size,
    )  # fmt: skip
    selectors = epoch_selectors(spec.task, splits)
    calibration = calibration_data(
        spec, splits, stream.labeled_indices, cfg.data.eval_batch_size, fabric.device, cfg.data.num_workers
    )

    # Resume: weights, optimizers, schedules, RNG states, best-so-far; the stream replays from (seed, epoch).
    state = restore(run, method) if cfg.resume and run.checkpoint.exists() else fresh_state()
    state[INPUTS] = inputs  # saved in every last.pt, so that a resume can check them
    if fabric.is_global_zero:
        run.truncate_records(state["epoch"])
    prior_seconds = state["wall_seconds"]
    state["cache_build_seconds"] = getattr(stream.provider, "build_seconds", 0.0)
    metrics: dict[str, float] = {}

    for epoch in range(state["epoch"], cfg.epochs):
        record = train_epoch(fabric, method, stream, epoch) | method.epoch_facts()
        stop_if_diverged(record, run, cfg)  # before this epoch's weights are evaluated or saved
        account(state, record)

        # Evaluate every eval_every epochs and after the last one.
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            if cfg.precise_bn:  # statistics of the current weights, from this epoch's (replayable) batches
                timed(state, record, "precise_bn_seconds", recompute_bn_stats, method.evaluated().values(),
                      stream.epoch(epoch), cfg.precise_bn, fabric.device)  # fmt: skip
            metrics = measure(method, splits, spec, fabric, calibration)
            record.update(metrics)
            for which, metric in selectors.items():
                keep_if_better(state, which, metric, metrics, epoch + 1)

        # Record, log, checkpoint (atomically, so a kill at any moment leaves a loadable last.pt).
        state["epoch"], state["wall_seconds"] = epoch + 1, prior_seconds + time.perf_counter() - started
        if fabric.is_global_zero:
            run.append_record(record)
            print(epoch_line(record, cfg.epochs), flush=True)
            save_atomic(checkpoint_state(method, state), run.checkpoint)
        fabric.log_dict(tracker_metrics(record), step=epoch + 1)
        fabric.barrier()

    # A resumed run that had already finished still reports the trained networks' final metrics.
    if not metrics:
        metrics = measure(method, splits, spec, fabric, calibration)
    return finish(cfg, run, fabric, method, state, metrics, selectors, spec)


def first_nonfinite(losses: list[Tensor]) -> int | None:
    """The 1-based step whose loss was first NaN or infinite in this process (None: only another process's was)."""
    bad = (~torch.isfinite(torch.stack(losses).float())).nonzero() if losses else []
    return int(bad[0]) + 1 if len(bad) else None


def stop_if_diverged(record: dict, run: RunDir, cfg: TrainConfig) -> None:
    """Stop a run whose training loss became NaN or infinite, in one line naming the epoch and step, before the
    broken weights are evaluated, recorded or saved: ``last.pt`` keeps the last good epoch and no summary is
    written, so nothing looks like a result. The epoch's mean loss, read once per epoch anyway, is the test: no
    step waits for the device."""
    if "nonfinite_step" not in record:
        return
    epoch, step = record["epoch"], record["nonfinite_step"]
    where = f"epoch {epoch}, step {step}" if step else f"epoch {epoch} (in another process's rows)"
    kept = f"{run.checkpoint} keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
    raise UserError(
        f"the training loss became {record['train_loss']} at {where}; training stopped ({kept}, no summary). "
        f"Try a lower optim.lr (now {cfg.optim.lr:g}), precision 32-true, or positive loss temperatures, in a new --out"
    )


def account(state: dict, record: dict) -> None:
    """Add the epoch's cost to the run's (resumes included) and write the totals so far into its record: training
    seconds (evaluation excluded), CPU seconds, rows the target processed; and keep the peak load."""
    state["train_seconds"] += record["epoch_seconds"]
    state["images_seen"] += record.pop("images")
    state["cpu_seconds"] += record["cpu_seconds"]
    state["peak_load_1min"] = max(state["peak_load_1min"], record["load_1min"])
    record.update(
        train_seconds=state["train_seconds"], images_seen=state["images_seen"], train_cpu_seconds=state["cpu_seconds"]
    )


def timed(state: dict, record: dict, key: str, fn, *args) -> None:  # noqa: ANN001 - any callable
    """Run ``fn(*args)``, adding its seconds to ``state[key]`` and writing the total so far into ``record[key]``
    (precise BN: a cost of training that ``train_seconds`` leaves out, which equal-time tables add back)."""
    start = time.perf_counter()
    fn(*args)
    state[key] = state.get(key, 0.0) + time.perf_counter() - start
    record[key] = state[key]


def measure(method: Method, splits: dict, spec: DatasetSpec, fabric: Fabric, calibration: dict) -> dict[str, float]:
    """Every metric of the evaluated networks on every split, and the facts the method adds beside them (the EMA's
    decay at its last update, ``ema_decay_effective``), so the record and the summary's epochs carry both. The
    method first sets what it chooses after training (``calibrate``: DHO's fusion weights on validation)."""
    method.calibrate(calibration)
    metrics = evaluate_splits(method.evaluated(), splits, spec.task, spec.num_classes, fabric.device)
    return metrics | method.epoch_facts()


def epoch_selectors(task: str, splits: dict) -> dict[str, str]:
    """Which metric picks which kept epoch: validation chooses the best epoch (only with a validation split); the
    test headline only picks the labelled oracle."""
    selectors = {"best": headline_metric(task, "val")} if "val" in splits else {}
    return selectors | {"oracle": headline_metric(task, "test")}


def fresh_state() -> dict:
    """The loop state of a run that has not trained yet: the validation-chosen best ('best') and the test-chosen
    oracle ('oracle'), each with its epoch."""
    return {
        "epoch": 0,
        "best": {},
        "best_epoch": None,
        "oracle": {},
        "oracle_epoch": None,
        "wall_seconds": 0.0,
        "train_seconds": 0.0,
        "images_seen": 0,
        "cpu_seconds": 0.0,
        "peak_load_1min": 0.0,
        "precise_bn_seconds": 0.0,
        "cache_build_seconds": 0.0,
    }


def keep_if_better(state: dict, which: str, metric: str, metrics: dict, epoch: int) -> None:
    """Make ``metrics`` (all of them, at ``epoch``) the state's ``which`` when its ``metric`` beats the kept one;
    ties keep the earlier epoch."""
    if state[f"{which}_epoch"] is None or metrics[metric] > state[which].get(metric, float("-inf")):
        state[which], state[f"{which}_epoch"] = dict(metrics), epoch


def build_parts(cfg: TrainConfig, fabric: Fabric) -> tuple[DatasetSpec, TrainStream, Method]:
    """Data, training stream and method, set up on the fabric; the target's initial weights follow from cfg.seed.
    The frozen networks the method declares are built here, once, and shared by the cache and the method."""
    seed_everything(cfg.seed)
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg.data, cfg.seed, device=fabric.device)
    stream.shard(fabric.global_rank, fabric.world_size)
    METHODS.get(cfg.method.name).check_data(cfg, spec)  # before the frozen networks are built
    frozen = frozen_networks(cfg, spec)
    if cfg.cache.enabled:  # replay stored views and their cached source logits (built first when allowed)
        attach_cache(cfg, spec, stream, fabric, frozen)
    method = METHODS.create(cfg.method.name, ctx=MethodContext(cfg, spec, len(stream), frozen))
    if METHODS.get(cfg.method.name).wants_strong_views(cfg):
        stream.enable_strong_views(cfg.strong_views)
    method.setup(fabric)
    return spec, stream, method


def train_epoch(fabric: Fabric, method: Method, stream: TrainStream, epoch: int) -> dict:
    """Every pass (``method.phases()``, usually one) over the epoch's stream. Losses and logs are summed on device
    and read once at the end (no per-step sync); each is the mean over the steps that reported it."""
    steps = len(stream)
    lr = method.lr()
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    losses: list[Tensor] = []  # each step's loss, left on device: read only when the epoch's mean is not finite
    images = 0
    method.start_epoch(epoch)
    start, cpu_start = time.perf_counter(), time.process_time()
    phases = method.phases()
    show = method.cfg.progress and fabric.is_global_zero
    with EpochProgress(show, epoch, method.cfg.epochs, steps * len(phases)) as bar:
        for phase in phases:
            method.start_phase(phase)
            for batch in stream.epoch(epoch):
                out = method.training_step(batch.to(fabric.device))
                losses += [] if out.loss is None else [out.loss.detach()]
                for key, value in {"train_loss": out.loss, **out.logs}.items():
                    if value is not None:
                        sums[key] = sums.get(key, 0) + value.float()
                        counts[key] = counts.get(key, 0) + 1
                images += batch.images.shape[0] if out.rows is None else out.rows
                bar.advance(batch.images.shape[0])
    method.end_epoch(epoch)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # One all-reduce per epoch: the mean over every device's steps, and the rows all of them processed.
    images = int(fabric.all_reduce(torch.tensor(float(images), device=fabric.device), reduce_op="sum").item())
    means = fabric.all_reduce(sums, reduce_op="mean")
    means = {k: (v / counts[k]).item() for k, v in means.items()}
    diverged = {} if math.isfinite(means.get("train_loss", 0.0)) else {"nonfinite_step": first_nonfinite(losses)}
    return diverged | {
        "epoch": epoch + 1,
        "train_loss": means.pop("train_loss", float("nan")),  # NaN: no step trained (the L-BFGS probe)
        "lr": lr,
        "epoch_seconds": seconds,
        # CPU seconds (user + system, every thread of this process) against wall seconds, and the machine's load
        # at the epoch's end: a run that shared the machine shows cpu/wall far below its threads, or a load above
        # the cores it used (experiments/budget.py flags it).
        "cpu_seconds": cpu_seconds,
        "load_1min": load_average(),
        "images": images,  # rows the target processed, every pass (unlabelled rows and strong views included)
        "images_per_second": images / max(seconds, 1e-9),
        **means,
    }


def checkpoint_state(method: Method, state: dict) -> dict:
    """Everything a resumed run needs, as tensors, numbers and dicts (``weights_only=True`` loadable)."""
    return {"method": method.state_dict(), **state, "rng": rng_state()}


def restore(run: RunDir, method: Method) -> dict:
    """Load ``last.pt`` into the method and the global RNGs; return the loop state it holds."""
    ckpt = load_checkpoint(run.checkpoint)
    method.load_state_dict(ckpt["method"])
    set_rng_state(ckpt["rng"])
    # Checkpoints written before the validation split kept one test-chosen best: it becomes the oracle.
    state = fresh_state()
    state.update({k: ckpt[k] for k in state if k in ckpt})
    if "oracle" not in ckpt:
        state.update(best={}, best_epoch=None, oracle=ckpt.get("best", {}), oracle_epoch=ckpt.get("best_epoch"))
    return state


def finish(
    cfg: TrainConfig,
    run: RunDir,
    fabric: Fabric,
    method: Method,
    state: dict,
    final: dict,
    selectors: dict,
    spec: DatasetSpec,
) -> dict:
    """Write ``model.safetensors`` and ``model.json`` (the inference boundary), then ``summary.json``; return the
    summary.

    ``best`` (every metric at the epoch with the best validation headline), ``best_epoch`` and ``selected_by`` exist
    only with a validation split. ``best_test_oracle`` is the epoch with the best test headline: chosen on the test
    set, so an oracle figure, never a result."""
    summary: dict = {"final": final}
    if "best" in selectors:
        summary.update(best=state["best"], best_epoch=state["best_epoch"], selected_by=selectors["best"])
    summary.update(best_test_oracle=state["oracle"], best_test_oracle_epoch=state["oracle_epoch"])
    summary |= {
        "wall_seconds": state["wall_seconds"],
        "train_seconds": state["train_seconds"],
        "images_seen": state["images_seen"],
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "versions": versions(),
        "machine": machine(fabric.device) | {"peak_load_1min": state["peak_load_1min"]},
        "cpu_seconds": state["cpu_seconds"],
        "precise_bn_seconds": state["precise_bn_seconds"],
        "cache_build_seconds": state["cache_build_seconds"],
        "method": cfg.method.name,
        "epochs": cfg.epochs,
        "headline": headline_metric(spec.task, "test"),
    }
    if fabric.is_global_zero:
        save_target(method, cfg, spec, run)
        run.write_summary(summary)
    fabric.barrier()
    return summary

"""The frozen networks of a run, and hooking the soft-label cache into it.

A method declares the frozen networks it reads (``Method.frozen_networks(cfg)``: SSKT's sources, KD's teacher, the
union for a composition); ``frozen_networks`` here builds each of them once. With ``cache.enabled: true`` the same
built networks make (or open) the cache, and the stream replays its stored views and their cached logits; the
method then receives them through ``MethodContext.frozen`` (``sskt cache build`` in the CLI builds the cache of a run
ahead of time). This module never names a method.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.engine.distributed import long_barrier
from sskt.errors import UserError
from sskt.files import write_text_atomic
from sskt.methods import METHODS
from sskt.sources.base import Source, build_sources
from sskt.sources.cache import open_cache


def frozen_networks(cfg: TrainConfig, spec: DatasetSpec) -> dict[str, Source]:
    """The frozen networks the run's method declares, by key, each built once (on the CPU, frozen)."""
    return build_sources(METHODS.get(cfg.method.name).frozen_networks(cfg), spec.mean, spec.std)


def run_sources(cfg: TrainConfig, spec: DatasetSpec, device: torch.device | str = "cpu") -> dict[str, Source]:
    """The networks the run's cache holds (the method's frozen networks), on ``device``; a UserError when the method
    reads none."""
    return cache_sources(cfg, frozen_networks(cfg, spec), device)


def cache_sources(cfg: TrainConfig, frozen: dict[str, Source], device: torch.device | str) -> dict[str, Source]:
    """``frozen`` moved to ``device`` for the cache; refused when empty (nothing to cache)."""
    if not frozen:
        raise UserError(
            f"the soft-label cache needs a source or a KD teacher, and method {cfg.method.name!r} reads none; "
            "set sources: [{name: <source>}] with a method that uses them, or cache.enabled false"
        )
    return {k: s.to(device) for k, s in frozen.items()}


def attach_cache(cfg: TrainConfig, spec: DatasetSpec, stream, fabric, frozen: dict[str, Source]) -> None:
    """Open the run's cache of ``frozen`` (rank 0 builds it first when missing and allowed) and make ``stream``
    replay it."""
    sources = cache_sources(cfg, frozen, fabric.device)
    start = time.perf_counter()
    if fabric.is_global_zero:
        open_cache(cfg, spec, stream, sources, show_progress=cfg.progress)
    long_barrier(fabric)  # a build may take hours: longer than dist_timeout
    cache = open_cache(cfg, spec, stream, sources, build=False)
    cache.build_seconds = build_seconds(cache.path, time.perf_counter() - start, fabric.is_global_zero)
    stream.set_view_provider(cache)


BUILD_SECONDS = "build_seconds.json"
"""Beside a cache's files: the seconds its first opener took, that is, building it (the frozen networks' forwards
over every stored view), which equal-time tables charge to every run that reads the cache."""


def build_seconds(folder: Path, elapsed: float, writer: bool) -> float:
    """The seconds building the cache in ``folder`` took: recorded there by its first opener (``elapsed``, when
    ``writer``), read back by every later one. A cache built by ``sskt cache build`` is credited with its first
    training run's opening time instead (seconds, not its build)."""
    path = folder / BUILD_SECONDS
    if path.is_file():
        return float(json.loads(path.read_text()).get("seconds", 0.0))
    if writer:
        write_text_atomic(path, json.dumps({"seconds": elapsed}) + "\n")
    return elapsed

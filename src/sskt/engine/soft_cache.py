"""The frozen networks of a run, and hooking the soft-label cache into it.

A method declares the frozen networks it reads (``Method.frozen_networks(cfg)``: SSKT's sources, KD's teacher, the
union for a composition); ``frozen_networks`` here builds each of them once. With ``cache.enabled: true`` the same
built networks make (or open) the cache, and the stream replays its stored views and their cached logits; the
method then receives them through ``MethodContext.frozen`` (``sskt cache build`` in the CLI builds the cache of a run
ahead of time). This module never names a method.
"""

from __future__ import annotations

import torch

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.engine.distributed import long_barrier
from sskt.errors import UserError
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
    """Open the run's caches of ``frozen`` (rank 0 builds them first when missing and allowed) and make ``stream``
    replay them. Their build seconds (``CacheSet.build_seconds``) are what equal-time tables charge the run."""
    sources = cache_sources(cfg, frozen, fabric.device)
    if fabric.is_global_zero:
        open_cache(cfg, spec, stream, sources, show_progress=cfg.progress)
    long_barrier(fabric)  # a build may take hours: longer than dist_timeout
    stream.set_view_provider(open_cache(cfg, spec, stream, sources, build=False))

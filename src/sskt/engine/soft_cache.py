"""Hooking the soft-label cache into a run: ``cache.enabled: true`` makes the stream replay stored views and their
cached source logits (``sskt cache build`` in the CLI builds the cache of a run ahead of time)."""

from __future__ import annotations

import torch

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.methods.sskt import source_keys
from sskt.sources import build_source
from sskt.sources.cache import open_cache


def run_sources(cfg: TrainConfig, spec: DatasetSpec, device: torch.device | str = "cpu") -> dict:
    """The run's sources by the keys the SSKT method uses for them, frozen, on ``device``."""
    if not cfg.sources:
        raise UserError("the soft-label cache needs at least one source; set sources: [{name: <source>}]")
    keys = source_keys(cfg.sources)
    return {k: build_source(s, spec.mean, spec.std).to(device) for k, s in zip(keys, cfg.sources, strict=True)}


def attach_cache(cfg: TrainConfig, spec: DatasetSpec, stream, fabric) -> None:
    """Open the run's cache (rank 0 builds it first when missing and allowed) and make ``stream`` replay it."""
    sources = run_sources(cfg, spec, fabric.device)
    if fabric.is_global_zero:
        open_cache(cfg, spec, stream, sources, show_progress=cfg.progress)
    fabric.barrier()
    stream.set_view_provider(open_cache(cfg, spec, stream, sources, build=False))

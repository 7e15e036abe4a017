"""Hooking the soft-label cache into a run: ``cache.enabled: true`` makes the stream replay stored views and their
cached source logits (``sskt cache build`` in the CLI builds the cache of a run ahead of time)."""

from __future__ import annotations

import torch

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.methods import METHODS
from sskt.methods.kd import TEACHER_KEY, teacher_config
from sskt.methods.sskt import source_keys
from sskt.sources import build_source
from sskt.sources.cache import open_cache


def run_sources(cfg: TrainConfig, spec: DatasetSpec, device: torch.device | str = "cpu") -> dict:
    """The run's sources by the keys the SSKT term uses for them, and a KD teacher under ``TEACHER_KEY`` when the
    method distils (its cost is then paid once, like a source's), frozen, on ``device``."""
    configs = dict(zip(source_keys(cfg.sources), cfg.sources, strict=True))
    if "kd" in getattr(METHODS.get(cfg.method.name), "families", ()) and cfg.method.kd.teacher:
        configs[TEACHER_KEY] = teacher_config(cfg)
    if not configs:
        raise UserError("the soft-label cache needs a source or a KD teacher; set sources: [{name: <source>}]")
    return {k: build_source(s, spec.mean, spec.std).to(device) for k, s in configs.items()}


def attach_cache(cfg: TrainConfig, spec: DatasetSpec, stream, fabric) -> None:
    """Open the run's cache (rank 0 builds it first when missing and allowed) and make ``stream`` replay it."""
    sources = run_sources(cfg, spec, fabric.device)
    if fabric.is_global_zero:
        open_cache(cfg, spec, stream, sources, show_progress=cfg.progress)
    fabric.barrier()
    stream.set_view_provider(open_cache(cfg, spec, stream, sources, build=False))

"""Hooking the soft-label cache into a run: ``cache.enabled: true`` makes the stream replay stored views and their
cached source logits, and ``sskt cache build --config ...`` builds the cache of a run ahead of time."""

from __future__ import annotations

import json

import torch

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError


def run_sources(cfg: TrainConfig, spec: DatasetSpec, device: torch.device | str = "cpu") -> dict:
    """The run's sources by the keys the SSKT method uses for them, frozen, on ``device``."""
    from sskt.methods.sskt import source_keys
    from sskt.sources import build_source

    if not cfg.sources:
        raise UserError("the soft-label cache needs at least one source; set sources: [{name: <source>}]")
    keys = source_keys(cfg.sources)
    return {k: build_source(s, spec.mean, spec.std).to(device) for k, s in zip(keys, cfg.sources, strict=True)}


def attach_cache(cfg: TrainConfig, spec: DatasetSpec, stream, fabric) -> None:
    """Open the run's cache (rank 0 builds it first when missing and allowed) and make ``stream`` replay it."""
    from sskt.sources.cache_build import open_cache

    sources = run_sources(cfg, spec, fabric.device)
    if fabric.is_global_zero:
        open_cache(cfg, spec, stream, sources, show_progress=cfg.progress)
    fabric.barrier()
    stream.set_view_provider(open_cache(cfg, spec, stream, sources, build=False))


def cache_main(argv: list[str]) -> int:
    """``sskt cache build --config run.yaml [overrides]``: build the run's soft-label cache and print its folder."""
    from sskt.cli import parse_train_args
    from sskt.data import TrainStream, build_dataset
    from sskt.engine.checks import check_config
    from sskt.errors import check_choice
    from sskt.sources.cache_build import open_cache

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: sskt cache build --config RUN.yaml [--dotted.override VALUE ...]")
        return 0 if argv else 2
    check_choice("cache command", argv[0], ("build",))
    cfg = parse_train_args(argv[1:])
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = "cuda" if cfg.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() else "cpu"
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg)
    cache = open_cache(cfg, spec, stream, run_sources(cfg, spec, device), build=True, show_progress=cfg.progress)
    print(json.dumps({"cache": str(cache.path), "views": cache.views, "bytes": cache.nbytes()}))
    return 0

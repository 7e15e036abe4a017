"""The exact soft-label cache (in the spirit of FKD, Shen and Xing, "A Fast Knowledge Distillation Framework for
Visual Recognition", ECCV 2022): per training image, K augmented views, each stored as its exact augmentation
parameters plus every source's logits for that view. Training replays stored views, so the target sees exactly the
image the source saw; a soft label is never keyed by sample index alone.

One entry point, read top-down: ``open_cache(cfg, spec, stream, sources)`` makes one plan per frozen network
(``key.plans_for``: the key, its folder, the pools), opens the complete cache in each folder
(``store.SoftLabelCache``), building it first when missing and allowed (``build.build_cache``: atomic, resumable,
chunked), and reads them as one (``store.CacheSet``). A network's cache is shared by every run of the same data
that reads it, whatever else the run reads.
"""

from __future__ import annotations

from sskt.config import TrainConfig
from sskt.data.spec import DatasetSpec
from sskt.data.stream import TrainStream
from sskt.errors import UserError
from sskt.sources.base import Source
from sskt.sources.cache.build import ChunkHook, build_cache
from sskt.sources.cache.key import Plan, cache_key, check_cache_config, plan_for, plans_for
from sskt.sources.cache.store import CacheSet, SoftLabelCache, describe_key_change, expand_topk, read_header


def open_cache(
    cfg: TrainConfig,
    spec: DatasetSpec,
    stream: TrainStream,
    sources: dict[str, Source],
    *,
    build: bool | None = None,
    on_chunk: ChunkHook | None = None,
    show_progress: bool = True,
) -> CacheSet:
    """The run's caches (one per network in ``sources``), opened; each built first when missing and ``build``
    (default ``cfg.cache.build``) allows, else a UserError naming what differs from the nearest existing cache."""
    plans = plans_for(cfg, spec, stream, sources)
    for plan in plans.values():
        header = read_header(plan.path)
        if not (header and header.get("complete") and header["key"] == plan.key):
            if not (cfg.cache.build if build is None else build):
                raise UserError(f"no soft-label cache for this run at {str(plan.path)!r} ({_nearest(plan)}); run "
                                "'sskt cache build --config ...' or set cache.build true")  # fmt: skip
            build_cache(plan, on_chunk=on_chunk, show_progress=show_progress)
    return CacheSet({name: SoftLabelCache(plan.path) for name, plan in plans.items()})


def _nearest(plan: Plan) -> str:
    """What differs between ``plan``'s key and the caches of the same dataset already on disk."""
    same, other = [], []  # caches of the same network first: another network's cache always differs in its source
    for folder in sorted(plan.path.parent.glob(f"{plan.key['dataset']['name']}-*")):
        header = read_header(folder)
        if header and header.get("complete"):
            line = f"{folder.name} differs in {describe_key_change(header['key'], plan.key)}"
            (same if header["key"].get("sources") == plan.key["sources"] else other).append(line)
    return "; ".join((same + other)[:3]) or "none built yet"


__all__ = [
    "CacheSet",
    "Plan",
    "SoftLabelCache",
    "build_cache",
    "cache_key",
    "check_cache_config",
    "expand_topk",
    "open_cache",
    "plan_for",
    "plans_for",
]

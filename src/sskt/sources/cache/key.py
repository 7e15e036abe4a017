"""What a soft-label cache is of, and where it lives: the key (everything that made the cached logits: the source's
``fingerprint()``, the dataset and the content of its splits, the labelled subset, the unlabelled pool, the
augmentation, K, top-k, dtype), its digest and folder, and the plan a build follows.

A cache holds one frozen network. A run that reads several (KD's teacher and SSKT's source in ``kd+sskt``) opens one
cache per network; their views are drawn from the key without its source (``views_key``), so every cache of the same
data holds the same views, and a network's forwards are paid once per data and shared by every run that reads it
(benchmark v3's four pool rows of a seed read two caches at 224 px where they used to build four)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sskt.config import CacheConfig, TrainConfig
from sskt.data.augment import Augment, Normalize
from sskt.data.spec import DatasetSpec, ImageSet
from sskt.data.stream import TrainStream
from sskt.errors import UserError, check_choice
from sskt.sources.base import Source
from sskt.sources.cache.store import DTYPES, FORMAT


def canonical_json(obj: object) -> str:
    """Key order and spacing fixed, so equal keys give equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def key_digest(key: dict) -> str:
    """sha256 (hex) of the canonical JSON of ``key``."""
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()


def indices_digest(indices: Tensor) -> str:
    """sha256 (hex) of int64 indices, for the labelled subset and the unlabelled pool in the key."""
    return hashlib.sha256(indices.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def cache_root(cfg: CacheConfig) -> Path:
    """``cache.dir``, else $SSKT_CACHE, else ~/.cache/sskt."""
    root = cfg.dir or os.environ.get("SSKT_CACHE") or Path.home() / ".cache" / "sskt"
    return Path(root).expanduser()


def cache_path(cfg: CacheConfig, key: dict) -> Path:
    """The folder of the cache for ``key``: ``<root>/<dataset>-<first 16 hex of the key digest>``."""
    return cache_root(cfg) / f"{key['dataset']['name']}-{key_digest(key)[:16]}"


def check_cache_config(cfg: CacheConfig, temperatures: Mapping[str, float] | None = None) -> None:
    """Raise a one-line UserError on K < 1, top-k < 1, an unknown dtype, or top-k read at a temperature other than
    1. ``temperatures``: the temperature at which the method reads the cached logits, by config field (the method
    declares them, ``Method.cache_temperatures``; the cache itself knows no method)."""
    if cfg.views < 1:
        raise UserError(f"cache.views must be at least 1, got {cfg.views}")
    if cfg.topk is not None and cfg.topk < 1:
        raise UserError(f"cache.topk must be at least 1 or null, got {cfg.topk}")
    for field, temperature in (temperatures or {}).items():
        if cfg.topk is not None and temperature != 1:
            # expand_topk spreads the remaining mass evenly; softmax(z / T) of that is not the tail's at T != 1
            # (relative error 0.26 at T = 3 on a 1000-class source).
            raise UserError(
                f"cache.topk={cfg.topk} is exact only at {field} 1, got {temperature}; set cache.topk null or {field} 1"
            )
    check_choice("cache.dtype", cfg.dtype, DTYPES)


@dataclass
class PoolPlan:
    """One index space to cache: its split, the sorted member indices and the augmentation drawing its views."""

    name: str
    split: ImageSet
    indices: Tensor
    augment: Augment


def _augment_desc(augment: Augment) -> list[dict]:
    return [
        {"op": type(op).__name__, **{k: v for k, v in vars(op).items() if not k.startswith("_")}} for op in augment.ops
    ]


def stream_pools(stream: TrainStream) -> list[PoolPlan]:
    """The stream's pools grouped by index space ('rest' shares 'train' with the labelled subset)."""
    plans: dict[str, PoolPlan] = {}
    for pool in stream.pools():
        if pool.name in plans:
            merged = torch.cat([plans[pool.name].indices, pool.indices]).unique(sorted=True)
            plans[pool.name].indices = merged
        else:
            plans[pool.name] = PoolPlan(pool.name, pool.split, pool.indices.unique(sorted=True), pool.augment)
    return list(plans.values())


def content_identity(split: ImageSet) -> dict:
    """What the cached logits of ``split`` depend on besides the indices: the split's own content digest (a folder's
    resolved root and every file's relative path, size and mtime; an in-memory split's bytes), so two folders with
    one layout, or a changed file, never share a cache."""
    digest = getattr(split, "content_digest", None)
    return {} if digest is None else digest()


def views_key(key: dict) -> dict:
    """The part of a cache key that decides its stored views: everything but the source."""
    return {k: v for k, v in key.items() if k != "sources"}


def cache_key(cfg: TrainConfig, spec: DatasetSpec, stream: TrainStream, sources: Mapping[str, Source]) -> dict:
    """Everything that made the cached logits of the one source in ``sources``, as JSON-able data; the name a run
    gives the source is not part of it."""
    if len(sources) != 1:
        raise ValueError(f"a soft-label cache holds one source, got {sorted(sources)}")
    data = cfg.data
    pools = {
        p.name: {"count": len(p.indices), "indices_sha256": indices_digest(p.indices), "split_size": len(p.split)}
        | content_identity(p.split)
        for p in stream_pools(stream)
    }
    return {
        "format": FORMAT,
        "sources": [s.fingerprint() for s in sources.values()],
        "dataset": {"name": spec.name, "split": "train", "size": len(spec.train), "image_size": spec.image_size},
        "target_norm": {"mean": list(spec.mean), "std": list(spec.std)},
        "labeled": {
            "labels_per_class": data.labels_per_class,
            "subset_seed": cfg.seed if data.subset_seed is None else data.subset_seed,
            "indices_sha256": indices_digest(stream.labeled_indices),
        },
        "unlabeled": None if stream.unlabeled_name is None else data.unlabeled,
        "pools": pools,
        "augment": {"preset": data.augment, "ops": _augment_desc(stream.augment)},
        "views": cfg.cache.views,
        "topk": cfg.cache.topk,
        "dtype": cfg.cache.dtype,
        "compute": "float32",
    }


def check_sources(sources: Mapping[str, Source]) -> None:
    """Refuse sources whose logits depend on the batch (see the module docstring)."""
    for key, src in sources.items():
        if src.bn_mode != "eval":
            raise UserError(
                f"source {key!r} has bn_mode={src.bn_mode!r}: its logits depend on the batch, so they cannot be "
                "cached; use bn_mode 'eval' or cache.enabled false"
            )


@dataclass
class Plan:
    """A full build description: where, what key, which pools and sources, and how to store."""

    path: Path
    key: dict
    pools: list[PoolPlan]
    sources: dict[str, Source]
    normalize: Normalize
    views: int
    topk: int | None
    dtype: str = "float16"
    source_chunk: int | None = None


def plan_for(cfg: TrainConfig, spec: DatasetSpec, stream: TrainStream, sources: dict[str, Source]) -> Plan:
    """The build plan of the cache of the one source in ``sources`` (its key, folder, pools)."""
    check_cache_config(cfg.cache)  # the temperatures are the method's: check_config checks them
    check_sources(sources)
    key = cache_key(cfg, spec, stream, sources)
    return Plan(cache_path(cfg.cache, key), key, stream_pools(stream), dict(sources), stream.normalize,
                cfg.cache.views, cfg.cache.topk, cfg.cache.dtype, cfg.source_chunk)  # fmt: skip


def plans_for(
    cfg: TrainConfig, spec: DatasetSpec, stream: TrainStream, sources: Mapping[str, Source]
) -> dict[str, Plan]:
    """The build plan of each source's cache, by the run's name for the source."""
    return {k: plan_for(cfg, spec, stream, {k: s}) for k, s in sources.items()}

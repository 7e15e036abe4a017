"""Building the soft-label cache: the key, the plan, and an atomic, resumable, chunked build.

A build writes into ``<folder>.partial``: first every view's augmentation parameters (drawn from a generator seeded
by the key digest and the pool's name, so a rebuilt cache has the same views), then the header, then the sources'
logits chunk by chunk, saving the number of finished images atomically after each chunk. A killed build resumes
from the last finished chunk and ends with identical content; the folder is renamed to its final name only when
complete, so a reader never sees a half-built cache.

Sources in ``bn_mode: train`` are refused: their logits depend on which other images share the batch, so there is
no per-view logit to store, and a cache would silently turn the method into something else (batch statistics of the
builder's batches, not of the training batches).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from sskt.config import TrainConfig
from sskt.data.augment import Augment, Normalize
from sskt.data.spec import DatasetSpec, ImageSet
from sskt.data.stream import TrainStream, epoch_generator, read_batches
from sskt.errors import UserError
from sskt.sources.base import Source, SourceBank
from sskt.sources.cache import (
    DTYPES,
    FORMAT,
    HEADER,
    SoftLabelCache,
    cache_path,
    check_cache_config,
    describe_key_change,
    indices_digest,
    key_digest,
    read_header,
    read_json,
    stored_topk,
    write_json_atomic,
)

PROGRESS = "progress.json"
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
ChunkHook = Callable[[int, int], None]
"""Called as ``hook(images_done, images_total)`` after each saved chunk (tests raise from it to kill a build)."""


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
    pools = [stream.labeled] + ([stream.unlabeled] if stream.unlabeled is not None else [])
    plans: dict[str, PoolPlan] = {}
    for pool in pools:
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


def cache_key(cfg: TrainConfig, spec: DatasetSpec, stream: TrainStream, sources: Mapping[str, Source]) -> dict:
    """Everything that made the cached logits, as JSON-able data."""
    data = cfg.data
    pools = {
        p.name: {"count": len(p.indices), "indices_sha256": indices_digest(p.indices), "split_size": len(p.split)}
        | content_identity(p.split)
        for p in stream_pools(stream)
    }
    unlabeled = stream.unlabeled
    return {
        "format": FORMAT,
        "sources": [{"key": k, **s.fingerprint()} for k, s in sources.items()],
        "dataset": {"name": spec.name, "split": "train", "size": len(spec.train), "image_size": spec.image_size},
        "target_norm": {"mean": list(spec.mean), "std": list(spec.std)},
        "labeled": {
            "labels_per_class": data.labels_per_class,
            "subset_seed": cfg.seed if data.subset_seed is None else data.subset_seed,
            "indices_sha256": indices_digest(stream.labeled_indices),
        },
        "unlabeled": None if unlabeled is None else data.unlabeled,
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


def _header(plan: Plan, complete: bool) -> dict:
    srcs = [
        {"key": k, "classes": s.num_classes, "topk": stored_topk(plan.topk, s.num_classes)}
        for k, s in plan.sources.items()
    ]
    pools = {
        p.name: {"file": f"p{i}", "count": len(p.indices), "params": p.augment.num_params}
        for i, p in enumerate(plan.pools)
    }
    return {"key": plan.key, "digest": key_digest(plan.key), "complete": complete, "views": plan.views,
            "topk": plan.topk, "dtype": plan.dtype, "sources": srcs, "pools": pools}  # fmt: skip


def _create_arrays(partial: Path, plan: Plan) -> None:
    """Every array at full size; the views' parameters drawn and written now, once, from the key's seed."""
    dtype = DTYPES[plan.dtype]
    digest = int(key_digest(plan.key)[:15], 16)
    for i, pool in enumerate(plan.pools):
        n, k = len(pool.indices), plan.views
        np.save(partial / f"p{i}.index.npy", pool.indices.numpy().astype(np.int64))
        gen = epoch_generator(digest, i, f"cache views {pool.name}")
        params = pool.augment.sample(n * k, gen).reshape(n, k, pool.augment.num_params)
        np.save(partial / f"p{i}.params.npy", params.numpy().astype(np.int64))
        for j, src in enumerate(plan.sources.values()):
            top = stored_topk(plan.topk, src.num_classes)
            width = src.num_classes if top is None else top
            np.lib.format.open_memmap(partial / f"p{i}.s{j}.logits.npy", "w+", dtype, (n, k, width)).flush()
            if top is not None:
                np.lib.format.open_memmap(partial / f"p{i}.s{j}.classes.npy", "w+", np.int32, (n, k, top)).flush()
                np.lib.format.open_memmap(partial / f"p{i}.s{j}.rest.npy", "w+", dtype, (n, k)).flush()


def _start(plan: Plan) -> tuple[Path, int]:
    """The partial folder, reused when it belongs to this key; returns it and the images already done."""
    partial = plan.path.with_name(plan.path.name + ".partial")
    header = read_header(partial)
    if header is not None and header["key"] == plan.key:
        progress = read_json(partial / PROGRESS)
        return partial, int(progress.get("done", 0)) if progress else 0
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _create_arrays(partial, plan)
    write_json_atomic(partial / HEADER, _header(plan, complete=False))  # last: a header means the arrays exist
    return partial, 0


def store_logits(arrays: dict[str, np.ndarray], logits: Tensor, top: int | None, rows: slice, views: int) -> None:
    """Write source logits [n * K, C] of images ``rows`` (K views each) into the stored arrays."""
    n = rows.stop - rows.start
    dtype = TORCH_DTYPES[str(arrays["logits"].dtype)]
    if top is None:
        arrays["logits"][rows] = logits.to(dtype).cpu().numpy().reshape(n, views, -1)
        return
    logits = logits.float()
    values, classes = logits.topk(top, dim=1)
    masked = logits.scatter(1, classes, float("-inf"))
    # log of the mass outside the top k, shared evenly by the C - k remaining classes (see expand_topk).
    rest = masked.logsumexp(1) - np.log(logits.shape[1] - top)
    arrays["logits"][rows] = values.to(dtype).cpu().numpy().reshape(n, views, top)
    arrays["classes"][rows] = classes.to(torch.int32).cpu().numpy().reshape(n, views, top)
    arrays["rest"][rows] = rest.to(dtype).cpu().numpy().reshape(n, views)


def _open_arrays(partial: Path, i: int, plan: Plan) -> dict[str, dict[str, np.ndarray]]:
    """Pool ``i``'s writable logit arrays per source key."""
    out = {}
    for j, (key, src) in enumerate(plan.sources.items()):
        names = ["logits"] + (["classes", "rest"] if stored_topk(plan.topk, src.num_classes) is not None else [])
        out[key] = {n: np.load(partial / f"p{i}.s{j}.{n}.npy", mmap_mode="r+") for n in names}
    return out


def _chunk_logits(plan: Plan, pool: PoolPlan, params: np.ndarray, rows: slice, bank: SourceBank, batch: int):
    """Every source's logits [n * K, C_m] for the K stored views of images ``rows``, ``batch`` views a forward."""
    device = next(bank.buffers()).device
    raw = next(read_batches(pool.split, [pool.indices[rows]])).to(device)
    raw = raw.repeat_interleave(plan.views, 0)  # image-major, view-minor: the stored [N, K] order
    p = torch.from_numpy(np.array(params[rows])).reshape(len(raw), pool.augment.num_params)
    outs: dict[str, list[Tensor]] = {k: [] for k in plan.sources}
    for b in range(0, len(p), batch):
        x = plan.normalize(pool.augment.apply(raw[b : b + batch], p[b : b + batch]))
        with torch.inference_mode():
            for k, v in bank(x).items():
                outs[k].append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def _bar(show: bool, total: int, done: int) -> Progress:
    columns = [TextColumn("cache build"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TextColumn("{task.fields[rate]}"), TextColumn("left"), TimeRemainingColumn()]  # fmt: skip
    bar = Progress(*columns, disable=not show)
    bar.add_task("build", total=total, completed=done, rate="")
    return bar


def build_cache(
    plan: Plan, *, chunk: int = 256, batch: int = 256, on_chunk: ChunkHook | None = None, show_progress: bool = True
) -> Path:
    """Build (or resume building) the cache of ``plan`` into ``plan.path``; returns the path.

    ``chunk`` images are computed and saved between progress saves, ``batch`` views per source forward; the
    sources stay on their current device. Content does not depend on where a build was interrupted.
    """
    check_sources(plan.sources)
    partial, done = _start(plan)
    total = sum(len(p.indices) for p in plan.pools)
    # Inference mode and channels-last (~1.9x faster on CPU), in the same source chunks as the online path.
    bank = SourceBank(plan.sources, channels_last=True, chunk=plan.source_chunk).eval()
    started, offset = time.perf_counter(), 0
    with _bar(show_progress, total, done) as bar:
        for i, pool in enumerate(plan.pools):
            arrays, n = _open_arrays(partial, i, plan), len(pool.indices)
            params = np.load(partial / f"p{i}.params.npy", mmap_mode="r")
            for start in range(min(max(done - offset, 0), n), n, chunk):
                rows = slice(start, min(start + chunk, n))
                logits = _chunk_logits(plan, pool, params, rows, bank, batch)
                for key, src in plan.sources.items():
                    store_logits(arrays[key], logits[key], stored_topk(plan.topk, src.num_classes), rows, plan.views)
                    for arr in arrays[key].values():
                        arr.flush()
                write_json_atomic(partial / PROGRESS, {"done": offset + rows.stop})
                rate = (offset + rows.stop - done) / max(time.perf_counter() - started, 1e-9)
                bar.update(bar.task_ids[0], completed=offset + rows.stop, rate=f"{rate:.1f}/s")
                if on_chunk is not None:
                    on_chunk(offset + rows.stop, total)
            offset += n
    write_json_atomic(partial / HEADER, _header(plan, complete=True))
    (partial / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(plan.path, ignore_errors=True)  # a stale folder with the same digest prefix
    os.replace(partial, plan.path)
    return plan.path


def plan_for(cfg: TrainConfig, spec: DatasetSpec, stream: TrainStream, sources: dict[str, Source]) -> Plan:
    """The build plan of a run's cache (its key, folder, pools)."""
    dtype = cfg.cache.dtype
    check_cache_config(cfg.cache, cfg.method.sskt.temperature)
    check_sources(sources)
    key = cache_key(cfg, spec, stream, sources)
    return Plan(cache_path(cfg.cache, key), key, stream_pools(stream), sources, stream.normalize,
                cfg.cache.views, cfg.cache.topk, dtype, cfg.source_chunk)  # fmt: skip


def open_cache(
    cfg: TrainConfig,
    spec: DatasetSpec,
    stream: TrainStream,
    sources: dict[str, Source],
    *,
    build: bool | None = None,
    on_chunk: ChunkHook | None = None,
    show_progress: bool = True,
) -> SoftLabelCache:
    """The run's cache, opened; built first when missing and ``build`` (default ``cfg.cache.build``) allows,
    else a UserError naming what differs from the nearest existing cache."""
    plan = plan_for(cfg, spec, stream, sources)
    header = read_header(plan.path)
    if not (header and header.get("complete") and header["key"] == plan.key):
        if not (cfg.cache.build if build is None else build):
            raise UserError(f"no soft-label cache for this run at {str(plan.path)!r} ({_nearest(plan)}); run "
                            "'sskt cache build --config ...' or set cache.build true")  # fmt: skip
        build_cache(plan, on_chunk=on_chunk, show_progress=show_progress)
    return SoftLabelCache(plan.path)


def _nearest(plan: Plan) -> str:
    """What differs between ``plan``'s key and the caches of the same dataset already on disk."""
    diffs = []
    for folder in sorted(plan.path.parent.glob(f"{plan.key['dataset']['name']}-*")):
        header = read_header(folder)
        if header and header.get("complete"):
            diffs.append(f"{folder.name} differs in {describe_key_change(header['key'], plan.key)}")
    return "; ".join(diffs[:3]) or "none built yet"

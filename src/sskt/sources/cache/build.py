"""Building the soft-label cache: the key, the plan, and an atomic, resumable, chunked build.

A build writes into ``<folder>.partial``: first every view's augmentation parameters (drawn from a generator seeded
by the digest of the key without its source and by the pool's name, so a rebuilt cache has the same views, and so
has every other source's cache of the same data), then the header, then the source's logits chunk by chunk,
saving the number of finished images and the seconds spent atomically after each chunk. A killed build resumes
from the last finished chunk and ends with identical content; the folder is renamed to its final name only when
complete, so a reader never sees a half-built cache.

Sources in ``bn_mode: train`` are refused: their logits depend on which other images share the batch, so there is
no per-view logit to store, and a cache would silently turn the method into something else (batch statistics of the
builder's batches, not of the training batches).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from sskt.data.stream import epoch_generator, read_batches
from sskt.errors import UserError
from sskt.sources.base import SourceBank
from sskt.sources.cache.key import Plan, PoolPlan, check_sources, key_digest, views_key
from sskt.sources.cache.store import (
    DTYPES,
    HEADER,
    params_sha256,
    read_header,
    read_json,
    stored_topk,
    write_json_atomic,
)

PROGRESS = "progress.json"

TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}

ChunkHook = Callable[[int, int], None]
"""Called as ``hook(images_done, images_total)`` after each saved chunk (tests raise from it to kill a build)."""


def _header(plan: Plan, partial: Path, complete: bool, seconds: float = 0.0) -> dict:
    srcs = [
        {"key": k, "classes": s.num_classes, "topk": stored_topk(plan.topk, s.num_classes)}
        for k, s in plan.sources.items()
    ]
    pools = {
        p.name: {"file": f"p{i}", "count": len(p.indices), "params": p.augment.num_params}
        | ({"params_sha256": params_sha256(partial / f"p{i}.params.npy")} if complete else {})
        for i, p in enumerate(plan.pools)
    }  # fmt: skip
    return {"key": plan.key, "digest": key_digest(plan.key), "complete": complete, "views": plan.views,
            "topk": plan.topk, "dtype": plan.dtype, "sources": srcs, "pools": pools,
            **({"build_seconds": seconds} if complete else {})}  # fmt: skip


def _create_arrays(partial: Path, plan: Plan) -> None:
    """Every array at full size; the views' parameters drawn and written now, once, from the seed of the key
    without its source (every source's cache of the same data holds the same views)."""
    dtype = DTYPES[plan.dtype]
    digest = int(key_digest(views_key(plan.key))[:15], 16)
    for i, pool in enumerate(plan.pools):
        n, k = len(pool.indices), plan.views
        np.save(partial / f"p{i}.index.npy", pool.indices.numpy().astype(np.int64))
        gen = epoch_generator(digest, i, f"cache views {pool.name}")
        params = pool.augment.sample(n * k, gen).reshape(n, k, pool.augment.num_params)
        np.save(partial / f"p{i}.params.npy", params.numpy().astype(np.int64))
        for j, src in enumerate(plan.sources.values()):
            top = stored_topk(plan.topk, src.num_classes)
            width = src.num_classes if top is None else top
            _reserved_array(partial / f"p{i}.s{j}.logits.npy", dtype, (n, k, width))
            if top is not None:
                _reserved_array(partial / f"p{i}.s{j}.classes.npy", np.int32, (n, k, top))
                _reserved_array(partial / f"p{i}.s{j}.rest.npy", dtype, (n, k))


def _reserved_array(path: Path, dtype: object, shape: tuple[int, ...]) -> None:
    """An .npy array of ``shape`` whose every block is allocated on disk now. ``open_memmap`` alone makes a sparse
    file, and a full disk then surfaces as SIGBUS at the first write through the map: the process dies with nothing
    printed. ``posix_fallocate`` fails here instead, with ENOSPC, which ``_start`` turns into one line."""
    np.lib.format.open_memmap(path, "w+", dtype, shape).flush()
    _reserve(path)


def _reserve(path: Path) -> None:
    """Allocate every block of ``path`` on disk (``posix_fallocate``; ENOSPC when the disk cannot hold it)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _start(plan: Plan) -> tuple[Path, int, float]:
    """The partial folder, reused when it belongs to this key; returns it, the images already done and the seconds
    the earlier attempts spent on them."""
    partial = plan.path.with_name(plan.path.name + ".partial")
    header = read_header(partial)
    if header is not None and header["key"] == plan.key:
        progress = read_json(partial / PROGRESS) or {}
        for array in partial.glob("*.npy"):  # a build begun by an older sskt left sparse files
            _reserve(array)
        return partial, int(progress.get("done", 0)), float(progress.get("seconds", 0.0))
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        _create_arrays(partial, plan)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _cache_write_error(plan.path, exc) from exc
    write_json_atomic(partial / HEADER, _header(plan, partial, complete=False))  # last: a header means the arrays exist
    return partial, 0, 0.0


FULL_BYTES = 1 << 20
"""Below this many free bytes on the cache's disk, a failed write is a full disk, whatever the error says."""


def _cache_write_error(path: Path, exc: OSError) -> UserError:
    """One line for a cache that cannot be written: a full disk says how much it needs, a folder that is a file or
    read-only says so, each naming ``cache.dir``."""
    free = shutil.disk_usage(_existing(path)).free
    if exc.errno == errno.ENOSPC or free < FULL_BYTES:  # a short write ("N requested and M written") has no errno
        return UserError(f"no space left for the soft-label cache in {str(path.parent)!r} ({free / 1e9:.2f} GB "
                         "free); free space or set cache.dir to a larger disk")  # fmt: skip
    return UserError(f"cannot write the soft-label cache under cache.dir {str(path.parent)!r}: "
                     f"{exc.strerror or str(exc) or type(exc).__name__} ({exc.filename or path})")  # fmt: skip


def _existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists())


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


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.<folder>.lock`` for a build. Without it, two processes that need the same
    cache (a grid's parallel cells of one seed) both build in the same ``.partial`` folder, and the second to finish
    replaces the first's finished cache with a folder holding only its header (seen on benchmark v3's grid); with it,
    the second waits, then opens what the first built. The kernel drops the lock when its holder dies."""
    lock = path.with_name(f".{path.name}.lock")  # hidden: listings of the caches never see it
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish building the soft-label cache {str(path)!r}",
                  file=sys.stderr, flush=True)  # fmt: skip
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def build_cache(
    plan: Plan, *, chunk: int = 256, batch: int = 256, on_chunk: ChunkHook | None = None, show_progress: bool = True
) -> Path:
    """Build (or resume building) the cache of ``plan`` into ``plan.path``; returns the path.

    ``chunk`` images are computed and saved between progress saves, ``batch`` views per source forward; the
    sources stay on their current device. Content does not depend on where a build was interrupted.
    """
    check_sources(plan.sources)
    try:
        with build_lock(plan.path):
            header = read_header(plan.path)
            if header and header.get("complete") and header["key"] == plan.key:  # built while this one waited
                return plan.path
            return _build(plan, chunk, batch, on_chunk, show_progress)
    except OSError as exc:  # the disk filled up, or cache.dir turned read-only, mid-build: resumable, one line
        raise _cache_write_error(plan.path, exc) from exc


def _build(plan: Plan, chunk: int, batch: int, on_chunk: ChunkHook | None, show_progress: bool) -> Path:
    """``build_cache`` without its error handling."""
    started, offset = time.perf_counter(), 0  # the views' draw, the disk reservation and the forwards are charged
    partial, done, before = _start(plan)
    total = sum(len(p.indices) for p in plan.pools)
    # Inference mode and channels-last (~1.9x faster on CPU), in the same source chunks as the online path.
    bank = SourceBank(plan.sources, channels_last=True, chunk=plan.source_chunk).eval()
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
                seconds = before + time.perf_counter() - started
                write_json_atomic(partial / PROGRESS, {"done": offset + rows.stop, "seconds": seconds})
                rate = (offset + rows.stop - done) / max(time.perf_counter() - started, 1e-9)
                bar.update(bar.task_ids[0], completed=offset + rows.stop, rate=f"{rate:.1f}/s")
                if on_chunk is not None:
                    on_chunk(offset + rows.stop, total)
            offset += n
    seconds = before + time.perf_counter() - started  # the forwards of every attempt: what the cache cost
    write_json_atomic(partial / HEADER, _header(plan, partial, complete=True, seconds=seconds))
    (partial / PROGRESS).unlink(missing_ok=True)
    shutil.rmtree(plan.path, ignore_errors=True)  # a stale folder with the same digest prefix
    os.replace(partial, plan.path)
    return plan.path

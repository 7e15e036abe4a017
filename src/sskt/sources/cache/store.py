"""The stored layout of a soft-label cache and its reader.

Training replays stored views (``SoftLabelCache.lookup`` picks one of the K per sample), so the target sees exactly
the image the source saw; a soft label is never keyed by sample index alone. The folder name holds a digest of the
key, and ``cache.json`` holds the key itself: everything that made the logits (the source's ``fingerprint()``,
dataset, split, labelled subset, unlabelled pool, augmentation, K, top-k, dtype). A mismatch is never reused. A
folder holds one source; ``CacheSet`` reads a run's several folders as one (they hold the same views).

Layout of ``<dir>/<dataset>-<digest>/`` (numpy ``.npy`` files, opened memory-mapped so a cache larger than RAM
works; pools are index spaces such as 'train' or 'stl10:unlabeled'; the one source is ``s0``)::

    cache.json                      key, pools (with each one's params_sha256), sources, views, topk, dtype,
                                    build_seconds
    p<i>.index.npy   int64 [N]      sorted dataset indices of pool i
    p<i>.params.npy  int64 [N,K,P]  Augment.sample parameters of each view
    p<i>.s<j>.logits.npy  [N,K,C']  the source's logits (C' = C, or k with top-k), in the stored dtype
    p<i>.s<j>.classes.npy int32 [N,K,k]  top-k class indices (top-k only)
    p<i>.s<j>.rest.npy    [N,K]     top-k only: log of the mass left outside the top k, per remaining class
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sskt.errors import UserError
from sskt.files import write_text_atomic

FORMAT = 2
"""Bumped whenever the stored layout or the meaning of a stored number changes (2: one source per folder, views
drawn from the key without its source)."""

DTYPES = {"float16": np.float16, "float32": np.float32}

HEADER = "cache.json"


def params_sha256(path: Path) -> str:
    """sha256 of a pool's stored view parameters: caches of several networks are read together only when equal."""
    return hashlib.sha256(np.ascontiguousarray(np.load(path, mmap_mode="r")).tobytes()).hexdigest()


def stored_topk(topk: int | None, num_classes: int) -> int | None:
    """The k actually stored for a source: None (all classes) when top-k is off or covers every class."""
    return None if topk is None or topk >= num_classes else topk


def write_json_atomic(path: Path, obj: object) -> None:
    """Write then rename, so a reader (or a resumed build) never sees half a file."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def read_json(file: Path) -> dict | None:
    """The JSON object in ``file``; None when it is missing or unreadable (a build killed before writing it)."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def read_header(path: Path) -> dict | None:
    """The header of the cache folder ``path``; None when it is missing or unreadable."""
    return read_json(path / HEADER)


def expand_topk(values: Tensor, classes: Tensor, rest: Tensor, num_classes: int) -> Tensor:
    """Dense logits [n, C] from top-k logits [n, k], their classes int [n, k] and the per-class rest logit [n]:
    each of the C - k remaining classes gets ``rest`` (their total mass spread evenly), so softmax of the result
    gives the exact top-k probabilities and the exact remaining mass."""
    out = rest.float().unsqueeze(1).expand(-1, num_classes).clone()
    return out.scatter_(1, classes.long(), values.float())


@dataclass
class StoredPool:
    """One index space's memory-mapped arrays."""

    index: Tensor
    """Sorted int64 [N] dataset indices."""
    params: np.ndarray
    logits: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    rest: dict[str, np.ndarray]


class SoftLabelCache:
    """A complete cache folder opened read-only and memory-mapped; the stream's ``ViewProvider``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        header = read_header(self.path)
        if header is None or not header.get("complete"):
            raise UserError(f"no complete soft-label cache at {str(self.path)!r}; build it with 'sskt cache build'")
        self.header, self.key = header, header["key"]
        self.views: int = header["views"]
        self.num_classes: dict[str, int] = {s["key"]: s["classes"] for s in header["sources"]}
        try:
            self.pools = {name: self._open_pool(meta) for name, meta in header["pools"].items()}
        except (OSError, ValueError) as exc:  # a truncated or missing array: numpy's memory map refuses it
            raise UserError(
                f"soft-label cache {str(self.path)!r} is damaged ({type(exc).__name__}: {exc}); delete the folder "
                "and it is rebuilt"
            ) from exc

    def _open_pool(self, meta: dict) -> StoredPool:
        def mm(suffix: str) -> np.ndarray:
            return np.load(self.path / f"{meta['file']}.{suffix}.npy", mmap_mode="r")

        logits, classes, rest = {}, {}, {}
        for j, src in enumerate(self.header["sources"]):
            logits[src["key"]] = mm(f"s{j}.logits")
            if src["topk"] is not None:
                classes[src["key"]], rest[src["key"]] = mm(f"s{j}.classes"), mm(f"s{j}.rest")
        index = torch.from_numpy(np.array(mm("index")))
        return StoredPool(index, mm("params"), logits, classes, rest)

    def rows(self, indices: Tensor, split: str = "train") -> tuple[StoredPool, np.ndarray]:
        """The pool of ``split`` and the row of each dataset index int64 [n] in it; indices never cached: UserError."""
        pool = self.pools.get(split)
        if pool is None:
            raise UserError(f"soft-label cache {self.path.name} holds no pool {split!r}; it has {sorted(self.pools)}")
        idx = indices.detach().to("cpu", torch.int64)
        rows = torch.searchsorted(pool.index, idx).clamp_(max=len(pool.index) - 1)
        missing = pool.index[rows] != idx
        if bool(missing.any()):
            raise UserError(f"dataset index {int(idx[missing][0])} of {split!r} is not in cache {self.path.name}")
        return pool, rows.numpy()

    def read(
        self, indices: Tensor, views: Tensor, split: str = "train", with_params: bool = True
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Stored view ``views[i]`` (int64 [n]) of each dataset index: params int64 [n, P] (None unless
        ``with_params``) and logits [n, C_m] per source (the stored dtype; top-k caches expand to float32)."""
        pool, r = self.rows(indices, split)
        v = views.to("cpu", torch.int64).numpy()
        params = torch.from_numpy(np.ascontiguousarray(pool.params[r, v])) if with_params else None
        soft = {}
        for key, arr in pool.logits.items():
            values = torch.from_numpy(np.ascontiguousarray(arr[r, v]))
            if key in pool.classes:
                classes = torch.from_numpy(np.ascontiguousarray(pool.classes[key][r, v]))
                rest = torch.from_numpy(np.ascontiguousarray(pool.rest[key][r, v]))
                values = expand_topk(values, classes, rest, self.num_classes[key])
            soft[key] = values
        return params, soft

    def lookup(
        self, indices: Tensor, generator: torch.Generator, split: str = "train"
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One of the K stored views per index (int64 [n]), chosen with ``generator`` (the stream seeds it per
        epoch): its params int64 [n, P] and cached logits [n, C_m] per source key."""
        views = torch.randint(self.views, (len(indices),), generator=generator)
        return self.read(indices, views, split)

    def nbytes(self) -> int:
        """Bytes on disk of every stored array."""
        return sum(f.stat().st_size for f in self.path.glob("*.npy"))

    def views_digest(self) -> dict[str, str]:
        """Per pool, the sha256 of its stored view parameters (recorded at build; computed for a cache built before
        the header recorded it)."""
        return {
            name: meta.get("params_sha256") or params_sha256(self.path / f"{meta['file']}.params.npy")
            for name, meta in self.header["pools"].items()
        }

    @property
    def build_seconds(self) -> float:
        """Seconds its build took (the source's forwards over every stored view, over every attempt), which
        equal-time tables charge to every run that reads the cache; 0 when unknown."""
        return float(self.header.get("build_seconds") or 0.0)


class CacheSet:
    """A run's caches, one per frozen network, read as one ``ViewProvider``: the stored view's params and every
    network's logits for it, under the names the run gives its networks. Their views are the same by construction
    (drawn from the key without its source); opening checks it on the stored view parameters' digests."""

    def __init__(self, caches: dict[str, SoftLabelCache]) -> None:
        if not caches:
            raise ValueError("a cache set needs at least one cache")
        self.caches = caches
        first = next(iter(caches.values()))
        self.views = first.views
        self.num_classes = {name: next(iter(c.num_classes.values())) for name, c in caches.items()}
        views = first.views_digest()
        for name, cache in caches.items():
            if cache.views_digest() != views:  # built by code whose view sampling differed: never mix them
                raise UserError(f"soft-label caches {first.path.name} and {cache.path.name} (for {name!r}) hold "
                                "different views; delete the older one and it is rebuilt")  # fmt: skip

    @property
    def paths(self) -> list[Path]:
        return [c.path for c in self.caches.values()]

    @property
    def build_seconds(self) -> float:
        """The sum of the caches' build seconds."""
        return sum(c.build_seconds for c in self.caches.values())

    def read(self, indices: Tensor, views: Tensor, split: str = "train") -> tuple[Tensor, dict[str, Tensor]]:
        """As ``SoftLabelCache.read``, the logits keyed by the run's names for its networks; the params (the same
        in every cache) are read from the first."""
        soft: dict[str, Tensor] = {}
        params = None
        for i, (name, cache) in enumerate(self.caches.items()):
            found, logits = cache.read(indices, views, split, with_params=i == 0)
            params = found if i == 0 else params
            soft[name] = next(iter(logits.values()))
        return params, soft

    def lookup(
        self, indices: Tensor, generator: torch.Generator, split: str = "train"
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """As ``SoftLabelCache.lookup``: one of the K stored views per index, chosen with ``generator``."""
        views = torch.randint(self.views, (len(indices),), generator=generator)
        return self.read(indices, views, split)

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self.caches.values())


def describe_key_change(old: object, new: object, prefix: str = "") -> str:
    """The first differing key path between two cache keys (for 'stale cache' messages)."""

    def items(x: object) -> dict:
        return dict(enumerate(x)) if isinstance(x, list) else x if isinstance(x, dict) else {}

    old, new = items(old), items(new)
    for name in sorted(set(old) | set(new), key=str):
        a, b = old.get(name), new.get(name)
        if a != b:
            if isinstance(a, (dict, list)) and isinstance(b, (dict, list)):
                return describe_key_change(a, b, f"{prefix}{name}.")
            return f"{prefix}{name}"
    return "(none)"

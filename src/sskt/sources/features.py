"""A frozen source's penultimate features and logits of un-augmented training images, computed once and cached.

The linear probe (``sskt.sources.linear_eval``) and the transferability scores (``sskt.sources.scores``) read the
same two arrays of one forward pass: the input of the source's last ``nn.Linear`` (its penultimate feature, [N, D])
and the source's logits over its own classes ([N, C_s]). The images are fed as evaluation feeds them
(``sskt.data.eval_batches``: no augmentation, the dataset's resize, the target's normalisation), and the source
applies its own preprocessing (resize to its ``input_size``, its own mean/std), as it does during training.

The cache file is keyed by everything that made the arrays: the source's ``fingerprint()`` (weights digest, input
size, resize and normalisation), the dataset and its training split's content digest, and the image indices. It is
one safetensors file (no code runs on load) written atomically under ``<cache root>/features/``; the full key is
stored in its metadata and compared on load, so a stale or foreign file is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor, nn

from sskt.data.datasets import SubsetImageSet
from sskt.data.spec import DatasetSpec
from sskt.data.stream import eval_batches
from sskt.errors import UserError
from sskt.files import write_atomic
from sskt.sources.base import Source, SourceBank
from sskt.sources.cache.key import canonical_json, content_identity, indices_digest, key_digest

FORMAT = 1
"""Bumped when the file layout or what is stored changes."""


@dataclass
class SourceFeatures:
    """Features and logits of the training images ``indices`` (sorted), row for row."""

    indices: Tensor
    """int64 [N] dataset indices into ``spec.train``, sorted."""
    features: Tensor
    """float32 [N, D]: the input of the source's last linear layer."""
    logits: Tensor
    """float32 [N, C_s]: the source's logits over its own classes."""
    seconds: float = 0.0
    """Time the forward pass took (0 when read from the cache)."""
    cached: bool = False
    """Read from the cache rather than computed."""

    def rows(self, wanted: Tensor) -> tuple[Tensor, Tensor]:
        """``(features [n, D], logits [n, C_s])`` of the dataset indices ``wanted`` (each must be present)."""
        pos = torch.searchsorted(self.indices, wanted)
        if (pos >= len(self.indices)).any() or (self.indices[pos.clamp_max(len(self.indices) - 1)] != wanted).any():
            raise ValueError("some wanted indices have no cached features")
        return self.features[pos], self.logits[pos]


def feature_key(source: Source, spec: DatasetSpec, indices: Tensor) -> dict:
    """Everything that made the features and logits of ``indices``, as JSON-able data."""
    return {
        "format": FORMAT,
        "what": "penultimate features and logits, un-augmented",
        "source": source.fingerprint(),
        "dataset": {"name": spec.name, "size": len(spec.train), "image_size": spec.image_size}
        | content_identity(spec.train),
        "target_norm": {"mean": list(spec.mean), "std": list(spec.std)},
        "indices": {"count": len(indices), "sha256": indices_digest(indices)},
        "compute": "float32",
    }


def feature_path(root: Path, key: dict) -> Path:
    """``<root>/features/<dataset>-<first 16 hex of the key digest>.safetensors``."""
    return Path(root) / "features" / f"{key['dataset']['name']}-{key_digest(key)[:16]}.safetensors"


def source_features(
    source: Source, spec: DatasetSpec, indices: Tensor, root: Path, batch_size: int, device: str, show: bool = True
) -> SourceFeatures:
    """The features and logits of the training images ``indices`` from the cache under ``root``, else computed
    (``extract``) and stored there."""
    indices = indices.to(torch.int64).unique(sorted=True)
    source.weights_digest()  # before anything runs the network (a BatchNorm in train mode would move it)
    key = feature_key(source, spec, indices)
    path = feature_path(root, key)
    found = read_features(path, key)
    if found is not None:
        return found
    result = extract(source, spec, indices, batch_size, device, show)
    write_features(path, key, result)
    return result


def read_features(path: Path, key: dict) -> SourceFeatures | None:
    """The cached arrays at ``path`` when it exists and holds exactly ``key``; None otherwise (a torn or foreign file
    is reported and ignored)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != canonical_json(key):
                warnings.warn(f"{path}: cached features of another key; recomputing", stacklevel=2)
                return None
            arrays = {name: f.get_tensor(name) for name in ("indices", "features", "logits")}
    except (SafetensorError, OSError, KeyError) as exc:
        warnings.warn(f"{path}: unreadable cached features ({exc}); recomputing", stacklevel=2)
        return None
    return SourceFeatures(**arrays, cached=True)


def write_features(path: Path, key: dict, result: SourceFeatures) -> None:
    """Store the arrays and their key at ``path`` atomically."""
    tensors = {"indices": result.indices, "features": result.features, "logits": result.logits}
    blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"key": canonical_json(key)})
    write_atomic(path, lambda f: f.write(blob))


def last_linear(net: nn.Module, what: str) -> nn.Linear:
    """The network's last ``nn.Linear`` (registration order): its classifier, whose input is the penultimate
    feature (the layer ``sskt.sources.probe.strip_classifier`` replaces)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{what} has no linear classifier, so it has no penultimate feature to read")
    return linears[-1]


def extract(
    source: Source, spec: DatasetSpec, indices: Tensor, batch_size: int, device: str, show: bool = True
) -> SourceFeatures:
    """One forward of ``source`` over the un-augmented training images ``indices`` (sorted int64), reading the input
    of its last linear layer with a forward hook (removed afterwards) beside its logits. The source runs through a
    ``SourceBank``: its CPU chunking keeps a 1000-image evaluation batch at 224 px from holding gigabytes of
    activations at once."""
    captured: list[Tensor] = []
    hook = last_linear(source.net, f"source {source.name!r}").register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().float().flatten(1).cpu())
    )
    bank = SourceBank({"source": source.to(device).eval()})
    feats, logits = [], []
    start = time.perf_counter()
    try:
        with _progress(show, f"{source.name} @ {source.input_size or 'native'} px") as bar:
            task = bar.add_task("features", total=len(indices))
            for images, _ in eval_batches(SubsetImageSet(spec.train, indices), spec, batch_size, device):
                logits.append(bank(images)["source"].float().cpu())
                feats.append(torch.cat(captured))
                captured.clear()
                bar.update(task, advance=len(images))
    finally:
        hook.remove()
    return SourceFeatures(indices, torch.cat(feats), torch.cat(logits), seconds=time.perf_counter() - start)


def _progress(show: bool, label: str) -> Progress:
    """A transient rich bar counting images (disabled when ``show`` is False)."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeRemainingColumn())
    return Progress(*columns, transient=True, disable=not show)


class FeatureMemo:
    """Penultimate features of a frozen source by image content, kept on disk: a probe evaluated again on images it
    has seen (the same test set for every seed and label budget of a benchmark) reads their features instead of
    running the source (a 224 px forward over 10,000 test images is about 20 minutes on a 2-core CPU).

    An image is known by the BLAKE2b digest of its normalised float32 pixels as the network receives them, so a
    different preprocessing, dataset or machine whose rounding differs only misses. The features of each batch with
    misses go to one safetensors shard (atomic; no code runs on load) in ``<root>/features/memo-<key digest>/``;
    the key (the source's fingerprint: its weights, input size and preprocessing) is in the folder's name and in
    every shard's metadata, checked on load."""

    def __init__(self, root: Path, fingerprint: dict) -> None:
        self.key = {"format": FORMAT, "what": "penultimate features by image digest", "source": fingerprint}
        self.folder = Path(root) / "features" / f"memo-{key_digest(self.key)[:16]}"
        self.rows: dict[bytes, Tensor] | None = None

    def __call__(self, x: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """``compute(x)`` (features [B, D]), read from the memo for the images it holds."""
        rows = self._load()
        flat = x.detach().float().cpu().contiguous().view(len(x), -1).numpy()
        digests = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
        missing = [i for i, d in enumerate(digests) if d not in rows]
        if missing:
            fresh = compute(x[missing]).float().cpu()
            for i, row in zip(missing, fresh, strict=True):
                rows[digests[i]] = row
            self._store([digests[i] for i in missing], fresh)
        return torch.stack([rows[d] for d in digests]).to(x.device)

    def _load(self) -> dict[bytes, Tensor]:
        if self.rows is None:
            self.rows = {}
            for shard in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
                try:
                    with safe_open(str(shard), framework="pt") as f:
                        if (f.metadata() or {}).get("key") != canonical_json(self.key):
                            continue
                        digests, feats = f.get_tensor("digests"), f.get_tensor("features")
                except (SafetensorError, OSError, KeyError):
                    continue  # a torn or foreign shard: its images are computed again
                self.rows.update(zip((bytes(d.tolist()) for d in digests), feats, strict=True))
        return self.rows

    def _store(self, digests: list[bytes], feats: Tensor) -> None:
        codes = torch.tensor([list(d) for d in digests], dtype=torch.uint8)
        blob = save({"digests": codes, "features": feats.contiguous()}, metadata={"key": canonical_json(self.key)})
        name = hashlib.blake2b(b"".join(digests), digest_size=8).hexdigest()
        write_atomic(self.folder / f"{name}.safetensors", lambda f: f.write(blob))

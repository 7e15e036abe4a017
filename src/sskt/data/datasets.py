"""Datasets by name: in-memory uint8 splits for Fashion-MNIST, CIFAR-10/100 and STL10.

Every builder takes the ``DataConfig`` and returns a ``DatasetSpec``. Images are stored as uint8 ``[N, C, H, W]``
(grey datasets keep one channel; augmentation expands them to three), labels as int64 ``[N]``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sskt.config import DataConfig
from sskt.data.spec import DatasetSpec, ImageSet
from sskt.errors import UserError, choice_error
from sskt.registry import Registry

DATASETS: Registry[DatasetSpec] = Registry("dataset")

# Where Debian's `fashion-mnist` package puts the four gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Per-channel statistics of each training split (grey datasets repeat theirs over the 3 expanded channels).
STATS = {
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class TensorImageSet:
    """An in-memory split: ``images`` uint8 [N, C, H, W] and ``labels`` int64 [N] (-1 where unlabelled)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def content_digest(self) -> dict:
        """The split's identity for the soft-label cache: sha256 over its images and labels (bytes, shape, dtype);
        about 50 ms for Fashion-MNIST's 47 MB."""
        h = hashlib.sha256()
        for t in (self.images, self.labels):
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        return {"content_sha256": h.hexdigest()}


class SubsetImageSet:
    """The images of ``split`` at ``indices`` (the validation split of the training images), as an ImageSet of its
    own: ``images`` is gathered once for in-memory splits, lazy splits decode on access."""

    def __init__(self, split: ImageSet, indices: Tensor) -> None:
        self.split, self.indices = split, indices
        self.labels = split.labels[indices]
        images = getattr(split, "images", None)
        if images is not None:
            self.images = images[indices]
        ids = getattr(split, "video_ids", None)
        if ids is not None:  # test clips keep the video each belongs to (sharded video evaluation)
            self.video_ids = ids[indices]
        protocol = getattr(split, "protocol_labels", None)
        if protocol is not None:  # VOC's test labels under its own protocol (sharded evaluation)
            self.protocol_labels = protocol[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | int]:
        return self.split[int(self.indices[index])]


def build_dataset(cfg: DataConfig) -> DatasetSpec:
    """Build the dataset named ``cfg.name``; unknown names raise a UserError listing the registered ones, and a
    dataset of fewer than two classes (nothing to classify) is a UserError too."""
    spec = DATASETS.create(cfg.name, cfg=cfg)
    if spec.num_classes < 2:
        raise UserError(f"dataset {cfg.name!r} has {spec.num_classes} class(es); classification needs at least 2")
    return spec


def stored_shape(split: ImageSet) -> tuple[int, int, int]:
    """``(C, H, W)`` of the stored uint8 images of ``split`` (decodes one image for lazy splits)."""
    images = getattr(split, "images", None)
    if images is not None:
        return tuple(images.shape[1:])
    return tuple(split[0][0].shape)


def default_root(cfg: DataConfig) -> Path:
    """Where torchvision datasets live: ``cfg.root``, else ``$SSKT_DATA``, else ``~/.cache/sskt/data``."""
    root = cfg.root or os.environ.get("SSKT_DATA") or "~/.cache/sskt/data"
    return Path(root).expanduser()


# --- Fashion-MNIST ---------------------------------------------------------------------------------------------
def read_idx(path: Path) -> Tensor:
    """Parse an IDX file (gzipped or not) of unsigned bytes into a uint8 tensor of its declared shape.

    Format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, one big-endian int32 per dimension,
    then the data.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return torch.from_numpy(data.reshape(*dims).copy())


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(candidates: list[Path]) -> Path | None:
    """The first folder (a candidate, or its ``FashionMNIST/raw`` or ``fashion-mnist`` sub-folder) with all 4 files."""
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    for base in candidates:
        for folder in (base, base / "FashionMNIST" / "raw", base / "fashion-mnist", base / "fashion_mnist"):
            if all(_idx_file(folder, stem) for stem in stems):
                return folder
    return None


def _fashion_mnist_folder(cfg: DataConfig) -> Path:
    candidates = [Path(p).expanduser() for p in (cfg.root, os.environ.get("SSKT_DATA")) if p]
    candidates.append(DEBIAN_FASHION_MNIST)
    found = find_fashion_mnist(candidates)
    if found is not None:
        return found
    if not cfg.download:
        looked = ", ".join(str(c) for c in candidates)
        raise UserError(
            f"Fashion-MNIST not found in {looked} (expected train-/t10k-images-idx3-ubyte and -labels-idx1-ubyte, "
            ".gz or not); set data.root or data.download=true"
        )
    from torchvision.datasets import FashionMNIST

    root = default_root(cfg)
    _torchvision_call("fashion_mnist", root, lambda: FashionMNIST(str(root), train=True, download=True))
    return root / "FashionMNIST" / "raw"


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig) -> DatasetSpec:
    """Fashion-MNIST: 60000/10000 grey 28 px images of 10 clothing classes, padded to 32 px by augmentation."""
    folder = _fashion_mnist_folder(cfg)
    splits = {}
    for split, (images, labels) in FASHION_MNIST_FILES.items():
        x = read_idx(_idx_file(folder, images)).unsqueeze(1)  # [N, 1, 28, 28]
        splits[split] = TensorImageSet(x, read_idx(_idx_file(folder, labels)).long())
    mean, std = STATS["fashion_mnist"]
    return DatasetSpec(
        "fashion_mnist", splits["train"], splits["test"], 10, mean, std, 32, class_names=list(FASHION_MNIST_CLASSES)
    )


# --- torchvision datasets --------------------------------------------------------------------------------------
# The folder torchvision's loader expects inside the data root, per dataset (named in the not-found error).
TORCHVISION_FOLDERS = {
    "fashion_mnist": "FashionMNIST/raw/",
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
    "stl10": "stl10_binary/",
}


def _torchvision_call(name: str, root: Path, make: Callable[[], object]) -> object:
    """Run a torchvision dataset constructor, turning its missing-file and download errors into a UserError."""
    try:
        return make()
    except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError for missing files, OSError offline
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{name} data not found or not downloadable in {root} (expected {TORCHVISION_FOLDERS[name]} there: "
            f"{reason}); set data.root to the folder holding it, or data.download=true with network"
        ) from err


def _cifar(cfg: DataConfig, name: str) -> DatasetSpec:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    root = default_root(cfg)
    splits = {}
    for split in ("train", "test"):
        ds = _torchvision_call(name, root, lambda s=split: cls(str(root), train=s == "train", download=cfg.download))
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # [N, 32, 32, 3] -> [N, 3, 32, 32]
        splits[split] = TensorImageSet(images, torch.tensor(ds.targets, dtype=torch.long))
    mean, std = STATS[name]
    classes = list(ds.classes)
    return DatasetSpec(name, splits["train"], splits["test"], len(classes), mean, std, 32, class_names=classes)


@DATASETS.register("cifar10")
def cifar10(cfg: DataConfig) -> DatasetSpec:
    """CIFAR-10: 50000/10000 colour 32 px images, 10 classes."""
    return _cifar(cfg, "cifar10")


@DATASETS.register("cifar100")
def cifar100(cfg: DataConfig) -> DatasetSpec:
    """CIFAR-100: 50000/10000 colour 32 px images, 100 classes."""
    return _cifar(cfg, "cifar100")


def stl10_split(cfg: DataConfig, split: str) -> TensorImageSet:
    """One STL10 split ('train', 'test' or 'unlabeled', labels -1) as uint8 [N, 3, 96, 96]."""
    from torchvision.datasets import STL10

    root = default_root(cfg)
    ds = _torchvision_call("stl10", root, lambda: STL10(str(root), split=split, download=cfg.download))
    return TensorImageSet(torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long())


@DATASETS.register("stl10")
def stl10(cfg: DataConfig) -> DatasetSpec:
    """STL10: 5000/8000 colour 96 px images, 10 classes; 100000 more unlabelled via data.unlabeled='stl10:unlabeled'."""
    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    mean, std = STATS["stl10"]
    train, test = stl10_split(cfg, "train"), stl10_split(cfg, "test")
    return DatasetSpec("stl10", train, test, 10, mean, std, 96, class_names=classes)


# Extra splits usable as ``data.unlabeled``: name -> loader.
EXTRA_SPLITS: dict[str, Callable[[DataConfig], ImageSet]] = {
    "stl10:unlabeled": lambda cfg: stl10_split(cfg, "unlabeled"),
}


def load_extra_split(name: str, cfg: DataConfig) -> ImageSet:
    """Load a named extra split such as 'stl10:unlabeled'; unknown names list the valid ones."""
    if name not in EXTRA_SPLITS:
        raise choice_error("dataset split", name, EXTRA_SPLITS)
    return EXTRA_SPLITS[name](cfg)

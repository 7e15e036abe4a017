"""Image folders: the ``imagefolder`` dataset (a class-per-folder tree) and unlabelled folders of images.

Folder splits decode lazily with PIL: every image becomes RGB and is resized (squashed) to a fixed square, so a
split still holds fixed-size uint8 images ``[3, S, S]``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sskt.config import DataConfig
from sskt.data.datasets import DATASETS, STATS
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DEFAULT_IMAGE_SIZE = 32


class FolderImageSet:
    """A lazily decoded split: ``files[i]`` decodes to uint8 [3, H, W] with label ``labels[i]`` (-1 unlabelled).
    ``root`` is the folder the files were found under."""

    def __init__(self, files: list[Path], labels: Tensor, size: tuple[int, int], root: Path | None = None) -> None:
        self.files = files
        self.labels = labels
        self.size = size
        self.root = Path(root) if root is not None else Path(os.path.commonpath([str(f) for f in files]))

    def content_digest(self) -> dict:
        """The folder's identity for the soft-label cache: its resolved root and a sha256 over every file's path
        relative to it, its size, its mtime (ns) and its label. Another folder, a changed, added, removed or
        relabelled file gives another digest; reading it costs one ``stat`` per file, no decoding."""
        root = self.root.resolve()
        h = hashlib.sha256()
        for path, label in zip(self.files, self.labels.tolist(), strict=True):
            info = path.stat()
            rel = os.path.relpath(path.resolve(), root)
            h.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\0{label}\n".encode())
        return {"root": str(root), "files_sha256": h.hexdigest(), "size": list(self.size)}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return decode_image(self.files[index], self.size), int(self.labels[index])


def decode_image(path: Path, size: tuple[int, int]) -> Tensor:
    """Decode ``path`` as RGB (grey images are replicated by PIL), bilinearly resized to ``size`` = (H, W).

    Returns uint8 [3, H, W].
    """
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` at any depth, sorted by path (a stable index order)."""
    found = []
    for dirpath, _, names in os.walk(folder, followlinks=True):
        found += [Path(dirpath) / n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def unlabeled_folder(folder: str | Path, size: tuple[int, int]) -> FolderImageSet:
    """Every image under ``folder`` (any depth) as an unlabelled split (labels -1) of ``size`` images."""
    path = Path(folder).expanduser()
    files = image_files(path) if path.is_dir() else []
    if not files:
        raise UserError(f"unlabeled image folder {str(path)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FolderImageSet(files, torch.full((len(files),), -1, dtype=torch.long), size, path)


def class_tree(folder: Path, classes: list[str], size: tuple[int, int]) -> FolderImageSet:
    """A class-per-folder tree as a labelled split; a class folder not in ``classes`` is a UserError."""
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir())
    for name in subdirs:
        if name not in classes:
            raise UserError(f"class folder {str(folder / name)!r} is not a training class; valid: {', '.join(classes)}")
    files, labels = [], []
    for name in subdirs:
        found = image_files(folder / name)
        files += found
        labels += [classes.index(name)] * len(found)
    if not files:
        raise UserError(f"image folder {str(folder)!r} holds no images in its class folders")
    return FolderImageSet(files, torch.tensor(labels, dtype=torch.long), size, folder)


def _imagefolder_root(cfg: DataConfig) -> tuple[Path, Path]:
    if not (cfg.root or os.environ.get("SSKT_DATA")):
        raise UserError("dataset 'imagefolder' needs data.root: a folder holding train/ and test/ (or val/)")
    root = Path(cfg.root or os.environ["SSKT_DATA"]).expanduser()
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test is None:
        raise UserError(
            f"image folder root {str(root)!r} must hold train/ and test/ (or val/), each with one folder per class"
        )
    return root / "train", test


@DATASETS.register("imagefolder")
def imagefolder(cfg: DataConfig) -> DatasetSpec:
    """Images in ``root/train/<class>/`` and ``root/test/<class>/`` (or ``val/``), resized to ``image_size`` (32).

    Classes are the train folder's sub-folders, sorted; normalisation uses the ImageNet statistics.
    """
    train_dir, test_dir = _imagefolder_root(cfg)
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"image folder {str(train_dir)!r} has no class sub-folders")
    side = cfg.image_size or DEFAULT_IMAGE_SIZE
    train = class_tree(train_dir, classes, (side, side))
    test = class_tree(test_dir, classes, (side, side))
    mean, std = STATS["imagenet"]
    return DatasetSpec("imagefolder", train, test, len(classes), mean, std, side, class_names=classes)

"""Image folders: the ``imagefolder`` dataset (a class-per-folder tree) and unlabelled folders of images.

Folder splits decode lazily with PIL: every image becomes RGB and is resized (squashed) to a fixed square, so a
split still holds fixed-size uint8 images ``[3, S, S]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from sskt.config import DataConfig
from sskt.data.datasets import DATASETS, STATS
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.files import write_text_atomic

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
        rgb = to_8bit(image).convert("RGB")
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


WIDE_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
"""PIL modes wider than 8 bits, with the full scale of their pixel values: PIL's own conversion to 'L' or 'RGB'
clips them at 255, so a 16-bit PNG read as 8 bits turns almost white."""


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8 bits per channel, wide modes scaled by their real range (16-bit: 65535; a 32-bit integer
    image above 65535 or a float image above 1: its own maximum) instead of clipped."""
    scale = WIDE_MODES.get(image.mode)
    if scale is None:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    top = float(pixels.max()) if pixels.size else 0.0
    scale = max(scale, top)
    return Image.fromarray(np.clip(np.rint(pixels / scale * 255), 0, 255).astype(np.uint8))


def image_files(folder: Path, avoid: frozenset[tuple[int, int]] = frozenset()) -> list[Path]:
    """Every image file under ``folder`` at any depth, sorted by path (a stable index order). Symbolic links are
    followed, but each real directory is walked once (a link back up the tree would count every image again, or
    never end), and only regular files count (a FIFO named ``x.png`` would block the first read forever); what was
    left out is said in one warning. ``avoid``: (device, inode) of directories not to enter (the other class
    folders of a tree, whose images a link must not relabel)."""
    found: list[Path] = []
    skipped: list[str] = []
    _walk(Path(folder), found, skipped, set(avoid))
    if skipped:
        more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
        warnings.warn(f"skipped under {str(folder)!r}: {', '.join(skipped[:3])}{more}", stacklevel=2)
    return sorted(found)


def _walk(folder: Path, found: list[Path], skipped: list[str], seen: set[tuple[int, int]]) -> None:
    """Add the image files under ``folder`` to ``found`` and what was left out to ``skipped``; ``seen`` holds the
    (device, inode) of every directory walked so far."""
    try:
        info = folder.stat()
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(f"{str(folder)!r} ({exc.strerror or type(exc).__name__})")
        return
    if (info.st_dev, info.st_ino) in seen:
        skipped.append(f"{str(folder)!r} (a directory already walked: a symlink loop or a second link)")
        return
    seen.add((info.st_dev, info.st_ino))
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow symbolic links
        except OSError:
            is_dir = is_file = False
        if is_dir:
            _walk(path, found, skipped, seen)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            if is_file:
                found.append(path)
            else:
                skipped.append(f"{str(path)!r} (not a regular file)")


def unlabeled_folder(folder: str | Path, size: tuple[int, int], skip_bad: bool = False) -> FolderImageSet:
    """Every image under ``folder`` (any depth) as an unlabelled split (labels -1) of ``size`` images."""
    path = Path(folder).expanduser()
    files, bad = scan_images(image_files(path), path) if path.is_dir() else ([], [])
    settle_bad_images(bad, skip_bad)
    if not files:
        raise UserError(f"unlabeled image folder {str(path)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return FolderImageSet(files, torch.full((len(files),), -1, dtype=torch.long), size, path)


def class_tree(
    folder: Path, classes: list[str], size: tuple[int, int], train: bool = False, bad: list[Path] | None = None
) -> FolderImageSet:
    """A class-per-folder tree as a labelled split; a class folder not in ``classes`` is a UserError, and so is an
    empty class folder of the training split (a class that could never be learnt). Every file is decoded once
    first (``scan_images``); the files that do not decode are left out and appended to ``bad``."""
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir())
    for name in subdirs:
        if name not in classes:
            raise UserError(f"class folder {str(folder / name)!r} is not a training class; valid: {', '.join(classes)}")
    files, labels = [], []
    tree = {_dir_id(folder), *(_dir_id(folder / name) for name in subdirs)}
    for name in subdirs:
        avoid = frozenset(tree - {_dir_id(folder / name)})
        found, broken = scan_images(image_files(folder / name, avoid), folder / name)
        if bad is not None:
            bad += broken
        if train and not found:
            raise UserError(f"training class folder {str(folder / name)!r} holds no images; add some or remove it")
        files += found
        labels += [classes.index(name)] * len(found)
    if not files:
        raise UserError(f"image folder {str(folder)!r} holds no images in its class folders")
    return FolderImageSet(files, torch.tensor(labels, dtype=torch.long), size, folder)


def _dir_id(folder: Path) -> tuple[int, int]:
    info = folder.stat()
    return info.st_dev, info.st_ino


def scan_record(folder: Path) -> Path:
    """Where the scan of ``folder`` is remembered: ``$SSKT_CACHE`` (else ``~/.cache/sskt``)``/scans/<digest of the
    folder's resolved path>.json``, ``{relative path: [size, mtime_ns]}`` of the files that decoded, so a later scan
    opens only new or changed files (the image folder itself is never written)."""
    root = Path(os.environ.get("SSKT_CACHE") or Path.home() / ".cache" / "sskt").expanduser()
    return root / "scans" / f"{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]}.json"


def scan_images(files: list[Path], folder: Path) -> tuple[list[Path], list[Path]]:
    """``(files that decode as images, files that do not)``. Files unchanged since the last scan (same size and
    mtime) are not opened again; folders of over 2,000 new files show a progress bar."""
    known = _read_scan(folder)
    good, bad, seen = [], [], {}
    todo = [f for f in files if known.get(str(f.relative_to(folder))) != _stamp(f)]
    with Progress(*_SCAN_COLUMNS, disable=len(todo) < 2000) as bar:
        task = bar.add_task(f"scanning {folder.name}", total=len(todo))
        for f in files:
            rel = str(f.relative_to(folder))
            if known.get(rel) != _stamp(f):
                if not _decodes(f):
                    bad.append(f)
                    continue
                bar.advance(task)
            good.append(f)
            seen[rel] = _stamp(f)
    if seen != known:
        _write_scan(folder, seen)
    return good, bad


def settle_bad_images(bad: list[Path], skip: bool) -> None:
    """Refuse files that do not decode in one line naming the first few and their count, or, with ``skip``
    (``data.skip_bad_images``), warn that they were left out."""
    if bad and not skip:
        names = ", ".join(str(b) for b in bad[:3])
        raise UserError(f"{len(bad)} image file(s) do not decode: {names}; fix or remove them, or set "
                        "data.skip_bad_images true")  # fmt: skip
    if bad:
        warnings.warn(f"skipped {len(bad)} image file(s) that do not decode, e.g. {bad[0]}", stacklevel=2)


_SCAN_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def _stamp(f: Path) -> list[int]:
    info = f.stat()
    return [info.st_size, info.st_mtime_ns]


def _decodes(f: Path) -> bool:
    try:
        with Image.open(f) as image:
            image.load()  # a truncated file fails here, not at open
        return True
    except Exception:  # PIL raises many types for foreign or damaged files
        return False


def _read_scan(folder: Path) -> dict:
    try:
        return json.loads(scan_record(folder).read_text())
    except (OSError, ValueError):
        return {}


def _write_scan(folder: Path, seen: dict) -> None:
    with contextlib.suppress(OSError, UserError):  # nowhere to remember it: scan again next time
        write_text_atomic(scan_record(folder), json.dumps(seen))


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
    bad: list[Path] = []
    train = class_tree(train_dir, classes, (side, side), train=True, bad=bad)
    test = class_tree(test_dir, classes, (side, side), bad=bad)
    settle_bad_images(bad, cfg.skip_bad_images)
    mean, std = STATS["imagenet"]
    return DatasetSpec("imagefolder", train, test, len(classes), mean, std, side, class_names=classes)

"""Pascal VOC 2007 as multi-label classification (../docs METHOD.md section 10): 20 classes, a multi-hot label per
image from its XML annotation, ``trainval`` to train and ``test`` to evaluate.

The folder is the one VOC ships and torchvision's ``VOCDetection(year="2007")`` downloads::

    <data.root>/VOCdevkit/VOC2007/JPEGImages/000005.jpg
                                 /Annotations/000005.xml
                                 /ImageSets/Main/trainval.txt, test.txt

Objects marked ``difficult`` follow ``data.voc_difficult``: 'negative' (the authors' code: a class present only
through difficult objects is absent), 'ignore' (mmpretrain: that class is left out of the image's loss and metrics,
label -1) or 'positive'. Images are decoded on demand and resized to a square of ``round(image_size * 8 / 7)`` px
(256 for 224), from which training draws a random resized crop and evaluation takes the centre ``image_size`` crop.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torch import Tensor

from sskt.config import DataConfig
from sskt.data.datasets import DATASETS
from sskt.data.folder import decode_image, scan_images, settle_bad_images
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError, check_choice

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
DIFFICULT_POLICIES = ("negative", "ignore", "positive")
IGNORED = -1.0
"""Label value of a class left out of an image's loss and metrics (a difficult-only class under 'ignore')."""
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def parse_annotation(path: Path) -> list[tuple[str, bool]]:
    """``(class name, difficult)`` of every object in a VOC XML annotation; a malformed file is a UserError."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"VOC annotation {str(path)!r} cannot be read ({type(exc).__name__})") from exc
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise UserError(f"VOC annotation {str(path)!r} names an unknown class {name!r}")
        objects.append((name, (obj.findtext("difficult") or "0").strip() == "1"))
    return objects


def multi_hot(objects: list[tuple[str, bool]], policy: str) -> Tensor:
    """float [20]: 1 for a class with a non-difficult object; a class with difficult objects only is 0 ('negative'),
    -1 ('ignore': left out) or 1 ('positive')."""
    check_choice("data.voc_difficult", policy, DIFFICULT_POLICIES)
    label = torch.zeros(len(VOC_CLASSES))
    only_difficult = {VOC_CLASSES.index(n) for n, d in objects if d} - {
        VOC_CLASSES.index(n) for n, d in objects if not d
    }
    for name, difficult in objects:
        if not difficult:
            label[VOC_CLASSES.index(name)] = 1.0
    for k in only_difficult:
        label[k] = {"negative": 0.0, "ignore": IGNORED, "positive": 1.0}[policy]
    return label


class VOCImageSet:
    """One VOC split: JPEGs decoded on demand at ``size`` (H, W), multi-hot ``labels`` float [N, 20] under
    ``data.voc_difficult``; on the test split, when that policy is not the protocol's, ``protocol_labels`` too: the
    VOC protocol ignores difficult objects, so a difficult-only class is -1 there (the headline mAP reads them)."""

    def __init__(self, files: list[Path], labels: Tensor, size: tuple[int, int], protocol: Tensor | None = None):
        self.files, self.labels, self.size = files, labels, size
        if protocol is not None:
            self.protocol_labels = protocol

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return decode_image(self.files[index], self.size), self.labels[index]

    def content_digest(self) -> dict:
        """What identifies the split for the soft-label cache: its files (name, size, mtime) and labels."""
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        return {"files": stats, "labels": self.labels.tolist(), "size": list(self.size)}


def voc_folder(cfg: DataConfig) -> Path:
    """``<root>/VOCdevkit/VOC2007`` (``root`` itself when it is that folder), downloaded first when allowed."""
    from sskt.data.datasets import default_root

    root = default_root(cfg)
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (candidate / "ImageSets" / "Main" / "trainval.txt").is_file():
            return candidate
    if cfg.download:
        from torchvision.datasets import VOCDetection

        try:
            for split in ("trainval", "test"):
                VOCDetection(str(root), year="2007", image_set=split, download=True)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"voc2007 could not be downloaded into {str(root)!r} ({type(exc).__name__})") from exc
        return root / "VOCdevkit" / "VOC2007"
    raise UserError(
        f"voc2007 not found under {str(root)!r} (expected VOCdevkit/VOC2007/ImageSets/Main/trainval.txt); set "
        "data.root to the folder holding VOCdevkit, or data.download=true with network"
    )


def voc_split(folder: Path, split: str, policy: str, size: tuple[int, int], bad: list[Path]) -> VOCImageSet:
    """The images ``ImageSets/Main/<split>.txt`` lists with their labels. Each JPEG is decoded once before training
    (``scan_images``, remembered across runs) so that a damaged one is named now, not mid-epoch; those that do not
    decode are left out and appended to ``bad`` (``settle_bad_images`` refuses or skips them)."""
    ids_file = folder / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.is_file():
        raise UserError(f"voc2007 split file {str(ids_file)!r} is missing")
    ids = [line.split()[0] for line in ids_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"voc2007 split file {str(ids_file)!r} lists no images")
    files = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"voc2007 {split}: {len(missing)} images missing, e.g. {str(missing[0])!r}")
    broken = set(scan_images(files, folder / "JPEGImages")[1])
    bad += sorted(broken)
    ids = [i for i, f in zip(ids, files, strict=True) if f not in broken]
    files = [f for f in files if f not in broken]
    if not files:
        raise UserError(f"voc2007 {split}: none of the {len(broken)} images listed in {str(ids_file)!r} decodes")
    objects = [parse_annotation(folder / "Annotations" / f"{i}.xml") for i in ids]
    labels = torch.stack([multi_hot(o, policy) for o in objects])
    protocol = torch.stack([multi_hot(o, "ignore") for o in objects]) if split == "test" else None
    return VOCImageSet(files, labels, size, None if protocol is None or torch.equal(protocol, labels) else protocol)


@DATASETS.register("voc2007")
def voc2007(cfg: DataConfig) -> DatasetSpec:
    """Pascal VOC 2007: 5011 trainval / 4952 test images, 20 classes, multi-label."""
    folder = voc_folder(cfg)
    side = cfg.image_size or 224
    stored = (round(side * 8 / 7),) * 2
    bad: list[Path] = []
    train = voc_split(folder, "trainval", cfg.voc_difficult, stored, bad)
    test = voc_split(folder, "test", cfg.voc_difficult, stored, bad)
    settle_bad_images(bad, cfg.skip_bad_images)
    mean, std = IMAGENET_STATS
    return DatasetSpec("voc2007", train, test, 20, mean, std, side, task="multi_label", class_names=list(VOC_CLASSES))

"""The building blocks of action recognition (../docs METHOD.md section 11): the official split files of UCF101 and
HMDB51, clip sampling in time, the multi-scale corner crop, and video-level scoring.

- Training takes one random window of ``clip_len`` frames per video and epoch, looping a short video to fill it
  (``train_clip_start`` / ``clip_frames``); the start comes from the stream's (seed, epoch) generator.
- Test scores every non-overlapping window of the video (``eval_clip_starts``) and averages the clips' softmax per
  video (``video_scores``); video-level top-1 is the headline.
- ``MultiScaleCornerCrop``: a square of one of the scales 1, 0.841, 0.707, 0.595, 0.5 of the short side at one of
  five positions (the four corners and the centre), resized to the output side; replayable like every AugOp.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from sskt.data.augment import AUGMENTS, DEFAULT_PADDING, Augment, AugOp, HFlip
from sskt.errors import UserError

SCALES = (1.0, 0.84089641525, 0.70710678118, 0.59460355750, 0.5)
"""Hara et al.'s multi-scale crop: 2^(-k/4) of the short side, k = 0..4."""
POSITIONS = ("c", "tl", "tr", "bl", "br")


# --- split files -----------------------------------------------------------------------------------------------
def ucf101_split(folder: Path, split: int, train: bool) -> tuple[list[str], list[int], list[str]]:
    """``(video paths relative to the class folders, label indices, class names)`` of UCF101's official split
    ``split`` from ``folder`` (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``)."""
    ind = folder / "classInd.txt"
    lst = folder / f"{'train' if train else 'test'}list0{split}.txt"
    for f in (ind, lst):
        if not f.is_file():
            raise UserError(f"UCF101 split file {str(f)!r} is missing (ucfTrainTestlist from the UCF101 site)")
    classes = [line.split()[1] for line in ind.read_text().splitlines() if line.strip()]
    videos, labels = [], []
    for line in lst.read_text().splitlines():
        if not line.strip():
            continue
        path = line.split()[0]
        name = path.split("/")[0]
        if name not in classes:
            raise UserError(f"{str(lst)!r} names a video of unknown class {name!r}")
        videos.append(path)
        labels.append(classes.index(name))
    if not videos:
        raise UserError(f"UCF101 split file {str(lst)!r} lists no videos")
    return videos, labels, classes


def hmdb51_split(folder: Path, split: int, train: bool) -> tuple[list[str], list[int], list[str]]:
    """The same for HMDB51's ``<class>_test_split<N>.txt`` files: tag 1 is training, 2 test, 0 unused."""
    files = sorted(folder.glob(f"*_test_split{split}.txt"))
    if not files:
        raise UserError(f"no HMDB51 split files '*_test_split{split}.txt' in {str(folder)!r}")
    classes = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    want = "1" if train else "2"
    videos, labels = [], []
    for k, f in enumerate(files):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == want:
                videos.append(f"{classes[k]}/{parts[0]}")
                labels.append(k)
    if not videos:
        raise UserError(f"the HMDB51 split files in {str(folder)!r} list no {'training' if train else 'test'} videos")
    return videos, labels, classes


# --- time ------------------------------------------------------------------------------------------------------
def train_clip_start(num_frames: int, clip_len: int, generator: torch.Generator) -> int:
    """A uniformly random start of a ``clip_len`` window in a video of ``num_frames`` (0 when it is shorter)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    span = max(1, num_frames - clip_len + 1)
    return int(torch.randint(0, span, (1,), generator=generator))


def clip_frames(num_frames: int, start: int, clip_len: int) -> list[int]:
    """Frame indices of the window at ``start``, looping the video when it is shorter than ``clip_len``."""
    return [(start + i) % num_frames for i in range(clip_len)]


def eval_clip_starts(num_frames: int, clip_len: int) -> list[int]:
    """Starts of every non-overlapping ``clip_len`` window; a video shorter than one window gives one (looped)."""
    return list(range(0, max(1, num_frames - clip_len + 1), clip_len))


def average_by_video(probs: Tensor, video_ids: Tensor, num_videos: int) -> Tensor:
    """Per video, the mean of its clips' rows: probs [N, K] and int64 ids [N] in ``0..num_videos-1``."""
    sums = torch.zeros(num_videos, probs.shape[1], dtype=probs.dtype, device=probs.device)
    sums.index_add_(0, video_ids, probs)
    counts = torch.zeros(num_videos, dtype=probs.dtype, device=probs.device)
    counts.index_add_(0, video_ids, torch.ones(len(video_ids), dtype=probs.dtype, device=probs.device))
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} videos have no clip")
    return sums / counts[:, None]


def video_scores(clip_logits: Tensor, video_ids: Tensor, num_videos: int) -> Tensor:
    """Per video, the mean softmax of its clips: clip logits [N, K] and int64 video ids [N] -> [num_videos, K]."""
    return average_by_video(clip_logits.float().softmax(1), video_ids, num_videos)


# --- space -----------------------------------------------------------------------------------------------------
class MultiScaleCornerCrop(AugOp):
    """A square of side ``scale * min(H, W)`` (scale index into ``SCALES``) at one of ``POSITIONS``, resized
    bilinearly to ``size``; on ``[B, C, H, W]`` or clips ``[B, C, T, H, W]`` (every frame the same crop)."""

    params = ("ms_scale", "ms_position")

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        scale = torch.randint(0, len(SCALES), (n, 1), generator=generator)
        return torch.cat([scale, torch.randint(0, len(POSITIONS), (n, 1), generator=generator)], 1)

    def identity(self, n: int) -> Tensor:
        return torch.zeros(n, 2, dtype=torch.long)  # the whole short side, centred

    def box(self, h: int, w: int, scale: int, position: int) -> tuple[int, int, int]:
        """``(top, left, side)`` of the crop."""
        side = max(1, round(SCALES[scale] * min(h, w)))
        top, left = {
            "c": ((h - side) // 2, (w - side) // 2),
            "tl": (0, 0),
            "tr": (0, w - side),
            "bl": (h - side, 0),
            "br": (h - side, w - side),
        }[POSITIONS[position]]
        return top, left, side

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        out = []
        for i, (scale, position) in enumerate(params.tolist()):
            top, left, side = self.box(h, w, scale, position)
            crop = x[i, ..., top : top + side, left : left + side].float()
            flat = crop.reshape(-1, 1, side, side) if crop.dim() > 3 else crop[None]
            resized = F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False)
            resized = resized.reshape(*crop.shape[:-2], self.size, self.size)
            out.append(resized.round().clamp(0, 255).to(x.dtype))
        return torch.stack(out)


@AUGMENTS.register("clip")
def clip_preset(in_hw: tuple[int, int], size: int, padding: int = DEFAULT_PADDING) -> Augment:
    """Video training view: a multi-scale corner crop of every frame alike, resized to S, then flip."""
    return Augment([MultiScaleCornerCrop(size), HFlip()])

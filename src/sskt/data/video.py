"""UCF101 and HMDB51 (split 1 by default) for action recognition (../docs METHOD.md section 11).

The data root holds the official split files and the videos, as folders of extracted frames (the layout people
keep after ffmpeg) or as the video files themselves (decoded with PyAV through torchvision)::

    <data.root>/splits/classInd.txt, trainlist01.txt, testlist01.txt           (UCF101: ucfTrainTestlist)
    <data.root>/splits/<class>_test_split1.txt                                  (HMDB51: testTrainMulti_7030_splits)
    <data.root>/frames/<class>/<video name without extension>/<frames in name order>.jpg
    <data.root>/videos/<class>/<video name>.avi                                 (used when frames/ has no folder)

Frames are stored at ``round(8/7 * image_size)`` px high and 4:3 wide (128 x 171 for 112); a training item is one
``data.clip_len``-frame window (``sskt.data.clips``) whose start the stream draws per (seed, epoch); the test split
holds every non-overlapping window of every video, each tagged with its video (``video_ids``), and evaluation
averages the clips' softmax per video (the ``video`` task's headline, ``video_acc``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from sskt.config import DataConfig
from sskt.data.clips import clip_frames, eval_clip_starts, hmdb51_split, train_clip_start, ucf101_split
from sskt.data.datasets import DATASETS, STATS, default_root
from sskt.data.folder import IMAGE_EXTENSIONS, decode_image, scan_images, settle_bad_images
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError, install_hint


def decode_video(path: Path) -> Tensor:
    """Every frame of a video file as uint8 [T, 3, H, W], decoded with PyAV (the 'video' extra); frame folders are
    much faster to train from (each clip decodes its whole video here)."""
    try:
        import av
    except ImportError as exc:
        raise UserError(f"reading video files needs PyAV: {install_hint('video')} (or extract frames: {path})") from exc
    try:
        with av.open(str(path)) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(f"video {str(path)!r} cannot be decoded ({type(exc).__name__})") from exc
    if not frames:
        raise UserError(f"video {str(path)!r} has no frames")
    return torch.stack(frames).permute(0, 3, 1, 2).contiguous()


class VideoSet:
    """Clips of videos: item ``k`` is video ``videos[k]`` from frame ``starts[k]`` (0 for training items, whose
    start the stream draws), uint8 [3, clip_len, H, W]; ``labels`` int64 [N]; ``video_ids`` tags test clips."""

    def __init__(
        self, videos: list[Path], labels: Tensor, size: tuple[int, int], clip_len: int, starts=None, ids=None, skip=()
    ):
        self.videos, self.labels, self.size, self.clip_len = videos, labels, size, clip_len
        self.skip = frozenset(skip)  # frames that do not decode, left out (data.skip_bad_images)
        self.starts = starts or [0] * len(videos)
        self.video_ids = None if ids is None else torch.as_tensor(ids, dtype=torch.long)
        self._frames: dict[Path, list[Path]] = {}
        self._counts: dict[Path, int] = {}

    def __len__(self) -> int:
        return len(self.videos)

    def frame_files(self, video: Path) -> list[Path]:
        if video not in self._frames:
            files = _frame_files(video) if video.is_dir() else []
            self._frames[video] = [f for f in files if f not in self.skip]
        return self._frames[video]

    def num_frames(self, video: Path) -> int:
        if video.is_dir():
            return len(self.frame_files(video))
        if video not in self._counts:
            self._counts[video] = len(decode_video(video))
        return self._counts[video]

    def read(self, index: int, start: int) -> Tensor:
        """uint8 [3, clip_len, H, W] of video ``index`` from frame ``start`` (looping a short video)."""
        video = self.videos[index]
        n = self.num_frames(video)
        if n == 0:
            raise UserError(f"video {str(video)!r} has no frames")
        picks = clip_frames(n, start, self.clip_len)
        if video.is_dir():
            files = self.frame_files(video)
            return torch.stack([decode_image(files[i], self.size) for i in picks], 1)
        frames = decode_video(video)[picks]  # [T, 3, h, w] uint8
        frames = torch.nn.functional.interpolate(frames.float(), size=self.size, mode="bilinear", antialias=True)
        return frames.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.read(index, self.starts[index]), int(self.labels[index])

    def sample_starts(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        """A random window start per item of ``indices`` (training clip sampling)."""
        return torch.tensor([train_clip_start(self.num_frames(self.videos[int(i)]), self.clip_len, generator)
                             for i in indices], dtype=torch.long)  # fmt: skip

    def content_digest(self) -> dict:
        return {"videos": [str(v) for v in self.videos], "starts": self.starts, "labels": self.labels.tolist()}


def _frame_files(video: Path) -> list[Path]:
    return sorted(p for p in video.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def scan_frames(root: Path, videos: list[Path], bad: list[Path]) -> None:
    """Decode every frame of the frame folders among ``videos`` once before training (remembered across runs, as an
    image folder's scan is), so that a damaged frame is named now rather than failing mid-epoch; append those that
    do not decode to ``bad``. A frame folder without frames is refused. Video files are decoded when first read,
    and one that does not decode is named then."""
    frames = []
    for video in dict.fromkeys(v for v in videos if v.is_dir()):
        files = _frame_files(video)
        if not files:
            raise UserError(f"frame folder {str(video)!r} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
        frames += files
    bad += scan_images(frames, root / "frames")[1]


def _locate(root: Path, relative: str) -> Path:
    """The frame folder of a split entry when it exists, else its video file."""
    frames = root / "frames" / Path(relative).with_suffix("")
    if frames.is_dir():
        return frames
    video = root / "videos" / relative
    if video.is_file():
        return video
    raise UserError(f"neither frames {str(frames)!r} nor video {str(video)!r} exists")


def video_dataset(cfg: DataConfig, name: str) -> DatasetSpec:
    """``name`` ('ucf101' or 'hmdb51') from ``cfg.root``: the training videos as clip items, the test videos
    expanded to every non-overlapping clip (``VIDEO_DATASETS`` gives their sizes)."""
    root = default_root(cfg)
    if not (root / "splits").is_dir():
        raise UserError(f"{name}: no splits/ folder under {str(root)!r} (the official split files; see the README)")
    parse = ucf101_split if name == "ucf101" else hmdb51_split
    side = cfg.image_size or 112
    size = (round(side * 8 / 7), round(side * 8 / 7 * 4 / 3))
    sets, bad = {}, []
    for split, train in (("train", True), ("test", False)):
        entries, labels, classes = parse(root / "splits", cfg.video_split, train)
        videos = [_locate(root, e) for e in entries]
        broken: list[Path] = []
        scan_frames(root, videos, broken)
        settle_bad_images(broken, cfg.skip_bad_images)
        bad += broken
        if train:
            sets[split] = VideoSet(videos, torch.tensor(labels), size, cfg.clip_len, skip=bad)
            continue
        probe = VideoSet(videos, torch.tensor(labels), size, cfg.clip_len, skip=bad)
        clips = [(k, s) for k, v in enumerate(videos) for s in eval_clip_starts(probe.num_frames(v), cfg.clip_len)]
        sets[split] = VideoSet(
            [videos[k] for k, _ in clips], torch.tensor([labels[k] for k, _ in clips]), size, cfg.clip_len,
            starts=[s for _, s in clips], ids=[k for k, _ in clips], skip=bad,
        )  # fmt: skip
    mean, std = STATS["imagenet"]
    return DatasetSpec(name, sets["train"], sets["test"], len(classes), mean, std, side, "video", list(classes))


VIDEO_DATASETS = {
    "ucf101": "UCF101: 101 actions, split 1 9,537 train / 3,783 test videos",
    "hmdb51": "HMDB51: 51 actions, split 1 3,570 train / 1,530 test videos",
}
for _name in VIDEO_DATASETS:
    DATASETS.register(_name)(partial(video_dataset, name=_name))

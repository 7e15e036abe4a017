"""UCF101/HMDB51-format data the tests write (frame folders and split files): clips drawn from the stream, every
test clip scored and averaged per video, and tiny 3D runs of scratch and SSKT end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sskt.config import DataConfig, SourceConfig, TrainConfig
from sskt.data import TrainStream, build_dataset
from sskt.engine import train
from sskt.engine.evaluation import VideoMetrics

COLOURS = {"Archery": (220, 40, 40), "Bowling": (40, 40, 220)}


def write_ucf(root: Path, per_class: int = 4, frames: int = 20) -> Path:
    """Frame folders of moving blocks whose colour is the class, and UCF101's split files."""
    gen = torch.Generator().manual_seed(0)
    lines = {"train": [], "test": []}
    for c, (name, colour) in enumerate(COLOURS.items()):
        for v in range(per_class):
            split = "train" if v < per_class - 1 else "test"
            video = f"v_{name}_g{v:02d}_c01"
            folder = root / "frames" / name / video
            folder.mkdir(parents=True)
            for t in range(frames):
                pixels = torch.randint(0, 50, (24, 32, 3), generator=gen)
                x = (2 * t) % 20
                pixels[6:18, x : x + 12] = torch.tensor(colour)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / f"img_{t:05d}.jpg")
            lines[split].append(f"{name}/{video}.avi" + (f" {c + 1}" if split == "train" else ""))
    splits = root / "splits"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(COLOURS)))
    (splits / "trainlist01.txt").write_text("\n".join(lines["train"]) + "\n")
    (splits / "testlist01.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    return write_ucf(tmp_path_factory.mktemp("ucf"))


def _data(root: Path) -> DataConfig:
    return DataConfig(name="ucf101", root=str(root), download=False, image_size=32, clip_len=8, batch_size=3,
                      eval_batch_size=4, augment="clip")  # fmt: skip


def test_the_dataset_reads_frames_and_expands_test_clips(ucf_root) -> None:
    spec = build_dataset(_data(ucf_root))
    assert (spec.task, spec.num_classes, spec.class_names) == ("video", 2, ["Archery", "Bowling"])
    assert len(spec.train) == 6
    clip, label = spec.train[0]
    assert clip.shape == (3, 8, 37, 49) and clip.dtype == torch.uint8 and label == 0
    # 20 frames, clips of 8: non-overlapping windows at 0 and 8, for each of the 2 test videos
    assert len(spec.test) == 4 and spec.test.starts == [0, 8, 0, 8] and spec.test.video_ids.tolist() == [0, 0, 1, 1]


def test_training_clips_come_from_the_seed_and_epoch(ucf_root) -> None:
    cfg = TrainConfig(seed=1)
    cfg.data = _data(ucf_root)
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg)
    a, b = next(iter(stream.epoch(0))), next(iter(stream.epoch(0)))
    assert a.images.shape == (3, 3, 8, 32, 32) and torch.equal(a.images, b.images)
    other = next(iter(stream.epoch(1)))
    assert not torch.equal(a.images, other.images)


def test_video_metrics_average_clips_per_video() -> None:
    """Video 0: clips favour class 0 strongly then class 1 mildly (truth 0, right); video 1: one clip, wrong."""
    metrics = VideoMetrics(2)
    logits = torch.tensor([[4.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    labels = torch.tensor([[0, 0], [0, 0], [1, 1]])
    metrics.update(logits, labels)
    out = metrics.compute()
    assert out["video_acc"] == pytest.approx(50.0) and out["acc"] == pytest.approx(100 / 3, abs=1e-3)


@pytest.mark.parametrize("method", ["scratch", "sskt"])
def test_a_tiny_3d_run_end_to_end(ucf_root, tmp_path, method) -> None:
    cfg = TrainConfig(seed=0, epochs=2, out=str(tmp_path / method), accelerator="cpu", progress=False)
    cfg.data = _data(ucf_root)
    cfg.model.name, cfg.method.name = "resnet3d_18", method
    cfg.optim.lr, cfg.optim.schedule = 0.01, "cosine"
    if method == "sskt":  # a 2D source sees each clip's centre frame
        cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)]
    summary = train(cfg)
    assert summary["headline"] == "test_video_acc"
    assert {"test_video_acc", "test_acc", "test_loss"} <= set(summary["final"])
    assert 0 <= summary["final"]["test_video_acc"] <= 100


def _write_avi(path: Path, frames: torch.Tensor) -> None:
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame.numpy(), format="rgb24")))
        container.mux(stream.encode())


def test_video_files_are_read_when_no_frame_folder_exists(tmp_path) -> None:
    """The same layout with videos/ instead of frames/: a 12-frame AVI per video, decoded with PyAV."""
    pytest.importorskip("av")
    root = tmp_path / "ucf"
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (root / "splits" / "trainlist01.txt").write_text("Archery/a.avi 1\nBowling/b.avi 2\n")
    (root / "splits" / "testlist01.txt").write_text("Bowling/c.avi\n")
    for rel, colour in (("Archery/a.avi", 200), ("Bowling/b.avi", 40), ("Bowling/c.avi", 40)):
        _write_avi(root / "videos" / rel, torch.full((12, 32, 48, 3), colour, dtype=torch.uint8))
    spec = build_dataset(DataConfig(name="ucf101", root=str(root), download=False, image_size=32, clip_len=8))
    clip, label = spec.train[0]
    assert clip.shape == (3, 8, 37, 49) and label == 0
    assert abs(clip.float().mean().item() - 200) < 10, "the decoded frames carry the video's colour"
    assert spec.test.starts == [0] and spec.test.video_ids.tolist() == [0], "12 frames hold one 8-frame window"


def test_the_faithful_source_input_is_0_255_minus_the_activitynet_mean() -> None:
    """The released video code fed its 2D sources unnormalised frames minus ActivityNet's mean; 'activitynet'
    reproduces it, 'normalised' (the default) gives the source its own statistics."""
    from sskt.sources import build_source
    from sskt.sources.base import ACTIVITYNET_MEAN

    faithful = build_source(
        SourceConfig(name="efficientnet_lite0.imagenet", input_scale="activitynet"), (0.5,) * 3, (0.25,) * 3
    )
    pixels = torch.full((1, 3, 4, 4), 0.5)
    expected = 127.5 - torch.tensor(ACTIVITYNET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(faithful.normalize(pixels), expected.expand(1, 3, 4, 4))
    assert faithful.fingerprint()["input_scale"] == "activitynet"
    corrected = build_source(SourceConfig(name="efficientnet_lite0.imagenet"), (0.5,) * 3, (0.25,) * 3)
    assert "input_scale" not in corrected.fingerprint(), "caches made before the option stay valid"


# --- issue 26, item 11: the video validation metric -----------------------------------------------------------
def _clips(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_one_clip_per_video_gives_the_clip_accuracy() -> None:
    """1-D labels (a validation split): every clip is its own video, over batches, so video_acc equals acc (the
    bug gave every clip one float32 id: one video for the whole split)."""
    logits, labels = _clips()
    metrics = VideoMetrics(3)
    for part in range(0, 40, 16):
        metrics.update(logits[part : part + 16], labels[part : part + 16])
    out = metrics.compute()
    assert out["video_acc"] == pytest.approx(out["acc"]) and 0 < out["acc"] < 100


def test_video_ids_beyond_float32_precision_stay_apart() -> None:
    logits, labels = _clips()
    metrics = VideoMetrics(3)
    metrics.update(logits, torch.stack([labels, torch.arange(40) + (1 << 40)], 1))
    out = metrics.compute()
    assert out["video_acc"] == pytest.approx(out["acc"])


def _rank_metrics(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        logits, labels = _clips()
        metrics = VideoMetrics(3)
        metrics.update(logits[rank::world], labels[rank::world])  # evaluation's sharding
        queue.put((rank, metrics.compute()))
    finally:
        dist.destroy_process_group()


def test_one_clip_per_video_under_two_processes_matches_one_process() -> None:
    """Each rank numbered its own clips 0.. before: the ranks' clips collided into shared videos."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_metrics, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    logits, labels = _clips()
    one = VideoMetrics(3)
    one.update(logits, labels)
    expected = one.compute()
    for out in results.values():
        assert out["video_acc"] == pytest.approx(expected["video_acc"]) == pytest.approx(expected["acc"])

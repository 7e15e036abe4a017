"""Action recognition's building blocks on hand-made values: split files, clip sampling, video-level scoring and the
multi-scale corner crop."""

from __future__ import annotations

import pytest
import torch

from sskt.data.clips import (
    SCALES,
    MultiScaleCornerCrop,
    clip_frames,
    eval_clip_starts,
    hmdb51_split,
    train_clip_start,
    ucf101_split,
    video_scores,
)
from sskt.errors import UserError


def test_ucf101_split_files(tmp_path) -> None:
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (tmp_path / "trainlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 2\nApplyEyeMakeup/v_A_g01_c01.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g07_c02.avi\n")
    assert ucf101_split(tmp_path, 1, train=True) == (
        ["Archery/v_Archery_g01_c01.avi", "ApplyEyeMakeup/v_A_g01_c01.avi"],
        [1, 0],
        ["ApplyEyeMakeup", "Archery"],
    )
    assert ucf101_split(tmp_path, 1, train=False)[:2] == (["Archery/v_Archery_g07_c02.avi"], [1])
    with pytest.raises(UserError, match="testlist02.txt"):
        ucf101_split(tmp_path, 2, train=False)


def test_hmdb51_split_files_tag_train_test_and_unused(tmp_path) -> None:
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "cartwheel_test_split1.txt").write_text("d.avi 2\n")
    assert hmdb51_split(tmp_path, 1, train=True) == (["brush_hair/a.avi"], [0], ["brush_hair", "cartwheel"])
    assert hmdb51_split(tmp_path, 1, train=False)[:2] == (["brush_hair/b.avi", "cartwheel/d.avi"], [0, 1])


def test_clip_sampling_in_time() -> None:
    gen = torch.Generator().manual_seed(0)
    starts = {train_clip_start(40, 16, gen) for _ in range(500)}
    assert starts == set(range(25)), "every window of a 40-frame video, and only those"
    assert train_clip_start(10, 16, gen) == 0
    assert clip_frames(10, 0, 16) == list(range(10)) + list(range(6)), "a short video loops"
    assert clip_frames(40, 24, 16) == list(range(24, 40))
    assert eval_clip_starts(50, 16) == [0, 16, 32] and eval_clip_starts(10, 16) == [0]


def test_video_scores_average_the_clips_softmax() -> None:
    """Video 0 has two clips, one confident in class 0 and one mildly in class 1: the average prefers class 0."""
    logits = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    scores = video_scores(logits, torch.tensor([0, 0, 1]), 2)
    p = logits.softmax(1)
    assert torch.allclose(scores[0], (p[0] + p[1]) / 2) and torch.allclose(scores[1], p[2])
    assert scores.argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="1 videos have no clip"):
        video_scores(logits, torch.tensor([0, 0, 0]), 2)


def test_multi_scale_corner_crop_boxes_and_replay() -> None:
    op = MultiScaleCornerCrop(8)
    assert op.box(120, 160, 0, 0) == (0, 20, 120), "scale 1, centre: the whole short side"
    assert op.box(120, 160, 4, 4) == (60, 100, 60), "scale 0.5, bottom right"
    assert op.box(120, 160, 2, 2) == (0, 160 - round(SCALES[2] * 120), round(SCALES[2] * 120))
    clips = torch.randint(0, 256, (3, 3, 4, 20, 30), dtype=torch.uint8)
    params = op.sample(3, torch.Generator().manual_seed(0))
    out = op(clips, params)
    assert out.shape == (3, 3, 4, 8, 8) and out.dtype == torch.uint8 and torch.equal(out, op(clips, params))
    # every frame of a clip gets the same crop: a constant-in-time clip stays constant in time
    still = clips[:, :, :1].expand(-1, -1, 4, -1, -1).contiguous()
    cropped = op(still, params)
    assert torch.equal(cropped[:, :, 0], cropped[:, :, 3])

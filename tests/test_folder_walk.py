"""Issue 26, item 4: folder walks follow each real directory once and take regular files only, so a symlink loop
neither multiplies the images nor hangs, and a FIFO named like an image never blocks a scan or ``predict``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sskt.config import DataConfig
from sskt.data import build_dataset
from sskt.data.folder import image_files


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")


def test_a_symlink_loop_counts_every_image_once_and_is_named(tmp_path) -> None:
    _images(tmp_path / "a" / "deep", 3)
    (tmp_path / "a" / "deep" / "up").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "again").symlink_to(tmp_path / "a" / "deep")
    with pytest.warns(UserWarning, match="symlink loop"):
        files = image_files(tmp_path / "a")
    assert len(files) == 3


def test_a_fifo_named_like_an_image_is_left_out_not_opened(tmp_path) -> None:
    _images(tmp_path / "a", 2)
    os.mkfifo(tmp_path / "a" / "x.png")
    with pytest.warns(UserWarning, match=r"x\.png.*not a regular file"):
        files = image_files(tmp_path / "a")
    assert [f.name for f in files] == ["0.png", "1.png"]


def test_training_on_a_folder_with_a_loop_and_a_fifo_sees_each_image_once(tmp_path) -> None:
    root = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("a", "b"):
            _images(root / split / name, 3)
    (root / "train" / "a" / "loop").symlink_to(root / "train")
    os.mkfifo(root / "train" / "b" / "pipe.png")
    with pytest.warns(UserWarning, match="skipped under"):
        spec = build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))
    assert len(spec.train) == 6 and len(spec.test) == 6


def test_predict_on_two_loops_and_a_fifo_finishes(tmp_path, capsys) -> None:
    """The walk ``predict`` does: two loops and a FIFO end within the test's time, every image once."""
    _images(tmp_path / "p" / "x", 2)
    (tmp_path / "p" / "x" / "l1").symlink_to(tmp_path / "p")
    (tmp_path / "p" / "l2").symlink_to(tmp_path / "p" / "x")
    os.mkfifo(tmp_path / "p" / "f.jpg")
    from sskt.inference import collect_images

    with pytest.warns(UserWarning):
        assert len(collect_images([tmp_path / "p"])) == 2

"""Bad input: one line naming the bad value (and the valid choices), exit status 2, no traceback, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import error_line
from PIL import Image

from sskt.cli import main
from sskt.config import DataConfig
from sskt.data import build_dataset
from sskt.errors import UserError


def _train(data_root: Path, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--data.root", str(data_root), "--data.download", "false", "--data.labels_per_class", "4"]
    return [*argv, "--data.batch_size", "20", "--epochs", "1", "--progress", "false", "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--threads", "-1"], "threads must be at least 1 or null, got -1"),
        (["--threads", "0"], "threads must be at least 1 or null, got 0"),
        (["--optim.lr", "-1"], "optim.lr must be positive, got -1.0"),
        (["--data.num_workers", "-1"], "data.num_workers must be >= 0, got -1"),
        (["--data.image_size", "-4"], "data.image_size must be at least 1 or null, got -4"),
        (["--data.image_size", "0"], "data.image_size must be at least 1 or null, got 0"),
        (["--epoch", "3"], "unrecognized arguments: --epoch 3 (did you mean --epochs?)"),
        (["--epohcs", "3"], "(did you mean --epochs?)"),
        (["--data.labels_per_class", "1000"], "labels_per_class=1000 is out of range"),
        # issue 26 item 10: out of range, each one line naming the value and the interval
        (["--method.name", "kd", "--method.kd.lam", "2"], "method.kd.lam must be in [0, 1], got 2.0"),
        (["--method.name", "kd", "--method.kd.temperature", "0"], "method.kd.temperature must be in (0, inf), got 0.0"),
        (["--precise_bn", "-5"], "precise_bn must be in [0, inf), got -5"),
        (["--optim.momentum", "5"], "optim.momentum must be in [0, 1), got 5.0"),
        (["--optim.weight_decay", "-1"], "optim.weight_decay must be in [0, inf), got -1.0"),
        (["--devices", "0"], "devices must be in [1, inf), got 0"),
        (["--dist_timeout", "0"], "dist_timeout must be in (0, inf), got 0.0"),
        (["--method.name", "dml", "--method.dml.temperature", "-1"], "method.dml.temperature must be in (0, inf)"),
        (["--method.name", "sskt", "--method.sskt.alpha", "-1"], "method.sskt.alpha must be in [0, inf), got -1.0"),
        (["--method.name", "maxl", "--method.maxl.psi", "0"], "method.maxl.psi must be in [1, inf), got 0"),
        # options the dataset would ignore are refused rather than stored as if used
        (["--data.image_size", "64"], "data.image_size 64 is not used by dataset 'fashion_mnist'"),
        (["--data.clip_len", "8"], "data.clip_len 8 is not used by dataset 'fashion_mnist'"),
    ],
)
def test_bad_values_are_one_line_and_write_nothing(capsys, small_fmnist, tmp_path, extra, expected) -> None:
    out = tmp_path / "run"
    assert expected in error_line(capsys, _train(small_fmnist, out, *extra))
    assert not out.exists(), "nothing is written before every check has passed"


def test_bad_run_directories(capsys, small_fmnist, tmp_path, monkeypatch) -> None:
    file = tmp_path / "a_file"
    file.write_text("x")
    assert "is a file" in error_line(capsys, _train(small_fmnist, file))
    assert "empty path" in error_line(capsys, _train(small_fmnist, Path(""), "--out", ""))
    import sskt.rundir

    monkeypatch.setattr(sskt.rundir.os, "access", lambda path, mode: False)  # root ignores permission bits
    assert "cannot be written" in error_line(capsys, _train(small_fmnist, tmp_path / "ro" / "run"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_accelerator_is_one_line(capsys, small_fmnist, tmp_path) -> None:
    err = error_line(capsys, _train(small_fmnist, tmp_path / "run", "--accelerator", "cuda"))
    assert "'cuda' is not available" in err


@pytest.mark.parametrize("text", ["base: [\n", 'seeds: !!python/object/apply:os.system ["echo pwned"]\n'])
def test_a_grid_file_that_is_not_plain_yaml_is_one_line(capsys, tmp_path, text) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    assert "is not plain YAML" in error_line(capsys, ["grid", "--config", str(grid), "--dry-run"])


def test_ctrl_c_says_how_to_resume(capsys, monkeypatch, tmp_path) -> None:
    import sskt.cli

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(sskt.cli, "train", interrupted)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "false"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: ") and "\n" not in err
    assert err.endswith(f"sskt train --out {tmp_path / 'run'} --resume true")


def test_a_truncated_cache_array_is_one_line(tmp_path) -> None:
    from test_cache import cache_cfg, opened, tiny_source, toy_spec

    from sskt.sources.cache import SoftLabelCache

    spec, cfg = toy_spec(), cache_cfg(tmp_path)
    path = opened(cfg, spec, tiny_source(spec)).paths[0]
    array = path / "p0.s0.logits.npy"
    array.write_bytes(array.read_bytes()[:200])
    with pytest.raises(UserError, match="is damaged"):
        SoftLabelCache(path)


# --- image folders are checked before training ---------------------------------------------------------------------
def _folder(root: Path, classes=("a", "b"), per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((8, 8, 3), 40 * c + i, np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_an_empty_training_class_folder_is_refused(tmp_path) -> None:
    root = _folder(tmp_path / "data")
    (root / "train" / "c").mkdir()
    with pytest.raises(UserError, match=r"training class folder .*train/c' holds no images"):
        build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))


def test_a_single_class_dataset_is_refused(tmp_path) -> None:
    root = _folder(tmp_path / "data", classes=("only",))
    with pytest.raises(UserError, match="has 1 class.*at least 2"):
        build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))


def test_images_that_do_not_decode_are_named_before_training_or_skipped(tmp_path) -> None:
    root = _folder(tmp_path / "data")
    good = (root / "train" / "a" / "0.png").read_bytes()
    (root / "train" / "a" / "1.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "train" / "b" / "2.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"2 image file\(s\) do not decode: .*1\.png.*2\.png.*skip_bad_images"):
        build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))
    with pytest.warns(UserWarning, match="skipped 2 image file"):
        spec = build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8, skip_bad_images=True))
    assert len(spec.train) == 4 and all(spec.train[i][0].shape == (3, 8, 8) for i in range(4))


def test_a_scan_is_remembered_and_a_changed_file_is_opened_again(tmp_path, monkeypatch) -> None:
    from sskt.data import folder

    root = _folder(tmp_path / "data")
    build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))
    opened: list[Path] = []
    real = folder._decodes
    monkeypatch.setattr(folder, "_decodes", lambda f: opened.append(f) or real(f))
    build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))
    assert opened == [], "unchanged files are not decoded again"
    changed = root / "train" / "a" / "0.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 10**18))
    build_dataset(DataConfig(name="imagefolder", root=str(root), image_size=8))
    assert opened == [changed]
    assert not list(root.rglob("*.json")), "the image folder itself is never written"


def test_a_relative_data_root_is_stored_resolved(small_fmnist, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(small_fmnist.parent)
    out = tmp_path / "run"
    assert main(_train(Path(small_fmnist.name), out)) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())["data"]["root"]
    assert stored == str(small_fmnist.resolve())
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(out)]) == 0


# --- VOC and video data are scanned before training too (issue 26, item 16) -----------------------------------------
def test_a_damaged_voc_image_is_named_before_training_or_skipped(tmp_path) -> None:
    from test_voc import write_voc

    root = write_voc(tmp_path / "data", per_split=6)
    jpeg = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "tr0002.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])  # a truncated JPEG
    cfg = DataConfig(name="voc2007", root=str(root), download=False, image_size=32)
    with pytest.raises(UserError, match=r"1 image file\(s\) do not decode: .*tr0002\.jpg"):
        build_dataset(cfg)
    with pytest.warns(UserWarning, match="skipped 1 image file"):
        spec = build_dataset(DataConfig(**{**cfg.__dict__, "skip_bad_images": True}))
    assert len(spec.train) == 5 and len(spec.train.labels) == 5


def test_a_damaged_video_frame_is_named_before_training_or_skipped(tmp_path) -> None:
    from test_video import write_ucf

    root = write_ucf(tmp_path / "data", per_class=2, frames=4)
    frame = next((root / "frames").rglob("img_00002.jpg"))
    frame.write_bytes(b"not a jpeg")
    cfg = DataConfig(name="ucf101", root=str(root), download=False, image_size=16, clip_len=4)
    with pytest.raises(UserError, match=r"1 image file\(s\) do not decode: .*img_00002\.jpg"):
        build_dataset(cfg)
    with pytest.warns(UserWarning, match="skipped 1 image file"):
        spec = build_dataset(DataConfig(**{**cfg.__dict__, "skip_bad_images": True}))
    video = spec.train.videos[[str(v) for v in spec.train.videos].index(str(frame.parent))]
    assert spec.train.num_frames(video) == 3 and spec.train.read(0, 0).shape[1] == 4


@pytest.mark.parametrize("which", ["voc", "ucf"])
def test_an_empty_split_file_is_one_line(tmp_path, which) -> None:
    from test_video import write_ucf
    from test_voc import write_voc

    if which == "voc":
        root = write_voc(tmp_path / "data", per_split=2)
        (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text("\n")
        cfg, expected = DataConfig(name="voc2007", root=str(root), download=False), "trainval.txt' lists no images"
    else:
        root = write_ucf(tmp_path / "data", per_class=2, frames=2)
        (root / "splits" / "trainlist01.txt").write_text("")
        cfg, expected = DataConfig(name="ucf101", root=str(root), download=False), "trainlist01.txt' lists no videos"
    with pytest.raises(UserError, match=expected):
        build_dataset(cfg)


def test_a_disk_that_fills_under_any_writer_is_one_line(monkeypatch, capsys) -> None:
    """A tracker's event file (TensorBoard's writer is not ours) hitting ENOSPC mid-run: one line, exit 2."""
    import errno

    import sskt.cli as cli

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/tb/events.out")

    monkeypatch.setitem(cli.COMMANDS, "train", full)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no space left on the device writing '/runs/x/tb/events.out'; free space, then rerun with "
                   "--resume true (the last checkpoint is kept)"]  # fmt: skip

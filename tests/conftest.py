"""Shared fixtures: a small Fashion-MNIST written as IDX files, and a tiny run configuration over it."""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

# isort: off
import sskt  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads its OpenMP runtime (sskt/threads.py)

# isort: on
import pytest
import torch

from sskt.config import SourceConfig, TrainConfig
from sskt.data.datasets import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")

TEST_SEED = int(os.environ.get("SSKT_TEST_SEED", "0"))
"""Run seed of the training tests (initialisation, batch order, augmentation): set SSKT_TEST_SEED to check that no
learning test depends on one seed's luck (or on one CPU's rounding of it)."""


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """sskt's default cache folder (image-folder scans, soft labels without cache.dir) is a temporary one here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSKT_CACHE", str(tmp_path_factory.mktemp("sskt_cache")))
        yield


def error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``sskt argv`` in-process; it must exit 2 with exactly one ``error:`` line on stderr (no traceback)."""
    from sskt.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


class Killed(Exception):
    """Stands in for a kill signal arriving right after the first checkpoint is on disk."""


def train_killed_after_first_checkpoint(cfg: TrainConfig) -> None:
    """Train ``cfg`` until its first checkpoint is written atomically, then stop as a kill would."""
    from sskt.engine import loop, train

    saved = loop.save_atomic

    def save_then_die(state: dict, path) -> None:
        saved(state, path)
        raise Killed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "save_atomic", save_then_die)
        with pytest.raises(Killed):
            train(cfg)


def learned(name: str, value: float, threshold: float) -> bool:
    """``value > threshold``, appending ``{test, value, threshold, margin}`` as a JSON line to $SSKT_MARGIN_LOG when it
    is set, so the margins of the learning tests can be read off a run of the suite."""
    _log_margin(name, value, threshold, value - threshold)
    return value > threshold


def fell(name: str, ratio: float, threshold: float) -> bool:
    """``ratio < threshold`` for a loss that must fall (last / first epoch), logged like ``learned``."""
    _log_margin(name, ratio, threshold, threshold - ratio)
    return ratio < threshold


def _log_margin(name: str, value: float, threshold: float, margin: float) -> None:
    log = os.environ.get("SSKT_MARGIN_LOG")
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        row = {"test": test, "what": name, "value": value, "threshold": threshold, "margin": margin}
        row |= {"seed": TEST_SEED, "threads": os.environ.get("OMP_NUM_THREADS")}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")


def _write_idx(path: Path, data: torch.Tensor) -> None:
    """Write uint8 ``data`` as an IDX file (magic 0x0000080<ndim>, big-endian dims), gzipped."""
    header = struct.pack(">I", 0x800 | data.dim()) + struct.pack(f">{data.dim()}I", *data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.to(torch.uint8).contiguous().numpy().tobytes())


def _first_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)]).sort().values


@pytest.fixture(scope="session")
def small_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST folder with 60 train and 10 test images per class (600 / 100), cut from the real files."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST IDX files missing (install the dataset-fashion-mnist package)")
    return write_small_fmnist(tmp_path_factory.mktemp("fmnist"))


def write_small_fmnist(out: Path) -> Path:
    """Write the first 60 train and 10 test images per class of the real Fashion-MNIST files into ``out``."""
    for split, per_class in (("train", 60), ("t10k", 10)):
        images = read_idx(FMNIST / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(FMNIST / f"{split}-labels-idx1-ubyte.gz")
        keep = _first_per_class(labels.long(), per_class)
        _write_idx(out / f"{split}-images-idx3-ubyte.gz", images[keep])
        _write_idx(out / f"{split}-labels-idx1-ubyte.gz", labels[keep])
    return out


COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40))


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic imagefolder (train/ and test/, 4 classes) of noisy 16 px images tinted by class colour: a task a
    network learns within a few dozen steps, so learning tests stay fast on 2 cores."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 24), ("test", 10)):
        for c, colour in enumerate(COLOURS):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-60, 61, (16, 16, 3), generator=gen)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


def make_colour_cfg(root: Path, out: Path, method: str) -> TrainConfig:
    """``method`` on the colour folder: 96 labelled 16 px images, batch 16 (6 steps per epoch), 3 epochs; sskt gets
    one EfficientNet-Lite0 ImageNet source at 32 px."""
    cfg = TrainConfig(seed=TEST_SEED, epochs=3, out=str(out), accelerator="cpu", progress=False)
    cfg.data.name, cfg.data.root, cfg.data.image_size = "imagefolder", str(root), 16
    cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.crop_padding = 16, 40, 2
    cfg.precise_bn = 6  # statistics of the final weights: SSKT's big auxiliary gradients move them fast
    cfg.method.name = method
    cfg.optim.lr, cfg.optim.schedule = 0.05, "cosine"
    if method == "sskt":
        cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)]
    return cfg


@pytest.fixture(scope="session")
def colour_cfg(colour_folder: Path) -> Callable[[Path, str], TrainConfig]:
    """``(out, method) -> make_colour_cfg(colour_folder, out, method)``."""
    return lambda out, method: make_colour_cfg(colour_folder, out, method)


def make_tiny_cfg(data_root: Path, out: Path) -> TrainConfig:
    """A few-second scratch run: resnet20 on 200 labelled Fashion-MNIST images, 3 epochs, batch 50, on CPU."""
    cfg = TrainConfig(seed=TEST_SEED, epochs=3, out=str(out), accelerator="cpu", progress=False)
    cfg.data.root = str(data_root)
    cfg.data.download = False
    cfg.data.labels_per_class = 20
    cfg.data.batch_size = 50
    cfg.data.eval_batch_size = 100
    cfg.optim.lr = 0.05
    cfg.optim.schedule = "cosine"
    return cfg


@pytest.fixture(scope="session")
def tiny_cfg_factory(small_fmnist: Path) -> Callable[[Path], TrainConfig]:
    """``out -> make_tiny_cfg(small_fmnist, out)``, for module-scoped fixtures that train once."""
    return lambda out: make_tiny_cfg(small_fmnist, out)


@pytest.fixture
def tiny_cfg(small_fmnist: Path, tmp_path: Path) -> TrainConfig:
    """``make_tiny_cfg`` writing into this test's temporary folder."""
    return make_tiny_cfg(small_fmnist, tmp_path / "run")

"""The data layer: datasets, subsets, replayable augmentation and the deterministic training stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sskt.config import DataConfig, TrainConfig
from sskt.data import (
    DatasetSpec,
    TensorImageSet,
    TrainStream,
    build_augment,
    build_dataset,
    eval_batches,
    labeled_subset,
)
from sskt.data.augment import normalize
from sskt.data.datasets import DEBIAN_FASHION_MNIST
from sskt.errors import UserError


# --- helpers ---------------------------------------------------------------------------------------------------
def toy_spec(per_class: tuple[int, ...] = (6, 5, 7), size: int = 8, side: int = 8, channels: int = 1) -> DatasetSpec:
    """A small in-memory dataset: random uint8 images, ``per_class[c]`` images of class c."""
    g = torch.Generator().manual_seed(123)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = torch.randint(0, 256, (len(labels), channels, size, size), dtype=torch.uint8, generator=g)
    train = TensorImageSet(images, labels)
    test = TensorImageSet(images[:5].clone(), labels[:5].clone())
    return DatasetSpec("toy", train, test, len(per_class), (0.5,) * 3, (0.25,) * 3, side)


def train_cfg(**data) -> TrainConfig:
    cfg = TrainConfig(seed=3)
    for key, value in {"batch_size": 4, **data}.items():
        setattr(cfg.data, key, value)
    return cfg


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_png(path: Path, grey: bool, seed: int, size: tuple[int, int] = (20, 12)) -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def fashion() -> DatasetSpec:
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's fashion-mnist copy is not installed")
    return build_dataset(DataConfig(name="fashion_mnist", download=False))


# --- datasets --------------------------------------------------------------------------------------------------
def test_fashion_mnist_loads_from_debian_copy(fashion: DatasetSpec) -> None:
    assert (len(fashion.train), len(fashion.test), fashion.num_classes) == (60000, 10000, 10)
    assert fashion.train.images.shape == (60000, 1, 28, 28) and fashion.train.images.dtype == torch.uint8
    assert fashion.train.labels.dtype == torch.long
    assert torch.bincount(fashion.train.labels).tolist() == [6000] * 10
    assert fashion.image_size == 32 and len(fashion.mean) == 3 and len(fashion.class_names) == 10


def test_fashion_mnist_reads_uncompressed_torchvision_layout(tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 251
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:n])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    monkeypatch.setenv("SSKT_DATA", str(tmp_path))
    spec = build_dataset(DataConfig(name="fashion_mnist", download=False))
    assert (len(spec.train), len(spec.test)) == (5, 3)
    assert torch.equal(spec.train.images[:, 0], torch.from_numpy(images).to(torch.uint8))
    assert spec.test.labels.tolist() == [0, 1, 2]


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown dataset 'mnist'.*cifar10.*fashion_mnist.*imagefolder"):
        build_dataset(DataConfig(name="mnist"))


def test_missing_torchvision_data_without_download_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar10.*" + str(tmp_path)):
        build_dataset(DataConfig(name="cifar10", root=str(tmp_path), download=False))


def test_missing_imagefolder_root_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=f"{missing}.*train/ and test/"):
        build_dataset(DataConfig(name="imagefolder", root=str(missing)))


def test_imagefolder_loads_grey_and_colour_as_three_channels(tmp_path: Path) -> None:
    for i, (split, cls) in enumerate([("train", "cat"), ("train", "cat"), ("train", "dog"), ("val", "dog")]):
        write_png(tmp_path / split / cls / f"{i}.png", grey=i % 2 == 0, seed=i)
    spec = build_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16))
    assert spec.class_names == ["cat", "dog"] and spec.num_classes == 2 and spec.image_size == 16
    assert spec.train.labels.tolist() == [0, 0, 1] and spec.test.labels.tolist() == [1]
    image, label = spec.train[0]  # written grey
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 0
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    batch = next(TrainStream(spec, train_cfg()).epoch(0))
    assert batch.images.shape == (3, 3, 16, 16)
    # Lazy splits decode in DataLoader workers; the batches must not depend on how many.
    with_workers = next(TrainStream(spec, train_cfg(num_workers=2)).epoch(0))
    assert torch.equal(with_workers.images, batch.images) and torch.equal(with_workers.indices, batch.indices)


# --- subsets ---------------------------------------------------------------------------------------------------
def test_labeled_subset_is_stratified_and_seed_stable(fashion: DatasetSpec) -> None:
    labels = fashion.train.labels
    chosen = labeled_subset(labels, 7, seed=1)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [7] * 10
    assert torch.equal(chosen, torch.sort(chosen).values) and len(chosen.unique()) == 70
    assert torch.equal(chosen, labeled_subset(labels, 7, seed=1))
    assert not torch.equal(chosen, labeled_subset(labels, 7, seed=2))


def test_labeled_subset_too_large_names_smallest_class() -> None:
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 8)
    with pytest.raises(UserError, match=r"labels_per_class=4.*1\.\.3.*class, 1, has 3"):
        labeled_subset(labels, 4, seed=0)


# --- augmentation ----------------------------------------------------------------------------------------------
def test_unknown_augment_preset_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown augmentation preset 'autoaug'.*default, none"):
        build_augment(toy_spec(), "autoaug")


def test_augment_replays_bit_identically_from_params() -> None:
    spec = toy_spec(size=28, side=32)
    aug = build_augment(spec, "default")
    images = spec.train.images
    params = aug.sample(len(images), torch.Generator().manual_seed(0))
    assert params.shape == (len(images), aug.num_params) and params.dtype == torch.long
    out = aug.apply(images, params)
    assert out.shape == (len(images), 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, aug.apply(images.clone(), params.clone()))
    # Row i depends on its own params only: replaying a reordered subset gives the same rows.
    rows = torch.tensor([4, 0, 2])
    assert torch.equal(aug.apply(images[rows], params[rows]), out[rows])


def test_identity_params_give_the_unaugmented_view() -> None:
    spec = toy_spec(size=28, side=32)
    aug, images = build_augment(spec, "default"), spec.train.images[:3]
    view = aug.apply(images, aug.identity_params(3))
    padded = torch.zeros(3, 1, 32, 32)
    padded[:, :, 2:30, 2:30] = images.float() / 255  # 28 px centred in 32 px
    assert torch.equal(view, padded.expand(-1, 3, -1, -1))
    none = build_augment(spec, "none")
    assert none.num_params == 0 and torch.equal(none.apply(images, none.identity_params(3)), view)


def test_flip_and_crop_do_what_they_claim() -> None:
    spec = toy_spec(size=32, side=32, channels=3)
    aug, images = build_augment(spec, "default"), spec.train.images[:2]
    assert aug.param_names == ["crop_y", "crop_x", "flip"]
    base = aug.apply(images, aug.identity_params(2))
    flipped = aug.apply(images, torch.tensor([[4, 4, 1]] * 2))
    assert torch.equal(flipped, base.flip(-1))
    # Offset (0, 0) of the 4 px zero-padded image shifts the content 4 px down and right.
    shifted = aug.apply(images, torch.tensor([[0, 0, 0]] * 2))
    assert torch.equal(shifted[..., 4:, 4:], base[..., :-4, :-4])
    assert shifted[..., :4, :].abs().sum() == 0 and shifted[..., :, :4].abs().sum() == 0


def test_augment_handles_video_clips_per_frame() -> None:
    spec = toy_spec(size=32, side=32, channels=3)
    aug = build_augment(spec, "default")
    clip = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)  # [B, C, T, H, W]
    params = aug.sample(2, torch.Generator().manual_seed(5))
    out = aug.apply(clip, params)
    assert out.shape == (2, 3, 4, 32, 32)
    assert torch.equal(out[:, :, 1], aug.apply(clip[:, :, 1], params))


def test_normalize_per_channel() -> None:
    x = torch.ones(2, 3, 4, 4)
    out = normalize(x, (0.0, 0.5, 1.0), (1.0, 0.5, 2.0))
    assert out[:, 0].eq(1).all() and out[:, 1].eq(1).all() and out[:, 2].eq(0).all()


# --- training stream -------------------------------------------------------------------------------------------
def batches_of(stream: TrainStream, epoch: int) -> list:
    return list(stream.epoch(epoch))


def test_stream_takes_the_data_settings_and_the_seed_and_the_whole_config_alike() -> None:
    """``TrainStream(spec, cfg.data, cfg.seed)`` reads nothing else; the older ``TrainStream(spec, cfg)`` is the
    same stream, and a data block without a seed is refused."""
    spec, cfg = toy_spec(), train_cfg(labels_per_class=3, unlabeled="rest", unlabeled_ratio=1)
    explicit, whole = batches_of(TrainStream(spec, cfg.data, cfg.seed), 0), batches_of(TrainStream(spec, cfg), 0)
    for a, b in zip(explicit, whole, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.aug_params, b.aug_params) and a.num_labeled == b.num_labeled
    with pytest.raises(TypeError, match="seed"):
        TrainStream(spec, cfg.data)


def test_stream_is_deterministic_per_seed_and_epoch() -> None:
    spec, cfg = toy_spec(), train_cfg()
    first, again = batches_of(TrainStream(spec, cfg), 1), batches_of(TrainStream(spec, cfg), 1)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.aug_params, b.aug_params) and torch.equal(a.labels, b.labels)
    other = batches_of(TrainStream(spec, cfg), 2)
    assert not torch.equal(torch.cat([b.indices for b in first]), torch.cat([b.indices for b in other]))


def test_stream_covers_every_labelled_index_once_per_epoch() -> None:
    spec, cfg = toy_spec(), train_cfg(labels_per_class=3, subset_seed=9)
    stream = TrainStream(spec, cfg)
    assert torch.equal(stream.labeled_indices, labeled_subset(spec.train.labels, 3, seed=9))
    assert len(stream) == 3  # 9 labelled images in batches of 4: 4, 4, 1
    batches = batches_of(stream, 0)
    assert [b.num_labeled for b in batches] == [4, 4, 1]
    seen = torch.cat([b.indices for b in batches])
    assert torch.equal(torch.sort(seen).values, stream.labeled_indices)
    for b in batches:
        assert torch.equal(b.labels, spec.train.labels[b.indices])
        expected = normalize(stream.augment.apply(spec.train.images[b.indices], b.aug_params), spec.mean, spec.std)
        assert b.images.shape == (b.num_labeled, 3, 8, 8) and torch.equal(b.images, expected)


def test_unlabeled_rest_appends_ratio_rows_without_labels() -> None:
    spec, cfg = toy_spec(), train_cfg(labels_per_class=2, unlabeled="rest", unlabeled_ratio=2)
    stream = TrainStream(spec, cfg)
    assert stream.unlabeled_name == "train"
    labelled = set(stream.labeled_indices.tolist())
    for b in batches_of(stream, 0):
        n = b.num_labeled
        assert len(b.images) == len(b.indices) == len(b.aug_params) == 3 * n and len(b.labels) == n
        assert set(b.indices[:n].tolist()) <= labelled and not set(b.indices[n:].tolist()) & labelled


def test_unlabeled_folder_has_its_own_index_space(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "deep" / "er" / f"{i}.png", grey=i == 1, seed=i)
    spec, cfg = toy_spec(), train_cfg(unlabeled=str(tmp_path), unlabeled_ratio=1)
    stream = TrainStream(spec, cfg)
    assert stream.unlabeled_name == f"folder:{tmp_path.resolve()}"
    batch = next(stream.epoch(0))
    assert batch.images.shape == (8, 3, 8, 8) and batch.indices[4:].max() < 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"unlabeled": "moon"}, "valid choices: rest, stl10:unlabeled"),
        ({"unlabeled": "rest", "unlabeled_ratio": 0}, "unlabeled_ratio >= 1"),
        ({"unlabeled_ratio": 2}, "needs data.unlabeled"),
        ({"unlabeled": "rest", "unlabeled_ratio": 1}, "every training image is labelled"),
    ],
)
def test_bad_unlabeled_settings_are_user_errors(data: dict, message: str) -> None:
    data = {"unlabeled_ratio": 1, **data}
    with pytest.raises(UserError, match=message):
        TrainStream(toy_spec(), train_cfg(**data))


class FixedViews:
    """A view provider that always stores the unaugmented view and logits equal to the sample index."""

    def __init__(self, num_params: int, padding: int = 4) -> None:
        self.num_params, self.padding, self.splits = num_params, padding, []

    def lookup(self, indices, generator, split="train"):
        self.splits.append(split)
        params = torch.full((len(indices), self.num_params), self.padding, dtype=torch.long)
        params[:, -1] = 0
        return params, {"src": indices.float()[:, None].repeat(1, 4)}


def test_view_provider_replaces_params_and_fills_soft() -> None:
    spec, cfg = toy_spec(), train_cfg(labels_per_class=2, unlabeled="rest", unlabeled_ratio=1)
    stream = TrainStream(spec, cfg)
    stream.set_view_provider(FixedViews(stream.augment.num_params))
    identity = stream.augment.identity_params(len(spec.train))
    for b in batches_of(stream, 0):
        assert torch.equal(b.aug_params, identity[: len(b.indices)])
        assert torch.equal(b.soft["src"][:, 0], b.indices.float())
        raw = spec.train.images[b.indices]
        expected = normalize(stream.augment.apply(raw, b.aug_params), spec.mean, spec.std)
        assert torch.equal(b.images, expected)
    assert set(stream.provider.splits) == {"train"}


def test_eval_batches_cover_split_unaugmented() -> None:
    spec = toy_spec(size=6, side=8)
    out = list(eval_batches(spec.train, spec, batch_size=7))
    images = torch.cat([x for x, _ in out])
    assert images.shape == (len(spec.train), 3, 8, 8)
    assert torch.equal(torch.cat([y for _, y in out]), spec.train.labels)
    none = build_augment(spec, "none")
    expected = normalize(none.apply(spec.train.images, none.identity_params(len(spec.train))), spec.mean, spec.std)
    assert torch.equal(images, expected)


# --- the validation split ---------------------------------------------------------------------------------------
def test_validation_split_is_held_out_before_labelled_and_unlabelled_images() -> None:
    spec = toy_spec(per_class=(12, 10, 14))
    streams = [
        TrainStream(spec, train_cfg(val_per_class=2, labels_per_class=3, unlabeled="rest", unlabeled_ratio=1))
        for _ in range(2)
    ]
    for seed, stream in zip((3, 8), streams, strict=True):
        stream.seed = seed
    val = streams[0].val_indices
    assert torch.bincount(spec.train.labels[val]).tolist() == [2, 2, 2]
    for stream in streams:
        labelled, rest = set(stream.labeled_indices.tolist()), set(stream.unlabeled.indices.tolist())
        assert not labelled & set(val.tolist()) and not rest & set(val.tolist()) and not labelled & rest
        assert len(labelled | rest | set(val.tolist())) == len(spec.train)
        # No epoch's batch (labelled or unlabelled rows) ever holds a validation image; nor do precise-BN batches,
        # which are the stream's own batches.
        rows = torch.cat([b.indices for e in range(3) for b in stream.epoch(e)])
        assert not set(rows.tolist()) & set(val.tolist())


def test_validation_split_depends_on_val_seed_only() -> None:
    spec = toy_spec(per_class=(12, 10, 14))

    def val(**data) -> list[int]:
        return TrainStream(spec, train_cfg(**{"val_per_class": 2, "labels_per_class": 3, **data})).val_indices.tolist()

    assert val() == val(subset_seed=11) == val(labels_per_class=5)
    run_seed = train_cfg(val_per_class=2)
    run_seed.seed = 99
    assert TrainStream(spec, run_seed).val_indices.tolist() == val()
    assert val(val_seed=1) != val()


def test_no_validation_split_leaves_the_labelled_subset_as_before() -> None:
    spec = toy_spec(per_class=(12, 10, 14))
    stream = TrainStream(spec, train_cfg(labels_per_class=3))
    assert len(stream.val_indices) == 0
    assert torch.equal(stream.labeled_indices, labeled_subset(spec.train.labels, 3, 3))


def test_validation_split_too_large_is_a_user_error() -> None:
    with pytest.raises(UserError, match="data.val_per_class=11"):
        TrainStream(toy_spec(per_class=(12, 10, 14)), train_cfg(val_per_class=11))
    with pytest.raises(UserError, match="labels_per_class=9 is out of range; valid: 1..8"):
        TrainStream(toy_spec(per_class=(12, 10, 14)), train_cfg(val_per_class=2, labels_per_class=9))


def test_crop_padding_is_4_px_at_every_size_and_configurable() -> None:
    for side in (32, 96):
        aug = build_augment(toy_spec(size=side, side=side), "default")
        assert aug.ops[-2].padding == 4, "the released code pads STL10's 96 px images by 4, not size // 8"
        params = aug.sample(500, torch.Generator().manual_seed(0))
        assert params[:, :2].min() == 0 and params[:, :2].max() == 8
    wide = build_augment(toy_spec(size=32, side=32), "default", padding=6)
    assert wide.ops[-2].padding == 6 and wide.identity_params(1)[0, :2].tolist() == [6, 6]
    stream = TrainStream(toy_spec(size=32, side=32), train_cfg(crop_padding=2))
    assert stream.augment.ops[-2].padding == 2


def test_validation_split_of_a_folder_dataset_decodes_its_own_images(colour_folder: Path) -> None:
    from sskt.data.datasets import SubsetImageSet
    from sskt.engine.evaluation import eval_splits

    cfg = train_cfg(name="imagefolder", root=str(colour_folder), image_size=16, val_per_class=3)
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg)
    val = stream.val_indices
    assert torch.bincount(spec.train.labels[val]).tolist() == [3, 3, 3, 3]
    splits = eval_splits(spec, val, batch_size=5)
    assert list(splits) == ["val", "test"]
    images, labels = zip(*splits["val"], strict=True)
    assert torch.equal(torch.cat(labels), spec.train.labels[val])
    subset = SubsetImageSet(spec.train, val)
    expected = torch.stack([spec.train[int(i)][0] for i in val]).float() / 255
    assert torch.allclose(stream.normalize.inverse(torch.cat(images)), expected, atol=1e-5)
    assert torch.equal(subset[0][0], spec.train[int(val[0])][0])

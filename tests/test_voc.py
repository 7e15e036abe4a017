"""Pascal VOC 2007 as multi-label classification, on a VOC-format tree the tests write: labels from the XML under
each difficult policy, the three metrics on hand-computed values, the replayable resized crop, a tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sskt.config import DataConfig, SourceConfig, TrainConfig
from sskt.data import build_dataset
from sskt.data.augment import FitTo, RandomResizedCrop
from sskt.data.voc import IGNORED, VOC_CLASSES, multi_hot, parse_annotation
from sskt.engine import train
from sskt.engine.evaluation import MultiLabelMetrics, example_ap, voc07_map
from sskt.losses import bce

# Each synthetic class is a coloured block; images hold one or two of them.
PALETTE = {"person": (220, 30, 30), "dog": (30, 200, 30), "car": (30, 30, 220)}


def _xml(objects: list[tuple[str, bool]]) -> str:
    body = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        for n, d in objects
    )
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def write_voc(root: Path, per_split: int = 24) -> Path:
    """``root/VOCdevkit/VOC2007`` with trainval and test images of 1-2 coloured blocks, one image with a
    difficult-only dog."""
    folder = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    names = list(PALETTE)
    for split in ("trainval", "test"):
        ids = []
        for i in range(per_split):
            image_id = f"{split[:2]}{i:04d}"
            first = names[i % 3]
            objects = [(first, False)] + ([(names[(i + 1) % 3], False)] if i % 4 == 0 else [])
            if i == 1:
                objects.append(("dog" if first != "dog" else "car", True))
            pixels = torch.randint(0, 40, (48, 48, 3), generator=gen)
            for k, (name, _) in enumerate(objects):
                pixels[4 + 20 * (k % 2) : 24 + 20 * (k % 2), 4:44] = torch.tensor(PALETTE[name])
            Image.fromarray(pixels.to(torch.uint8).numpy()).save(folder / "JPEGImages" / f"{image_id}.jpg")
            (folder / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
            ids.append(image_id)
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc"))


# --- labels --------------------------------------------------------------------------------------------------------
def test_labels_follow_the_difficult_policy(tmp_path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(_xml([("person", False), ("dog", True), ("car", True), ("car", False)]))
    objects = parse_annotation(xml)
    person, dog, car = (VOC_CLASSES.index(n) for n in ("person", "dog", "car"))
    for policy, expected_dog in (("negative", 0.0), ("ignore", IGNORED), ("positive", 1.0)):
        label = multi_hot(objects, policy)
        assert label[person] == 1 and label[car] == 1, "a class with a non-difficult object is always positive"
        assert label[dog] == expected_dog, policy
        assert label.sum() - label[person] - label[car] - label[dog] == 0


def test_a_bad_annotation_is_one_line(tmp_path) -> None:
    from sskt.errors import UserError

    bad = tmp_path / "b.xml"
    bad.write_text(_xml([("unicorn", False)]))
    with pytest.raises(UserError, match="unknown class 'unicorn'"):
        parse_annotation(bad)
    bad.write_text("<annotation>")
    with pytest.raises(UserError, match="cannot be read"):
        parse_annotation(bad)


def test_the_dataset_reads_the_tree(voc_root) -> None:
    spec = build_dataset(DataConfig(name="voc2007", root=str(voc_root), download=False, image_size=32))
    assert (spec.task, spec.num_classes, len(spec.train), len(spec.test)) == ("multi_label", 20, 24, 24)
    image, label = spec.train[0]
    assert image.shape == (3, 37, 37) and image.dtype == torch.uint8, "stored at 8/7 of the crop side"
    assert label[VOC_CLASSES.index("person")] == 1 and label[VOC_CLASSES.index("dog")] == 1  # image 0: person+dog
    assert label.sum() == 2
    ignore = build_dataset(DataConfig(name="voc2007", root=str(voc_root), download=False, voc_difficult="ignore"))
    assert (ignore.train.labels == IGNORED).sum() == 1


# --- metrics -------------------------------------------------------------------------------------------------------
def test_voc07_eleven_point_map_on_hand_computed_values() -> None:
    """Ranks: +, -, +, -: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1. Max precision at recall >= t is 1
    for the 6 thresholds t <= 0.5 and 2/3 for the 5 above: (6 + 5 * 2/3) / 11."""
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert voc07_map(scores, targets) == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_example_based_ap_on_hand_computed_values_and_the_ignored_class() -> None:
    """Image 1: positives ranked 1st and 2nd: AP 1. Image 2: its only positive ranked 3rd: AP 1/3. Image 3: class 1
    (-1) is left out, so its positive is ranked 1st: AP 1 (it would be 1/2 were the -1 a negative)."""
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3], [0.9, 0.95, 0.1]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, IGNORED, 0.0]])
    assert example_ap(scores, targets) == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert example_ap(scores[2:], torch.tensor([[1.0, 0.0, 0.0]])) == pytest.approx(0.5)


def test_the_metric_set_reports_all_three_and_ignores_minus_one() -> None:
    metrics = MultiLabelMetrics(2)
    logits = torch.tensor([[2.0, -1.0], [1.0, 3.0], [-1.0, 0.5], [0.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, IGNORED], [0.0, 0.0]])
    metrics.update(logits, labels)
    out = metrics.compute()
    assert set(out) == {"map", "map_classes_left_out", "map11", "ap_example", "loss"}
    # class 0: scores 2, 1, 0, -1 over labels 1, 0, 0, 1 -> AP (1 + 2/4) / 2 = 0.75; class 1 (row 3 left out):
    # scores 3, -1, -2 over labels 1, 0, 0 -> AP 1. Macro mean 0.875.
    assert out["map"] == pytest.approx(87.5, abs=1e-3)
    loss = bce(logits, labels)
    keep = labels >= 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[keep], labels[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# --- augmentation --------------------------------------------------------------------------------------------------
def test_resized_crop_replays_and_its_identity_is_the_centre_crop() -> None:
    op = RandomResizedCrop((37, 37), 32)
    images = torch.randint(0, 256, (6, 3, 37, 37), dtype=torch.uint8)
    params = op.sample(6, torch.Generator().manual_seed(1))
    assert params.shape == (6, 4) and (params[:, 2:] >= 1).all() and (params[:, :2] + params[:, 2:] <= 37).all()
    assert torch.equal(op(images, params), op(images, params)) and op(images, params).shape == (6, 3, 32, 32)
    assert torch.equal(op(images, op.identity(6)), FitTo(32)(images, torch.empty(6, 0, dtype=torch.long)))


# --- a tiny run ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["scratch", "sskt"])
def test_a_tiny_voc_run_end_to_end(voc_root, tmp_path, method) -> None:
    cfg = TrainConfig(seed=0, epochs=2, out=str(tmp_path / method), accelerator="cpu", progress=False)
    cfg.data = DataConfig(name="voc2007", root=str(voc_root), download=False, image_size=32, batch_size=8)
    cfg.data.augment, cfg.data.eval_batch_size, cfg.data.voc_difficult = "resized_crop", 24, "ignore"
    cfg.method.name, cfg.method.primary_loss = method, "bce"
    cfg.optim.lr, cfg.optim.schedule = 0.05, "cosine"
    if method == "sskt":
        cfg.sources = [SourceConfig(name="efficientnet_lite0.imagenet", input_size=32)]
    summary = train(cfg)
    assert {"test_map", "test_map11", "test_ap_example", "test_loss"} <= set(summary["final"])
    assert summary["headline"] == "test_map"
    assert all(0 <= summary["final"][k] <= 100 for k in ("test_map", "test_map11", "test_ap_example"))


def test_sigmoid_distillation_on_hand_computed_values() -> None:
    """One row, two classes, T = 2: the BCE of sigmoid(z / 2) against sigmoid(t / 2) per class, times T^2."""
    import math

    from sskt.losses import sigmoid_kd

    z, t = torch.tensor([[2.0, -2.0]]), torch.tensor([[0.0, 4.0]])
    p = [1 / (1 + math.exp(-v / 2)) for v in (0.0, 4.0)]
    q = [1 / (1 + math.exp(-v / 2)) for v in (2.0, -2.0)]
    bce_by_class = [-(pk * math.log(qk) + (1 - pk) * math.log(1 - qk)) for pk, qk in zip(p, q, strict=True)]
    assert sigmoid_kd(z, t, 2.0).item() == pytest.approx(4 * sum(bce_by_class) / 2, rel=1e-6)


def test_kd_and_dml_run_on_multi_label_data(voc_root, tmp_path) -> None:
    """A scratch teacher, then KD from it and DML, each a tiny VOC run with BCE and sigmoid distillation."""

    def cfg_for(method: str) -> TrainConfig:
        cfg = TrainConfig(seed=0, epochs=1, out=str(tmp_path / method), accelerator="cpu", progress=False)
        cfg.data = DataConfig(name="voc2007", root=str(voc_root), download=False, image_size=32, batch_size=8)
        cfg.data.eval_batch_size, cfg.method.name, cfg.method.primary_loss = 24, method, "bce"
        return cfg

    train(cfg_for("scratch"))
    kd = cfg_for("kd")
    kd.method.kd.teacher = f"checkpoint:{tmp_path / 'scratch'}"
    dml = cfg_for("dml")
    dml.method.dml.peers = ["resnet20"]
    for cfg in (kd, dml):
        summary = train(cfg)
        assert 0 <= summary["final"]["test_map"] <= 100
    records = (tmp_path / "kd" / "records.jsonl").read_text()
    assert '"kd_loss"' in records


def test_classes_absent_from_the_split_are_left_out_of_the_map() -> None:
    """Perfect scores on the 2 classes present of 4: mAP 100 (as the 11-point mAP), not 50, and 2 left out."""
    metrics = MultiLabelMetrics(4)
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    metrics.update(labels * 4 - 2, labels)
    out = metrics.compute()
    assert out["map"] == 100.0 and out["map11"] == 100.0 and out["map_classes_left_out"] == 2


def test_the_headline_map_follows_the_voc_protocol_beside_the_policy(tmp_path) -> None:
    """Under voc_difficult 'negative' a difficult-only class is a negative for training, but the protocol ignores
    difficult objects: test_map reads the protocol's labels, test_map_policy the policy's."""
    metrics = MultiLabelMetrics(1)
    policy = torch.tensor([[1.0], [0.0], [0.0]])  # row 1: a difficult-only object, a negative under the policy
    protocol = torch.tensor([[1.0], [IGNORED], [0.0]])
    metrics.update(torch.tensor([[0.5], [0.9], [0.1]]), torch.stack([policy, protocol], 1))
    out = metrics.compute()
    assert out["map"] == 100.0 and out["map_policy"] == 50.0
    root = write_voc(tmp_path / "data", per_split=4)
    negative = build_dataset(DataConfig(name="voc2007", root=str(root), download=False, image_size=32))
    assert negative.test.protocol_labels[1].min() == IGNORED and not (negative.test.labels < 0).any()
    assert not hasattr(negative.train, "protocol_labels"), "training reads the policy's labels only"
    ignore = build_dataset(DataConfig(name="voc2007", root=str(root), download=False, voc_difficult="ignore"))
    assert not hasattr(ignore.test, "protocol_labels"), "under 'ignore' the policy is the protocol"

"""FixMatch: the masked consistency loss, the strong view, the EMA, and real training that learns and resumes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import learned, train_killed_after_first_checkpoint
from lightning_fabric import Fabric
from safetensors.torch import load_file
from torch import nn

from sskt.config import EMAConfig, StrongViewConfig, TrainConfig
from sskt.data import build_dataset
from sskt.data.randaugment import OP_NAMES, Cutout, RandAugment, strong_augment
from sskt.data.spec import Batch
from sskt.data.stream import TrainStream
from sskt.engine import train
from sskt.errors import UserError
from sskt.methods import METHODS, MethodContext
from sskt.methods.ema import EMA, resolve_decay
from sskt.methods.fixmatch import consistency_loss
from sskt.rundir import RunDir


def _fixmatch_cfg(colour_cfg, out, method: str = "fixmatch"):
    """FixMatch on the colour folder: 8 labelled images per class, the other 16 per class unlabelled, 2 per
    labelled one; a low threshold so the pseudo-labels switch on within the short run."""
    cfg = colour_cfg(out, method)
    cfg.data.labels_per_class = 8
    cfg.data.batch_size = 8
    cfg.data.unlabeled, cfg.data.unlabeled_ratio = "rest", 2
    cfg.method.fixmatch.threshold = 0.7
    cfg.epochs = 6
    return cfg


# --- the loss ------------------------------------------------------------------------------------------------------
def test_consistency_loss_on_hand_computed_values() -> None:
    """Row 0 is confident (p = e^3 / (e^3 + 2) = 0.909 >= 0.9) with pseudo-label 0; row 1 is not (max 1/3). The loss
    is the cross-entropy of row 0's strong logits against class 0, divided by both rows."""
    weak = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    strong = torch.tensor([[0.0, 1.0, 0.0], [5.0, -5.0, 0.0]])
    loss, rate = consistency_loss(weak, strong, threshold=0.9)
    ce_row0 = -(0.0 - math.log(math.exp(0) + math.exp(1) + math.exp(0)))
    assert loss.item() == pytest.approx(ce_row0 / 2, rel=1e-6)
    assert rate.item() == pytest.approx(0.5)


def test_no_gradient_reaches_the_pseudo_label() -> None:
    weak = torch.tensor([[4.0, 0.0], [0.0, 4.0]], requires_grad=True)
    strong = torch.randn(2, 2, requires_grad=True)
    loss, _ = consistency_loss(weak, strong, threshold=0.5)
    loss.backward()
    assert weak.grad is None, "the weak view's prediction is a constant target"
    assert strong.grad.abs().sum() > 0


def test_rows_below_the_threshold_contribute_nothing() -> None:
    """Changing the strong logits of an unconfident row changes neither the loss nor any gradient."""
    weak = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.1, 0.0]])
    a = torch.randn(2, 3, requires_grad=True)
    b = a.detach().clone()
    b[1] += torch.tensor([9.0, -3.0, 4.0])
    b.requires_grad_(True)
    la, _ = consistency_loss(weak, a, 0.95)
    lb, _ = consistency_loss(weak, b, 0.95)
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    assert torch.equal(a.grad[1], torch.zeros(3)) and torch.equal(a.grad, b.grad)


# --- the EMA -------------------------------------------------------------------------------------------------------
def test_ema_update_follows_the_formula_with_its_warm_up() -> None:
    net = nn.BatchNorm1d(2)
    ema = EMA(net, decay=0.9)
    start = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema.update(net)  # t = 1: d_1 = min(0.9, 2 / 11)
    d1 = 2 / 11
    assert torch.allclose(ema.module.weight, d1 * start + (1 - d1) * 3.0)
    assert torch.equal(ema.module.running_mean, torch.full((2,), 7.0)), "buffers are copied"
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9, "after the warm-up the configured decay holds"
    before = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(-1.0)
    ema.update(net)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * -1.0)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_decay_defaults_and_bounds() -> None:
    # FixMatch's term declares its recipe's 0.999; every other method declares none (0, off).
    defaults = {name: METHODS.get(name).default_ema_decay(TrainConfig()) for name in METHODS.list()}
    assert all(d == (0.999 if "fixmatch" in name else 0.0) for name, d in defaults.items()), defaults
    assert resolve_decay(EMAConfig(decay=None), default=0.999) == 0.999
    assert resolve_decay(EMAConfig(decay=None), default=0.0) == 0.0
    assert resolve_decay(EMAConfig(decay=0.99), default=0.0) == 0.99
    with pytest.raises(UserError, match=r"ema.decay must be in \[0, 1\).*1.5"):
        resolve_decay(EMAConfig(decay=1.5), default=0.999)


def test_ema_without_warm_up_uses_the_decay_from_the_first_step_and_reports_what_ran() -> None:
    net = nn.Linear(2, 1)
    ema = EMA(net, decay=0.999, warmup=False)
    assert ema.effective_decay() == 0.0, "no update yet"
    ema.update(net)
    assert ema.effective_decay() == 0.999
    warm = EMA(net, decay=0.999)
    for _ in range(800):
        warm.update(net)
    assert warm.effective_decay() == pytest.approx(801 / 810), "FixMatch's 800 steps never reach 0.999"


# --- the strong view -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_every_randaugment_operation_runs_and_replays(channels: int) -> None:
    """Each of the 14 operations, at every sign and the top level, maps uint8 to uint8 of the same shape, and the
    same parameters give the same bytes."""
    assert len(OP_NAMES) == 14
    images = torch.randint(0, 256, (2 * len(OP_NAMES), channels, 20, 20), dtype=torch.uint8)
    ra = RandAugment(ops=1, bins=10)
    ops = torch.arange(len(OP_NAMES)).repeat(2)
    params = torch.stack([ops, torch.full_like(ops, 10), torch.arange(2 * len(OP_NAMES)) % 2], 1)
    out = ra(images, params)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, ra(images, params))
    assert torch.equal(out[0], images[0]), "operation 0 is the identity"
    changed = [not torch.equal(out[i], images[i]) for i in range(len(ops))]
    assert sum(changed) >= 20, "almost every operation changes a random image at full strength"


def test_cutout_fills_one_square_with_grey() -> None:
    images = torch.zeros(2, 1, 10, 10, dtype=torch.uint8)
    out = Cutout(4)(images, torch.tensor([[5, 5], [-1, -1]]))
    assert (out[0] == 127).sum() == 16 and out[0, 0, 3:7, 3:7].eq(127).all()
    assert out[1].eq(0).all(), "the identity parameters cut nothing"


def test_stream_adds_replayable_strong_views_only_when_asked(colour_cfg, tmp_path) -> None:
    cfg = _fixmatch_cfg(colour_cfg, tmp_path / "run")
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg.data, cfg.seed)
    plain = next(iter(stream.epoch(0)))
    assert plain.strong is None
    stream.enable_strong_views(cfg.strong_views)
    first, again = next(iter(stream.epoch(0))), next(iter(stream.epoch(0)))
    assert torch.equal(first.images, plain.images), "strong views do not shift the weak views' draws"
    assert first.strong.shape == (first.num_unlabeled, *first.images.shape[1:])
    assert torch.equal(first.strong, again.strong)
    assert not torch.equal(first.strong, first.images[first.num_labeled :])
    hw = (16, 16)
    augment = strong_augment(spec, StrongViewConfig(ops=0, cutout=0.0), in_hw=hw)
    assert [type(op).__name__ for op in augment.ops][-2:] == ["RandAugment", "Cutout"]


# --- the method ----------------------------------------------------------------------------------------------------
def test_one_forward_carries_labelled_weak_and_strong_rows(colour_cfg, tmp_path) -> None:
    cfg = _fixmatch_cfg(colour_cfg, tmp_path / "run")
    spec = build_dataset(cfg.data)
    method = METHODS.create("fixmatch", ctx=MethodContext(cfg, spec, 4))
    method.setup(Fabric(accelerator="cpu", devices=1))
    sizes = []
    method.net.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    batch = Batch(
        images=torch.randn(6, 3, 16, 16),
        labels=torch.tensor([0, 1]),
        indices=torch.arange(6),
        num_labeled=2,
        strong=torch.randn(4, 3, 16, 16),
    )
    out = method.compute_loss(batch)
    assert sizes == [10] and out.logits.shape == (2, 4)
    assert {"primary_loss", "unlabeled_loss", "mask_rate"} <= set(out.logs)
    assert out.rows == 10


def test_fixmatch_needs_unlabelled_images(colour_cfg, tmp_path) -> None:
    cfg = colour_cfg(tmp_path / "run", "fixmatch")
    with pytest.raises(UserError, match="needs unlabelled images: set data.unlabeled"):
        METHODS.get("fixmatch").check(cfg)


@pytest.fixture(scope="module")
def fixmatch_runs(colour_cfg, tmp_path_factory) -> dict:
    """A 6-epoch FixMatch run, and the same run killed after its first checkpoint and resumed."""
    root = tmp_path_factory.mktemp("fixmatch")
    full = train(_fixmatch_cfg(colour_cfg, root / "full"))
    cfg = _fixmatch_cfg(colour_cfg, root / "split")
    train_killed_after_first_checkpoint(cfg)
    resumed = train(dataclasses.replace(cfg, resume=True))
    return {"root": root, "full": full, "resumed": resumed}


def test_fixmatch_learns_a_small_task(fixmatch_runs) -> None:
    summary = fixmatch_runs["full"]
    assert learned("fixmatch final test_acc (EMA weights)", summary["final"]["test_acc"], 75)
    records = RunDir(fixmatch_runs["root"] / "full").read_records()
    assert records[-1]["mask_rate"] > 0, "confident pseudo-labels switched on"


def test_fixmatch_resumes_exactly(fixmatch_runs) -> None:
    assert fixmatch_runs["resumed"]["final"] == fixmatch_runs["full"]["final"]
    full = load_file(fixmatch_runs["root"] / "full" / "model.safetensors")
    resumed = load_file(fixmatch_runs["root"] / "split" / "model.safetensors")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_records_carry_the_cost(fixmatch_runs) -> None:
    """Cumulative training seconds rise; images_seen counts labelled, weak and strong rows: 8 labelled images per
    class x 4 classes = 32 per epoch, plus 2 x 2 x 32 unlabelled rows (weak and strong)."""
    records = RunDir(fixmatch_runs["root"] / "full").read_records()
    seconds = [r["train_seconds"] for r in records]
    assert all(b > a for a, b in zip(seconds, seconds[1:], strict=False))
    assert [r["images_seen"] for r in records] == [160 * (e + 1) for e in range(len(records))]
    assert fixmatch_runs["full"]["images_seen"] == 160 * len(records)


def test_records_carry_the_decay_the_average_ran_at(fixmatch_runs) -> None:
    """4 steps per epoch: after epoch e the last update was t = 4e, at d_t = min(0.999, (1 + t) / (10 + t))."""
    records = RunDir(fixmatch_runs["root"] / "full").read_records()
    expected = [(1 + 4 * e) / (10 + 4 * e) for e in range(1, len(records) + 1)]
    assert [r["ema_decay_effective"] for r in records] == pytest.approx(expected)
    assert fixmatch_runs["full"]["final"]["ema_decay_effective"] == pytest.approx(expected[-1])

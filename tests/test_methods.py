"""The scratch and sskt methods: the alpha schedule, the loss on labelled/unlabelled rows, cached vs online soft
labels, and real learning on a small synthetic task."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import fell, learned
from lightning_fabric import Fabric
from safetensors.torch import load_file

from sskt.config import SourceConfig, SSKTConfig
from sskt.data import build_dataset
from sskt.data.spec import Batch
from sskt.engine import train
from sskt.engine.checkpoint import load_checkpoint
from sskt.errors import UserError
from sskt.methods import METHODS, MethodContext
from sskt.methods.sskt import alpha_at, source_keys
from sskt.rundir import RunDir

SOURCE = "efficientnet_lite0.imagenet"


def test_alpha_constant_is_the_papers() -> None:
    cfg = SSKTConfig(alpha=0.7)
    assert [alpha_at(cfg, e, 10) for e in range(10)] == [0.7] * 10


def test_alpha_warmup_ramps_linearly_then_holds() -> None:
    cfg = SSKTConfig(alpha=2.0, alpha_schedule="warmup", alpha_warmup_epochs=3)
    values = [alpha_at(cfg, e, 10) for e in range(6)]
    assert values == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])


def test_alpha_cosine_decays_to_the_floor() -> None:
    cfg = SSKTConfig(alpha=1.0, alpha_schedule="cosine", alpha_floor=0.2)
    values = [alpha_at(cfg, e, 5) for e in range(5)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.2)
    assert values[2] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_alpha_schedule_names_are_checked() -> None:
    with pytest.raises(UserError, match="'step'.*constant"):
        alpha_at(SSKTConfig(alpha_schedule="step"), 0, 10)


def test_source_keys_are_unique() -> None:
    assert source_keys([SourceConfig(name="a"), SourceConfig(name="b")]) == ["a", "b"]
    assert source_keys([SourceConfig(name="a"), SourceConfig(name="a")]) == ["a#0", "a#1"]


@pytest.fixture(scope="module")
def sskt_method(colour_cfg, tmp_path_factory):
    """An SSKT method on the colour folder with one EfficientNet-Lite0 source at 32 px, set up on CPU."""
    cfg = colour_cfg(tmp_path_factory.mktemp("m") / "run", "sskt")
    spec = build_dataset(cfg.data)
    method = METHODS.create("sskt", ctx=MethodContext(cfg, spec, 6))
    method.setup(Fabric(accelerator="cpu", devices=1))
    return method


def test_sskt_reads_cached_soft_labels_instead_of_running_the_source(sskt_method, monkeypatch) -> None:
    images = torch.randn(6, 3, 16, 16)
    batch = Batch(images=images, labels=torch.tensor([0, 1, 2, 3]), indices=torch.arange(6), num_labeled=4)
    torch.manual_seed(0)
    online = sskt_method.compute_loss(batch)
    online_loss, logits, logs = online.loss, online.logits, online.logs
    assert logits.shape == (4, 4), "primary logits cover the labelled rows only"
    assert set(logs) == {"primary_loss", f"aux_{SOURCE}"}
    (aux_term,) = sskt_method.terms
    soft = aux_term.bank(images)
    monkeypatch.setattr(aux_term, "bank", lambda x: pytest.fail("the source ran although the batch had logits"))
    cached = Batch(images=images, labels=batch.labels, indices=batch.indices, num_labeled=4, soft=soft)
    torch.manual_seed(0)
    cached_loss = sskt_method.compute_loss(cached).loss
    assert cached_loss.item() == pytest.approx(online_loss.item(), rel=1e-5)


def test_unlabelled_rows_feed_only_the_auxiliary_loss(sskt_method) -> None:
    """With 4 labelled and 2 unlabelled rows: the primary loss is the cross-entropy of the labelled rows alone, the
    auxiliary loss averages over all 6, and only the auxiliary loss sends gradient to the unlabelled images."""
    torch.manual_seed(0)
    images = torch.randn(6, 3, 16, 16, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    soft = {SOURCE: torch.randn(6, 1000)}
    net = sskt_method.net
    net.eval()  # batch statistics would mix rows; eval mode makes every row's output depend on that row alone
    try:
        batch = Batch(images=images, labels=labels, indices=torch.arange(6), num_labeled=4, soft=soft)
        step = sskt_method.compute_loss(batch)
        loss, logs = step.loss, step.logs
        out = net(images)
        expected_primary = torch.nn.functional.cross_entropy(out.logits[:4], labels)
        assert logs["primary_loss"].item() == pytest.approx(expected_primary.item(), rel=1e-5)
        target = soft[SOURCE].softmax(1)
        expected_aux = -(target * out.aux_logits[SOURCE].log_softmax(1)).sum(1).mean()
        assert logs[f"aux_{SOURCE}"].item() == pytest.approx(expected_aux.item(), rel=1e-5)
        (grad_primary,) = torch.autograd.grad(expected_primary, images)
        assert grad_primary[4:].abs().max() == 0, "the primary loss must not reach unlabelled rows"
        (grad_total,) = torch.autograd.grad(loss, images)
        assert grad_total[4:].abs().max() > 0, "the auxiliary loss must reach unlabelled rows"
    finally:
        net.train()


def test_sskt_without_sources_is_a_user_error(sskt_method) -> None:
    cfg_no_sources = dataclasses.replace(sskt_method.cfg, sources=[])
    with pytest.raises(UserError, match="at least one source"):
        METHODS.create("sskt", ctx=MethodContext(cfg_no_sources, sskt_method.ctx.spec, 6))


def source_entropy_per_epoch(cfg) -> list[float]:
    """Mean entropy (nats) of the run's source over each epoch's training batches: the floor of its aux CE."""
    from sskt.data import TrainStream
    from sskt.sources import build_source

    spec = build_dataset(cfg.data)
    stream, source = TrainStream(spec, cfg), build_source(cfg.sources[0], spec.mean, spec.std)
    means = []
    for epoch in range(cfg.epochs):
        logits = torch.cat([source(b.images) for b in stream.epoch(epoch)])
        means.append(-(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean().item())
    return means


@pytest.mark.parametrize("method", ["scratch", "sskt"])
def test_method_learns_a_small_task(method: str, colour_cfg, tmp_path) -> None:
    cfg = colour_cfg(tmp_path / method, method)
    summary = train(cfg)
    records = RunDir(cfg.out).read_records()
    # SSKT's total is dominated by the 1000-class aux term, which cannot fall far; its primary term is checked below.
    ratio = records[-1]["train_loss"] / records[0]["train_loss"]
    assert fell(f"{method} train_loss last/first", ratio, 0.5 if method == "scratch" else 1.0)
    # Four classes: chance is 25 %.
    assert learned(f"{method} test_acc", summary["final"]["test_acc"], 75.0)
    weights = load_file(f"{cfg.out}/model.safetensors")
    if method == "sskt":
        assert fell("sskt primary_loss last/first", records[-1]["primary_loss"] / records[0]["primary_loss"], 0.5)
        # The soft-target CE cannot fall below the source's own entropy (~6 nats over 1000 classes): the head learns
        # the source when the reducible part, aux loss minus that entropy, shrinks.
        floor = source_entropy_per_epoch(cfg)
        gap = [records[e][f"aux_{SOURCE}"] - floor[e] for e in (0, cfg.epochs - 1)]
        assert fell("sskt aux loss above the source entropy, last/first", gap[1] / gap[0], 1.0)
    # The shipped weights are the target without its heads; the training checkpoint keeps them.
    assert not any(k.startswith("aux.") for k in weights)
    trained = load_checkpoint(RunDir(cfg.out).checkpoint)["method"]["networks"]["target"]["module"]
    assert any(k.startswith("aux.") for k in trained) == (method == "sskt")

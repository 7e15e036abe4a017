"""Precise BatchNorm: running statistics become the plain average over the given batches; modes are restored."""

from __future__ import annotations

import torch
from torch import nn

from sskt.data.spec import Batch
from sskt.engine.precise_bn import recompute_bn_stats


def _batch(images: torch.Tensor) -> Batch:
    n = images.shape[0]
    return Batch(images=images, labels=torch.zeros(n, dtype=torch.long), indices=torch.arange(n), num_labeled=n)


def test_running_stats_are_the_average_of_the_batch_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3))
    net.eval()
    batches = [_batch(torch.randn(8, 3, 4, 4) * (i + 1) + i) for i in range(3)]
    used = recompute_bn_stats([net], iter(batches + batches), max_batches=3, device="cpu")
    bn = net[0]
    assert used == 3
    # Per batch: mean over (N, H, W); unbiased variance, as BatchNorm tracks it. Equal batch sizes: a plain mean.
    means = torch.stack([b.images.mean((0, 2, 3)) for b in batches])
    variances = torch.stack([b.images.transpose(0, 1).reshape(3, -1).var(1, unbiased=True) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and not net.training


def test_weights_do_not_change_and_networks_without_batchnorm_are_skipped() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    plain = nn.Conv2d(3, 4, 3)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    net.train()
    recompute_bn_stats([net, plain], [_batch(torch.randn(4, 3, 8, 8))], max_batches=5, device="cpu")
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training

"""Test-set metrics per task type, accumulated on device and read once.

Single-label tasks report ``test_acc`` (top-1, percent) and ``test_loss`` (mean cross-entropy); multi-label tasks
report ``test_map`` (class-wise mean average precision, percent) and ``test_loss`` (mean BCE). A new task type
adds one ``TaskMetrics`` subclass and one line in ``TASK_METRICS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision

from sskt.data.spec import DatasetSpec
from sskt.errors import check_choice
from sskt.models.base import TargetOutput


class TaskMetrics(nn.Module):
    """Accumulates one network's test metrics; ``headline`` is the metric that picks the best epoch."""

    headline: str

    def update(self, logits: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class SingleLabelMetrics(TaskMetrics):
    """Top-1 accuracy (percent) and mean cross-entropy over the test set."""

    headline = "test_acc"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.acc = MulticlassAccuracy(num_classes=num_classes, average="micro", top_k=1)
        self.loss = MeanMetric()

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """logits float [B, K], labels int64 [B]."""
        self.acc.update(logits, labels)
        self.loss.update(F.cross_entropy(logits.float(), labels, reduction="none"))

    def compute(self) -> dict[str, float]:
        return {"test_acc": round(100.0 * self.acc.compute().item(), 4), "test_loss": self.loss.compute().item()}


class MultiLabelMetrics(TaskMetrics):
    """Class-wise mean average precision (percent) and mean binary cross-entropy."""

    headline = "test_map"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.ap = MultilabelAveragePrecision(num_labels=num_classes, average="macro")
        self.loss = MeanMetric()

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """logits float [B, K], labels float multi-hot [B, K]."""
        self.ap.update(logits.float(), labels.long())
        self.loss.update(F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(1))

    def compute(self) -> dict[str, float]:
        return {"test_map": round(100.0 * self.ap.compute().item(), 4), "test_loss": self.loss.compute().item()}


TASK_METRICS: dict[str, type[TaskMetrics]] = {"single_label": SingleLabelMetrics, "multi_label": MultiLabelMetrics}


def task_metrics(task: str, num_classes: int) -> TaskMetrics:
    """The metric accumulator for a dataset's task type."""
    return TASK_METRICS[check_choice("task", task, TASK_METRICS)](num_classes)


def headline_metric(task: str) -> str:
    """The metric that decides the best epoch (higher is better)."""
    return TASK_METRICS[check_choice("task", task, TASK_METRICS)].headline


class TestBatches:
    """The test split as a re-iterable sequence of ``(images, labels)`` batches (one pass per evaluated network)."""

    def __init__(self, spec: DatasetSpec, batch_size: int, device: torch.device | None = None, workers: int = 0):
        self.spec, self.batch_size, self.device, self.workers = spec, batch_size, device, workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        from sskt.data import eval_batches

        return eval_batches(self.spec.test, self.spec, self.batch_size, self.device, self.workers)


@torch.no_grad()
def evaluate_network(
    net: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], task: str, num_classes: int, device: torch.device
) -> dict[str, float]:
    """Run ``net`` in eval mode over ``(images, labels)`` batches; return its test metrics."""
    was_training = net.training
    net.eval()
    metrics = task_metrics(task, num_classes).to(device)
    for images, labels in batches:
        out = net(images.to(device, non_blocking=True))
        logits = out.logits if isinstance(out, TargetOutput) else out
        metrics.update(logits, labels.to(device, non_blocking=True))
    net.train(was_training)
    return metrics.compute()


def evaluate_networks(
    nets: dict[str, nn.Module], batches: Iterable[tuple[Tensor, Tensor]], task: str, num_classes: int, device
) -> dict[str, float]:
    """Metrics of every network, each name prefixed with its key ('' for the target, 'peer1_' for a peer).
    ``batches`` must be re-iterable (a DataLoader, a list) when there are several networks."""
    metrics: dict[str, float] = {}
    for prefix, net in nets.items():
        for name, value in evaluate_network(net, batches, task, num_classes, device).items():
            metrics[prefix + name] = value
    return metrics

"""Evaluation metrics per task type and split, accumulated on device and read once.

Single-label tasks report ``acc`` (top-1, percent) and ``loss`` (mean cross-entropy); multi-label tasks report
``map`` (class-wise mean average precision, percent) and ``loss`` (mean BCE). Each name is prefixed with the split it
was measured on: ``val_acc`` on the validation split held out of the training images (``data.val_per_class``),
``test_acc`` on the test split. The validation headline chooses the best epoch; the test split is for reporting.
A new task type adds one ``TaskMetrics`` subclass and one line in ``TASK_METRICS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import CatMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from sskt.data import eval_batches
from sskt.data.clips import average_by_video
from sskt.data.datasets import SubsetImageSet
from sskt.data.spec import DatasetSpec, ImageSet
from sskt.errors import check_choice
from sskt.models.base import TargetOutput


class TaskMetrics(nn.Module):
    """Accumulates one network's metrics on one split; ``headline`` (unprefixed) is the metric that picks the best
    epoch, measured on the validation split."""

    headline: str

    def update(self, logits: Tensor, labels: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class SingleLabelMetrics(TaskMetrics):
    """Top-1 accuracy (percent) and mean cross-entropy over a split."""

    headline = "acc"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.acc = MulticlassAccuracy(num_classes=num_classes, average="micro", top_k=1)
        self.loss = MeanMetric()

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """logits float [B, K], labels int64 [B]."""
        self.acc.update(logits, labels)
        self.loss.update(F.cross_entropy(logits.float(), labels, reduction="none"))

    def compute(self) -> dict[str, float]:
        return {"acc": round(100.0 * self.acc.compute().item(), 4), "loss": self.loss.compute().item()}


class MultiLabelMetrics(TaskMetrics):
    """Multi-label metrics (percent) from the sigmoid scores, labels -1 left out: ``map`` the class-wise mean of
    non-interpolated average precision over the classes with a positive image (the headline; ``map_classes_left_out``
    counts those without one, which would count as AP 0 and cap a perfect score), ``map11`` VOC07's 11-point
    interpolated mAP, ``ap_example`` the paper's example-based AP (per image over its classes, averaged over images
    with a positive class), and the mean binary cross-entropy.

    Labels ``[B, 2, K]`` carry the VOC protocol's labels beside the training policy's (``data.voc_difficult``
    'negative' or 'positive'): ``map`` and ``map11`` then follow the protocol, which ignores difficult objects, and
    ``map_policy`` is the class-wise mAP under the policy's labels."""

    headline = "map"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.loss = MeanMetric()
        self.scores, self.targets, self.protocol = (CatMetric(nan_strategy="disable") for _ in range(3))
        self.has_protocol = False

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """logits float [B, K], labels float multi-hot [B, K] (-1: ignored) or [B, 2, K] (policy, protocol)."""
        policy, protocol = (labels[:, 0], labels[:, 1]) if labels.dim() == 3 else (labels, labels)
        self.has_protocol |= labels.dim() == 3
        self.loss.update(masked_bce(logits, policy))
        self.scores.update(logits.float())
        self.targets.update(policy.float())
        self.protocol.update(protocol.float())

    def compute(self) -> dict[str, float]:
        scores, targets, protocol = self.scores.compute(), self.targets.compute(), self.protocol.compute()
        mean_ap, left_out = class_map(scores, protocol)
        out = {"map": round(100.0 * mean_ap, 4), "map_classes_left_out": left_out}
        if self.has_protocol:
            out["map_policy"] = round(100.0 * class_map(scores, targets)[0], 4)
        return out | {
            "map11": round(100.0 * voc07_map(scores, protocol), 4),
            "ap_example": round(100.0 * example_ap(scores, targets), 4),
            "loss": self.loss.compute().item(),
        }


def masked_bce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-row mean binary cross-entropy over the classes whose label is not -1: float [B]."""
    keep = (labels >= 0).float()
    per = F.binary_cross_entropy_with_logits(logits.float(), labels.float().clamp(min=0), reduction="none")
    return (per * keep).sum(1) / keep.sum(1).clamp(min=1)


def _average_precision(scores: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    """Precision and recall at each rank of ``scores`` (descending) for 0/1 ``positives``."""
    order = scores.argsort(descending=True, stable=True)
    hits = positives[order].float()
    tp = hits.cumsum(0)
    precision = tp / torch.arange(1, len(hits) + 1, device=hits.device)
    return precision, tp / hits.sum().clamp(min=1)


def class_map(scores: Tensor, targets: Tensor) -> tuple[float, int]:
    """``(class-wise mean of non-interpolated AP, classes left out)``: per class, the mean precision at the ranks
    of its positive images among those whose label is not -1; a class with no positive image has no AP and is left
    out of the mean (counting it as 0 would cap perfect scores on 2 of 4 present classes at 50)."""
    aps = []
    for k in range(scores.shape[1]):
        keep = targets[:, k] >= 0
        positives = targets[keep, k] > 0
        if positives.any():
            precision, _ = _average_precision(scores[keep, k], positives)
            order = scores[keep, k].argsort(descending=True, stable=True)
            aps.append((precision * positives[order].float()).sum() / positives.sum())
    return (torch.stack(aps).mean().item() if aps else 0.0), scores.shape[1] - len(aps)


def voc07_map(scores: Tensor, targets: Tensor) -> float:
    """VOC07's 11-point mAP: per class ``1/11 sum_{t in 0, 0.1, .., 1} max_{recall >= t} precision`` over the
    images whose label is not -1, averaged over classes with a positive image."""
    aps = []
    for k in range(scores.shape[1]):
        keep = targets[:, k] >= 0
        positives = targets[keep, k] > 0
        if not positives.any():
            continue
        precision, recall = _average_precision(scores[keep, k], positives)
        points = [precision[recall >= t].max() if (recall >= t).any() else precision.new_zeros(()) for t in
                  torch.linspace(0, 1, 11).tolist()]  # fmt: skip
        aps.append(torch.stack(points).mean())
    return torch.stack(aps).mean().item() if aps else 0.0


def example_ap(scores: Tensor, targets: Tensor) -> float:
    """Example-based AP (the paper's VOC "AP"): for each image, the non-interpolated average precision of its class
    scores against its labels (-1 left out), averaged over images with a positive class."""
    aps = []
    for i in range(scores.shape[0]):
        keep = targets[i] >= 0
        positives = targets[i, keep] > 0
        if not positives.any():
            continue
        precision, _ = _average_precision(scores[i, keep], positives)
        order = scores[i, keep].argsort(descending=True, stable=True)
        aps.append((precision * positives[order].float()).sum() / positives.sum())
    return torch.stack(aps).mean().item() if aps else 0.0


class VideoMetrics(SingleLabelMetrics):
    """Action recognition: clip-level accuracy and loss (``acc``, ``loss``) and the headline ``video_acc``, the
    top-1 of each video's clips' mean softmax. Labels ``[B, 2]`` are (class, video); 1-D labels make every clip
    its own video (a validation split of one clip per video).

    Video ids are kept in float64 (torchmetrics stores states in float32 by default, where ids beyond 2**24 merge),
    and a clip that is its own video is marked -1 and numbered only in ``compute``, after the ranks' clips are
    gathered, so that no two ranks (or batches) give two clips one id."""

    headline = "video_acc"

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.probs, self.classes, self.videos = (CatMetric(nan_strategy="disable") for _ in range(3))
        self.videos.set_dtype(torch.float64)

    def update(self, logits: Tensor, labels: Tensor) -> None:
        if labels.dim() == 2:
            classes, videos = labels[:, 0], labels[:, 1]
        else:  # one clip per video: numbered in compute
            classes, videos = labels, torch.full_like(labels, OWN_VIDEO)
        super().update(logits, classes)
        self.probs.update(logits.float().softmax(1))
        self.classes.update(classes.double())
        self.videos.update(videos.double())

    def compute(self) -> dict[str, float]:
        out = super().compute()
        probs, classes = self.probs.compute(), self.classes.compute().long()
        ids, inverse = torch.unique(own_videos_numbered(self.videos.compute().long()), return_inverse=True)
        scores = average_by_video(probs, inverse, len(ids))
        truth = torch.zeros(len(ids), dtype=torch.long, device=probs.device).scatter_(0, inverse, classes)
        out["video_acc"] = round(100.0 * (scores.argmax(1) == truth).float().mean().item(), 4)
        return out


OWN_VIDEO = -1
"""The video id of a clip that is a video of its own (1-D labels)."""


def own_videos_numbered(videos: Tensor) -> Tensor:
    """``videos`` with every ``OWN_VIDEO`` clip given an id of its own, above every real id."""
    own = videos == OWN_VIDEO
    first = int(videos.max().clamp(min=-1)) + 1 if len(videos) else 0
    videos = videos.clone()
    videos[own] = torch.arange(first, first + int(own.sum()), device=videos.device)
    return videos


TASK_METRICS: dict[str, type[TaskMetrics]] = {
    "single_label": SingleLabelMetrics,
    "multi_label": MultiLabelMetrics,
    "video": VideoMetrics,
}


def task_metrics(task: str, num_classes: int) -> TaskMetrics:
    """The metric accumulator for a dataset's task type."""
    return TASK_METRICS[check_choice("task", task, TASK_METRICS)](num_classes)


def headline_metric(task: str, split: str = "test") -> str:
    """The headline metric of ``task`` on ``split`` (higher is better): ``val_acc`` chooses the best epoch."""
    return f"{split}_{TASK_METRICS[check_choice('task', task, TASK_METRICS)].headline}"


class EvalBatches:
    """One split of ``spec`` as a re-iterable sequence of unaugmented ``(images, labels)`` batches (one pass per
    evaluated network)."""

    def __init__(
        self,
        spec: DatasetSpec,
        split: ImageSet,
        batch_size: int,
        device: torch.device | None = None,
        workers: int = 0,
    ) -> None:
        self.spec, self.split, self.batch_size, self.device, self.workers = spec, split, batch_size, device, workers

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return eval_batches(self.split, self.spec, self.batch_size, self.device, self.workers)


class TestBatches(EvalBatches):
    """The test split of ``spec``."""

    def __init__(self, spec: DatasetSpec, batch_size: int, device: torch.device | None = None, workers: int = 0):
        super().__init__(spec, spec.test, batch_size, device, workers)


def eval_splits(
    spec: DatasetSpec,
    val_indices: Tensor,
    batch_size: int,
    device: torch.device | None = None,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> dict[str, EvalBatches]:
    """The splits every evaluation measures, by metric prefix: 'val' (the training images at ``val_indices``, when
    there are any) and 'test'. Under data parallelism each rank measures rows ``[rank::world]`` of each split;
    the metrics (torchmetrics) reduce over the ranks when they are computed."""
    splits: dict[str, EvalBatches] = {}
    if len(val_indices):
        val = val_indices[rank::world]
        splits["val"] = EvalBatches(spec, SubsetImageSet(spec.train, val), batch_size, device, workers)
    if world == 1:
        splits["test"] = TestBatches(spec, batch_size, device, workers)
    else:
        test = SubsetImageSet(spec.test, torch.arange(len(spec.test))[rank::world])
        splits["test"] = EvalBatches(spec, test, batch_size, device, workers)
    return splits


@torch.no_grad()
def evaluate_network(
    net: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    task: str,
    num_classes: int,
    device: torch.device,
    split: str = "test",
) -> dict[str, float]:
    """Run ``net`` in eval mode over ``(images, labels)`` batches; return its metrics, prefixed ``<split>_``."""
    was_training = net.training
    net.eval()
    metrics = task_metrics(task, num_classes).to(device)
    for images, labels in batches:
        out = net(images.to(device, non_blocking=True))
        logits = out.logits if isinstance(out, TargetOutput) else out
        metrics.update(logits, labels.to(device, non_blocking=True))
    net.train(was_training)
    return {f"{split}_{name}": value for name, value in metrics.compute().items()}


def evaluate_networks(
    nets: dict[str, nn.Module],
    batches: Iterable[tuple[Tensor, Tensor]],
    task: str,
    num_classes: int,
    device,
    split: str = "test",
) -> dict[str, float]:
    """Metrics of every network on one split, each name prefixed with its key ('' for the target, 'peer1_' for a
    peer) and the split ('peer1_test_acc'). ``batches`` must be re-iterable (a DataLoader, a list) when there are
    several networks."""
    metrics: dict[str, float] = {}
    for prefix, net in nets.items():
        for name, value in evaluate_network(net, batches, task, num_classes, device, split).items():
            metrics[prefix + name] = value
    return metrics


def evaluate_splits(
    nets: dict[str, nn.Module], splits: dict[str, Iterable[tuple[Tensor, Tensor]]], task: str, num_classes: int, device
) -> dict[str, float]:
    """``evaluate_networks`` on every split of ``splits`` (prefix -> batches), validation first."""
    metrics: dict[str, float] = {}
    for split, batches in splits.items():
        metrics.update(evaluate_networks(nets, batches, task, num_classes, device, split))
    return metrics


def calibration_data(spec: DatasetSpec, splits: dict[str, EvalBatches], labeled: Tensor, batch_size: int,
                     device: torch.device | None = None, workers: int = 0) -> dict[str, EvalBatches]:  # fmt: skip
    """What ``Method.calibrate`` may read before an evaluation, un-augmented: the labelled training images
    ('labeled') and the validation split ('val', when there is one). Nothing is read until a method iterates."""
    out = {"labeled": EvalBatches(spec, SubsetImageSet(spec.train, labeled), batch_size, device, workers)}
    return out | ({"val": splits["val"]} if "val" in splits else {})

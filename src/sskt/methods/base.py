"""The contract between a method and the training loop. The loop never branches on a method's name.

A method owns its networks, optimizers and schedulers. The engine builds it with a ``MethodContext``, calls
``setup(fabric)`` once, then per epoch ``start_epoch``, for each of its ``phases()`` (usually one) ``start_phase``
and ``training_step`` for every batch (the method does its own backward and optimizer steps, so DML and MAXL can
alternate several), and ``end_epoch``. Evaluation runs every
network in ``evaluated()``; checkpoints hold ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sskt.config import TrainConfig
from sskt.data.spec import Batch, DatasetSpec
from sskt.errors import UserError
from sskt.losses import primary_loss
from sskt.optim import build_scheduler, build_sgd

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class StepOutput:
    """What one training step reports: the (detached) loss, the primary logits of the labelled rows, and extra
    scalars to log (each a 0-d tensor, kept on device so the step never syncs with the host)."""

    loss: Tensor | None
    """None in a phase that trains no network on the labels (MAXL's meta pass)."""
    logits: Tensor | None
    logs: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    """Everything a method needs to build itself."""

    cfg: TrainConfig
    spec: DatasetSpec
    steps_per_epoch: int


def single_label_primary(method: str, name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The label loss ``method.primary_loss`` names, for a method of single-label data: 'ce' or 'focal'; 'bce'
    (multi-label) is a one-line UserError naming the valid choices."""
    valid = ("ce", "focal")
    if name not in valid:
        raise UserError(f"method {method!r} takes method.primary_loss 'ce' or 'focal' (single-label); got {name!r}")
    return primary_loss(name)


class Method:
    """Base class of every training method."""

    def __init__(self, ctx: MethodContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.epoch = 0
        self.fabric: Fabric | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    def setup(self, fabric: Fabric) -> None:
        """Move networks to the device and wrap them and their optimizers with Fabric."""
        self.fabric = fabric

    def start_epoch(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (0-based)."""
        self.epoch = epoch
        for net in self.trained().values():
            net.train()

    def phases(self) -> tuple[str, ...]:
        """The passes over the epoch's batches, in order; the engine replays the same batches for each and calls
        ``start_phase`` before it. One pass ('train') unless the method needs more (MAXL's released schedule)."""
        return ("train",)

    def start_phase(self, phase: str) -> None:
        """Called before each pass of ``phases()``."""

    def training_step(self, batch: Batch) -> StepOutput:
        """Forward, backward and optimizer step(s) on one batch."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> None:
        """Called after the last step of ``epoch``: step the learning-rate schedules."""

    # --- what the engine reads -------------------------------------------------------------------------------
    def trained(self) -> dict[str, nn.Module]:
        """The networks this method trains, by name; the first is the target (the run's headline)."""
        raise NotImplementedError

    def evaluated(self) -> dict[str, nn.Module]:
        """Networks to evaluate, by metric prefix ('' for the target, e.g. 'peer1_' for a DML peer). Each maps an
        image batch to a ``TargetOutput`` or to logits."""
        nets = list(self.trained().values())
        return {"": nets[0]}

    def lr(self) -> float:
        """The target's current learning rate (for records)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to resume: network weights, optimizer and scheduler states (tensors, numbers, dicts)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


class SingleNetMethod(Method):
    """A method that trains one network with one SGD optimizer: subclasses build ``self.net`` in ``__init__`` and
    implement ``compute_loss``. Scratch, SSKT and KD are of this kind."""

    net: nn.Module

    def setup(self, fabric: Fabric) -> None:
        super().setup(fabric)
        opt = build_sgd(self.net.parameters(), self.cfg.optim)
        if self.cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.net, self.opt = fabric.setup(self.net, opt)
        self.sched = build_scheduler(self.opt, self.cfg.optim, self.cfg.epochs)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Return ``(loss, primary logits of the labelled rows, logs)`` for one batch."""
        raise NotImplementedError

    def training_step(self, batch: Batch) -> StepOutput:
        loss, logits, logs = self.compute_loss(batch)
        self.opt.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        self.opt.step()
        return StepOutput(loss.detach(), logits.detach(), {k: v.detach() for k, v in logs.items()})

    def end_epoch(self, epoch: int) -> None:
        self.sched.step()

    def trained(self) -> dict[str, nn.Module]:
        return {"target": self.net}

    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])

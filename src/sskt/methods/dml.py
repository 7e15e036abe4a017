"""DML: Deep Mutual Learning (Zhang, Xiang, Hospedales, Lu, CVPR 2018).

K peers (the target, then ``method.dml.peers``) train together from scratch, each with its own SGD optimizer and
schedule. Peer k minimises ``CE(p_k, y) + 1/(K-1) sum_{l != k} KL(p_l || p_k)`` with the other peers' outputs
detached. Updates alternate within a batch (the paper's Algorithm 1): update peer 1, recompute its output, update
peer 2 against it, and so on.

Only the peers already updated in this batch need recomputing: a peer's output from the batch's first forward stays
valid until that peer steps. The recomputation runs on copies of the peer's buffers, so each peer's BatchNorm running
statistics advance once per batch, as in scratch training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sskt.config import HeadConfig, ModelConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError, check_range
from sskt.losses.mutual import dml_loss
from sskt.methods.base import METHODS, Method, MethodContext, StepOutput, label_loss
from sskt.models import MODELS, build_target
from sskt.models.base import TargetOutput


def _logits(out: TargetOutput | Tensor) -> Tensor:
    return out.logits if isinstance(out, TargetOutput) else out


@torch.no_grad()
def forward_keep_stats(net: nn.Module, images: Tensor) -> Tensor:
    """Logits [B, C] of ``net`` in its current mode, without writing BatchNorm running statistics."""
    params = dict(net.named_parameters())
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    return _logits(functional_call(net, (params, buffers), (images,)))


@METHODS.register("dml")
class DML(Method):
    """Deep mutual learning between the target and ``method.dml.peers``; every peer's accuracy is recorded."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """Every peer names a registered model; the temperature divides the logits."""
        check_range("method.dml.temperature", cfg.method.dml.temperature, 0, open_low=True)
        for peer in cfg.method.dml.peers:
            MODELS.require(peer, "model (method.dml.peers)")

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.multi_label = ctx.spec.task == "multi_label"
        if not self.cfg.method.dml.peers:
            raise UserError("method.dml.peers is empty; DML needs at least one peer besides the target (e.g. resnet56)")
        self.primary = label_loss("dml", self.cfg.method.primary_loss, ctx.spec.task)
        classes = ctx.spec.num_classes
        self.names = ["target"] + [f"peer{i}" for i in range(1, len(self.cfg.method.dml.peers) + 1)]
        self.declare("target", lambda: build_target(self.cfg.model, classes, {}, self.cfg.head))
        for name, arch in zip(self.names[1:], self.cfg.method.dml.peers, strict=True):
            peer = ModelConfig(name=arch, pretrained=self.cfg.model.pretrained)
            self.declare(name, lambda peer=peer: build_target(peer, classes, {}, HeadConfig()))

    @property
    def nets(self) -> list[nn.Module]:
        """Every peer as training uses it (Fabric-wrapped after setup), the target first."""
        return [self.net_of(name) for name in self.names]

    @property
    def raw_nets(self) -> list[nn.Module]:
        """The raw modules, for recomputing a prediction without DDP or statistics updates."""
        return [self.networks[name].raw for name in self.names]

    @property
    def opts(self) -> list[torch.optim.Optimizer]:
        return [self.networks[name].opt for name in self.names]

    def update(self, batch: Batch) -> StepOutput:
        """Update every peer once on the labelled rows, in order; report the target's loss and logits."""
        images, labels = batch.labeled_images, batch.labels
        # Every peer's output before any update; each stays current until its own peer steps.
        outputs = [_logits(net(images)) for net in self.nets]
        first_logits = outputs[0].detach()
        losses = []
        for k, opt in enumerate(self.opts):
            others = [out.detach() for j, out in enumerate(outputs) if j != k]
            loss = dml_loss(outputs[k], labels, others, self.cfg.method.dml.temperature, self.primary, self.multi_label)
            opt.zero_grad(set_to_none=True)
            self.fabric.backward(loss)
            opt.step()
            losses.append(loss.detach())
            if self.cfg.method.dml.alternate and k < len(self.nets) - 1:  # next peers see this peer's update
                outputs[k] = forward_keep_stats(self.raw_nets[k], images)
        logs = {f"{name}_loss": loss for name, loss in zip(self.names[1:], losses[1:], strict=True)}
        return StepOutput(losses[0], first_logits, logs)

    def evaluated(self) -> dict[str, nn.Module]:
        """The target (its weight average with ``ema``) under '', each peer under ``peer<k>_``."""
        peers = {f"{name}_": net for name, net in zip(self.names[1:], self.nets[1:], strict=True)}
        return {"": self.evaluated_target(), **peers}

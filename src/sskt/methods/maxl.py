"""MAXL: Meta Auxiliary Learning (Liu, Davison, Johns, "Self-Supervised Generalisation with Meta Auxiliary
Learning", NeurIPS 2019).

A multi-task network ``f`` (the target with a primary head and a linear auxiliary head of ``psi * C`` classes) learns
its primary task plus an auxiliary task whose labels come from a label generator ``g(x, y)``: an architecture whose
``psi * C`` logits go through a softmax masked to the ``psi`` slots of the true class. ``f`` minimises
``focal(f_pri(x), y) + focal(f_aux(x), g(x, y))``. ``g`` is meta-learned: after one virtual SGD step of ``f``,
``theta+ = theta - inner_lr * grad_theta(L_pri + L_aux)``, the primary loss ``L_pri(theta+)`` should be low;
``g`` descends ``L_pri(theta+) + entropy_weight * sum_k pbar_k log pbar_k`` (second order through ``theta+``).

Schedule: the released code runs each epoch twice over the data, first updating ``f`` on every batch, then
meta-updating ``g`` on every batch; ``maxl.two_pass`` does that (the engine replays the epoch's batches for the
second pass). By default both phases run interleaved on each batch instead (update ``f``, then meta-update ``g`` on
the same images): each network still gets exactly one update per batch per epoch, the data are read once instead of
twice, and the meta step differentiates through the ``theta`` that ``f`` actually has now rather than one that is
up to an epoch stale.

The released code also floors the class mask at 1e-8 (``maxl.mask_floor``; default 0, an exact mask) and passes
the current, scheduled learning rate as the inner one (``maxl.inner_lr_follows_schedule``). The primary loss is
``method.primary_loss`` ('focal' in the paper and in the presets, 'ce' allowed); the auxiliary one is always focal.

The virtual step runs through ``torch.func.functional_call`` with copies of ``f``'s buffers, so BatchNorm uses batch
statistics there and ``f``'s running statistics are left exactly as the real update left them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from sskt.config import HeadConfig, ModelConfig, TrainConfig
from sskt.data.spec import Batch
from sskt.errors import UserError, check_range
from sskt.losses.maxl import focal_to_probs, label_entropy_penalty, masked_softmax
from sskt.methods.base import METHODS, Method, MethodContext, StepOutput, single_label_primary
from sskt.models import MODELS, build_target
from sskt.models.base import TargetOutput

AUX_HEAD = "maxl"
"""Name of the multi-task network's auxiliary head."""

FD_SCALE = 0.01
"""Finite-difference step is ``FD_SCALE / ||v||`` in parameter space (DARTS, Liu et al. 2019, section 2.3)."""

Params = dict[str, Tensor]


def _logits(out: TargetOutput | Tensor) -> Tensor:
    return out.logits if isinstance(out, TargetOutput) else out


PrimaryLoss = Callable[[Tensor, Tensor], Tensor]


def generate_labels(generator: nn.Module, images: Tensor, labels: Tensor, psi: int, floor: float = 0.0) -> Tensor:
    """``g(x, y)``: masked-softmax auxiliary labels [B, C * psi] for images [B, ...] and int64 labels [B]; ``floor``
    is the mask value outside the true class's slots."""
    return masked_softmax(_logits(generator(images)), labels, psi, floor)


def multitask_loss(
    out: TargetOutput, labels: Tensor, gen_labels: Tensor, primary: PrimaryLoss = focal_to_probs
) -> Tensor:
    """``L_pri + L_aux``: the primary loss (focal, gamma 2, by default) of the primary head on ``labels`` and the
    focal loss of the auxiliary head on the generated labels [B, C * psi]."""
    return primary(out.logits, labels) + focal_to_probs(out.aux_logits[AUX_HEAD], gen_labels)


def _call(net: nn.Module, params: Params, images: Tensor) -> TargetOutput:
    """Forward ``net`` with ``params``, on copies of its buffers: BatchNorm (in train mode) normalises with batch
    statistics and writes its running statistics into the copies, never into ``net``."""
    buffers = {name: b.clone() for name, b in net.named_buffers()}
    return functional_call(net, (params, buffers), (images,))


def _grad(loss: Tensor, inputs: list[Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(loss, inputs, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]


def virtual_step(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    gen_labels: Tensor,
    inner_lr: float,
    create_graph: bool,
    primary: PrimaryLoss = focal_to_probs,
) -> Params:
    """``theta+ = theta - inner_lr * grad_theta(L_pri + L_aux)``; with ``create_graph`` it stays differentiable in
    ``theta`` and in ``gen_labels`` (and so in the generator)."""
    params = dict(net.named_parameters())
    loss = multitask_loss(_call(net, params, images), labels, gen_labels, primary)
    grads = _grad(loss, list(params.values()), create_graph)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def meta_gradient(
    net: nn.Module,
    generator: nn.Module,
    images: Tensor,
    labels: Tensor,
    psi: int,
    inner_lr: float,
    entropy_weight: float,
    second_order: bool = True,
    primary: PrimaryLoss = focal_to_probs,
    floor: float = 0.0,
) -> tuple[list[Tensor], Tensor]:
    """Gradient of ``L_pri(theta+) + entropy_weight * sum_k pbar_k log pbar_k`` with respect to the generator's
    parameters (in ``generator.parameters()`` order), and that meta loss (detached).

    ``second_order`` differentiates exactly through the virtual step (``create_graph``); otherwise the mixed second
    derivative is replaced by the DARTS finite difference
    ``-inner_lr * (grad_phi L(theta + eps v) - grad_phi L(theta - eps v)) / (2 eps)``, ``v = grad L_pri(theta+)``.
    """
    gen_params = list(generator.parameters())
    gen_labels = generate_labels(generator, images, labels, psi, floor)
    penalty = entropy_weight * label_entropy_penalty(gen_labels)
    if second_order:
        fast = virtual_step(net, images, labels, gen_labels, inner_lr, create_graph=True, primary=primary)
        meta = primary(_call(net, fast, images).logits, labels)
        return _grad(meta + penalty, gen_params), (meta + penalty).detach()
    fast = virtual_step(net, images, labels, gen_labels.detach(), inner_lr, create_graph=False, primary=primary)
    fast = {name: p.detach().requires_grad_() for name, p in fast.items()}
    meta = primary(_call(net, fast, images).logits, labels)
    v = _grad(meta, list(fast.values()))
    eps = FD_SCALE / torch.sqrt(sum((g * g).sum() for g in v)).clamp_min(1e-12)
    theta = {name: p.detach() for name, p in net.named_parameters()}
    plus = {name: p + eps * g for (name, p), g in zip(theta.items(), v, strict=True)}
    minus = {name: p - eps * g for (name, p), g in zip(theta.items(), v, strict=True)}
    diff = multitask_loss(_call(net, plus, images), labels, gen_labels, primary)
    diff = diff - multitask_loss(_call(net, minus, images), labels, gen_labels, primary)
    return _grad(-inner_lr * diff / (2 * eps) + penalty, gen_params), (meta + penalty).detach()


@METHODS.register("maxl")
class MAXL(Method):
    """Meta auxiliary learning: the target with a generated-label auxiliary head, and a meta-learned generator."""

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """The generator, when given, names a registered model; the exact second-order step runs in one process;
        rates, weights and the mask floor inside their ranges."""
        m = cfg.method.maxl
        check_range("method.maxl.psi", m.psi, 1)
        check_range("method.maxl.generator_lr", m.generator_lr, 0, open_low=True)
        check_range("method.maxl.inner_lr", m.inner_lr, 0)
        check_range("method.maxl.generator_weight_decay", m.generator_weight_decay, 0)
        check_range("method.maxl.entropy_weight", m.entropy_weight, 0)
        check_range("method.maxl.mask_floor", m.mask_floor, 0, 1, open_high=True)
        if cfg.method.maxl.generator is not None:
            MODELS.require(cfg.method.maxl.generator, "model (method.maxl.generator)")
        world = max(cfg.devices * cfg.num_nodes, int(os.environ.get("WORLD_SIZE", "1")))
        if cfg.method.maxl.second_order and world > 1:
            raise UserError(
                f"method.maxl.second_order differentiates through each process's own virtual step, which no "
                f"gradient sync makes the global batch's; with {world} processes set method.maxl.second_order "
                "false (the first-order estimate, averaged over processes) or train in one process"
            )

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        if ctx.spec.task not in ("single_label", "video"):
            raise UserError(f"method 'maxl' needs a single-label dataset; {ctx.spec.name!r} is {ctx.spec.task!r}")
        self.mcfg = self.cfg.method.maxl
        if self.mcfg.psi < 1:
            raise UserError(f"method.maxl.psi must be >= 1, got {self.mcfg.psi}")
        if not 0 <= self.mcfg.mask_floor < 1:
            raise UserError(f"method.maxl.mask_floor must be in [0, 1), got {self.mcfg.mask_floor}")
        name = self.cfg.method.primary_loss
        single_label_primary("maxl", name)  # 'ce' or 'focal'; 'bce' is refused
        self.primary: PrimaryLoss = focal_to_probs if name == "focal" else F.cross_entropy
        self.phase = "both"
        classes = ctx.spec.num_classes
        width = self.mcfg.psi * classes
        self.aux_classes = {AUX_HEAD: width}  # recorded with the weights, so `sskt evaluate` rebuilds the same net
        # The multi-task net first (its backbone starts as scratch's does with the same seed; paper head: linear).
        self.declare("target", lambda: build_target(self.cfg.model, classes, self.aux_classes, self.cfg.head))
        gen_model = ModelConfig(name=self.mcfg.generator or self.cfg.model.name, pretrained=self.cfg.model.pretrained)
        # The paper's generator: plain SGD, its own lr and weight decay, on the run's schedule (halved every 50 epochs).
        gen_optim = dataclasses.replace(
            self.cfg.optim, lr=self.mcfg.generator_lr, momentum=0.0, weight_decay=self.mcfg.generator_weight_decay
        )
        self.declare("generator", lambda: build_target(gen_model, width, {}, HeadConfig()), gen_optim)

    # The meta step calls the raw modules functionally (Fabric moved them to the device in place).
    net = property(lambda self: self.net_of("target"), doc="The multi-task net as training uses it.")
    gen = property(lambda self: self.net_of("generator"), doc="The label generator as training uses it.")
    net_module = property(lambda self: self.networks["target"].raw, doc="The raw multi-task net.")
    gen_module = property(lambda self: self.networks["generator"].raw, doc="The raw label generator.")
    opt = property(lambda self: self.networks["target"].opt)
    gen_opt = property(lambda self: self.networks["generator"].opt)

    def phases(self) -> tuple[str, ...]:
        """'both' (interleaved, one pass), or the released code's 'multitask' pass then 'meta' pass."""
        return ("multitask", "meta") if self.mcfg.two_pass else ("both",)

    def start_phase(self, phase: str) -> None:
        self.phase = phase

    def update(self, batch: Batch) -> StepOutput:
        """The multi-task update, the generator's meta update, or both in turn, as the current phase says."""
        images, labels = batch.labeled_images, batch.labels
        if self.phase == "meta":  # the released code's second pass: the generator only
            return StepOutput(None, None, {"meta_loss": self.meta_step(images, labels)})
        # The multi-task network learns both tasks against the current generator's labels.
        with torch.no_grad():
            gen_labels = generate_labels(self.gen, images, labels, self.mcfg.psi, self.mcfg.mask_floor)
        out = self.net(images)
        loss = multitask_loss(out, labels, gen_labels, self.primary)
        self.opt.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        self.opt.step()
        if self.phase == "multitask":
            return StepOutput(loss.detach(), out.logits.detach())
        # Interleaved: the generator's meta step on the same batch.
        meta = self.meta_step(images, labels)
        return StepOutput(loss.detach(), out.logits.detach(), {"meta_loss": meta})

    def inner_lr(self) -> float:
        """The virtual step's learning rate: ``inner_lr``, scaled by the schedule when it follows it."""
        if not self.mcfg.inner_lr_follows_schedule:
            return self.mcfg.inner_lr
        return self.mcfg.inner_lr * self.opt.param_groups[0]["lr"] / self.cfg.optim.lr

    def meta_step(self, images: Tensor, labels: Tensor) -> Tensor:
        """One meta-update of the generator on a labelled batch; returns the meta loss (detached)."""
        with self.fabric.autocast():
            grads, meta = meta_gradient(
                self.net_module,
                self.gen_module,
                images,
                labels,
                self.mcfg.psi,
                self.inner_lr(),
                self.mcfg.entropy_weight,
                self.mcfg.second_order,
                self.primary,
                self.mcfg.mask_floor,
            )
        self.gen_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.gen_module.parameters(), grads, strict=True):
            # autograd.grad bypasses DDP's gradient hooks, so average over processes here.
            p.grad = self.fabric.all_reduce(g, reduce_op="mean") if self.fabric.world_size > 1 else g
        self.gen_opt.step()
        return meta

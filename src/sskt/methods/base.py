"""The contract between a method and the training loop. The loop never branches on a method's name.

A method declares the networks it trains in ``__init__`` (``self.declare(name, build, optim)``, the target first)
and, as class methods, what the engine must give it: the frozen networks it reads (``frozen_networks``: the engine
builds each once, routes it through the soft-label cache, and hands it over as ``ctx.frozen``), whether the stream
adds strong views (``wants_strong_views``), its default EMA decay and the temperatures at which it reads cached
logits. The base class seeds the trained networks' construction, sets them up on the fabric (channels-last,
``fabric.setup``, one SGD optimizer and schedule each), steps their schedules, reports the target's learning rate,
keeps the average of the target's weights (``ema:``, an add-on of every method), and saves and restores all of it.

The engine builds a method with a ``MethodContext``, calls ``setup(fabric)`` once, then per epoch ``start_epoch``,
for each of its ``phases()`` (usually one) ``start_phase`` and ``training_step`` for every batch (``update``: the
method does its own backward and optimizer steps, so DML and MAXL can alternate several; then ``after_step``), and
``end_epoch``. Evaluation runs every network in ``evaluated()`` (the target's average in place of the target when
there is one); checkpoints hold ``state_dict()``; ``aux_classes`` (source name to class count) is stored with the
target's weights so ``evaluate`` rebuilds the same target without the sources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from sskt.config import OptimConfig, SourceConfig, TrainConfig
from sskt.data.spec import Batch, DatasetSpec
from sskt.errors import UserError
from sskt.losses import primary_loss
from sskt.methods.ema import EMA, resolve_decay
from sskt.optim import build_scheduler, build_sgd
from sskt.registry import Registry
from sskt.sources.base import Source, build_sources

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class StepOutput:
    """What one training step reports: the (detached) loss, the primary logits of the labelled rows, and extra
    scalars to log (each a 0-d tensor, kept on device so the step never syncs with the host). ``compute_loss``
    returns one with the loss still attached to its graph."""

    loss: Tensor | None
    """None in a phase that trains no network on the labels (MAXL's meta pass)."""
    logits: Tensor | None
    logs: dict[str, Tensor] = field(default_factory=dict)
    rows: int | None = None
    """Rows the target processed in this step (labelled, unlabelled, strong views); None: the batch's rows."""


@dataclass
class MethodContext:
    """Everything a method needs to build itself."""

    cfg: TrainConfig
    spec: DatasetSpec
    steps_per_epoch: int
    frozen: dict[str, Source] = field(default_factory=dict)
    """The frozen networks the method declared (``frozen_networks``) by key, built once by the engine and shared
    with the soft-label cache; the base class builds any that are missing (a method made without the engine)."""


def single_label_primary(method: str, name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The label loss ``method.primary_loss`` names, for a method of single-label data: 'ce' or 'focal'; 'bce'
    (multi-label) is a one-line UserError naming the valid choices."""
    valid = ("ce", "focal")
    if name not in valid:
        raise UserError(f"method {method!r} takes method.primary_loss 'ce' or 'focal' (single-label); got {name!r}")
    return primary_loss(name)


def label_loss(method: str, name: str, task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The label loss of a distilling method for the dataset's task: 'ce'/'focal' on single-label data, 'bce' on
    multi-label data; the wrong pairing is a one-line UserError."""
    if task == "multi_label":
        if name != "bce":
            raise UserError(f"method {method!r} on multi-label data takes method.primary_loss 'bce'; got {name!r}")
        return primary_loss(name)
    return single_label_primary(method, name)


@dataclass
class Network:
    """A network a method trains: the module as built (``raw``: for functional calls and statistics-free
    forwards), the module Fabric wrapped (``module``: for training steps), its optimizer and its schedule."""

    name: str
    raw: nn.Module
    optim: OptimConfig
    module: nn.Module | None = None
    opt: torch.optim.Optimizer | None = None
    sched: torch.optim.lr_scheduler.LRScheduler | None = None


class Method:
    """Base class of every training method."""

    aux_classes: dict[str, int]
    """Class count of each auxiliary head of the target, by source name ({} without auxiliary heads)."""

    def __init__(self, ctx: MethodContext) -> None:
        cls = type(self)
        cls.check(ctx.cfg)  # also when built without check_config (the Python API, tests)
        cls.check_data(ctx.cfg, ctx.spec)  # before any frozen network is built
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.epoch = 0
        self.fabric: Fabric | None = None
        self.networks: dict[str, Network] = {}
        self.aux_classes = {}
        missing = {k: s for k, s in cls.frozen_networks(ctx.cfg).items() if k not in ctx.frozen}
        ctx.frozen.update(build_sources(missing, ctx.spec.mean, ctx.spec.std))
        self.ema_decay = resolve_decay(ctx.cfg.ema, cls.default_ema_decay(ctx.cfg))
        self.ema: EMA | None = None

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """Raise a one-line UserError for a setting this method reads that cannot work, before any work starts
        (the registry runs it from ``check_config``); the base checks nothing."""

    @classmethod
    def check_data(cls, cfg: TrainConfig, spec: DatasetSpec) -> None:
        """A one-line UserError for a setting that cannot work on this dataset (its task), raised once the dataset
        is known and before any network is built; the base checks nothing."""

    # --- what the method asks of the engine (class methods: known before anything is built) --------------------
    @classmethod
    def frozen_networks(cls, cfg: TrainConfig) -> dict[str, SourceConfig]:
        """The frozen networks (sources, teachers) the method reads, by key: the engine builds each once, serves
        its logits from the soft-label cache when ``cache.enabled``, and passes it in ``MethodContext.frozen``."""
        return {}

    @classmethod
    def wants_strong_views(cls, cfg: TrainConfig) -> bool:
        """Whether the stream must add a strong view of every unlabelled row (``Batch.strong``)."""
        return False

    @classmethod
    def default_ema_decay(cls, cfg: TrainConfig) -> float:
        """The EMA decay used when ``ema.decay`` is None: 0 (no average) unless the method's recipe has one."""
        return 0.0

    @classmethod
    def cache_temperatures(cls, cfg: TrainConfig) -> dict[str, float]:
        """The temperature at which each setting reads cached logits, by its config field: a top-k cache is exact
        only at 1 (``check_cache_config``)."""
        return {}

    # --- the networks a method trains --------------------------------------------------------------------------
    def declare(self, name: str, build: Callable[[], nn.Module], optim: OptimConfig | None = None) -> nn.Module:
        """Build and register a trained network (``optim``: its SGD settings, default ``cfg.optim``). The first
        declared is the target; the global RNG is seeded with ``cfg.seed`` right before it is built, so it starts
        from the same weights under every method with that seed, and later networks follow in declaration order."""
        target = not self.networks
        if target:
            torch.manual_seed(self.cfg.seed)
        module = build()
        self.networks[name] = Network(name, module, optim or self.cfg.optim)
        if target and self.ema_decay:  # the average starts from the target's initial weights
            self.ema = EMA(module, self.ema_decay, self.cfg.ema.warmup)
        return module

    def net_of(self, name: str) -> nn.Module:
        """The network ``name`` as training uses it (Fabric-wrapped after ``setup``)."""
        network = self.networks[name]
        return network.raw if network.module is None else network.module

    # --- lifecycle -------------------------------------------------------------------------------------------
    def setup(self, fabric: Fabric) -> None:
        """Every declared network: channels-last when asked, one SGD optimizer, ``fabric.setup``, its schedule."""
        self.fabric = fabric
        for network in self.networks.values():
            if self.cfg.sync_batchnorm and fabric.world_size > 1:
                network.raw = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network.raw)
            if self.cfg.channels_last:
                network.raw = network.raw.to(memory_format=torch.channels_last)
            opt = build_sgd([p for p in network.raw.parameters() if p.requires_grad], network.optim)
            network.module, network.opt = fabric.setup(network.raw, opt)
            network.sched = build_scheduler(network.opt, network.optim, self.cfg.epochs)
        if self.ema is not None:
            self.ema.to(fabric.device, self.cfg.channels_last)

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
        """One step: ``update``, then ``after_step`` when the step trained the target on the labels."""
        out = self.update(batch)
        if out.loss is not None:
            self.after_step()
        return out

    def update(self, batch: Batch) -> StepOutput:
        """Forward, backward and optimizer step(s) on one batch."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After the target's optimizer step: move the average of its weights (when there is one)."""
        if self.ema is not None:
            self.ema.update(self.networks["target"].raw)

    def end_epoch(self, epoch: int) -> None:
        """Called after the last step of ``epoch``: step every network's learning-rate schedule."""
        for network in self.networks.values():
            network.sched.step()

    # --- what the engine reads -------------------------------------------------------------------------------
    def trained(self) -> dict[str, nn.Module]:
        """The networks this method trains, by name; the first is the target (the run's headline)."""
        return {name: self.net_of(name) for name in self.networks}

    def evaluated(self) -> dict[str, nn.Module]:
        """Networks to evaluate, by metric prefix ('' for the target, e.g. 'peer1_' for a DML peer). Each maps an
        image batch to a ``TargetOutput`` or to logits."""
        return {"": self.evaluated_target()}

    def evaluated_target(self) -> nn.Module:
        """The target as evaluated and saved: the average of its weights when there is one, else the target."""
        return self.ema.module if self.ema is not None else next(iter(self.trained().values()))

    def calibrate(self, data: Mapping[str, Iterable]) -> None:
        """Before each evaluation, choose what is set after training on the un-augmented batches of ``data``
        ('labeled', 'val': ``(images, labels)`` iterables; 'val' absent without a validation split): nothing by
        default; DHO's fusion weights, the L-BFGS probe's classifier."""

    def epoch_facts(self) -> dict[str, float]:
        """Numbers the records carry beside the metrics: the EMA's decay at its last update (warm-up included)."""
        return {} if self.ema is None else {"ema_decay_effective": self.ema.effective_decay()}

    def lr(self) -> float:
        """The target's current learning rate (for records)."""
        return next(iter(self.networks.values())).opt.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """Everything needed to resume: per network, its weights, optimizer and schedule states; the average."""
        state = {
            "networks": {
                name: {
                    "module": self.net_of(name).state_dict(),
                    "opt": n.opt.state_dict(),
                    "sched": n.sched.state_dict(),
                }
                for name, n in self.networks.items()
            }
        }
        return state if self.ema is None else state | {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``'s output (or a checkpoint written before networks were declared)."""
        saved = legacy_networks(state)
        missing = sorted(set(self.networks) - set(saved))
        if missing:
            raise UserError(f"checkpoint lacks the networks {missing}; it has {sorted(saved)}")
        for name, network in self.networks.items():
            self.net_of(name).load_state_dict(saved[name]["module"])
            network.opt.load_state_dict(saved[name]["opt"])
            network.sched.load_state_dict(saved[name]["sched"])
        if self.ema is not None:
            self.ema.load(state.get("ema"), self.networks["target"].raw)


def legacy_networks(state: dict) -> dict[str, dict]:
    """Per-network states from a checkpoint: today's ``{"networks": ...}``, or the layouts written before the base
    class kept them (single network ``net/opt/sched``; MAXL adds ``gen/gen_opt/gen_sched``; DML ``nets/opts/scheds``
    by name)."""
    if "networks" in state:
        return state["networks"]
    if "nets" in state:
        named = set(state["nets"]) & set(state["opts"]) & set(state["scheds"])
        return {k: {"module": state["nets"][k], "opt": state["opts"][k], "sched": state["scheds"][k]} for k in named}
    out = {"target": {"module": state["net"], "opt": state["opt"], "sched": state["sched"]}}
    if "gen" in state:
        out["generator"] = {"module": state["gen"], "opt": state["gen_opt"], "sched": state["gen_sched"]}
    return out


class SingleNetMethod(Method):
    """A method that trains one network, the target, with one SGD optimizer: subclasses declare it in ``__init__``
    (``self.declare("target", ...)``) and implement ``compute_loss``. Scratch, SSKT and KD are of this kind."""

    def compute_loss(self, batch: Batch) -> StepOutput:
        """The loss (attached to its graph), the primary logits of the labelled rows, logs, and the rows the target
        processed (None: the batch's) for one batch."""
        raise NotImplementedError

    @property
    def net(self) -> nn.Module:
        """The target as training uses it (Fabric-wrapped after ``setup``)."""
        return self.net_of("target")

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.networks["target"].opt

    def update(self, batch: Batch) -> StepOutput:
        out = self.compute_loss(batch)
        opt = self.opt
        opt.zero_grad(set_to_none=True)
        self.fabric.backward(out.loss)
        opt.step()
        logs = {k: v.detach() for k, v in out.logs.items()}
        return StepOutput(out.loss.detach(), out.logits.detach(), logs, out.rows)


METHODS: Registry[Method] = Registry("method")
"""Training methods by name. A module registers its own (``@METHODS.register(name)``); ``import sskt.methods``
imports every module of the package, so a new method is one new file."""

"""An exponential moving average of a network's weights, an add-on of every method (``ema:`` in the config; FixMatch,
Sohn et al. 2020, evaluates one by default, after Tarvainen & Valpola's mean teacher): after optimizer step ``t``
(1-based), ``e <- d_t * e + (1 - d_t) * w`` for each parameter, while buffers (BatchNorm statistics) are copied from
the trained network.

``d_t = min(d, (1 + t) / (10 + t))`` with ``ema.warmup`` (TensorFlow's ``ExponentialMovingAverage(num_updates=t)``),
else ``d``: the warm-up forgets the random initial weights within the first steps. Without it, a decay of 0.999
still holds 37% of the initial weights after 1,000 steps, which is 60 epochs of a 1,000-label benchmark at batch 64.
With it, 0.999 is never reached in a short run (``d_800 = 0.989``), so records carry the decay that ran last
(``effective_decay``); FixMatch's own runs are 1M steps long, where the difference vanishes."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sskt.config import EMAConfig
from sskt.errors import UserError


def resolve_decay(cfg: EMAConfig, default: float) -> float:
    """The decay a run uses: ``ema.decay``, or when None the method's ``default`` (0, off, unless it declares one)."""
    decay = default if cfg.decay is None else cfg.decay
    if not 0.0 <= decay < 1.0:
        raise UserError(f"ema.decay must be in [0, 1) (0 turns the average off), got {cfg.decay}")
    return decay


class EMA:
    """The averaged copy (``module``, frozen, eval mode) of a network and its decay."""

    def __init__(self, net: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.module = copy.deepcopy(net).requires_grad_(False).eval()

    def to(self, device, channels_last: bool = False) -> EMA:
        self.module.to(device)
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        return self

    def decay_at(self, t: int) -> float:
        """``d_t``: ``min(d, (1 + t) / (10 + t))`` with the warm-up, else ``d``."""
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    def current_decay(self) -> float:
        """``d_t`` for the next update."""
        return self.decay_at(self.updates + 1)

    def effective_decay(self) -> float:
        """``d_t`` of the last update (0 before any): the decay the average ran at, not the configured one."""
        return self.decay_at(self.updates) if self.updates else 0.0

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One step: parameters move ``1 - d_t`` of the way to ``net``'s; buffers become ``net``'s."""
        decay = self.current_decay()
        self.updates += 1
        for averaged, current in zip(self.module.parameters(), net.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1.0 - decay)
        for averaged, current in zip(self.module.buffers(), net.buffers(), strict=True):
            averaged.copy_(current)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load(self, state: dict | None, net: nn.Module) -> None:
        """Restore a saved average, or start it from ``net`` when the checkpoint has none."""
        self.module.load_state_dict(net.state_dict() if state is None else state["module"])
        self.updates = 0 if state is None else int(state["updates"])

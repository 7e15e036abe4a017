"""An exponential moving average of a network's weights, the network FixMatch evaluates (Sohn et al. 2020, after
Tarvainen & Valpola's mean teacher): after every optimizer step ``e <- d * e + (1 - d) * w`` for each parameter,
while buffers (BatchNorm statistics) are copied from the trained network."""

from __future__ import annotations

import copy

import torch
from torch import nn

from sskt.errors import UserError

FIXMATCH_DECAY = 0.999


def ema_decay(configured: float | None, fixmatch: bool) -> float:
    """The decay a run uses: ``method.ema_decay``, or when None 0.999 for FixMatch's term and 0 (off) otherwise."""
    decay = (FIXMATCH_DECAY if fixmatch else 0.0) if configured is None else configured
    if not 0.0 <= decay < 1.0:
        raise UserError(f"method.ema_decay must be in [0, 1) (0 turns the average off), got {configured}")
    return decay


class EMA:
    """The averaged copy (``module``, frozen, eval mode) of a network and its decay."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(net).requires_grad_(False).eval()

    def to(self, device, channels_last: bool = False) -> EMA:
        self.module.to(device)
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        return self

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One step: parameters move ``1 - decay`` of the way to ``net``'s; buffers become ``net``'s."""
        for averaged, current in zip(self.module.parameters(), net.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1.0 - self.decay)
        for averaged, current in zip(self.module.buffers(), net.buffers(), strict=True):
            averaged.copy_(current)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load(self, state: dict | None, net: nn.Module) -> None:
        """Restore a saved average, or start it from ``net`` when the checkpoint has none."""
        self.module.load_state_dict(net.state_dict() if state is None else state)

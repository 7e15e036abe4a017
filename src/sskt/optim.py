"""SGD and epoch-based learning-rate schedules, shared by every method."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import get_args

import torch
from torch import nn

from sskt.config import OptimConfig, Schedule
from sskt.errors import check_choice

SCHEDULES = get_args(Schedule)


def build_sgd(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float | None = None) -> torch.optim.SGD:
    """SGD with the config's momentum, weight decay and Nesterov flag; ``lr`` overrides ``cfg.lr``."""
    return torch.optim.SGD(
        params,
        lr=cfg.lr if lr is None else lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def lr_factor(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Multiplier on the initial learning rate during ``epoch`` (0-based) of ``epochs``."""
    check_choice("optim.schedule", cfg.schedule, SCHEDULES)
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(1, epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    if cfg.schedule == "fixmatch":  # Sohn et al.: lr * cos(7 pi k / 16 K), never reaching zero
        span = max(1, epochs - cfg.warmup_epochs)
        return math.cos(7 * math.pi * (epoch - cfg.warmup_epochs) / (16 * span))
    return 1.0


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """An epoch-stepped scheduler following ``lr_factor``; call ``step()`` once at the end of every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e, epochs))

"""FixMatch's strong view, replayable: RandAugment (Cubuk et al. 2020) then Cutout (DeVries & Taylor 2017).

Each sample draws, per operation slot, an operation among the 14 of FixMatch's RandAugment, a magnitude level in
``1..bins`` and a sign, and then the centre of a Cutout square: all integers, drawn from the stream's generator like
every other augmentation parameter, so a resumed run replays the same strong views. The operations are torchvision's
``transforms.v2.functional`` ones called with explicit arguments; rows that drew the same (operation, level, sign)
go through one batched call.

Magnitudes at level ``l`` of ``bins`` (``m = l / bins``), as FixMatch's RandAugment: brightness, colour, contrast
and sharpness factors ``1 +- 0.9 m``; rotation ``+- 30 m`` degrees; shear ``+- 0.3 m``; translation ``+- 0.3 m``
of the side; posterize to ``8 - round(4 m)`` bits; solarize above ``255 (1 - m)``. Geometry uses nearest-neighbour
sampling and fills with black; Cutout fills with grey (127), as the FixMatch reference code does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sskt.config import StrongViewConfig
from sskt.data.augment import DEFAULT_PADDING, Augment, AugOp, HFlip, RandomCrop, fit_ops
from sskt.data.datasets import stored_shape
from sskt.data.spec import DatasetSpec


def _tf():
    """torchvision's v2 functional ops, imported on first use: importing torchvision loads torch._dynamo (over a
    second), which ``sskt predict`` should not pay for the sake of FixMatch's strong views."""
    import torchvision.transforms.v2.functional as tf

    return tf


def _affine(x: Tensor, **kw) -> Tensor:
    base = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0]}
    return _tf().affine(x, **(base | kw), interpolation=_tf().InterpolationMode.NEAREST, fill=0, center=[0.0, 0.0])


def _shear(m: float) -> float:
    return math.degrees(math.atan(m))


# name -> f(images uint8 [n, C, H, W], signed magnitude in [-1, 1]) -> images
OPS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "identity": lambda x, m: x,
    "autocontrast": lambda x, m: _tf().autocontrast(x),
    "equalize": lambda x, m: _tf().equalize(x),
    "brightness": lambda x, m: _tf().adjust_brightness(x, 1 + 0.9 * m),
    "color": lambda x, m: _tf().adjust_saturation(x, 1 + 0.9 * m),
    "contrast": lambda x, m: _tf().adjust_contrast(x, 1 + 0.9 * m),
    "sharpness": lambda x, m: _tf().adjust_sharpness(x, 1 + 0.9 * m),
    "posterize": lambda x, m: _tf().posterize(x, 8 - round(4 * abs(m))),
    "solarize": lambda x, m: _tf().solarize(x, 255.0 * (1 - abs(m))),
    "rotate": lambda x, m: _tf().rotate(x, 30.0 * m, interpolation=_tf().InterpolationMode.NEAREST, fill=0),
    "shear_x": lambda x, m: _affine(x, shear=[_shear(0.3 * m), 0.0]),
    "shear_y": lambda x, m: _affine(x, shear=[0.0, _shear(0.3 * m)]),
    "translate_x": lambda x, m: _affine(x, translate=[round(0.3 * m * x.shape[-1]), 0]),
    "translate_y": lambda x, m: _affine(x, translate=[0, round(0.3 * m * x.shape[-2])]),
}
OP_NAMES = tuple(OPS)


class RandAugment(AugOp):
    """``ops`` operations per sample, each with its own level (1..``bins``) and sign; on uint8 [B, C, H, W]."""

    def __init__(self, ops: int = 2, bins: int = 10) -> None:
        if ops < 0 or bins < 1:
            raise ValueError(f"RandAugment needs ops >= 0 and bins >= 1, got ops={ops}, bins={bins}")
        self.ops, self.bins = ops, bins
        self.params = tuple(f"ra{i}_{p}" for i in range(ops) for p in ("op", "level", "sign"))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        cols = []
        for _ in range(self.ops):
            cols += [
                torch.randint(0, len(OPS), (n, 1), generator=generator),
                torch.randint(1, self.bins + 1, (n, 1), generator=generator),
                torch.randint(0, 2, (n, 1), generator=generator),
            ]
        return torch.cat(cols + [torch.empty(n, 0, dtype=torch.long)], 1)

    def identity(self, n: int) -> Tensor:
        return torch.zeros(n, len(self.params), dtype=torch.long)  # op 0 is the identity

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"RandAugment works on image batches [B, C, H, W], got {list(x.shape)}")
        x = x.clone()
        for slot in range(self.ops):
            p = params[:, 3 * slot : 3 * slot + 3].cpu()
            codes = (p[:, 0] * (self.bins + 1) + p[:, 1]) * 2 + p[:, 2]
            for code in codes.unique().tolist():
                rows = (codes == code).nonzero().squeeze(1).to(x.device)
                op, level, sign = code // 2 // (self.bins + 1), code // 2 % (self.bins + 1), code % 2
                magnitude = level / self.bins * (1 if sign else -1)
                x[rows] = OPS[OP_NAMES[op]](x[rows], magnitude)
        return x


class Cutout(AugOp):
    """Fill a ``size`` x ``size`` square centred at a random pixel (cut_y, cut_x) with grey; it may overhang the
    border (then less is cut), as in DeVries & Taylor. ``size`` 0 cuts nothing."""

    params = ("cut_y", "cut_x")

    def __init__(self, size: int, fill: int = 127) -> None:
        self.size, self.fill = size, fill

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, 1 << 16, (n, 2), generator=generator)  # reduced modulo the side in __call__

    def identity(self, n: int) -> Tensor:
        return torch.full((n, 2), -1, dtype=torch.long)

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        if self.size == 0:
            return x
        h, w = x.shape[-2:]
        off = params < 0  # the identity view: no square
        cy, cx = params[:, 0] % h, params[:, 1] % w
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        y0, x0 = (cy - self.size // 2).view(-1, 1), (cx - self.size // 2).view(-1, 1)
        in_y = (rows >= y0) & (rows < y0 + self.size)  # [B, H]
        in_x = (cols >= x0) & (cols < x0 + self.size)  # [B, W]
        mask = (in_y[:, :, None] & in_x[:, None, :]) & ~off.any(1).view(-1, 1, 1)
        mask = mask.view(x.shape[0], *([1] * (x.dim() - 3)), h, w)
        return torch.where(mask, torch.full_like(x, self.fill), x)


def strong_augment(
    spec: DatasetSpec, cfg: StrongViewConfig, in_hw: tuple[int, int] | None = None, padding: int = DEFAULT_PADDING
) -> Augment:
    """The strong view for ``spec``'s images: the weak view's fit, random crop and flip, then RandAugment with
    ``cfg.ops`` operations and ``cfg.magnitude_bins`` levels, then Cutout of ``cfg.cutout`` of the side."""
    if in_hw is None:
        in_hw = stored_shape(spec.train)[-2:]
    size = spec.image_size
    return Augment(
        fit_ops(in_hw, size)
        + [RandomCrop(size, padding=padding), HFlip(), RandAugment(cfg.ops, cfg.magnitude_bins)]
        + [Cutout(round(cfg.cutout * size))]
    )

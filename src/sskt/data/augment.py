"""Replayable batched augmentation.

An ``Augment`` is a chain of ops, each declaring the integer parameters it randomises. ``sample`` draws every
parameter for a batch up front (int64 ``[n, P]``); ``apply`` is a pure function of (images, params), so replaying
stored params reproduces an augmented image bit for bit on any device. The soft-label cache relies on this: the
target sees exactly the view a source saw when its logits were cached.

Ops act on the last two (spatial) dimensions of ``[B, ..., H, W]``, so video clips ``[B, C, T, H, W]`` work too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sskt.data.datasets import stored_shape
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.registry import Registry


class AugOp:
    """One step of an augmentation chain: a pure function of the input and its own integer parameters."""

    params: tuple[str, ...] = ()
    """Names of the parameters this op draws per sample (columns of its slice of the param matrix)."""

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw parameters for ``n`` samples: int64 [n, len(params)]."""
        return torch.empty(n, 0, dtype=torch.long)

    def identity(self, n: int) -> Tensor:
        """Parameters of the unaugmented view: int64 [n, len(params)]."""
        return torch.empty(n, 0, dtype=torch.long)

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError


class FitTo(AugOp):
    """Deterministic centre zero-pad or centre crop to ``size`` x ``size`` (e.g. 28 px Fashion-MNIST -> 32)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        dh, dw = self.size - x.shape[-2], self.size - x.shape[-1]
        # Negative padding crops; the odd pixel goes to the bottom/right.
        return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


class RandomCrop(AugOp):
    """Zero-pad by ``padding`` px on every side, then crop ``size`` x ``size`` at a random offset (y, x).

    Offsets range over ``0 .. 2 * padding`` for a ``size`` input; offset ``padding`` is the unshifted image.
    """

    params = ("crop_y", "crop_x")

    def __init__(self, size: int, padding: int) -> None:
        self.size, self.padding = size, padding

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator)

    def identity(self, n: int) -> Tensor:
        return torch.full((n, 2), self.padding, dtype=torch.long)

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        p, s = self.padding, self.size
        shape = x.shape
        x = F.pad(x.reshape(shape[0], -1, shape[-2], shape[-1]), (p, p, p, p))  # [B, M, H + 2p, W + 2p]
        b, m, hp, wp = x.shape
        steps = torch.arange(s, device=x.device)
        rows = (params[:, 0:1] + steps).view(b, 1, s, 1).expand(b, m, s, wp)
        x = torch.gather(x, 2, rows)  # [B, M, S, W + 2p]
        cols = (params[:, 1:2] + steps).view(b, 1, 1, s).expand(b, m, s, s)
        return torch.gather(x, 3, cols).reshape(*shape[:-2], s, s)


class HFlip(AugOp):
    """Mirror left-right where the sample's ``flip`` bit is 1 (probability 1/2)."""

    params = ("flip",)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, 2, (n, 1), generator=generator)

    def identity(self, n: int) -> Tensor:
        return torch.zeros(n, 1, dtype=torch.long)

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        flip = params[:, 0].bool().view(-1, *([1] * (x.dim() - 1)))
        return torch.where(flip, x.flip(-1), x)


class RandomResizedCrop(AugOp):
    """torchvision's RandomResizedCrop with replayable parameters: a box (top, left, height, width) of the
    ``in_hw`` input covering ``scale`` of its area with aspect ratio in ``ratio`` (10 tries, then the largest
    centred box within the ratio bounds), resized bilinearly (antialiased) to ``size`` x ``size``."""

    params = ("crop_top", "crop_left", "crop_h", "crop_w")

    def __init__(self, in_hw: tuple[int, int], size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> None:
        self.in_hw, self.size, self.scale, self.ratio = tuple(in_hw), size, tuple(scale), tuple(ratio)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.stack([self._box(generator) for _ in range(n)]) if n else torch.empty(0, 4, dtype=torch.long)

    def _box(self, generator: torch.Generator) -> Tensor:
        h, w = self.in_hw
        area, log_ratio = h * w, torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(*log_ratio.tolist(), generator=generator)).item()
            bw, bh = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
            if 0 < bw <= w and 0 < bh <= h:
                top = torch.randint(0, h - bh + 1, (1,), generator=generator).item()
                left = torch.randint(0, w - bw + 1, (1,), generator=generator).item()
                return torch.tensor([top, left, bh, bw])
        aspect = w / h
        bw, bh = (w, round(w / min(self.ratio[1], max(self.ratio[0], aspect)))) if aspect > self.ratio[1] else (
            (round(h * max(self.ratio[0], min(self.ratio[1], aspect))), h))  # fmt: skip
        bh, bw = min(bh, h), min(bw, w)
        return torch.tensor([(h - bh) // 2, (w - bw) // 2, bh, bw])

    def identity(self, n: int) -> Tensor:
        """The evaluation view: the centred ``size`` x ``size`` crop (FitTo's), not resized."""
        h, w = self.in_hw
        s = min(self.size, h, w)
        return torch.tensor([(h - s + 1) // 2, (w - s + 1) // 2, s, s]).repeat(n, 1)  # FitTo: the odd pixel right

    def __call__(self, x: Tensor, params: Tensor) -> Tensor:
        import torchvision.transforms.v2.functional as TF

        boxes = params.tolist()
        out = [TF.resized_crop(x[i], *boxes[i], [self.size, self.size], antialias=True) for i in range(len(x))]
        return torch.stack(out) if out else x[:, ..., : self.size, : self.size]


class Augment:
    """A chain of ops mapping uint8 images to float images in [0, 1] with 3 channels."""

    def __init__(self, ops: Sequence[AugOp], channels: int = 3) -> None:
        self.ops = list(ops)
        self.channels = channels
        self.param_names = [name for op in self.ops for name in op.params]

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw every randomised parameter for ``n`` samples from the CPU ``generator``: int64 [n, P]."""
        return torch.cat([op.sample(n, generator) for op in self.ops] + [torch.empty(n, 0, dtype=torch.long)], 1)

    def identity_params(self, n: int) -> Tensor:
        """Parameters of the unaugmented view: int64 [n, P]."""
        return torch.cat([op.identity(n) for op in self.ops] + [torch.empty(n, 0, dtype=torch.long)], 1)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """uint8 [B, C, H, W] (or [B, C, T, H, W]) and int64 [B, P] -> float [B, 3, S, S] in [0, 1].

        A pure function of its inputs: identical params give identical output. Runs on ``images.device``.
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"Augment.apply expects uint8 images, got {images.dtype}")
        if params.shape != (images.shape[0], self.num_params):
            raise ValueError(f"params must be [{images.shape[0]}, {self.num_params}], got {list(params.shape)}")
        params = params.to(images.device)
        x, start = images, 0
        for op in self.ops:  # geometry on uint8: 4x less memory traffic than on float
            x = op(x, params[:, start : start + len(op.params)])
            start += len(op.params)
        x = x.float().div_(255)
        if x.shape[1] == 1 and self.channels != 1:  # grey storage -> the 3 channels every model expects
            x = x.expand(-1, self.channels, *x.shape[2:]).contiguous()
        return x


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel (dim 1) of float [B, C, ...]; returns a new tensor."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(view)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(view)
    return (x - m) / s


class Normalize:
    """Callable ``normalize`` with fixed statistics (3-tuples), plus its inverse for feeding sources."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x: Tensor) -> Tensor:
        return normalize(x, self.mean, self.std)

    def inverse(self, x: Tensor) -> Tensor:
        """Undo the normalisation: back to [0, 1] images."""
        view = (1, -1) + (1,) * (x.dim() - 2)
        m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(view)
        s = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(view)
        return x * s + m


# Presets: name -> factory(input (H, W), output side S, crop padding) -> Augment.
AUGMENTS: Registry[Augment] = Registry("augmentation preset")

DEFAULT_PADDING = 4
"""The released code's ``RandomCrop(size, padding=4)``, at every image size (STL10's 96 px too)."""


def fit_ops(in_hw: tuple[int, int], size: int) -> list[AugOp]:
    return [] if tuple(in_hw) == (size, size) else [FitTo(size)]


@AUGMENTS.register("default")
def default_preset(in_hw: tuple[int, int], size: int, padding: int = DEFAULT_PADDING) -> Augment:
    """The standard recipe: fit to S, random crop after ``padding`` px of zero padding (4 by default), flip."""
    if padding < 0:
        raise UserError(f"data.crop_padding must be >= 0, got {padding}")
    return Augment(fit_ops(in_hw, size) + [RandomCrop(size, padding=padding), HFlip()])


@AUGMENTS.register("resized_crop")
def resized_crop_preset(in_hw: tuple[int, int], size: int, padding: int = DEFAULT_PADDING) -> Augment:
    """ImageNet-style training view: random resized crop of the stored image to S, then flip (VOC)."""
    return Augment([RandomResizedCrop(in_hw, size), HFlip()])


@AUGMENTS.register("none")
def none_preset(in_hw: tuple[int, int], size: int, padding: int = DEFAULT_PADDING) -> Augment:
    """No randomness: only fit to S (evaluation view)."""
    return Augment(fit_ops(in_hw, size))


def build_augment(
    spec: DatasetSpec, name: str, in_hw: tuple[int, int] | None = None, padding: int = DEFAULT_PADDING
) -> Augment:
    """The preset ``name`` for ``spec``'s images (or images of stored size ``in_hw``), cropping after ``padding`` px
    of zero padding (``data.crop_padding``); unknown names: UserError."""
    if in_hw is None:
        in_hw = stored_shape(spec.train)[-2:]
    return AUGMENTS.create(name, in_hw=in_hw, size=spec.image_size, padding=padding)

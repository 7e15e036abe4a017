"""A frozen source network that owns its preprocessing, and a bank that feeds several sources one batch.

The target's batch arrives normalised with the target dataset's mean/std. A source sees the same image converted to
what it expects: un-normalised to [0, 1] pixels, resized (square ``input_size``, else bilinear ``resize_factor``,
else untouched), then normalised with the source's own mean/std. Resizing commutes with the per-channel affine maps
(bilinear weights sum to 1), so the bank un-normalises once and resizes once per distinct size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sskt.config import BNMode, InputScale, SourceConfig
from sskt.errors import UserError, check_choice
from sskt.registry import Registry

BN_MODES = get_args(BNMode)
INPUT_SCALES = get_args(InputScale)
ACTIVITYNET_MEAN = (114.7748, 107.7354, 99.4750)
"""The released video code's mean on 0-255 pixels (Hara et al.'s ActivityNet statistics)."""
RESIZE_MODE = "bilinear(align_corners=False, antialias when shrinking)"

Stats = tuple[float, float, float]


@dataclass
class Pretrained:
    """What a zoo factory returns: a classifier and the input convention of its weights."""

    net: nn.Module
    mean: Stats
    """Per-channel mean on [0, 1] pixels that the weights were trained with."""
    std: Stats
    num_classes: int
    native_size: int | None = None
    """Resolution the weights were evaluated at (informational; resizing follows the SourceConfig)."""


SOURCES: Registry[Pretrained] = Registry("source")


def _affine(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """[1, C, 1, 1] mean and std tensors."""
    m, s = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std))
    return m, s


def resize(x: Tensor, size: int | None, factor: float | None) -> Tensor:
    """[B, 3, H, W] -> [B, 3, size, size] (or bilinear by ``factor``, as the released code's
    ``F.interpolate(scale_factor=7/3)`` does: CIFAR 32 -> 74 px), or ``x`` itself when neither is set."""
    h, w = x.shape[-2:]
    if size is not None:
        if (h, w) == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < max(h, w))
    if factor is not None and factor != 1:
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, antialias=factor < 1)
    return x


def _logits(out: object) -> Tensor:
    """Logits from a network's output: a tensor, or an object with ``.logits`` (TargetOutput, InceptionOutputs)."""
    return out if isinstance(out, Tensor) else out.logits


class Source(nn.Module):
    """A frozen pretrained classifier with its own preprocessing and label space.

    Every parameter has ``requires_grad=False`` from construction on; the source never belongs in an optimizer.
    ``train()`` keeps every layer in eval mode, except BatchNorm layers when ``bn_mode='train'`` (the released code's
    batch statistics, whose running statistics then drift). ``forward`` runs without autograd.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        target_mean: Sequence[float],
        target_std: Sequence[float],
        input_size: int | None = None,
        resize_factor: float | None = None,
        bn_mode: str = "eval",
        native_size: int | None = None,
        input_scale: str = "normalised",
    ) -> None:
        super().__init__()
        self.input_scale = check_choice("source input_scale", input_scale, INPUT_SCALES)
        _check_policy(name, input_size, resize_factor)
        self.net = net.requires_grad_(False)
        self.name, self.num_classes, self.native_size = name, num_classes, native_size
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.target_mean, self.target_std = tuple(float(v) for v in target_mean), tuple(float(v) for v in target_std)
        self.input_size, self.resize_factor = input_size, resize_factor
        self.bn_mode = check_choice("source bn_mode", bn_mode, BN_MODES)
        # Device-resident constants: preprocessing never copies from the host.
        for prefix, (m, s) in {"src": (self.mean, self.std), "tgt": (self.target_mean, self.target_std)}.items():
            m_t, s_t = _affine(m, s)
            self.register_buffer(f"_{prefix}_mean", m_t, persistent=False)
            self.register_buffer(f"_{prefix}_std", s_t, persistent=False)
        self._digest: str | None = None
        if bn_mode == "train":
            self.weights_digest()  # now, before batch statistics move the running averages
        self.train()

    def train(self, mode: bool = True) -> Source:
        self.training = mode
        self.net.eval()
        if mode and self.bn_mode == "train":
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        return self

    # --- preprocessing ---------------------------------------------------------------------------------------
    @property
    def resize_key(self) -> tuple[int | None, float | None]:
        """Sources with equal keys see the same resized image."""
        return (self.input_size, None) if self.input_size is not None else (None, self.resize_factor)

    def unnormalize(self, x: Tensor) -> Tensor:
        """Target batch [B, C, H, W] (or a clip [B, C, T, H, W]: its centre frame) -> [0, 1] pixels [B, 3, H, W]."""
        if x.dim() == 5:
            x = x[:, :, x.shape[2] // 2]
        x = x * self._tgt_std.to(x.dtype) + self._tgt_mean.to(x.dtype)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def resize(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, 3, H', W'] following this source's resize policy."""
        return resize(pixels, self.input_size, self.resize_factor)

    def normalize(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels -> the source's normalisation (or, for 'activitynet', 0-255 minus ActivityNet's mean)."""
        if self.input_scale == "activitynet":
            return pixels * 255 - torch.tensor(ACTIVITYNET_MEAN, dtype=pixels.dtype, device=pixels.device).view(
                1, -1, 1, 1
            )
        return (pixels - self._src_mean.to(pixels.dtype)) / self._src_std.to(pixels.dtype)

    def preprocess(self, x: Tensor) -> Tensor:
        """Target-normalised batch [B, C, H, W] -> the source's input [B, 3, H', W']."""
        return self.normalize(self.resize(self.unnormalize(x)))

    def logits_from_pixels(self, pixels: Tensor) -> Tensor:
        """Already resized [0, 1] pixels [B, 3, H', W'] -> logits [B, num_classes], without autograd."""
        with torch.no_grad():
            return _logits(self.net(self.normalize(pixels)))

    def forward(self, x: Tensor) -> Tensor:
        """Target-normalised batch [B, C, H, W] -> logits [B, num_classes]. Runs under ``no_grad`` (not inference
        mode), so the result can serve as a constant target in a loss that is backpropagated."""
        with torch.no_grad():
            return _logits(self.net(self.preprocess(x)))

    # --- identity --------------------------------------------------------------------------------------------
    def weights_digest(self) -> str:
        """sha256 over the names, dtypes, shapes and bytes of the state dict as first seen (computed once)."""
        if self._digest is None:
            h = hashlib.sha256()
            for key, value in sorted(self.net.state_dict().items()):
                v = value.detach().cpu().contiguous()
                h.update(f"{key}|{v.dtype}|{tuple(v.shape)}|".encode())
                h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._digest = h.hexdigest()
        return self._digest

    def fingerprint(self) -> dict:
        """Everything that determines this source's logits for a given target image (the soft-label cache key)."""
        return {
            "name": self.name,
            "weights_sha256": self.weights_digest(),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "target_mean": list(self.target_mean),
            "target_std": list(self.target_std),
            "input_size": self.input_size,
            "resize_factor": self.resize_factor,
            "resize_mode": RESIZE_MODE,
            "bn_mode": self.bn_mode,
            **({"input_scale": self.input_scale} if self.input_scale != "normalised" else {}),
        }


CPU_CHUNK = 32
"""Images per source forward on CPU when the bank's ``chunk`` is None (measured, see ``SourceBank``)."""


def _check_policy(name: str, input_size: int | None, resize_factor: float | None) -> None:
    if input_size is not None and input_size < 1:
        raise UserError(f"source {name!r}: input_size must be a positive integer, got {input_size}")
    if resize_factor is not None and resize_factor <= 0:
        raise UserError(f"source {name!r}: resize_factor must be positive, got {resize_factor}")


class SourceBank(nn.Module):
    """Evaluates several sources on one batch: un-normalises once and resizes once per distinct input size.

    ``sources`` maps a key (the name its logits are returned under) to a ``Source``; a sequence uses the sources'
    names. ``channels_last`` converts the networks and their inputs to channels-last memory format (on by default:
    EfficientNet-Lite0 at 96 px ran 1.32x faster on 2 CPU cores with it and inference mode, 1.735 vs 2.298 s per
    batch, benchmarks/speed.py). The forward pass runs under ``torch.inference_mode`` and has no host-device
    synchronisation.

    ``chunk`` runs the sources on that many images at a time (0: the whole batch at once; always so when a source
    is in BatchNorm train mode, whose statistics are the batch's). None picks
    ``CPU_CHUNK`` on CPU and the whole batch elsewhere: on CPU a small chunk keeps the activations in the caches,
    EfficientNet-Lite0 at 96 px took 12-13 ms per image in chunks of 16-32 against 15.8 at 128 and 16.8 at 256
    (one thread, this project's 2-core machine). The logits do not depend on the chunking beyond float rounding.
    """

    def __init__(
        self, sources: Mapping[str, Source] | Sequence[Source], channels_last: bool = True, chunk: int | None = None
    ) -> None:
        super().__init__()
        if chunk is not None and chunk < 0:
            raise UserError(f"source chunk must be >= 0 (0: whole batch) or None (auto), got {chunk}")
        self.chunk = chunk
        items = list(sources.items()) if isinstance(sources, Mapping) else [(s.name, s) for s in sources]
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise UserError(f"source names must be unique in a bank, got {keys}")
        stats = {(s.target_mean, s.target_std) for _, s in items}
        if len(stats) > 1:
            raise ValueError(f"sources in one bank must share the target normalisation, got {sorted(stats)}")
        self.keys = keys
        # A ModuleList, not a ModuleDict: source names contain '.', which module names may not.
        self.sources = nn.ModuleList(s for _, s in items)
        self.channels_last = channels_last
        if channels_last:
            for s in self.sources:
                s.net.to(memory_format=torch.channels_last)
        self.groups: dict[tuple[int | None, float | None], list[int]] = {}
        for i, s in enumerate(self.sources):
            self.groups.setdefault(s.resize_key, []).append(i)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Target-normalised batch [B, C, H, W] -> ``{key: logits [B, C_m]}``, computed without autograd."""
        if not self.keys:
            return {}
        step = self.chunk_size(x)
        with torch.inference_mode():
            parts = [self._logits(x[i : i + step]) for i in range(0, len(x), step)]
            out = {k: parts[0][k] if len(parts) == 1 else torch.cat([p[k] for p in parts]) for k in self.keys}
        # Inference tensors cannot be saved for backward; a clone made outside inference mode is an ordinary tensor
        # that a loss may use as its target ([B, C_m]: negligible next to the forward).
        return {k: out[k].clone() for k in self.keys}

    def _logits(self, x: Tensor) -> dict[str, Tensor]:
        """Every source's logits for one chunk, under the caller's inference mode."""
        out: dict[str, Tensor] = {}
        pixels = self.sources[0].unnormalize(x)
        for (size, factor), members in self.groups.items():
            resized = resize(pixels, size, factor)
            if self.channels_last:
                resized = resized.contiguous(memory_format=torch.channels_last)
            for i in members:
                out[self.keys[i]] = self.sources[i].logits_from_pixels(resized)
        return out

    def chunk_size(self, x: Tensor) -> int:
        """Images per source forward for batch ``x`` (see the class docstring). A bank holding a source in BatchNorm
        train mode always runs the whole batch: that source's batch statistics (and its running averages, one update
        per training batch) must come from the whole training batch, as in the released code."""
        if any(s.bn_mode == "train" for s in self.sources):
            return max(len(x), 1)
        if self.chunk is None:
            return CPU_CHUNK if x.device.type == "cpu" else max(len(x), 1)
        return self.chunk or max(len(x), 1)


def build_source(cfg: SourceConfig, target_mean: Sequence[float], target_std: Sequence[float]) -> Source:
    """The source ``cfg.name`` (weights from ``cfg.weights`` when given), frozen, fed images normalised with the
    target's ``target_mean``/``target_std``. Unknown names and unreadable weights raise a one-line UserError."""
    pre = SOURCES.create(cfg.name, weights=cfg.weights)
    return Source(
        pre.net,
        name=cfg.name,
        num_classes=pre.num_classes,
        mean=pre.mean,
        std=pre.std,
        target_mean=target_mean,
        target_std=target_std,
        input_size=cfg.input_size,
        resize_factor=cfg.resize_factor,
        bn_mode=cfg.bn_mode,
        native_size=pre.native_size,
        input_scale=cfg.input_scale,
    )


def build_sources(
    configs: Mapping[str, SourceConfig], target_mean: Sequence[float], target_std: Sequence[float]
) -> dict[str, Source]:
    """``build_source`` of every config, by key: the frozen networks a method declares, each built once."""
    return {key: build_source(cfg, target_mean, target_std) for key, cfg in configs.items()}

"""Using a trained network without its training set-up: preprocess image files as evaluation does, predict, and
export (ONNX, TorchScript, safetensors) with a parity check.

The network and its card come from ``sskt.trained.load_trained(run)``, which reads ``model.json`` and
``model.safetensors``; it maps images normalised as the card says ``[B, 3, S, S]`` to logits ``[B, num_classes]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from sskt.data.augment import Augment, Normalize, fit_ops
from sskt.data.folder import IMAGE_EXTENSIONS, image_files
from sskt.errors import UserError
from sskt.trained import ModelCard, load_trained

PARITY_TOLERANCE = 1e-4
"""Largest absolute logit difference an export may show against PyTorch on the sample batch."""


# --- inputs ----------------------------------------------------------------------------------------------------
def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found under named folders (any depth), in order; a path that does not exist
    is a one-line UserError."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += image_files(p)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{str(p)!r} is neither an image file nor a folder")
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, paths))}")
    return files


def read_image(path: Path, card: ModelCard) -> Tensor:
    """uint8 [C, H, W] at the card's stored size and channels; an unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as image:
            pixels = image.convert("L" if card.channels == 1 else "RGB")
            h, w = card.stored_size
            if pixels.size != (w, h):
                pixels = pixels.resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(pixels).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError(f"{str(path)!r} is not a readable image ({type(exc).__name__})") from exc
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def preprocess(images: Tensor, card: ModelCard) -> Tensor:
    """uint8 [B, C, H, W] at the stored size -> the network's input, as evaluation builds it."""
    fit = Augment(fit_ops(tuple(card.stored_size), card.input_size))
    return Normalize(card.mean, card.std)(fit.apply(images, fit.identity_params(len(images))))


def predict(
    files: Sequence[Path], net: nn.Module, card: ModelCard, topk: int = 5, batch_size: int = 64
) -> Iterator[tuple[Path, list[tuple[str, float]] | str]]:
    """``(file, [(class name, probability)] best first)`` per file, or ``(file, error line)`` for one that cannot
    be read; the others still run. Probabilities: softmax for single-label, a sigmoid per class for multi-label."""
    names = card.class_names or [str(i) for i in range(card.num_classes)]
    k = max(1, min(topk, card.num_classes))
    for start in range(0, len(files), batch_size):
        chunk, images, errors = files[start : start + batch_size], [], {}
        for f in chunk:
            try:
                images.append((f, read_image(f, card)))
            except UserError as exc:
                errors[f] = str(exc)
        probs = {}
        if images:
            with torch.inference_mode():
                logits = net(preprocess(torch.stack([im for _, im in images]), card))
            p = logits.sigmoid() if card.task == "multi_label" else logits.softmax(1)
            values, classes = p.topk(k, dim=1)
            for (f, _), vs, cs in zip(images, values.tolist(), classes.tolist(), strict=True):
                probs[f] = [(names[c], v) for v, c in zip(vs, cs, strict=True)]
        for f in chunk:
            yield f, errors.get(f) or probs[f]


# --- export ----------------------------------------------------------------------------------------------------
def sample_batch(card: ModelCard, n: int = 8, seed: int = 0) -> Tensor:
    """Random [0, 1] pixel images at the stored size, preprocessed: the parity check's inputs."""
    g = torch.Generator().manual_seed(seed)
    h, w = card.stored_size
    return preprocess(torch.randint(0, 256, (n, card.channels, h, w), generator=g, dtype=torch.uint8), card)


def export(path: str | Path, fmt: str, out: str | Path) -> dict:
    """Write the run's network as ``fmt`` ('onnx', 'torchscript', 'safetensors') to ``out`` with the model card
    inside, reload it, and compare its logits with PyTorch's on a sample batch. A difference above
    ``PARITY_TOLERANCE`` removes the file and is a UserError."""
    net, card = load_trained(path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = sample_batch(card)
    with torch.inference_mode():
        expected = net(x)
    with warnings.catch_warnings():  # torch's deprecation notes on jit and the ONNX exporter's folding notes
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        got = EXPORTERS[fmt](net, card, x, out)
    diff = float((got - expected).abs().max()) if got is not None else 0.0
    if not math.isfinite(diff) or diff > PARITY_TOLERANCE:
        out.unlink(missing_ok=True)
        raise UserError(f"{fmt} export differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE}); {str(out)!r} removed")
    return {"format": fmt, "out": str(out), "max_abs_diff": diff, "batch": list(x.shape)}


def _card_json(card: ModelCard) -> str:
    return json.dumps(dataclasses.asdict(card))


def _onnx(net: nn.Module, card: ModelCard, x: Tensor, out: Path) -> Tensor:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError("ONNX export needs the 'onnx' extra: pip install 'sskt[onnx]'") from exc
    torch.onnx.export(
        net, (x,), str(out), input_names=["images"], output_names=["logits"],
        dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {"sskt_model_card": _card_json(card)})
    onnx.save(model, str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def _torchscript(net: nn.Module, card: ModelCard, x: Tensor, out: Path) -> Tensor:
    with torch.no_grad():
        traced = torch.jit.trace(net, x)
    torch.jit.save(traced, str(out), _extra_files={"model.json": _card_json(card)})
    with torch.inference_mode():
        return torch.jit.load(str(out))(x)


def _safetensors(net: nn.Module, card: ModelCard, x: Tensor, out: Path) -> Tensor | None:
    from safetensors.torch import load_file, save_file

    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.net.state_dict().items()}
    save_file(state, str(out), metadata={"sskt_model_card": _card_json(card)})
    reloaded = load_file(str(out))
    mismatched = [k for k in state if not torch.equal(state[k], reloaded[k])]
    if mismatched:
        raise UserError(f"safetensors export: {len(mismatched)} tensors changed on reload, e.g. {mismatched[0]!r}")
    return None


EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript, "safetensors": _safetensors}

"""Using a trained network without its training set-up: preprocess image files as evaluation does, predict, and
export (ONNX, TorchScript, safetensors) with a parity check.

The network and its card come from ``sskt.trained.load_trained(run)``, which reads ``model.json`` and
``model.safetensors``; it maps images normalised as the card says ``[B, 3, S, S]`` to logits ``[B, num_classes]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from sskt.data.augment import Augment, Normalize, fit_ops
from sskt.data.folder import IMAGE_EXTENSIONS, image_files, to_8bit
from sskt.errors import UserError, install_hint
from sskt.rundir import CHECKPOINT, CONFIG, LOCK, MODEL_CARD, RECORDS, SUMMARY, WEIGHTS
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


MAX_PIXELS = 89_478_485
"""Largest image (width x height) ``predict`` decodes unless told otherwise (PIL's own default limit): a small
file can decode to gigabytes (a decompression bomb)."""


def read_image(path: Path, card: ModelCard, max_pixels: int = MAX_PIXELS) -> Tensor:
    """uint8 [C, H, W] at the card's stored size and channels; an unreadable file, or one over ``max_pixels``
    pixels, is a UserError naming it."""
    try:
        with _pixel_limit(), Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise UserError(f"{str(path)!r} has {image.width}x{image.height} pixels, over the limit of "
                                f"{max_pixels} (raise it with --max_pixels)")  # fmt: skip
            pixels = to_8bit(image).convert("L" if card.channels == 1 else "RGB")
            h, w = card.stored_size
            if pixels.size != (w, h):
                pixels = pixels.resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(pixels).copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{str(path)!r} is not a readable image ({type(exc).__name__})") from exc
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


@contextlib.contextmanager
def _pixel_limit() -> Iterator[None]:
    """PIL's own bomb check off while a file opens (opening reads only the header): ``read_image`` checks the size
    against its ``max_pixels`` itself, in a line that says how to raise the limit, before anything is decoded."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def preprocess(images: Tensor, card: ModelCard) -> Tensor:
    """uint8 [B, C, H, W] at the stored size -> the network's input, as evaluation builds it."""
    fit = Augment(fit_ops(tuple(card.stored_size), card.input_size))
    return Normalize(card.mean, card.std)(fit.apply(images, fit.identity_params(len(images))))


def predict(
    files: Sequence[Path],
    net: nn.Module,
    card: ModelCard,
    topk: int = 5,
    batch_size: int = 64,
    max_pixels: int = MAX_PIXELS,
) -> Iterator[tuple[Path, list[tuple[str, float]] | str]]:
    """``(file, [(class name, probability)] best first)`` per file, or ``(file, error line)`` for one that cannot
    be read (or is over ``max_pixels``); the others still run. Probabilities: softmax for single-label, a sigmoid
    per class for multi-label."""
    names = card.class_names or [str(i) for i in range(card.num_classes)]
    k = max(1, min(topk, card.num_classes))
    with progress_bar(len(files)) as bar:
        yield from _predict_batches(files, net, card, names, k, batch_size, max_pixels, bar)


PROGRESS_FROM = 200
"""Predicting this many images or more on a terminal shows a progress bar on stderr (stdout keeps its lines)."""


def progress_bar(total: int) -> contextlib.AbstractContextManager:
    """A progress bar over ``total`` images on stderr, shown only on a terminal and for ``PROGRESS_FROM`` images or
    more (a large folder takes minutes; stdout, which a user may pipe, keeps one line per image and nothing else)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    show = total >= PROGRESS_FROM and sys.stderr.isatty()
    columns = (TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), disable=not show, transient=True,
                   redirect_stdout=False, redirect_stderr=False)  # fmt: skip
    bar.add_task("images", total=total)
    return bar


def _predict_batches(files, net, card, names, k, batch_size, max_pixels, bar) -> Iterator:  # noqa: ANN001
    """``predict``'s work, batch by batch, advancing ``bar``."""
    for start in range(0, len(files), batch_size):
        chunk, images, errors = files[start : start + batch_size], [], {}
        for f in chunk:
            try:
                images.append((f, read_image(f, card, max_pixels)))
            except UserError as exc:
                errors[f] = str(exc)
        probs = {}
        if images:
            with torch.inference_mode():
                logits = net(preprocess(torch.stack([im for _, im in images]), card))
            refuse_non_finite(logits, f"images {str(images[0][0])!r}...")
            p = logits.sigmoid() if card.task == "multi_label" else logits.softmax(1)
            values, classes = p.topk(k, dim=1)
            for (f, _), vs, cs in zip(images, values.tolist(), classes.tolist(), strict=True):
                probs[f] = [(names[c], v) for v, c in zip(vs, cs, strict=True)]
        bar.advance(bar.task_ids[0], len(chunk))
        for f in chunk:
            yield f, errors.get(f) or probs[f]


def printable(text: object) -> str:
    """``text`` with control characters (newlines, ESC sequences) escaped as ``\\n``, ``\\x1b``: a class name or file
    name in a card or a folder must not forge or hide a line of text output."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


# --- export ----------------------------------------------------------------------------------------------------
def sample_batch(card: ModelCard, n: int = 8, seed: int = 0) -> Tensor:
    """Random [0, 1] pixel images at the stored size, preprocessed: the parity check's inputs."""
    g = torch.Generator().manual_seed(seed)
    h, w = card.stored_size
    return preprocess(torch.randint(0, 256, (n, card.channels, h, w), generator=g, dtype=torch.uint8), card)


def export(path: str | Path, fmt: str, out: str | Path, force: bool = False, trust_sources: bool = False) -> dict:
    """Write the run's network as ``fmt`` ('onnx', 'torchscript', 'safetensors') to ``out`` with the model card
    inside, reload it, and compare its logits with PyTorch's on a sample batch.

    Nothing is lost: the export is written to a temporary file beside ``out`` and renamed over it only once the
    parity check passed, so a failure removes only that temporary file; an existing ``out`` is replaced only with
    ``force``, and never when it is a file of a run directory (``model.safetensors`` of the run itself, say)."""
    out = check_out(out, force)
    net, card = load_trained(path, trust_sources)
    if card.task == "video":
        raise UserError(f"sskt export takes image models; {str(path)!r} is a video model (clips of "
                        f"{card.extra.get('clip_len')} frames)")  # fmt: skip
    x = sample_batch(card)
    with torch.inference_mode():
        expected = net(x)
    refuse_non_finite(expected, f"run {str(path)!r}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        diff = _write_checked(net, card, x, expected, fmt, tmp)
        _publish(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {str(out)!r}: {exc.strerror or type(exc).__name__}") from exc
        raise
    return {"format": fmt, "out": str(out), "max_abs_diff": diff, "batch": list(x.shape)}


def _write_checked(net: nn.Module, card: ModelCard, x: Tensor, expected: Tensor, fmt: str, tmp: Path) -> float:
    """Export to ``tmp`` and return the largest logit difference against ``expected``; above
    ``PARITY_TOLERANCE`` (or not finite) is a UserError."""
    with warnings.catch_warnings():  # torch's deprecation notes on jit and the ONNX exporter's folding notes
        warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
        got = EXPORTERS[fmt](net, card, x, tmp)
    diff = float((got - expected).abs().max()) if got is not None else 0.0
    if not math.isfinite(diff) or diff > PARITY_TOLERANCE:
        raise UserError(f"{fmt} export differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE}); nothing written")
    return diff


def _publish(tmp: Path, out: Path) -> None:
    """Make the checked temporary file ``out``: fsync, rename, fsync the folder."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RUN_FILES = (CONFIG, RECORDS, SUMMARY, CHECKPOINT, WEIGHTS, MODEL_CARD, LOCK)
"""Files of a run directory that an export must never replace (``checkpoints/`` and ``tb/`` are refused whole)."""


def check_out(out: str | Path, force: bool) -> Path:
    """``out`` as a path an export may write, before anything is built: not empty, not a folder, not a file of a
    run directory, not an existing file unless ``force``, in a folder that exists (it is created) and is
    writable. Each refusal is one line naming the path."""
    if not str(out).strip():
        raise UserError("--out is empty; give the file to write, e.g. --out model.onnx")
    out = Path(out).expanduser()
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file path inside it, e.g. {str(out / 'model.onnx')!r}")
    run_file = _run_file(out)
    if run_file:
        raise UserError(f"--out {str(out)!r} would replace the run file {run_file!r}; write the export elsewhere")
    if out.exists() or out.is_symlink():
        if not out.is_file():
            raise UserError(f"--out {str(out)!r} exists and is not a regular file; pick another --out")
        if not force:
            raise UserError(f"--out {str(out)!r} already exists; pass --force to replace it, or pick another --out")
    return writable_parent(out)


def writable_parent(out: Path) -> Path:
    """``out``, once the folder it goes in exists and may be written; a one-line UserError otherwise."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"cannot create the folder of --out {str(out)!r}: {why}") from exc
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(out)!r} cannot be written ({str(out.parent)!r} is read-only)")
    return out


def _run_file(out: Path) -> str | None:
    """The run file ``out`` names (its path relative to the run directory), or None when it is no run's file."""
    resolved = out.resolve()
    for root in resolved.parents[:3]:
        if (root / CONFIG).is_file():
            rel = resolved.relative_to(root)
            if str(rel) in RUN_FILES or rel.parts[0] in ("checkpoints", "tb"):
                return str(rel)
    return None


def refuse_non_finite(logits: Tensor, what: str) -> None:
    """A network that gives NaN or infinite logits (a run that diverged) predicts nothing: one line, not numbers
    that look like a result."""
    if not bool(torch.isfinite(logits).all()):
        raise UserError(f"{what}: the network gives non-finite outputs (NaN or inf; did training diverge?)")


def _card_json(card: ModelCard) -> str:
    return json.dumps(dataclasses.asdict(card))


def _onnx(net: nn.Module, card: ModelCard, x: Tensor, out: Path) -> Tensor:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise UserError(f"ONNX export needs the 'onnx' extra: {install_hint('onnx')}") from exc
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

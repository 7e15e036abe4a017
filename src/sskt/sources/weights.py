"""Reading source weights: local files (safetensors, or torch files loaded with ``weights_only=True``) and
downloads, with every failure turned into a one-line UserError that says what to fetch and where to put it."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from sskt.errors import UserError

State = dict[str, Tensor]


def _read(path: Path, what: str) -> object:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state_file(path: str | os.PathLike, what: str) -> State:
    """A state dict from a local ``.safetensors`` or torch file; a training checkpoint's ``state_dict`` entry is
    unwrapped and DataParallel's ``module.`` prefix stripped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what}: weights file {str(p)!r} does not exist")
    try:
        obj = _read(p, what)
    except Exception as exc:  # torch and safetensors raise many types for foreign or truncated files
        raise UserError(f"{what}: weights file {str(p)!r} cannot be read ({type(exc).__name__})") from exc
    return as_state_dict(obj, f"{what}: weights file {str(p)!r}")


def as_state_dict(obj: object, where: str) -> State:
    """Unwrap ``{'state_dict': ...}`` checkpoints and strip a leading ``module.`` from every key."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{where} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def download_state(url: str, what: str) -> State:
    """Download ``url`` into torch's hub cache (or reuse the cached file) and read it with ``weights_only=True``."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    try:
        obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, weights_only=True)
    except Exception as exc:  # offline: URLError/OSError; a bad download: RuntimeError/UnpicklingError
        raise UserError(
            f"could not fetch the {what} weights from {url} ({type(exc).__name__}); download the file yourself and "
            f"put it at {cached} or pass it as the source's weights=<path>"
        ) from exc
    return as_state_dict(obj, f"{what}: downloaded weights {str(cached)!r}")


def load_weights(spec: str | None, default_url: str | None, what: str) -> State:
    """``spec`` (a local path or an http(s) URL) or, when None, ``default_url``."""
    if spec is None:
        if default_url is None:
            raise UserError(f"{what} has no default weights; pass a weights file as the source's weights=<path>")
        return download_state(default_url, what)
    if spec.startswith(("http://", "https://")):
        return download_state(spec, what)
    return load_state_file(spec, what)


def load_into(net: nn.Module, state: State, what: str) -> nn.Module:
    """Load ``state`` strictly into ``net``; a mismatch is a UserError naming the first offending keys."""
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])[:300]
        raise UserError(f"{what}: the weights do not fit the architecture ({detail})") from exc
    return net

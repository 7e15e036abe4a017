"""The trained target's weights as ``model.safetensors`` (a format that cannot execute code)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from sskt.errors import UserError
from sskt.files import write_atomic
from sskt.methods import Method


def target_of(method: Method) -> nn.Module:
    """The run's headline network: the first one the method trains."""
    return next(iter(method.trained().values()))


def save_target_weights(method: Method, path: str | Path) -> None:
    """Save the target's state dict (auxiliary heads included); the metadata records the heads' class counts."""
    net = target_of(method)
    # Clone: safetensors refuses tensors that share storage (tied or viewed parameters).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    # Class counts of the aux heads let ``evaluate`` rebuild the same Target without building the sources.
    meta = {"aux_classes": json.dumps(dict(method.aux_classes))}
    write_atomic(path, lambda f: f.write(save(tensors, metadata=meta)))


def load_target_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Read a ``model.safetensors``: the state dict and the auxiliary heads' class counts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist (has the run finished?)")
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign or truncated files
        raise UserError(f"weights file {str(path)!r} cannot be read: {type(exc).__name__}") from exc
    return state, json.loads(meta.get("aux_classes", "{}"))

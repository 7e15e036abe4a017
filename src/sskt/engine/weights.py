"""The trained target's weights as ``model.safetensors`` (a format that cannot execute code)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from sskt import __version__
from sskt.config import TrainConfig
from sskt.data.datasets import stored_shape
from sskt.data.spec import DatasetSpec
from sskt.errors import UserError
from sskt.files import write_atomic
from sskt.methods import Method
from sskt.modelcard import ModelCard


def target_of(method: Method) -> nn.Module:
    """The run's headline network: the one evaluated under the empty prefix (FixMatch's weight average), else the
    first one the method trains."""
    return method.evaluated().get("") or next(iter(method.trained().values()))


def save_target_weights(method: Method, path: str | Path) -> None:
    """Save the network inference needs: the target without its auxiliary heads (they stay in the training
    checkpoint, ``checkpoints/last.pt``); the metadata's ``aux_classes`` is the heads this file holds ({})."""
    net = target_of(method)
    state = net.primary_state_dict() if hasattr(net, "primary_state_dict") else net.state_dict()
    # Clone: safetensors refuses tensors that share storage (tied or viewed parameters).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
    meta = {"aux_classes": "{}", "trained_aux_classes": json.dumps(dict(method.aux_classes))}
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


def model_card(cfg: TrainConfig, spec: DatasetSpec) -> ModelCard:
    """The facts ``model.safetensors`` needs beside it to be used without the training set-up."""
    shape = stored_shape(spec.train)  # (C, H, W), or (C, T, H, W) for clips
    channels, h, w = shape[0], shape[-2], shape[-1]
    probe = cfg.method.name == "probe"
    return ModelCard(
        architecture="probe" if probe else cfg.model.name,
        task=spec.task,
        num_classes=spec.num_classes,
        class_names=list(spec.class_names),
        mean=[float(v) for v in spec.mean],
        std=[float(v) for v in spec.std],
        input_size=int(spec.image_size),
        stored_size=[int(h), int(w)],
        channels=int(channels),
        method=cfg.method.name,
        source=dataclasses.asdict(cfg.sources[0]) if probe else None,
        sskt_version=__version__,
        extra={"clip_len": int(shape[1])} if len(shape) == 4 else {},
    )

"""``model.json``: what a trained network needs besides its weights to be used (the inference boundary).

A finished run writes it beside ``model.safetensors``; ``sskt predict``, ``sskt export``, ``evaluate`` and the
``checkpoint:`` source read it, so none of them rebuilds the training set-up (the dataset, the sources) to load the
network. Nothing in it executes: it is plain JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sskt.errors import UserError
from sskt.files import write_text_atomic

MODEL_CARD = "model.json"
FORMAT = 1


@dataclass
class ModelCard:
    """The facts about a trained network that its weights do not hold."""

    architecture: str
    """``model.name`` of the target, or 'probe' (a linear classifier on ``source``'s frozen features)."""
    task: str
    """'single_label' (softmax over classes) or 'multi_label' (a sigmoid per class)."""
    num_classes: int
    class_names: list[str]
    mean: list[float]
    """Per-channel normalisation on [0, 1] pixels, 3 channels."""
    std: list[float]
    input_size: int
    """Side of the square image the network sees."""
    stored_size: list[int]
    """(H, W) images are resized to first (the dataset's stored size), before the centre pad or crop to
    ``input_size`` of evaluation."""
    channels: int
    """Channels of the stored images: 1 (grey, replicated to 3) or 3."""
    method: str = "scratch"
    source: dict[str, Any] | None = None
    """The probe's source (a SourceConfig as a mapping); None otherwise."""
    sskt_version: str = ""
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)


def write_model_card(path: str | Path, card: ModelCard) -> None:
    write_text_atomic(Path(path), json.dumps(dataclasses.asdict(card), indent=2) + "\n")


def read_model_card(path: str | Path) -> ModelCard:
    """Read ``model.json``; a missing, unparsable or foreign file is a one-line UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist (runs finished before sskt wrote {MODEL_CARD} lack it)")
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in dataclasses.fields(ModelCard)}
        return ModelCard(**{k: v for k, v in raw.items() if k in known})
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise UserError(f"{str(path)!r} is not an sskt model card ({type(exc).__name__}: {exc})") from exc

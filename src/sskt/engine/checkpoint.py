"""Atomic checkpoint files (write to a temporary file, fsync, then rename over the old one), and the identity of
what a run reads besides its config, which a resume must find unchanged.

``config.yaml`` records where the data and the frozen networks (sources, a KD teacher) come from, not what they
hold: a resume on another image folder with the same path, or with a teacher whose weights were swapped between a
kill and the resume, would continue the run on other inputs. So ``last.pt`` keeps ``inputs``: the content digest of
every data split the run reads (the one the soft-label cache key uses: a folder's files, sizes and mtimes, an
in-memory split's bytes) and the weights digest of every frozen network. A path written another way (relative, a
symlink) resolves to the same content and is no change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sskt.errors import UserError
from sskt.files import write_atomic

INPUTS = "inputs"
"""The checkpoint key of ``run_inputs``."""


def save_atomic(state: dict, path: str | Path) -> None:
    """Write ``state`` with ``torch.save`` so that ``path`` always holds either the old or the new checkpoint,
    never a torn one; a failed write leaves no temporary file behind."""
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs); a missing or unreadable file is a UserError.
    ``mmap`` maps the tensors instead of reading them (reading a few small fields of a large file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {type(exc).__name__}") from exc


# --- what the run reads ----------------------------------------------------------------------------------------
def split_digest(split: object) -> str | None:
    """sha256 of the split's ``content_digest()`` (None for a split that offers none)."""
    digest = getattr(split, "content_digest", None)
    if digest is None:
        return None
    return hashlib.sha256(json.dumps(digest(), sort_keys=True, default=str).encode()).hexdigest()


def run_inputs(splits: Mapping[str, object], frozen: Mapping[str, Any]) -> dict:
    """``{"data": {split name: content digest}, "frozen": {key: {"name", "weights_sha256"}}}`` of the data
    splits a run reads and its frozen networks (``Source``s): what ``last.pt`` stores under ``INPUTS``."""
    data = {name: split_digest(split) for name, split in splits.items()}
    nets = {key: {"name": src.name, "weights_sha256": src.weights_digest()} for key, src in frozen.items()}
    return {"data": {k: v for k, v in data.items() if v is not None}, "frozen": nets}


def stream_splits(spec: Any, stream: Any) -> dict[str, object]:
    """The data splits a run of ``spec`` through ``stream`` reads: train, test, and an unlabelled pool of its own
    (STL-10's, a folder's) when it has one."""
    splits = {"train": spec.train, "test": spec.test}
    if stream.unlabeled is not None and stream.unlabeled.split is not spec.train:
        splits["unlabeled"] = stream.unlabeled.split
    return splits


def input_changes(stored: Mapping, now: Mapping) -> list[str]:
    """What differs between two ``run_inputs``: the data splits and frozen networks both name whose digest
    changed, and the frozen networks only one of them has (a changed config names those already)."""
    changes = [
        f"the {name} data ({stored['data'][name][:12]} -> {now['data'][name][:12]})"
        for name in sorted(set(stored.get("data", {})) & set(now.get("data", {})))
        if stored["data"][name] != now["data"][name]
    ]
    old, new = stored.get("frozen", {}), now.get("frozen", {})
    for key in sorted(set(old) & set(new)):
        if old[key]["weights_sha256"] != new[key]["weights_sha256"]:
            changes.append(
                f"the weights of frozen network {key!r} ({new[key]['name']}: "
                f"{old[key]['weights_sha256'][:12]} -> {new[key]['weights_sha256'][:12]})"
            )
    return changes


def stored_inputs(path: str | Path) -> dict | None:
    """The ``inputs`` a checkpoint recorded (None: no checkpoint, or one written before sskt recorded them)."""
    if not Path(path).is_file():
        return None
    return load_checkpoint(path, mmap=True).get(INPUTS)


def check_inputs(checkpoint: str | Path, now: Mapping, root: str | Path) -> None:
    """Refuse, before anything is written, to resume the run at ``root`` on other data or other frozen weights than
    its ``checkpoint`` recorded; one line naming each change."""
    stored = stored_inputs(checkpoint)
    changes = input_changes(stored, now) if stored else []
    if changes:
        raise UserError(
            f"--resume true on {str(root)!r} reads other inputs than it was trained on: {'; '.join(changes)}; "
            "resume with the data and networks it was trained with, or pick another --out"
        )

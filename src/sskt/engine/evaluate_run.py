"""``evaluate(path)``: re-evaluate a trained run from its ``config.yaml`` and saved weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from sskt.data import build_dataset
from sskt.data.stream import train_split
from sskt.engine.checkpoint import load_checkpoint
from sskt.engine.evaluation import eval_splits, evaluate_splits
from sskt.engine.weights import load_target_weights
from sskt.methods import METHODS, MethodContext
from sskt.methods.probe import probe_from_run
from sskt.models import build_target
from sskt.rundir import RunDir


def evaluate(path: str | Path, device: str | torch.device = "cpu") -> dict[str, float]:
    """Validation (when the run held a split out) and test metrics of a run. A run directory or
    ``model.safetensors`` evaluates the final target; a checkpoint file (``checkpoints/last.pt``) rebuilds the method
    and evaluates every network it evaluates during training."""
    path = Path(path)
    run = RunDir.containing(path)
    cfg = run.read_config()
    cfg.data.download = False
    spec = build_dataset(cfg.data)
    device = torch.device(device)
    val = train_split(spec, cfg).val
    splits = eval_splits(spec, val, cfg.data.eval_batch_size, device, cfg.data.num_workers)
    if path.suffix == ".pt":
        return _evaluate_checkpoint(cfg, spec, path, splits, device)
    state, aux_classes = load_target_weights(path if path.suffix == ".safetensors" else run.weights)
    if cfg.method.name == "probe":  # the source with its trained classifier, not cfg.model
        what = f"run {str(run.root)!r}"
        net = probe_from_run(dataclasses.asdict(cfg.sources[0]), (spec.mean, spec.std), state, what)
    else:
        net = build_target(cfg.model, spec.num_classes, aux_classes, cfg.head)
        net.load_state_dict(state)
    return evaluate_splits({"": net.to(device)}, splits, spec.task, spec.num_classes, device)


def _evaluate_checkpoint(cfg, spec, path: Path, splits, device: torch.device) -> dict[str, float]:
    from lightning_fabric import Fabric

    method = METHODS.create(cfg.method.name, ctx=MethodContext(cfg, spec, 1))
    # The method's state includes optimizers, which exist only after setup.
    method.setup(Fabric(accelerator="cpu", devices=1, precision="32-true"))
    method.load_state_dict(load_checkpoint(path)["method"])
    nets = {prefix: net.to(device) for prefix, net in method.evaluated().items()}
    return evaluate_splits(nets, splits, spec.task, spec.num_classes, device)

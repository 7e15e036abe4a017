"""``evaluate(path)``: re-evaluate a trained run on its dataset, from its shipped network or its checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from sskt.data import build_dataset
from sskt.data.stream import train_split
from sskt.engine.checkpoint import load_checkpoint
from sskt.engine.evaluation import eval_splits, evaluate_splits
from sskt.methods import METHODS, MethodContext
from sskt.rundir import RunDir
from sskt.trained import load_trained


def evaluate(path: str | Path, device: str | torch.device = "cpu") -> dict[str, float]:
    """Validation (when the run held a split out) and test metrics of a run. A run directory or
    ``model.safetensors`` evaluates the shipped network (``sskt.trained``: its card says what to build); a
    checkpoint file (``checkpoints/last.pt``) rebuilds the method and evaluates every network it evaluates during
    training."""
    path = Path(path)
    cfg = RunDir.containing(path).read_config()
    cfg.data.download = False
    spec = build_dataset(cfg.data)
    device = torch.device(device)
    val = train_split(spec, cfg).val
    splits = eval_splits(spec, val, cfg.data.eval_batch_size, device, cfg.data.num_workers)
    if path.suffix == ".pt":
        return _evaluate_checkpoint(cfg, spec, path, splits, device)
    net, _ = load_trained(path)
    return evaluate_splits({"": net.to(device)}, splits, spec.task, spec.num_classes, device)


def _evaluate_checkpoint(cfg, spec, path: Path, splits, device: torch.device) -> dict[str, float]:
    from lightning_fabric import Fabric

    method = METHODS.create(cfg.method.name, ctx=MethodContext(cfg, spec, 1))
    # The method's state includes optimizers, which exist only after setup.
    method.setup(Fabric(accelerator="cpu", devices=1, precision="32-true"))
    method.load_state_dict(load_checkpoint(path)["method"])
    nets = {prefix: net.to(device) for prefix, net in method.evaluated().items()}
    return evaluate_splits(nets, splits, spec.task, spec.num_classes, device)

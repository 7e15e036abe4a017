"""Which source resolution benchmark v3 uses (not a test): the L-BFGS linear probe's validation accuracy on frozen
EfficientNet-Lite0 features of Fashion-MNIST at several input sizes and label budgets, on the search seed only (the
fresh seeds never choose), and what a source forward costs at each size.

The validation split (100 per class, ``data.val_seed`` 0) is v3's; the labelled subsets are the search seed's. Test
images are not read. ``--json PATH`` writes the figures.

    .venv/bin/python benchmarks/probe_resolution.py --json benchmarks/results/probe_resolution.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from sskt.config import SourceConfig, TrainConfig
from sskt.data import build_dataset
from sskt.data.stream import train_split
from sskt.engine.records import cpu_model, load_average
from sskt.sources import build_source
from sskt.sources.linear_eval import choose_l2

try:
    from sskt.sources.probe import strip_classifier
except ImportError:  # before the probe moved below the methods
    from sskt.methods.probe import strip_classifier


@torch.inference_mode()
def features(source, images: torch.Tensor, mean, std, batch: int = 128) -> torch.Tensor:
    """Penultimate features [N, D] of uint8 images [N, C, H, W], normalised as the target's pipeline does."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].float().div(255)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out.append(source((x - m) / s).float())
    return torch.cat(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 160, 224])
    p.add_argument("--labels", type=int, nargs="+", default=[10, 25, 100])
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cfg = TrainConfig(seed=args.seed)
    cfg.data.val_per_class = 100
    spec = build_dataset(cfg.data)
    images = (
        spec.train.images
        if hasattr(spec.train, "images")
        else torch.stack([spec.train[i][0] for i in range(len(spec.train))])
    )
    labels = torch.as_tensor(spec.train.labels)
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "seed": args.seed,
              "load_at_start": load_average(), "rows": {}}  # fmt: skip
    for px in args.sizes:
        source = build_source(SourceConfig(name="efficientnet_lite0.imagenet", input_size=px), spec.mean, spec.std)
        strip_classifier(source.net, "efficientnet_lite0")
        splits, needed = {}, set()
        for n in args.labels:
            cfg.data.labels_per_class = n
            splits[n] = train_split(spec, cfg)
            needed |= set(splits[n].labeled.tolist()) | set(splits[n].val.tolist())
        order = torch.tensor(sorted(needed))
        start = time.perf_counter()
        feats = features(source, images[order], spec.mean, spec.std)
        seconds = time.perf_counter() - start
        row = {i: j for j, i in enumerate(order.tolist())}
        pick = lambda idx, feats=feats, row=row: (feats[[row[i] for i in idx.tolist()]], labels[idx])  # noqa: E731
        result["rows"][px] = {"images_per_second": len(order) / seconds}
        for n, split in splits.items():
            fit = choose_l2(pick(split.labeled), pick(split.val), spec.num_classes)
            result["rows"][px][f"{n}_per_class"] = {"val_acc": max(fit.val_acc.values()), "l2": fit.l2}
        print(px, json.dumps(result["rows"][px]), flush=True)
    result["load_at_end"] = load_average()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

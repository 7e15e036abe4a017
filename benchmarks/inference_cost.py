"""What each trained network costs to run: the benchmark's target (ResNet20) against the adapted teachers (not a
test).

The reference rows of benchmark v2 are the teachers themselves: a linear probe on EfficientNet-Lite0's frozen
features (fed 64 px, as SSKT's source) and EfficientNet-Lite0 fine-tuned at 32 px. A teacher that beats the small
target must also be judged by what it costs at inference. In one process, on random 32 px batches: parameters,
and images per second of a forward pass (eval mode, no autograd) at batch 256, median of ``--repeats`` timed
passes after a warm-up, as ratios to the target. ``--json PATH`` writes the figures.

    .venv/bin/python benchmarks/inference_cost.py --json benchmarks/results/inference_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torch import nn

from sskt.config import HeadConfig, ModelConfig, SourceConfig
from sskt.engine.records import versions
from sskt.methods.probe import build_probe
from sskt.models import build_target

FASHION = ((0.2860,) * 3, (0.3530,) * 3)


def networks() -> dict[str, nn.Module]:
    lite0 = SourceConfig(name="efficientnet_lite0.imagenet", input_size=64)
    return {
        "target: resnet20 (32 px)": build_target(ModelConfig(name="resnet20"), 10, {}, HeadConfig()),
        "teacher: probe on efficientnet_lite0 (64 px)": build_probe(lite0, *FASHION, num_classes=10),
        "teacher: efficientnet_lite0 fine-tuned (32 px)": build_target(
            ModelConfig(name="efficientnet_lite0"), 10, {}, HeadConfig()
        ),
    }


def images_per_second(net: nn.Module, batch: torch.Tensor, repeats: int) -> float:
    net.eval()
    times = []
    with torch.inference_mode():
        net(batch)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            net(batch)
            times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = torch.randn(args.batch, 3, 32, 32)
    rows = {}
    for name, net in networks().items():
        params = sum(p.numel() for p in net.parameters())
        rows[name] = {"parameters": params, "images_per_second": images_per_second(net, batch, args.repeats)}
    base = next(iter(rows.values()))
    print(f"{'network':48} {'params':>10} {'img/s':>9} {'time x target':>14}")
    for name, row in rows.items():
        row["time_ratio_to_target"] = base["images_per_second"] / row["images_per_second"]
        ips, ratio = row["images_per_second"], row["time_ratio_to_target"]
        print(f"{name:48} {row['parameters']:>10,} {ips:>9.0f} {ratio:>14.2f}")
    if args.json:
        meta = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), **versions()}
        with open(args.json, "w") as f:
            json.dump({"machine": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

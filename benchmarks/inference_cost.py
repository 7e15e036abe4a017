"""What each trained network costs to run: the benchmark's target (ResNet20) against the adapted teachers (not a
test).

The reference rows of benchmarks v2 and v3 are the teachers themselves: a linear probe on EfficientNet-Lite0's
frozen features (fed 64 px, as SSKT's source in v2, and 224 px, its native size, in v3) and EfficientNet-Lite0
fine-tuned at 32 px. A teacher that beats the small
target must also be judged by what it costs at inference. In one process, on random 32 px batches: parameters,
and images per second of a forward pass (eval mode, no autograd) at batch 256, median of ``--repeats`` timed
passes after a warm-up, as ratios to the target. ``--json PATH`` writes the figures.

The ratios lead: the networks are timed in interleaved rounds (one pass of each per round), so a load that comes
and goes slows them alike, and the ratio of two networks carries from one machine to another far better than
images per second do (a committed 1,701 img/s for ResNet20 came out as 936 on this project's 2-core machine, and
nothing said what had measured the first). The JSON names what measured it: the CPU model, its cores, torch's
threads, and the 1-minute load before and after. Run it on a quiet machine (load well below the cores).

    .venv/bin/python benchmarks/inference_cost.py --json benchmarks/results/inference_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

from sskt.config import HeadConfig, ModelConfig, SourceConfig
from sskt.engine.records import cpu_model, load_average, versions
from sskt.models import build_target
from sskt.sources.probe import build_probe

FASHION = ((0.2860,) * 3, (0.3530,) * 3)


def networks() -> dict[str, nn.Module]:
    lite0 = SourceConfig(name="efficientnet_lite0.imagenet", input_size=64)
    lite0_224 = SourceConfig(name="efficientnet_lite0.imagenet", input_size=224)
    return {
        "target: resnet20 (32 px)": build_target(ModelConfig(name="resnet20"), 10, {}, HeadConfig()),
        "teacher: probe on efficientnet_lite0 (64 px)": build_probe(lite0, *FASHION, num_classes=10),
        "teacher: probe on efficientnet_lite0 (224 px, v3)": build_probe(lite0_224, *FASHION, num_classes=10),
        "teacher: efficientnet_lite0 fine-tuned (32 px)": build_target(
            ModelConfig(name="efficientnet_lite0"), 10, {}, HeadConfig()
        ),
    }


def images_per_second(nets: dict[str, nn.Module], batch: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median images per second of each network, timed in ``repeats`` interleaved rounds after one warm-up pass."""
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for net in nets.values():
            net.eval()(batch)  # warm-up
        for _ in range(repeats):
            for name, net in nets.items():
                start = time.perf_counter()
                net(batch)
                times[name].append(time.perf_counter() - start)
    return {name: len(batch) / statistics.median(t) for name, t in times.items()}


def machine(load_before: float) -> dict[str, object]:
    """What measured the figures, so that nobody has to guess which run to believe."""
    meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    return meta | {"load_1min_before": load_before, "load_1min_after": load_average(), **versions()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_average()
    batch = torch.randn(args.batch, 3, 32, 32)
    nets = networks()
    speed = images_per_second(nets, batch, args.repeats)
    target = next(iter(speed.values()))
    ratios = {name: target / ips for name, ips in speed.items()}
    rows = {name: {"parameters": sum(p.numel() for p in net.parameters()), "images_per_second": speed[name]}
            for name, net in nets.items()}  # fmt: skip
    meta = machine(load_before)
    print(f"{'network':48} {'time x target':>14} {'params':>10} {'img/s':>9}")
    for name, row in rows.items():
        print(f"{name:48} {ratios[name]:>14.2f} {row['parameters']:>10,} {row['images_per_second']:>9.0f}")
    print(f"{meta['cpu']}, {meta['cores']} cores, {meta['threads']} threads, 1-min load {load_before:.2f} before and "
          f"{meta['load_1min_after']:.2f} after")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"time_ratio_to_target": ratios, "machine": meta, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What one training step of a 3D target costs on this machine, so users can size video runs (not a test).

A step is forward, backward and an SGD update of a 3D network on a batch of random clips (``--batch`` clips of
``--frames`` frames at ``--size`` px: the paper's 16 x 112 x 112 by default), median of ``--steps`` timed steps after
one warm-up, for each network in ``--models``. ``--json PATH`` writes the figures.

    .venv/bin/python benchmarks/clip_step.py --json benchmarks/results/clip_step.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from sskt.config import HeadConfig, ModelConfig
from sskt.engine.records import versions
from sskt.models import build_target


def step_seconds(name: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    net = build_target(ModelConfig(name=name), 101, {}, HeadConfig())
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    labels = torch.randint(0, 101, (args.batch,))
    times = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(clips).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet3d_18", "r3d_18"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name in args.models:
        seconds = step_seconds(name, args)
        rows[name] = {"step_seconds": seconds, "clips_per_second": args.batch / seconds}
        print(f"{name}: {seconds:.2f} s per step of {args.batch} clips ({args.batch / seconds:.2f} clips/s)")
    if args.json:
        meta = {"platform": platform.platform(), "threads": torch.get_num_threads(), **versions()}
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "settings": vars(args), "machine": meta}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

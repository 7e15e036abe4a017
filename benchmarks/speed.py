"""How much does SSKT cost over scratch, online and with the soft-label cache? (not a test)

In one process, on the same data (Fashion-MNIST, ``--labels-per-class`` labels per class, resnet20 target,
``efficientnet_lite0.imagenet`` source at ``--source-size`` px), for each seed: a scratch run, an SSKT run with the
source online, the cache build, and an SSKT run replaying the cache, all for ``--epochs`` epochs. Reports the mean
training-epoch wall time (evaluation timed apart), the cache build time, their ratios to scratch, test accuracy as
mean +- std over seeds, and a micro-benchmark of the source forward (a straightforward per-batch forward against the
fast path: inference mode, channels-last, bf16 autocast). ``--json PATH`` writes every figure as one JSON object.
``--device cuda`` trains on the GPU, once per precision (``32-true`` and ``bf16-mixed``: autocast off and on), and
adds images per second and the GPU's mean utilisation (``torch.cuda.utilization``, which needs pynvml).

    .venv/bin/python benchmarks/speed.py --json speed.json
    .venv/bin/python benchmarks/speed.py --device cuda --epochs 4 --json speed_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from sskt.config import SourceConfig, TrainConfig
from sskt.engine import train
from sskt.engine.records import versions

SOURCE = "efficientnet_lite0.imagenet"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="Training epochs per run.")
    p.add_argument("--views", type=int, default=2, help="Cached views K per image (K <= epochs keeps the build cheap).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labels-per-class", type=int, default=100)
    p.add_argument("--source-size", type=int, default=96, help="Source input side in px (the demo preset's).")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-root", default=None, help="Fashion-MNIST folder (default: the dataset's own lookup).")
    p.add_argument("--test-images", type=int, default=2000, help="Evaluate on the first N/10 test images per class.")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    p.add_argument("--out", default=None, help="Folder for runs and the cache (default: a temporary folder).")
    p.add_argument("--json", default=None, help="Write the figures as one JSON object to this file.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the runs train.")
    p.add_argument(
        "--precisions", nargs="+", default=None,
        help="Fabric precisions to compare (default: 32-true on CPU; 32-true and bf16-mixed on CUDA, bf16 autocast "
        "off and on).",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch here")
    args.precisions = args.precisions or (["32-true", "bf16-mixed"] if args.device == "cuda" else ["32-true"])
    return args


def trimmed_copy(args: argparse.Namespace, out: Path) -> str:
    """Fashion-MNIST with every training image and the first ``--test-images / 10`` test images per class: a full
    10000-image evaluation takes longer than the training epochs being compared on a 2-core CPU."""
    import gzip
    import struct

    from sskt.data.datasets import DEBIAN_FASHION_MNIST, read_idx

    src = Path(args.data_root or DEBIAN_FASHION_MNIST)
    out.mkdir(parents=True, exist_ok=True)
    for split, keep_per_class in (("train", None), ("t10k", args.test_images // 10)):
        images = read_idx(src / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(src / f"{split}-labels-idx1-ubyte.gz").long()
        keep = torch.arange(len(labels))
        if keep_per_class is not None:
            keep = torch.cat([(labels == c).nonzero().flatten()[:keep_per_class] for c in range(10)]).sort().values
        for name, data in (
            (f"{split}-images-idx3-ubyte.gz", images[keep]),
            (f"{split}-labels-idx1-ubyte.gz", labels[keep]),
        ):
            header = struct.pack(">I", 0x800 | data.dim()) + struct.pack(f">{data.dim()}I", *data.shape)
            with gzip.open(out / name, "wb", compresslevel=1) as f:
                f.write(header + data.to(torch.uint8).contiguous().numpy().tobytes())
    return str(out)


def make_cfg(args: argparse.Namespace, seed: int, out: Path, method: str, cached: bool) -> TrainConfig:
    """One run of the comparison; only ``method`` and the cache switch differ between the three kinds."""
    cfg = TrainConfig(seed=seed, epochs=args.epochs, out=str(out), progress=False, eval_every=args.epochs)
    cfg.threads, cfg.accelerator, cfg.precision = args.threads, args.device, args.precision
    cfg.data.root, cfg.data.download = args.data_root, False
    cfg.data.labels_per_class, cfg.data.batch_size = args.labels_per_class, args.batch_size
    cfg.optim.lr, cfg.optim.schedule = 0.05, "cosine"
    cfg.method.name = method
    if method == "sskt":
        cfg.sources = [SourceConfig(name=SOURCE, input_size=args.source_size)]
    cfg.cache.enabled, cfg.cache.views, cfg.cache.dir = cached, args.views, str(out.parent / "cache")
    return cfg


class GpuSampler:
    """The GPU's utilisation (%), sampled every 0.5 s in a thread while a run trains (None off CUDA or without
    NVML: ``torch.cuda.utilization`` needs pynvml)."""

    def __init__(self, device: str) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()

    def __enter__(self) -> GpuSampler:
        if self.device == "cuda":
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: no figure, not a failure
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def timed_run(cfg: TrainConfig) -> dict:
    """Train; return the mean training-epoch seconds, the rest of the wall time (evaluation, checkpoints), accuracy,
    images per second and the GPU's mean utilisation."""
    started = time.perf_counter()
    with GpuSampler(cfg.accelerator) as gpu:
        summary = train(cfg)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (Path(cfg.out) / "records.jsonl").read_text().splitlines()]
    epochs = [r["epoch_seconds"] for r in records]
    return {
        "epoch_s": statistics.mean(epochs),
        "other_s": wall - sum(epochs),
        "acc": summary["final"]["test_acc"],
        "images_per_s": statistics.mean(r["images_per_second"] for r in records),
        "gpu_util": gpu.mean,
    }


def build_time(cfg: TrainConfig) -> tuple[float, float]:
    """Seconds to build the run's cache (sources loaded beforehand, not counted) and its size in MB."""
    from sskt.data import TrainStream, build_dataset
    from sskt.engine.soft_cache import run_sources
    from sskt.sources.cache import open_cache

    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg)
    sources = run_sources(cfg, spec)
    started = time.perf_counter()
    cache = open_cache(cfg, spec, stream, sources, build=True, show_progress=True)
    return time.perf_counter() - started, cache.nbytes() / 1e6


def source_paths(args: argparse.Namespace, reps: int = 2) -> dict[str, float]:
    """Seconds per training batch of the source forward: straightforward (no_grad, fp32, contiguous) vs fast paths."""
    from sskt.sources import SourceBank, build_source

    src = build_source(SourceConfig(name=SOURCE, input_size=args.source_size), (0.286,) * 3, (0.353,) * 3)
    x = torch.randn(args.batch_size, 3, 32, 32)
    fast = SourceBank({"s": build_source(SourceConfig(name=SOURCE, input_size=args.source_size), (0.286,) * 3,
                                         (0.353,) * 3)}, channels_last=True).eval()  # fmt: skip

    def naive() -> None:
        with torch.no_grad():
            src(x)

    def inference_cl() -> None:
        with torch.inference_mode():
            fast(x)

    def inference_cl_bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            fast(x)

    out = {}
    for name, fn in {"naive": naive, "inference_channels_last": inference_cl, "bf16": inference_cl_bf16}.items():
        n = reps if name != "bf16" else 1  # CPUs without bf16 units run it ~10x slower: one timing says enough
        if n > 1:
            fn()  # warm-up
        started = time.perf_counter()
        for _ in range(n):
            fn()
        out[name] = (time.perf_counter() - started) / n
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_all(args: argparse.Namespace, root: Path) -> dict:
    """Every seed's three runs and cache build; the per-seed lists of figures."""
    per: dict[str, list[float]] = {}
    for seed in args.seeds:
        figures = {}
        for kind, method, cached in (
            ("scratch", "scratch", False),
            ("online", "sskt", False),
            ("cached", "sskt", True),
        ):
            cfg = make_cfg(args, seed, root / f"{kind}_{seed}", method, cached)
            if cached:
                figures["cache_build_s"], figures["cache_mb"] = build_time(cfg)
            run = timed_run(cfg)
            figures.update(
                {f"{kind}_epoch_s": run["epoch_s"], f"{kind}_other_s": run["other_s"], f"{kind}_acc": run["acc"]}
            )
            figures[f"{kind}_images_per_s"] = run["images_per_s"]
            if run["gpu_util"] is not None:
                figures[f"{kind}_gpu_util"] = run["gpu_util"]
            print(f"seed {seed} {kind}: epoch {run['epoch_s']:.1f} s, eval+other {run['other_s']:.1f} s, "
                  f"acc {run['acc']:.2f}", flush=True)  # fmt: skip
        for k, v in figures.items():
            per.setdefault(k, []).append(v)
    return per


def summarise(args: argparse.Namespace, per: dict[str, list[float]], paths: dict[str, float], steps: int) -> dict:
    """The JSON object: means of the timings, mean/std of the accuracies, ratios, targets, per-seed lists."""
    res: dict = {k: statistics.mean(v) for k, v in per.items()}
    for kind in ("scratch", "online", "cached"):
        res[f"{kind}_acc"], res[f"{kind}_acc_std"] = mean_std(per[f"{kind}_acc"])
    source_epoch = max(res["online_epoch_s"] - res["scratch_epoch_s"], 1e-9)  # the online run's source time
    res.update(
        epochs=args.epochs,
        views=args.views,
        seeds=args.seeds,
        per_seed=per,
        source_batch_s=paths,
        cached_over_scratch=res["cached_epoch_s"] / res["scratch_epoch_s"],
        online_over_scratch=res["online_epoch_s"] / res["scratch_epoch_s"],
        naive_online_over_scratch=(res["scratch_epoch_s"] + steps * paths["naive"]) / res["scratch_epoch_s"],
        build_over_online_source=res["cache_build_s"] / (args.views * source_epoch),
        device=args.device,
        precision=args.precision,
        machine={
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            **versions(),
        },  # fmt: skip
    )
    res["targets"] = {
        "cached/scratch <= 1.10": res["cached_over_scratch"] <= 1.10,
        "build <= (K/epochs) x online source time": res["build_over_online_source"] <= 1.0,
        "cached acc within online seed spread": abs(res["cached_acc"] - res["online_acc"])
        <= max(res["online_acc_std"], res["cached_acc_std"]),
        "online/scratch < naive per-batch forward": res["online_over_scratch"] < res["naive_online_over_scratch"],
    }
    return res


def report(res: dict) -> None:
    print(f"\nFashion-MNIST, resnet20, {SOURCE}; {res['epochs']} epochs, K={res['views']}, seeds {res['seeds']}")
    print(f"{'run':<9}{'epoch s':>9}{'x scratch':>11}{'img/s':>9}{'gpu %':>7}{'eval+other s':>14}{'test acc %':>18}")
    for kind in ("scratch", "online", "cached"):
        ratio = res[f"{kind}_epoch_s"] / res["scratch_epoch_s"]
        acc = f"{res[f'{kind}_acc']:.2f} +- {res[f'{kind}_acc_std']:.2f}"
        util = res.get(f"{kind}_gpu_util")
        util = f"{util:>7.0f}" if util is not None else f"{'-':>7}"
        print(f"{kind:<9}{res[f'{kind}_epoch_s']:>9.2f}{ratio:>11.3f}{res[f'{kind}_images_per_s']:>9.0f}{util}"
              f"{res[f'{kind}_other_s']:>14.1f}{acc:>18}")  # fmt: skip
    print(f"cache build {res['cache_build_s']:.1f} s ({res['cache_mb']:.1f} MB) = "
          f"{res['build_over_online_source']:.2f} x (K x online source time per epoch)")  # fmt: skip
    paths = ", ".join(f"{k} {v:.3f}" for k, v in res["source_batch_s"].items())
    print(f"source forward s/batch: {paths}; naive online/scratch {res['naive_online_over_scratch']:.3f}")
    for name, ok in res["targets"].items():
        print(f"  [{'ok' if ok else 'MISS'}] {name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="sskt-speed-") as tmp:
        root = Path(args.out or tmp)
        args.data_root = trimmed_copy(args, root / "fmnist")
        paths = source_paths(args)
        steps = -(-args.labels_per_class * 10 // args.batch_size)
        for precision in args.precisions:  # one comparison per precision (bf16 autocast off and on)
            args.precision = precision
            print(f"--- {args.device}, precision {precision}", flush=True)
            results[precision] = summarise(args, run_all(args, root / precision), paths, steps)
            report(results[precision])
    if args.json:
        one = len(results) == 1
        Path(args.json).write_text(json.dumps(next(iter(results.values())) if one else results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

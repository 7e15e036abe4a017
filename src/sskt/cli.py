"""The ``sskt`` command line: a mapping from command names to functions.

Each command takes its own argument list and returns an exit status (None means 0). Another module adds a command
with two lines::

    from sskt.cli import COMMANDS
    COMMANDS["grid"] = grid_main

``main`` turns a ``UserError`` or a bad argument into ``error: <one line>`` on stderr and exit status 2; ``--debug``
anywhere on the command line shows the traceback instead.

Start-up time: this module imports nothing heavy. Each command imports what it needs inside its function, after its
arguments are parsed, so ``sskt --help``, ``sskt <command> --help`` and a bad option answer without importing torch,
and ``sskt predict`` never imports the training stack (tests/test_startup.py holds it to that).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence

from sskt import processes
from sskt.config_io import parse_train_args
from sskt.errors import UserError, check_choice

Command = Callable[[list[str]], "int | None"]

_LAZY = {"train": "sskt.engine", "evaluate": "sskt.engine", "check_config": "sskt.engine"}
"""Engine functions ``sskt.cli`` still offers as attributes (``sskt.cli.train``), imported on first access."""


def __getattr__(name: str) -> object:
    """``sskt.cli.train`` and friends, imported on first use so that importing the CLI stays cheap."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def _engine(name: str) -> Callable:
    """The engine function ``name``, or the stand-in a test set on this module (``monkeypatch.setattr(cli, ...)``)."""
    return getattr(sys.modules[__name__], name)


def train_command(argv: list[str]) -> int:
    cfg = parse_train_args(argv)
    summary = _engine("train")(cfg)
    chosen = {k: summary[k] for k in ("best", "best_epoch", "selected_by") if k in summary}
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":  # one line, not one per process
        print(json.dumps({"out": cfg.out, "final": summary["final"], **chosen}))
    return 0


def evaluate_command(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sskt evaluate", description="Re-evaluate a trained run.", exit_on_error=False)
    parser.add_argument("run", type=str, help="Run directory, its model.safetensors, or a checkpoint file.")
    args = parser.parse_args(argv)
    print(json.dumps(_engine("evaluate")(args.run)))
    return 0


REGISTRIES = {
    "datasets": "sskt.data:DATASETS",
    "methods": "sskt.methods:METHODS",
    "models": "sskt.models:MODELS",
    "sources": "sskt.sources:SOURCES",
}
"""What ``sskt list`` can show, as ``module:registry``: importing the package registers its names, so only the
registry asked for is imported."""


def list_command(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sskt list", description="Registered names, one per line.", exit_on_error=False)
    parser.add_argument("what", type=str, help=f"One of: {', '.join(REGISTRIES)}.")
    what = check_choice("list", parser.parse_args(argv).what, REGISTRIES)
    module, registry = REGISTRIES[what].split(":")
    print("\n".join(getattr(importlib.import_module(module), registry).list()))
    return 0


def predict_command(argv: list[str]) -> int:
    """``sskt predict RUN_DIR IMAGE|FOLDER... [--topk K] [--json]``: the top classes of each image."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sskt predict", description="Top classes of images.", exit_on_error=False)
    parser.add_argument("run", type=str, help="Run directory (holds model.safetensors and model.json).")
    parser.add_argument("images", type=str, nargs="+", help="Image files and/or folders of images (any depth).")
    parser.add_argument("--topk", type=int, default=5, help="Classes shown per image.")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per forward pass.")
    parser.add_argument("--json", action="store_true", help="One JSON object per image instead of text.")
    parser.add_argument("--max_pixels", type=int, default=89_478_485, help="Larger images are refused (bombs).")
    parser.add_argument("--trust_sources", action="store_true", help="Follow a card's sources outside its run.")
    args = parser.parse_args(argv)
    if min(args.topk, args.batch_size, args.max_pixels) < 1:
        raise UserError(f"--topk, --batch_size and --max_pixels must be at least 1, got {args.topk}, "
                        f"{args.batch_size} and {args.max_pixels}")  # fmt: skip
    from sskt.inference import collect_images, predict, printable
    from sskt.trained import load_trained

    net, card = load_trained(args.run, args.trust_sources)
    if card.task == "video":
        raise UserError(f"sskt predict takes images; {args.run!r} is a video model (clips of {card.extra['clip_len']})")
    failed = 0
    for path, result in predict(collect_images(args.images), net, card, args.topk, args.batch_size, args.max_pixels):
        if isinstance(result, str):
            failed += 1
            print(f"error: {result}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"file": str(path), "top": [{"class": c, "probability": p} for c, p in result]}))
        else:
            print(f"{printable(path)}: " + ", ".join(f"{printable(c)} {p:.3f}" for c, p in result))
    return 2 if failed else 0


EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
"""``sskt.inference.EXPORTERS``'s names, spelled out so that ``sskt export --help`` need not import torch (a test
keeps the two equal)."""


def export_command(argv: list[str]) -> int:
    """``sskt export RUN_DIR --format onnx|torchscript|safetensors --out FILE``, with a parity check."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sskt export", description="Export a trained network.", exit_on_error=False)
    parser.add_argument("run", type=str, help="Run directory (holds model.safetensors and model.json).")
    parser.add_argument("--format", type=str, required=True, help=f"One of: {', '.join(EXPORT_FORMATS)}, hf.")
    parser.add_argument("--out", type=str, required=True, help="File (hf: folder) to write; to replace, --force.")
    parser.add_argument("--force", action="store_true", help="Replace an existing --out (never a run's own files).")
    parser.add_argument("--trust_sources", action="store_true", help="Follow a card's sources outside its run.")
    parser.add_argument("--license", type=str | None, default=None, help="hf: the model card's license (e.g. mit).")
    parser.add_argument("--from_report", "--from-report", type=str | None, help="hf: a report folder (mean +- std).")
    args = parser.parse_args(argv)
    if check_choice("export format", args.format, (*EXPORT_FORMATS, "hf")) == "hf":  # a model-hub folder
        from sskt.hub import export_hf

        print(json.dumps(export_hf(args.run, args.out, args.force, args.license, args.from_report, args.trust_sources)))
        return 0
    from sskt.inference import export

    print(json.dumps(export(args.run, args.format, args.out, force=args.force, trust_sources=args.trust_sources)))
    return 0


def curves_command(argv: list[str]) -> int:
    from sskt.experiments.curves import curves_main

    return curves_main(argv)


def grid_command(argv: list[str]) -> int:
    from sskt.experiments.grid_cli import grid_main

    return grid_main(argv)


def report_command(argv: list[str]) -> int:
    from sskt.experiments.report import report_main

    return report_main(argv)


CACHE_HELP = """usage: sskt cache build --config RUN.yaml [--dotted.override VALUE ...]
       sskt cache prune [--dir DIR] [--dry-run]

Build the exact soft-label cache of a run ahead of training: the run's config (the same presets and overrides as
`sskt train`) decides the sources, the pools, the K stored views (--cache.views) and where it goes (--cache.dir).
Prints {"caches": [folder per frozen network], "views": K, "bytes": size}: one cache per network, shared by every
run of the same data that reads it. A killed build continues where it stopped.

`prune` frees the disk of caches no run can read any more under DIR (default: $SSKT_CACHE, else ~/.cache/sskt):
caches of an older format and builds killed and never resumed (a build under way is kept); it prints what it removed
and the space freed, and --dry-run only lists them."""


def cache_command(argv: list[str]) -> int:
    """``sskt cache build --config run.yaml [overrides]``: build the run's soft-label cache and print its folder."""
    if not argv or argv[0] in ("-h", "--help") or any(a in ("-h", "--help") for a in argv[1:2]):
        print(CACHE_HELP)
        return 0 if argv else 2
    check_choice("cache command", argv[0], ("build", "prune"))
    if argv[0] == "prune":
        return cache_prune(argv[1:])
    cfg = parse_train_args(argv[1:])
    import torch

    from sskt.data import TrainStream, build_dataset
    from sskt.engine.soft_cache import open_cache, run_sources

    _engine("check_config")(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = "cuda" if cfg.accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() else "cpu"
    spec = build_dataset(cfg.data)
    stream = TrainStream(spec, cfg)
    cache = open_cache(cfg, spec, stream, run_sources(cfg, spec, device), build=True, show_progress=cfg.progress)
    print(json.dumps({"caches": [str(p) for p in cache.paths], "views": cache.views, "bytes": cache.nbytes()}))
    return 0


def cache_prune(argv: list[str]) -> int:
    """``sskt cache prune [--dir DIR] [--dry-run]``: remove the caches no run can read any more."""
    import argparse

    from sskt.config import CacheConfig
    from sskt.sources.cache.key import cache_root
    from sskt.sources.cache.prune import prune

    parser = argparse.ArgumentParser(prog="sskt cache prune", exit_on_error=False)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--dry-run", action="store_true")
    try:
        args, extra = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise UserError(f"sskt cache prune: {exc}") from None
    if extra:
        raise UserError(f"sskt cache prune: unexpected argument {extra[0]!r}; valid: --dir DIR, --dry-run")
    root = cache_root(CacheConfig(dir=args.dir))
    if not root.is_dir():
        raise UserError(f"sskt cache prune: no cache folder at {str(root)!r}")
    removed = prune(root, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for folder, why, size in removed:
        print(f"{verb} {folder} ({why}, {size / 1e6:.1f} MB)")
    print(f"{verb} {len(removed)} cache folder(s), {sum(s for _, _, s in removed) / 1e6:.1f} MB, under {root}")
    return 0


def advise_command(argv: list[str]) -> int:
    """``sskt advise --config my.yaml [--sources ...] [--input-sizes ...] [--reference RUN] [--out DIR]``."""
    from sskt.experiments.advise_args import print_help, wants_help

    if wants_help(argv):  # answered without loading torch
        return print_help(argv)
    from sskt.experiments.advise import advise_main

    return advise_main(argv)


def compare_command(argv: list[str]) -> int:
    """``sskt compare --config my.yaml [--budget 3h] [--methods ...] [--launcher local|slurm] [--out DIR]``."""
    from sskt.experiments.compare import compare_main

    return compare_main(argv)


COMMANDS: dict[str, Command] = {
    "train": train_command,
    "evaluate": evaluate_command,
    "list": list_command,
    "curves": curves_command,
    "grid": grid_command,
    "report": report_command,
    "cache": cache_command,
    "predict": predict_command,
    "export": export_command,
    "advise": advise_command,
    "compare": compare_command,
}


def _usage() -> str:
    return "usage: sskt [--debug] {" + ",".join(COMMANDS) + "} ...   (sskt <command> --help for its options)"


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input: ``UserError``, and jsonargparse's own once a command has imported it (a
    command that never imported it cannot raise it, and ``sskt --help`` should not pay for importing it)."""
    jsonargparse = sys.modules.get("jsonargparse")
    return (UserError,) if jsonargparse is None else (UserError, jsonargparse.ArgumentError)


def _disk_full(exc: BaseException) -> str:
    """One line for a disk that filled up under any writer (a tracker's event file, a library's cache), or ''.
    Everything sskt writes itself is atomic, so the run's last checkpoint is intact and ``--resume true`` goes on."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    where = f" writing {exc.filename!r}" if exc.filename else ""
    return (
        f"no space left on the device{where}; free space, then rerun with --resume true (the last checkpoint is kept)"
    )


def _quiet_disk_full(default):  # noqa: ANN001, ANN202 - threading.excepthook's own types
    """A thread's hook that stays silent on a full disk (a tracker's writer thread hits it too; the main thread
    prints the one line) and defers to ``default`` for anything else."""

    def hook(args) -> None:  # noqa: ANN001 - threading.ExceptHookArgs
        if not _disk_full(args.exc_value):
            default(args)

    return hook


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sskt`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    processes.watch_interrupts()
    threading.excepthook = _quiet_disk_full(threading.excepthook)
    try:
        command = COMMANDS[check_choice("command", args[0], COMMANDS)]
        return command(args[1:]) or 0
    except BaseException as exc:  # a Ctrl-C may reach us as another exception (sskt/processes.py)
        if debug or not (processes.interrupted(exc) or isinstance(exc, _user_errors()) or _disk_full(exc)):
            raise
        if not processes.interrupted(exc):
            print(f"error: {_disk_full(exc) or _one_line(exc)}", file=sys.stderr)
            return 2
        processes.settle_interrupt()
        if processes.first_process():  # one line, not one per process
            print(f"interrupted: {_resume_hint(args)}", file=sys.stderr)
        return 130


def _resume_hint(args: list[str]) -> str:
    """How to continue an interrupted command: for ``train``, the same command with ``--resume true``."""
    if args[0] != "train":
        return "rerun the command (grids and cache builds continue where they stopped)"
    again = list(args)
    if "--resume" in again:  # drop the old --resume and its value
        i = again.index("--resume")
        del again[i : i + 2]
    return "the run resumes from its last finished epoch with: sskt " + " ".join([*again, "--resume", "true"])


if __name__ == "__main__":
    sys.exit(main())

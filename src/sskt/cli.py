"""The ``sskt`` command line: a mapping from command names to functions.

Each command takes its own argument list and returns an exit status (None means 0). Another module adds a command
with two lines::

    from sskt.cli import COMMANDS
    COMMANDS["grid"] = grid_main

``main`` turns a ``UserError`` or a bad argument into ``error: <one line>`` on stderr and exit status 2; ``--debug``
anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence

from jsonargparse import ActionConfigFile, ArgumentParser
from jsonargparse import ArgumentError as JsonArgumentError

from sskt.config import TrainConfig
from sskt.errors import UserError, check_choice

Command = Callable[[list[str]], "int | None"]


def train_parser() -> ArgumentParser:
    """``sskt train``: every TrainConfig field as a dotted flag, YAML presets via ``--config`` (repeatable)."""
    from jsonargparse import set_parsing_settings

    # The help text of each flag is the field's docstring in config.py (needs docstring-parser, a dependency of
    # jsonargparse[signatures]).
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(
        prog="sskt train",
        description="Train one run. Presets (--config, repeatable, later wins) hold overrides only; any field can "
        "be overridden with a dotted flag such as --data.labels_per_class 100.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML preset with overrides (repeatable).")
    parser.add_class_arguments(TrainConfig)
    return parser


@functools.cache
def _cached_train_parser() -> ArgumentParser:
    """Building the parser costs ~0.3 s; a grid checking its cells' configs parses dozens of command lines."""
    return train_parser()


def parse_train_args(argv: Sequence[str]) -> TrainConfig:
    """Parse ``sskt train`` arguments (presets first, then dotted overrides) into a TrainConfig."""
    from sskt.engine.config_io import config_from_dict

    values = _cached_train_parser().parse_args(list(argv)).as_dict()
    values.pop("config", None)
    return config_from_dict(TrainConfig, values)


def train_command(argv: list[str]) -> int:
    from sskt.engine import train

    cfg = parse_train_args(argv)
    summary = train(cfg)
    chosen = {k: summary[k] for k in ("best", "best_epoch", "selected_by") if k in summary}
    print(json.dumps({"out": cfg.out, "final": summary["final"], **chosen}))
    return 0


def evaluate_command(argv: list[str]) -> int:
    parser = ArgumentParser(prog="sskt evaluate", description="Re-evaluate a trained run.", exit_on_error=False)
    parser.add_argument("run", type=str, help="Run directory, its model.safetensors, or a checkpoint file.")
    args = parser.parse_args(argv)
    from sskt.engine import evaluate

    print(json.dumps(evaluate(args.run)))
    return 0


def _registries() -> dict[str, Callable[[], list[str]]]:
    """What ``sskt list`` can show; imports happen only when asked (importing a package registers its names)."""

    def names(module: str, attr: str) -> Callable[[], list[str]]:
        def get() -> list[str]:
            import importlib

            return getattr(importlib.import_module(module), attr).list()

        return get

    return {
        "datasets": names("sskt.data", "DATASETS"),
        "methods": names("sskt.methods", "METHODS"),
        "models": names("sskt.models", "MODELS"),
        "sources": names("sskt.sources", "SOURCES"),
    }


def list_command(argv: list[str]) -> int:
    registries = _registries()
    parser = ArgumentParser(prog="sskt list", description="Registered names, one per line.", exit_on_error=False)
    parser.add_argument("what", type=str, help=f"One of: {', '.join(registries)}.")
    what = check_choice("list", parser.parse_args(argv).what, registries)
    print("\n".join(registries[what]()))
    return 0


def curves_command(argv: list[str]) -> int:
    from sskt.experiments.curves import curves_main

    return curves_main(argv)


def grid_command(argv: list[str]) -> int:
    from sskt.experiments.grid import grid_main

    return grid_main(argv)


def report_command(argv: list[str]) -> int:
    from sskt.experiments.report import report_main

    return report_main(argv)


def cache_command(argv: list[str]) -> int:
    from sskt.engine.soft_cache import cache_main

    return cache_main(argv)


COMMANDS: dict[str, Command] = {
    "train": train_command,
    "evaluate": evaluate_command,
    "list": list_command,
    "curves": curves_command,
    "grid": grid_command,
    "report": report_command,
    "cache": cache_command,
}


def _usage() -> str:
    return "usage: sskt [--debug] {" + ",".join(COMMANDS) + "} ...   (sskt <command> --help for its options)"


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
    try:
        command = COMMANDS[check_choice("command", args[0], COMMANDS)]
        return command(args[1:]) or 0
    except (UserError, JsonArgumentError) as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

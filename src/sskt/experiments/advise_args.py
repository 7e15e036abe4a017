"""``sskt advise``'s arguments, apart from the module that does the work: its help and its option errors answer
without importing torch or the training stack (``sskt advise --help`` in well under a second)."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from sskt.errors import UserError

DESCRIPTION = (
    "Will these pretrained networks help a small model on my data? A linear probe and transferability scores per "
    "source and input size, against scratch + EMA."
)

OPTIONS = {"--config", "--sources", "--input-sizes", "--reference", "--reference-epochs", "--out"}
"""advise's own options; every other ``--dotted.key value`` overrides the training config as in ``sskt train``."""


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="sskt advise", description=DESCRIPTION, exit_on_error=False)
    p.add_argument("--config", type=str, required=True, help="The run's YAML config (data, target, sources).")
    p.add_argument("--sources", type=str, nargs="+", default=None, help="Sources to assess (default: the config's).")
    p.add_argument("--input-sizes", type=int, nargs="+", default=None, help="Source input sizes in px to try.")
    p.add_argument("--reference", type=str, default=None, help="A finished scratch + EMA run on the same labels.")
    p.add_argument("--reference-epochs", type=int, default=None, help="Epochs of a reference trained here.")
    p.add_argument("--out", type=str, default="advise", help="Folder for advise.json, advise.png, reference/.")
    return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(advise's own arguments, the config overrides)``: an option and the values after it go to the side that
    owns the option; ``--config`` goes to both (the overrides apply on top of it, as in ``sskt train``)."""
    own: list[str] = []
    overrides: list[str] = []
    sides: tuple[list[str], ...] = ()
    for token in argv:
        if token.startswith("--"):
            name = token.split("=")[0]
            sides = (own, overrides) if name == "--config" else (own,) if name in OPTIONS else (overrides,)
        if not sides:
            raise UserError(f"unexpected argument {token!r}; sskt advise takes --options only (see --help)")
        for side in sides:
            side.append(token)
    return own, overrides


def wants_help(argv: list[str]) -> bool:
    """No arguments, or ``-h``/``--help`` among them."""
    return not argv or any(a in ("-h", "--help") for a in argv)


def print_help(argv: list[str]) -> int:
    """Print the help; exit status 0 when asked for, 2 when no arguments were given."""
    parser().print_help()
    print("Other --dotted.key value options override the config, as in `sskt train`.")
    return 0 if argv else 2

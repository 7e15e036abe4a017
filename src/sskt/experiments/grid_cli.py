"""``sskt grid``: the command that runs a grid's cells with a launcher, here (``sskt.experiments.grid``) or as a
SLURM job array (``sskt.experiments.slurm``). It sits above both, so neither imports the other's caller: the SLURM
tasks run cells with the local runner's rules, and the command chooses between the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentParser, set_parsing_settings

from sskt.errors import UserError, check_choice
from sskt.experiments.grid import dry_run, expand, load_grid, run_grid, select
from sskt.experiments.slurm import SlurmOptions, submit_grid

LAUNCHERS = ("local", "slurm")


def grid_main(argv: list[str] | None = None) -> int:
    """``sskt grid --config GRID.yaml [--out DIR] [--jobs N] [--only GLOBS] [--seed-major] [--dry-run]``; exit
    status 1 if any cell failed."""
    parser = ArgumentParser(
        prog="sskt grid", description="Run every cell of a grid of training runs.", allow_abbrev=False
    )
    parser.exit_on_error = False
    parser.add_argument("--config", type=str, required=True, help="grid YAML file (base, axes, seeds, out)")
    parser.add_argument("--out", type=str | None, default=None, help="root of the cells (default: the grid's 'out')")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel; each gets cores/jobs threads")
    parser.add_argument("--threads", type=int | None, default=None, help="CPU threads per cell (default: cores/jobs)")
    parser.add_argument("--only", type=str | None, default=None, help="comma-separated globs of cells ('kd-*,*-seed0')")
    parser.add_argument("--seed-major", action="store_true", help="run every setting's seed 0 first, then seed 1...")
    parser.add_argument("--dry-run", action="store_true", help="print each cell's state and command, run nothing")
    parser.add_argument("--launcher", type=str, default="local", help="'local' (subprocesses here) or 'slurm'")
    set_parsing_settings(docstring_parse_attribute_docstrings=True)  # each SlurmOptions field's docstring is its help
    parser.add_class_arguments(SlurmOptions, "slurm", help="SLURM resources per cell (with --launcher slurm)")
    args = parser.parse_args(argv)
    check_choice("launcher", args.launcher, LAUNCHERS)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise UserError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    grid = load_grid(args.config)
    out = Path(args.out) if args.out else None
    cells = select(expand(grid), args.only.split(",") if args.only else None, args.seed_major)
    if args.dry_run:
        print("\n".join(dry_run(grid, out, args.jobs, cells, args.threads)))
        return 0
    if args.launcher == "slurm":
        return submit_grid(args.config, grid, out, cells, SlurmOptions(**vars(args.slurm)))
    result = run_grid(grid, out, args.jobs, cells=cells, threads=args.threads)
    if result.busy:
        print(f"{len(result.busy)} cell(s) left to the grid process running them: {', '.join(result.busy)}")
    if result.failed:
        print(f"{len(result.failed)} cell(s) failed: {', '.join(sorted(result.failed))}", file=sys.stderr)
        return 1
    return 0

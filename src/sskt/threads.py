"""CPU threads that yield on a shared machine.

OpenMP's worker threads (torch's intra-op pool, GNU libgomp in the PyPI wheels) spin while they wait for work,
for about 300,000 iterations by default. On two cores with one other busy process, a spinning worker takes the
core the other thread it waits for needs: measured on the demo's scratch config, an epoch took 3.1x its time alone
beside one single-threaded busy process, where a fair share of two cores is 2x (`benchmarks/contention.py`).
``OMP_WAIT_POLICY=PASSIVE`` makes waiting workers sleep at once; beside the busy process the same epoch took 1.9x.

libgomp reads the variable once, when torch loads it, so it is set before torch is imported: ``import sskt``
(the package's ``__init__``) calls ``yield_when_waiting``, and every entry point (``sskt``, ``python -m sskt``,
grid cells, the tests) imports the package first. A variable the user set wins, and so does ``--threads``. A
program that imports torch before sskt keeps whatever its OpenMP runtime chose; ``torch_loaded_first`` says so.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
"""What sskt sets unless the environment already says otherwise."""


def yield_when_waiting(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set every variable of ``WAIT_POLICY`` that ``environ`` (default ``os.environ``) lacks; return the ones set."""
    env = os.environ if environ is None else environ
    added = {k: v for k, v in WAIT_POLICY.items() if k not in env}
    env.update(added)
    return added


def torch_loaded_first() -> bool:
    """Whether torch was imported before sskt set the wait policy (then the policy may not apply)."""
    return _TORCH_BEFORE


_TORCH_BEFORE = "torch" in sys.modules

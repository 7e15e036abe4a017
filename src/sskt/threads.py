"""CPU threads that yield on a shared machine.

OpenMP's worker threads (torch's intra-op pool, GNU libgomp in the PyPI wheels) spin while they wait for work, for
about 300,000 iterations by default. On two cores beside other work, a spinning worker takes the core that the
thread it waits for needs. Measured on a quiet 2-core machine with the demo's configs (``benchmarks/contention.py``,
``benchmarks/results/contention.json``; ratios to the same run alone, measured in the same run; a fair share of two
cores is 2x): with the default spinning an epoch took 5.9-14.5x beside one busy single-threaded process and 4.1-13.2x
beside a second training run; with ``OMP_WAIT_POLICY=PASSIVE`` (waiting workers sleep at once) 1.4-1.8x and
1.3-1.8x, and two grid cells side by side 1.2-1.4x.

The price is paid alone: a passive worker wakes through the kernel for every parallel region, and ResNet20's small
convolutions on a CPU are thousands of short regions, so an epoch alone took 30-45% longer (scratch 1.97 s against
1.50 s). Bounding the spin instead (``GOMP_SPINCOUNT=3000``) cost 6-23% alone and kept 2.1-2.3x beside other work
(``benchmarks/results/contention_spin.json``). sskt keeps the passive policy, which holds every case within its fair
share with margin; a user alone on a dedicated CPU machine gets the old speed back with ``OMP_WAIT_POLICY=ACTIVE``.
On a GPU the intra-op pool barely runs.

libgomp reads the variable once, when torch loads it, so it is set before torch is imported: ``import sskt`` (the
package's ``__init__``) calls ``yield_when_waiting``, and every entry point (``sskt``, ``python -m sskt``, grid cells,
the tests' conftest) imports the package first. A variable the user set wins, and so does ``--threads``. A program
that imports torch before sskt keeps whatever its OpenMP runtime chose; ``torch_loaded_first`` says so.
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

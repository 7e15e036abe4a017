"""sskt: Self-Supervised Knowledge Transfer via Loosely Supervised Auxiliary Tasks (WACV 2022), with baselines."""

import importlib

from sskt.processes import quiet_start
from sskt.threads import yield_when_waiting

__version__ = "0.1.0"

# The one thing done at import: OpenMP workers that sleep instead of spinning while they wait, which must be set
# before torch loads its OpenMP runtime (sskt/threads.py gives the measurements). The user's own setting wins.
yield_when_waiting()
# And, for the sskt command only, a Ctrl-C while its modules load is one line, not a traceback (sskt/processes.py).
quiet_start()


def __getattr__(name: str) -> object:
    """``sskt.load_pretrained`` (``sskt.hub``), imported on first use so that ``import sskt`` does not import torch."""
    if name == "load_pretrained":  # by name: the package sits below everything it exports lazily
        return importlib.import_module("sskt.hub").load_pretrained
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""sskt: Self-Supervised Knowledge Transfer via Loosely Supervised Auxiliary Tasks (WACV 2022), with baselines."""

from sskt.threads import yield_when_waiting

__version__ = "0.1.0"

# The one thing done at import: OpenMP workers that sleep instead of spinning while they wait, which must be set
# before torch loads its OpenMP runtime (sskt/threads.py gives the measurements). The user's own setting wins.
yield_when_waiting()

"""Training methods by name: scratch, sskt, kd, fixmatch and their compositions, dml, maxl, probe."""

from sskt.methods.base import Method, MethodContext, SingleNetMethod, StepOutput
from sskt.registry import Registry

METHODS: Registry[Method] = Registry("method")

__all__ = ["METHODS", "Method", "MethodContext", "SingleNetMethod", "StepOutput"]

# Importing the method modules registers them (they need METHODS, defined above).
from sskt.methods import composed, dml, maxl, probe  # noqa: E402,F401

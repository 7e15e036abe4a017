"""Training methods by name: scratch, sskt, kd, dml, maxl."""

from sskt.methods.base import Method, MethodContext, SingleNetMethod, StepOutput
from sskt.registry import Registry

METHODS: Registry[Method] = Registry("method")

__all__ = ["METHODS", "Method", "MethodContext", "SingleNetMethod", "StepOutput"]

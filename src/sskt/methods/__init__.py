"""Training methods by name: scratch, sskt, kd, fixmatch and their compositions, dml, maxl, probe.

The registry lives in ``sskt.methods.base`` (a module that imports no method module, so no import circle); importing
this package imports every module in it, each registering its own methods: a new method is one new file.
"""

import importlib
import pkgutil

from sskt.methods.base import METHODS, Method, MethodContext, SingleNetMethod, StepOutput

__all__ = ["METHODS", "Method", "MethodContext", "SingleNetMethod", "StepOutput"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

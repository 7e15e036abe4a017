"""Ctrl-C and several processes, as the command line sees them: one ``interrupted:`` line, from one process.

A Ctrl-C can land anywhere, and not every library lets the KeyboardInterrupt through: one that arrives while scipy
or torch imports may come out as another exception (an ImportError or an AttributeError), or may leave CPython's
"unhandled interrupt" mark behind, so that the process kills itself by SIGINT after printing its line. So the CLI
records that SIGINT arrived (``watch_interrupts``), treats any exception after it as the interrupt
(``interrupted``), and clears the mark (``settle_interrupt``). Before the CLI module has loaded, the package's
``__init__`` stops a Ctrl-C of the ``sskt`` command itself in one line (``quiet_start``); nothing has run yet.

This module imports only the standard library: it is loaded before anything else.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

_received = threading.Event()


def quiet_start() -> None:
    """Make a Ctrl-C before ``sskt.cli.main`` runs print one line and exit 130, for the ``sskt`` command and
    ``python -m sskt`` (and the processes Lightning starts from them) only: a library import of sskt keeps Python's
    own handler."""
    argv = getattr(sys, "orig_argv", [])
    command = Path(sys.argv[0]).name == "sskt" or argv[1:3] in (["-m", "sskt"], ["-m", "sskt.__main__"])
    if command and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _stop_while_starting)


def _stop_while_starting(signum: int, frame: object) -> None:
    if first_process():
        os.write(2, b"interrupted: before the command started; nothing was done\n")
    os._exit(130)


def watch_interrupts() -> None:
    """Record every SIGINT (``interrupted``), then raise KeyboardInterrupt as Python's own handler does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _record_interrupt)


def _record_interrupt(signum: int, frame: object) -> None:
    _received.set()
    raise KeyboardInterrupt


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is, or came from, a Ctrl-C: a KeyboardInterrupt, or any exception once SIGINT arrived (a
    library that catches the interrupt mid-import raises something else)."""
    return isinstance(exc, KeyboardInterrupt) or _received.is_set()


def settle_interrupt() -> None:
    """Clear CPython's mark of an interrupt that reached a C extension's embedded Python code, which would otherwise
    make the interpreter kill itself by SIGINT at exit (exit status -2 instead of 130): running any code through
    ``PyRun_SimpleString`` resets it."""
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"")
    except (ImportError, AttributeError, OSError):  # not CPython: it has no such mark
        pass


def first_process() -> bool:
    """Whether this is the first process of a run (global rank 0), which alone prints what all of them would: no
    rank a launcher sets (torchrun's ``RANK``, Lightning's ``LOCAL_RANK`` and ``NODE_RANK``, SLURM's task) is
    another."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))

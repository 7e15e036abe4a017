"""One grid cell: its state on disk, the lock that lets several grid processes share one grid, and its process.

A process claims a cell by holding an exclusive ``flock`` on ``<cell>/.grid.lock`` (the file also names the holder's
host and pid, for people). The kernel drops the lock when its process dies, however it dies, so a crashed grid
leaves no stale lock to take over and there is no takeover race; on NFS, Linux maps ``flock`` to network-wide
POSIX locks. The holder deletes the file while it still holds the lock, and a claimer checks that the file it
locked is still the one at the path, so a claimer that opened the old file just before the delete cannot win too.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sskt.rundir import RunDir

LOCK = ".grid.lock"


def cell_state(cell_dir: Path) -> str:
    """'done' (summary.json exists), 'resume' (a checkpoint or records exist: the run was interrupted) or 'new'.

    A run killed after writing an epoch's record but before its first checkpoint also resumes: ``sskt train``
    refuses to overwrite records unless resuming, and a resume without a checkpoint starts from epoch 0."""
    run = RunDir(cell_dir)
    if run.is_finished():
        return "done"
    if run.has_progress():
        return "resume"
    return "new"


_HELD: dict[Path, int] = {}
"""Lock file descriptors this process holds, by cell directory."""


def claim(cell_dir: Path) -> bool:
    """Take the cell's lock; False when another process (or another claim in this one) holds it."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = cell_dir / LOCK
    for _ in range(8):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its holder deleted it between our open and our flock
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
        _HELD[cell_dir.resolve()] = fd
        return True
    return False


def release(cell_dir: Path) -> None:
    """Drop the lock if this process holds it, deleting the file first (while still holding it)."""
    fd = _HELD.pop(cell_dir.resolve(), None)
    if fd is not None:
        (cell_dir / LOCK).unlink(missing_ok=True)
        os.close(fd)


CellRunner = Callable[[list[str], Path, int], int]
"""Runs one cell's ``sskt train`` argv in ``cell_dir`` with ``threads`` CPU threads; returns the exit status."""


def subprocess_runner(argv: list[str], cell_dir: Path, threads: int) -> int:
    """Run ``python -m sskt train ARGV`` in a child process, its output appended to ``cell_dir/grid.log``."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(cell_dir / "grid.log", "a") as log:
        return run_child([sys.executable, "-m", "sskt", "train", *argv], log, env)


def run_child(cmd: list[str], log, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` to completion, output to ``log``, as a child that dies with this process: a grid killed with
    ``kill -9`` takes its trainer with it, so the cell's lock never frees while a trainer still writes there."""
    return subprocess.run(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False, preexec_fn=_die_with_parent
    ).returncode


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies (prctl PR_SET_PDEATHSIG); a no-op
    elsewhere. Then, should the parent already be gone, exit at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)


PR_SET_PDEATHSIG = 1


def threads_per_cell(jobs: int, threads: int | None = None) -> int:
    """CPU threads each of ``jobs`` parallel cells gets: ``threads`` when given, else the machine's cores shared
    evenly, at least 1."""
    if threads is not None:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


@dataclass
class GridResult:
    """What a grid run did, by cell name."""

    skipped: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)
    busy: list[str] = field(default_factory=list)
    """Cells another live grid process was running: left to it."""
    held_back: dict[str, str] = field(default_factory=dict)
    """Cells the runner chose not to run or stopped (a budget), with its reason: neither finished nor failed."""

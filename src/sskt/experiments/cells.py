"""One grid cell: its state on disk, the lock that lets several grid processes share one grid, and its process.

A process claims a cell by creating ``<cell>/.grid.lock`` exclusively (``O_CREAT | O_EXCL``: atomic on a local
or NFSv3+ file system) with its host name and pid. Another process that finds the lock skips the cell while that
process lives; a lock left by a process that died on this host is stale and taken over. A lock from another host
is always respected (its liveness cannot be checked from here): delete it by hand after a crash there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

LOCK = ".grid.lock"


def cell_state(cell_dir: Path) -> str:
    """'done' (summary.json exists), 'resume' (a checkpoint or records exist: the run was interrupted) or 'new'.

    A run killed after writing an epoch's record but before its first checkpoint also resumes: ``sskt train``
    refuses to overwrite records unless resuming, and a resume without a checkpoint starts from epoch 0."""
    if (cell_dir / "summary.json").is_file():
        return "done"
    records = cell_dir / "records.jsonl"
    if (cell_dir / "checkpoints" / "last.pt").is_file() or (records.is_file() and records.stat().st_size > 0):
        return "resume"
    return "new"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(lock: Path) -> tuple[str, int] | None:
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def claim(cell_dir: Path) -> bool:
    """Take the cell's lock; False when a live process (or one on another host) holds it."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock, me = cell_dir / LOCK, f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and (holder[0] != socket.gethostname() or _alive(holder[1])):
                return False
            lock.unlink(missing_ok=True)  # stale (its process died) or unreadable: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def release(cell_dir: Path) -> None:
    """Drop the lock if this process holds it."""
    lock = cell_dir / LOCK
    if _holder(lock) == (socket.gethostname(), os.getpid()):
        lock.unlink(missing_ok=True)


CellRunner = Callable[[list[str], Path, int], int]
"""Runs one cell's ``sskt train`` argv in ``cell_dir`` with ``threads`` CPU threads; returns the exit status."""


def subprocess_runner(argv: list[str], cell_dir: Path, threads: int) -> int:
    """Run ``python -m sskt.cli train ARGV`` in a child process, its output appended to ``cell_dir/grid.log``."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(cell_dir / "grid.log", "a") as log:
        cmd = [sys.executable, "-m", "sskt.cli", "train", *argv]
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode


def threads_per_cell(jobs: int, threads: int | None = None) -> int:
    """CPU threads each of ``jobs`` parallel cells gets: ``threads`` when given, else the machine's cores shared
    evenly, at least 1."""
    if threads is not None:
        return threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))

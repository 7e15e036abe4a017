"""Freeing the disk that caches no run can read any more: ``sskt cache prune [DIR]``.

A soft-label cache whose stored format is older than this sskt's (``store.FORMAT``) is never opened again (its key
differs from every run's), and a build killed and never resumed leaves a ``.partial`` folder. Prune removes both,
and the lock file beside each; a partial folder whose build lock another process holds (a build under way) is
kept. Complete caches of the current format are never touched, nor anything that is not a cache folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sskt.sources.cache.store import FORMAT, read_header


@contextlib.contextmanager
def _unheld(lock: Path) -> Iterator[bool]:
    """True (holding it meanwhile) when no other process holds the build lock ``lock``; no lock file: True."""
    if not lock.exists():
        yield True
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def stale(folder: Path) -> str | None:
    """Why the cache folder ``folder`` can be removed, or None when a run may still read it."""
    if folder.name.endswith(".partial"):
        return "an unfinished build"
    header = read_header(folder)
    if header is None:
        return None  # not a cache folder (or unreadable): never ours to remove
    found = header.get("key", {}).get("format")
    return None if found == FORMAT else f"format {found}, this sskt reads {FORMAT}"


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def prune(root: Path, dry_run: bool = False) -> list[tuple[Path, str, int]]:
    """Remove (or with ``dry_run`` only list) the stale cache folders under ``root``: (folder, why, bytes) each."""
    removed = []
    for folder in sorted(p for p in Path(root).glob("*-*") if p.is_dir() and not p.name.startswith(".")):
        why = stale(folder)
        if why is None:
            continue
        final = folder.name.removesuffix(".partial")
        lock = folder.with_name(f".{final}.lock")
        with _unheld(lock) as free:
            if not free:
                continue  # a build is writing it now
            size = _bytes(folder)
            if not dry_run:
                shutil.rmtree(folder)
                if not folder.with_name(final).exists():
                    lock.unlink(missing_ok=True)
            removed.append((folder, why, size))
    return removed

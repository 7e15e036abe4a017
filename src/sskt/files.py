"""Writing files so that nothing is lost or torn: a temporary file in the same folder, fsync, rename over the old
one, fsync the folder. A failed write removes its temporary file and leaves the old file as it was; a full disk is
one line naming the file. Every run file (config, records, summary, checkpoint, weights) and the cache's JSON go
through here."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sskt.errors import UserError


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then make it ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or _torch_write_failure(exc):
            raise UserError(f"no space left on device writing {str(path)!r}; free space and resume") from exc
        raise
    _fsync_dir(path.parent)


def _torch_write_failure(exc: BaseException) -> bool:
    """``torch.save`` reports a failed write (a full disk) as a RuntimeError of its zip writer, not an OSError."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``write_atomic`` of UTF-8 ``text``."""
    write_atomic(path, lambda f: f.write(text.encode()))


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the directory entry is flushed)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

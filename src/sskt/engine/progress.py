"""What the user sees while training: a rich progress bar per epoch (terminals only) and one line per epoch."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EpochProgress:
    """A per-epoch bar with images/s and time left; a no-op when disabled or when stdout is not a terminal."""

    def __init__(self, enabled: bool, epoch: int, epochs: int, steps: int) -> None:
        self.enabled = enabled and sys.stdout.isatty()
        self.images = 0
        self.start = time.perf_counter()
        self._bar: Progress | None = None
        if self.enabled:
            self._bar = Progress(
                TextColumn(f"epoch {epoch + 1}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]:>7.0f} img/s"),
                TimeRemainingColumn(),
                console=Console(),
                transient=True,
            )
            self._task = self._bar.add_task("train", total=steps, speed=0.0)

    def __enter__(self) -> EpochProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, images: int) -> None:
        """Count one finished step of ``images`` images (host-side counters only: no device sync)."""
        self.images += images
        if self._bar is not None:
            speed = self.images / max(time.perf_counter() - self.start, 1e-9)
            self._bar.update(self._task, advance=1, speed=speed)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()


def epoch_line(record: dict, epochs: int) -> str:
    """One human line per epoch: loss, metrics, learning rate, speed."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}"]
    for key, value in record.items():
        if key.startswith(("val_", "test_", "peer")) and isinstance(value, float):
            parts.append(f"{key} {value:.2f}")
    parts += [f"lr {record['lr']:.4g}", f"{record['epoch_seconds']:.1f}s", f"{record['images_per_second']:.0f} img/s"]
    return "  ".join(parts)

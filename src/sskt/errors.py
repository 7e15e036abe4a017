"""User-facing errors: the CLI turns them into a one-line message and exit status 2."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a name, a path, a value). The message is one line and names the valid choices."""


def choice_error(kind: str, value: object, choices: Iterable[str]) -> UserError:
    """Build the standard "unknown X 'v'; valid choices: a, b, c" error."""
    listed = ", ".join(sorted(choices)) or "(none)"
    return UserError(f"unknown {kind} {value!r}; valid choices: {listed}")


def check_choice(kind: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise the standard one-line error."""
    choices = list(choices)
    if value not in choices:
        raise choice_error(kind, value, choices)
    return value


def install_hint(extra: str) -> str:
    """The command that adds the optional packages of ``extra`` to the environment sskt runs in: that environment's
    own pip, not whichever pip is first on PATH (after ``make demo``, ``sskt`` lives in .venv/bin and a bare
    ``pip`` is usually another Python's), and the checkout itself when sskt is installed from one in editable
    mode, so that from the repository's top it reads ``.venv/bin/pip install -e '.[onnx]'``."""
    pip = Path(sys.executable).parent / "pip"
    command = f"{_shown(pip)} install" if pip.is_file() else f"{_shown(Path(sys.executable))} -m pip install"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return f"{command} -e '{_shown(checkout)}[{extra}]'"
    return f"{command} 'sskt[{extra}]'"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it ('.' for the folder itself), else as is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_range(key: str, value: float, low: float = -math.inf, high: float = math.inf, **open_ends: bool) -> None:
    """Raise the one-line "KEY must be in [low, high), got VALUE" error for a number outside its interval, so that a
    value a loss or optimiser would take silently (``momentum 5``, a negative weight decay, a lambda above 1) is
    refused before any work starts. ``open_low``/``open_high`` leave an end out; infinite ends are open; NaN is in
    no interval."""
    open_low = open_ends.get("open_low", False) or low == -math.inf
    open_high = open_ends.get("open_high", False) or high == math.inf
    if not isinstance(value, bool) and isinstance(value, int | float):
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if above and below:
            return
    left, right = "(" if open_low else "[", ")" if open_high else "]"
    raise UserError(f"{key} must be in {left}{low:g}, {high:g}{right}, got {value}")

"""User-facing errors: the CLI turns them into a one-line message and exit status 2."""

from __future__ import annotations

from collections.abc import Iterable


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

"""One small generic registry: names to factories. A wrong name lists the right ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from sskt.errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories of ``T``.

    Prefix factories (``register_prefix("timm:")``) serve open families of names such as ``timm:<model>``
    or ``checkpoint:<path>``; the rest of the name is passed to the factory as its first argument.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._prefixes: dict[str, Callable[..., T]] = {}
        self._suffixes: dict[str, tuple[str, Callable[..., T]]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``fn`` under ``name``."""

        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = fn
            return fn

        return wrap

    def register_prefix(self, prefix: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``fn(rest, **kwargs)`` serves every name that starts with ``prefix``."""

        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            self._prefixes[prefix] = fn
            return fn

        return wrap

    def register_suffix(self, suffix: str, label: str = "<name>") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``fn(head, **kwargs)`` serves every name that ends with ``suffix`` and is not registered exactly
        (``<arch>.imagenet``); ``label`` stands for the head in ``list()``. ``fn`` rejects heads it does not know."""

        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            self._suffixes[suffix] = (label, fn)
            return fn

        return wrap

    def __contains__(self, name: str) -> bool:
        return (
            name in self._factories
            or any(name.startswith(p) for p in self._prefixes)
            or any(name.endswith(s) for s in self._suffixes)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def list(self) -> list[str]:
        """Registered names, sorted; prefix families appear as ``prefix<name>``."""
        suffixed = sorted(f"{label}{s}" for s, (label, _) in self._suffixes.items())
        return sorted(self._factories) + sorted(f"{p}<name>" for p in self._prefixes) + suffixed

    def require(self, name: str, what: str | None = None) -> None:
        """Raise the one-line "unknown <what> ...; valid choices: ..." error unless ``name`` is served here."""
        if name not in self:
            raise choice_error(what or self.kind, name, self.list())

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``; unknown names raise a one-line error listing the valid ones."""
        if name in self._factories:
            return self._factories[name]
        raise choice_error(self.kind, name, self.list())

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the object registered under ``name``."""
        for prefix, fn in self._prefixes.items():
            if name.startswith(prefix):
                return fn(name[len(prefix) :], **kwargs)
        if name not in self._factories:
            for suffix, (_, fn) in self._suffixes.items():
                if name.endswith(suffix):
                    return fn(name[: -len(suffix)], **kwargs)
        return self.get(name)(**kwargs)

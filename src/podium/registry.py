"""Registries of named extensions (backends, coordinators), built-in or added by installed packages.

A third-party package extends podium without editing it: it declares an entry point in the group
``podium.backends`` or ``podium.coordinators`` whose object is a :class:`podium.backends.BackendType`
or a :class:`podium.coordinators.CoordinatorType` (or a zero-argument callable returning one, or a
list of them). The registry loads the entry points on first lookup, after the built-ins, so a plugin
cannot silently replace a built-in name (the clash is reported as a warning and the built-in kept).
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from typing import Generic, Protocol, TypeVar

__all__ = ["PluginWarning", "Registry"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


@functools.lru_cache(maxsize=4)
def _entry_points_on(path: tuple[str, ...]) -> EntryPoints:
    """Every entry point installed on ``path`` (``sys.path``), read once: one scan serves both registries."""
    found = entry_points()
    if isinstance(found, EntryPoints):
        return found
    return EntryPoints(ep for group in found.groups for ep in found.select(group=group))  # Python 3.11


class PluginWarning(UserWarning):
    """An installed plugin could not be loaded or clashes with a registered name."""


class Registry(Generic[T]):
    """Named entries of one kind: ``register`` built-ins, then entry points of ``group`` on first use."""

    def __init__(self, group: str, kind: type[T], builtins: Callable[[Registry[T]], None]) -> None:
        self.group = group
        self._kind = kind
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, entry: T, *, source: str = "podium") -> None:
        """Add ``entry`` under its name; a name already taken is kept and a :class:`PluginWarning` says so."""
        if not isinstance(entry, self._kind):
            raise TypeError(
                f"{source}: a {self.group} entry must be a {self._kind.__name__}, got {type(entry).__name__}"
            )
        if entry.name in self._entries:
            warnings.warn(
                f"{source}: {self.group} name '{entry.name}' is already registered; the plugin entry is ignored",
                PluginWarning,
                stacklevel=2,
            )
            return
        self._entries[entry.name] = entry

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:  # server threads may look up a name at the same time
            if self._loaded:
                return
            self._builtins(self)
            for ep in _entry_points_on(tuple(sys.path)).select(group=self.group):
                self._load_entry_point(ep)
            self._loaded = True

    def _load_entry_point(self, ep: EntryPoint) -> None:
        source = f"plugin '{ep.name}' ({ep.value})"
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, self._kind):
                obj = obj()
        except Exception as exc:  # a broken plugin must not break podium: say so, go on
            warnings.warn(f"{source}: cannot be loaded: {type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
            return
        items: Iterable[object] = obj if isinstance(obj, list | tuple) else [obj]
        for item in items:
            try:
                self.register(item, source=source)  # type: ignore[arg-type]  # checked in register
            except TypeError as exc:
                warnings.warn(str(exc), PluginWarning, stacklevel=2)

    def get(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        self._load()
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Every registered name, built-ins first, in registration order."""
        self._load()
        return list(self._entries)

    def entries(self) -> list[T]:
        """Every registered entry, built-ins first."""
        self._load()
        return list(self._entries.values())

    def reset(self) -> None:
        """Forget everything; the next lookup registers built-ins and entry points again (for tests)."""
        with self._lock:
            self._entries.clear()
            self._loaded = False
        _entry_points_on.cache_clear()

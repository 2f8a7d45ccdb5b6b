"""One generic registry for every pluggable kind (models, datasets, metrics, objectives, ...).

Usage::

    MODELS = Registry("model")

    @MODELS.register("resnet20", aliases=("r20",))
    def resnet20(**kw): ...

    MODELS.get("resnet20")(num_classes=10)
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from shrink.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table that refuses duplicates and explains unknown names.

    Usage: ``OBJECTIVES = Registry("objective"); OBJECTIVES.add("kl", KLLoss)``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._summaries: dict[str, str] = {}

    def add(self, name: str, obj: T, aliases: tuple[str, ...] = (), summary: str = "") -> T:
        """Register ``obj`` under ``name`` (and ``aliases``), with a one-line ``summary`` for listings.

        Usage: ``REG.add("x", fn, summary="what x is; what it needs")``
        """
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
        self._entries[name] = obj
        for alias in aliases:
            self._aliases[alias] = name
        if summary:
            self._summaries[name] = summary
        return obj

    def register(self, name: str, aliases: tuple[str, ...] = (), summary: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`. Usage: ``@REG.register("x")``."""

        def decorate(obj: T) -> T:
            return self.add(name, obj, aliases, summary)

        return decorate

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` or an alias; UserError when unknown."""
        key = name.lower() if name.lower() in self else name
        if key in self._entries:
            return key
        if key in self._aliases:
            return self._aliases[key]
        raise UserError(self.unknown_message(name))

    def get(self, name: str) -> T:
        """The object registered as ``name`` (or an alias). Usage: ``REG.get("kl")``."""
        return self._entries[self.canonical(name)]

    def unknown_message(self, name: str) -> str:
        """One line naming the closest known entry and listing all of them."""
        known = self.names()
        close = difflib.get_close_matches(name.lower(), known + sorted(self._aliases), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} known: {', '.join(known)}"

    def summary(self, name: str) -> str:
        """One line on ``name``: its registered summary, else the first line of its docstring.

        Usage: ``print(name, REG.summary(name))``
        """
        key = self.canonical(name)
        if key in self._summaries:
            return self._summaries[key]
        doc = getattr(self._entries[key], "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def aliases_of(self, name: str) -> list[str]:
        """The aliases of ``name``, sorted. Usage: ``REG.aliases_of("sst2") == ["sst-2"]``."""
        key = self.canonical(name)
        return sorted(alias for alias, target in self._aliases.items() if target == key)

    def names(self) -> list[str]:
        """Registered names (aliases excluded), sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

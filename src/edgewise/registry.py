"""One registry shape for every family of plug-ins selected by name: engines
(``engine.kind``), confidence scorers (``routing.cascade.scorer``), supply-chain stages
(a recipe's ``stages``) and calibration graders.

A :class:`Registry` maps names to items, refuses a second item under a taken name (a
programming error: two plug-ins would silently shadow each other), and answers an
unknown name with the same one-line error everywhere, listing what is registered::

    ENGINES: Registry[EngineFactory] = Registry("engine", key="engine.kind")
    ENGINES.register("llamacpp", make_llamacpp)
    ENGINES.get("vllm")
    # ConfigError: engine.kind: unknown engine 'vllm'; registered: fake, llamacpp

``loader`` (optional) imports the built-in plug-ins on first lookup, so importing the
registry itself stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgewise.errors import ConfigError, EdgewiseError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, *, key: str | None = None,
                 error: type[EdgewiseError] = ConfigError,
                 loader: Callable[[], None] | None = None) -> None:
        """``kind``: what an item is, in messages ("engine", "stage"...); ``key``: the
        config key that names one (prefixes the unknown-name error); ``error``: the
        exception raised for an unknown name; ``loader``: imports the built-ins."""
        self.kind = kind
        self.key = key
        self.error = error
        self._loader = loader
        self._loaded = loader is None
        self._items: dict[str, T] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a built-in module may look itself up
            assert self._loader is not None
            self._loader()

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; ``ValueError`` if the name is taken by another."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        known = self._items.get(name)
        if known is not None and known is not item:
            raise ValueError(f"{self.kind} {name!r} is already registered ({_what(known)})")
        self._items[name] = item
        return item

    def unknown(self, name: str) -> str:
        """The message for a name nothing is registered under."""
        self._load()
        prefix = f"{self.key}: " if self.key else ""
        return (f"{prefix}unknown {self.kind} {name!r}; registered: "
                f"{', '.join(sorted(self._items)) or '(none)'}")

    def get(self, name: str) -> T:
        """The item registered as ``name``; :attr:`error` with :meth:`unknown` if none."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise self.error(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """Names in registration order (built-ins first)."""
        self._load()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests, and plug-ins that unload); ``KeyError`` if absent."""
        del self._items[name]

    def items(self) -> dict[str, T]:
        """A copy of the name → item mapping."""
        self._load()
        return dict(self._items)


def _what(item: object) -> str:
    module = getattr(item, "__module__", None)
    name = getattr(item, "__qualname__", None) or type(item).__name__
    return f"{module}.{name}" if module else str(name)

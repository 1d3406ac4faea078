"""Engines by name (``engine.kind``): the built-ins and any a plug-in registers.

A factory takes the ``engine`` config section and a resolver for its model file (called
only by engines that serve one) and returns an engine, not yet loaded::

    register_engine("myengine", lambda config, resolve: MyEngine(resolve().path))

The built-in engines are registered on first lookup, by this module: their modules do
not import the registry (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgewise.engines.base import Engine
from edgewise.registry import Registry

__all__ = ["ENGINES", "EngineFactory", "engine_factory", "register_engine"]

EngineFactory = Callable[[Any, Callable[[], Any]], Engine]


def _load_builtin() -> None:
    from edgewise.engines.fake import FakeEngine
    from edgewise.engines.llamacpp import LlamaCppEngine  # llama.cpp itself loads lazily

    ENGINES.register("fake", FakeEngine.from_config)
    ENGINES.register("llamacpp", LlamaCppEngine.from_config)


#: Engine factories by ``engine.kind``.
ENGINES: Registry[EngineFactory] = Registry("engine", key="engine.kind",
                                            loader=_load_builtin)


def register_engine(kind: str, factory: EngineFactory) -> None:
    """Register an engine factory under ``kind`` (``engine.kind`` in the config);
    ``ValueError`` if the name is taken."""
    ENGINES.names()  # the built-ins first, so a clash is found now
    ENGINES.register(kind, factory)


def engine_factory(kind: str) -> EngineFactory:
    """The factory registered as ``kind``; ``ConfigError`` listing the registered ones."""
    return ENGINES.get(kind)

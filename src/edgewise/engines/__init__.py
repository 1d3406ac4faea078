"""Local inference engines behind one :class:`~edgewise.engines.base.Engine` protocol."""

from edgewise.engines.base import (
    ENGINES,
    Engine,
    EngineInfo,
    SamplingParams,
    Step,
    engine_factory,
    register_engine,
)
from edgewise.engines.generation import Chunk, Generation, Outcome

__all__ = [
    "ENGINES",
    "Chunk",
    "Engine",
    "EngineInfo",
    "Generation",
    "Outcome",
    "SamplingParams",
    "Step",
    "engine_factory",
    "register_engine",
]

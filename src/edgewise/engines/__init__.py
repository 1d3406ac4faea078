"""Local inference engines behind one :class:`~edgewise.engines.base.Engine` protocol."""

from edgewise.engines.base import BatchStats, Engine, EngineInfo, SamplingParams, Step
from edgewise.engines.generation import Chunk, Generation, Outcome
from edgewise.engines.registry import ENGINES, engine_factory, register_engine

__all__ = [
    "ENGINES",
    "BatchStats",
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

"""Local inference engines behind one :class:`~edgewise.engines.base.Engine` protocol."""

from edgewise.engines.base import (
    ChatMessage,
    Engine,
    EngineInfo,
    SamplingParams,
    Step,
    engine_factory,
    register_engine,
)
from edgewise.engines.generation import Chunk, Generation, Outcome, TokenLogprob

__all__ = [
    "ChatMessage",
    "Chunk",
    "Engine",
    "EngineInfo",
    "Generation",
    "Outcome",
    "SamplingParams",
    "Step",
    "TokenLogprob",
    "engine_factory",
    "register_engine",
]

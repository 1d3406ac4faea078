"""One generation on this node's own engine, as the API and a local tier run it:
admission (queue / 429), the engine thread, and the per-request metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from edgewise.engines import Chunk, Generation, SamplingParams
from edgewise.errors import UnavailableError
from edgewise.node import Node
from edgewise.serving.runner import RunStats, stream_generation

__all__ = ["LocalRun", "admitted", "precheck_queue"]


@dataclass
class LocalRun:
    node: Node
    model: str
    prompt: list[int]
    params: SamplingParams
    stats: RunStats = field(default_factory=RunStats)
    generation: Generation | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    def chunks(self) -> AsyncIterator[Chunk]:
        node = self.node
        self.generation = Generation(node.engine, self.prompt, self.params, n_ctx=node.info.n_ctx)
        assert node.executor is not None
        return stream_generation(self.generation, node.executor, self.stats)

    def record(self) -> None:
        """Token and latency metrics (labels: served model id and tier only)."""
        if self.generation is None:
            return
        out = self.generation.outcome
        m, labels = self.node.metrics, (self.model, self.node.tier)
        m.prompt_tokens.labels(*labels).inc(out.prompt_tokens)
        m.completion_tokens.labels(*labels).inc(out.completion_tokens)
        if self.stats.ttft_s is not None:
            m.ttft.labels(*labels).observe(self.stats.ttft_s)
        if out.completion_tokens > 1 and self.stats.decode_s > 0:
            m.tokens_per_second.labels(*labels).observe(
                (out.completion_tokens - 1) / self.stats.decode_s)
        if out.finish_reason == "cancelled":
            m.cancelled.inc()


async def admitted(node: Node, stack: AsyncExitStack) -> None:
    precheck_queue(node)
    admission = node.admission
    assert admission is not None
    node.metrics.queue_depth.set(admission.waiting + 1)
    try:
        await stack.enter_async_context(admission.slot())
    finally:
        node.metrics.queue_depth.set(admission.waiting)
    node.metrics.active.set(admission.active)
    stack.callback(lambda: node.metrics.active.set(admission.active))


def precheck_queue(node: Node) -> None:
    """Refuse with 429 *before* a stream's 200 headers go out when the queue is full."""
    if node.admission is None:
        raise UnavailableError(node.load_error or "the model is still loading", retry_after=2)
    node.admission.check()

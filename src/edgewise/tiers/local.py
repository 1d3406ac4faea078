"""A tier endpoint served by this node's own engine (same admission queue and engine
thread as direct requests)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio

from edgewise.engines import ChatMessage, SamplingParams, TokenLogprob
from edgewise.errors import ContextLengthError, EngineError, UnavailableError
from edgewise.node import Node
from edgewise.routing.breaker import CircuitBreaker, LatencyEstimate
from edgewise.serving.run import LocalRun, admitted
from edgewise.tiers.base import ChatAnswer, ChatRequest, Delta, EndpointError

__all__ = ["LocalEndpoint", "logprob_items"]


def logprob_items(tokens: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Tokens in OpenAI's ``choices[].logprobs.content`` shape."""
    return [
        {"token": t.token, "logprob": t.logprob, "bytes": t.bytes,
         "top_logprobs": [{"token": s, "logprob": lp, "bytes": b} for s, b, lp in t.top]}
        for t in tokens
    ]


class LocalEndpoint:
    def __init__(self, tier: str, node: Node) -> None:
        self.tier = tier
        self.node = node
        self.label = f"local:{node.config.engine.model}"
        # The local engine does not trip: its failures are request errors, not outages.
        self.breaker = CircuitBreaker(failure_threshold=1_000_000)
        self.latency = LatencyEstimate(alpha=node.config.routing.health.ewma_alpha)

    @property
    def models(self) -> tuple[str, ...]:
        return (self.node.model_id,) if self.node.ready else ()

    def ready(self) -> bool:
        a = self.node.admission
        return self.node.ready and a is not None and not a.draining

    def n_ctx(self) -> int:
        return self.node.info.n_ctx

    def count_tokens(self, req: ChatRequest) -> int:
        return len(self._prompt(req))

    def _prompt(self, req: ChatRequest) -> list[int]:
        return self.node.engine.chat_prompt([ChatMessage(m.role, m.content)
                                             for m in req.messages])

    def _run(self, req: ChatRequest) -> LocalRun:
        node = self.node
        prompt = self._prompt(req)
        n_ctx = node.info.n_ctx
        if len(prompt) >= n_ctx:
            raise ContextLengthError(
                f"the {self.tier} tier's context window is {n_ctx} tokens and the prompt "
                f"uses {len(prompt)}", param="messages")
        d = node.config.sampling
        params = SamplingParams(
            max_tokens=min(req.max_tokens or n_ctx, n_ctx - len(prompt)),
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p,
            top_k=d.top_k, min_p=d.min_p, repeat_penalty=d.repeat_penalty,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=req.stop, seed=None if req.seed is None else req.seed % (1 << 32),
            top_logprobs=req.top_logprobs,
        )
        return LocalRun(node, node.model_id, prompt, params)

    def _answer(self, run: LocalRun, text: str, items: list[dict[str, Any]],
                started: float) -> ChatAnswer:
        assert run.generation is not None
        out = run.generation.outcome
        answer = ChatAnswer(
            text=text, finish_reason="length" if out.finish_reason == "length" else "stop",
            model=run.model, prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens, logprob_items=items,
            ttft_s=run.stats.ttft_s, total_s=time.perf_counter() - started)
        if out.completion_tokens > 1 and run.stats.decode_s > 0:
            self.latency.observe(run.stats.ttft_s,
                                 (out.completion_tokens - 1) / run.stats.decode_s)
        return answer

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        parts: list[str] = []
        items: list[dict[str, Any]] = []
        started = time.perf_counter()
        run = self._run(req)
        async for delta in self._deltas(run):
            parts.append(delta.text)
            items.extend(delta.logprob_items)
        return self._answer(run, "".join(parts), items, started)

    async def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        started = time.perf_counter()
        run = self._run(req)
        parts: list[str] = []
        items: list[dict[str, Any]] = []
        async for delta in self._deltas(run):
            parts.append(delta.text)
            items.extend(delta.logprob_items)
            yield delta
        yield Delta("", final=self._answer(run, "".join(parts), items, started))

    async def _deltas(self, run: LocalRun) -> AsyncIterator[Delta]:
        async with AsyncExitStack() as stack:
            try:
                await admitted(self.node, stack)
            except UnavailableError as exc:  # queue full or draining: try another tier
                raise EndpointError(f"tier {self.tier!r} (local) {exc.message}") from exc
            chunks = run.chunks()
            try:
                async for chunk in chunks:
                    yield Delta(chunk.text, tuple(logprob_items(chunk.tokens)))
            except EngineError as exc:
                raise EndpointError(f"tier {self.tier!r} (local) engine failed: {exc}") from exc
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]
                run.record()

    async def probe(self) -> None:
        if not self.ready():
            raise EndpointError(f"tier {self.tier!r} (local): model not ready")

    async def aclose(self) -> None:
        return None

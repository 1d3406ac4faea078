"""A tier answered by speculative decoding across tiers: this node's model drafts, an
upper edgewise node's model verifies (``endpoints: [{url: …, verify: true}]``).

Each round this node's own engine drafts ``draft_tokens`` tokens greedily after the
context so far, and the upper node checks them in one forward pass
(``POST <url>/edgewise/verify``, :mod:`edgewise.api.verify`): it keeps the longest prefix
its model agrees with and adds its own next token. The answer is the upper model's —
token for token its greedy output at temperature 0, its distribution when sampling
(the upper applies the speculative sampling rule; a greedy draft is a point mass) —
while the upper runs about one pass per round instead of one per token. Both models must
share a vocabulary (Qwen2.5-Coder-0.5B on the device, 1.5B above): the ids are sent as
they are. The context grows by what the upper kept, so its prefix cache holds all but
the newest tokens and a round costs it a single pass.

The request reaches this tier only where the router sends it (clearance, redaction:
unchanged) and the upper node screens the detokenised text again. Stop strings, UTF-8
hold-back and the budget are the local decode loop's (:class:`Generation`). Not for
tools, ``response_format`` or ``n > 1`` (the router sends those elsewhere: this endpoint
says it cannot serve tools).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from typing import Any, cast

import httpx

from edgewise.chat import ChatAnswer, ChatRequest, Delta
from edgewise.config import EndpointConfig, HealthConfig
from edgewise.engines.base import Engine, SamplingParams, Step
from edgewise.engines.generation import Generation
from edgewise.errors import EdgewiseError, InvalidRequestError
from edgewise.node import Node
from edgewise.serving.runner import stream_generation
from edgewise.tiers.base import EndpointError
from edgewise.tiers.local import admitted
from edgewise.tiers.remote import RemoteEndpoint
from edgewise.wire import logprob_items

__all__ = ["SpeculativeEndpoint"]

class SpeculativeEndpoint(RemoteEndpoint):
    """The endpoint (module docstring); ``node`` is this node, whose engine drafts."""

    def __init__(self, tier: str, cfg: EndpointConfig, health: HealthConfig, node: Node, *,
                 timeout: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(tier, cfg, health, timeout=timeout, transport=transport)
        self.node = node
        self.draft_tokens = cfg.draft_tokens
        #: The upper node's forward passes, and the tokens they produced (all answers).
        self.upper_passes = 0
        self.upper_tokens = 0

    @property
    def tools(self) -> bool:
        return False

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        answer: ChatAnswer | None = None
        async for delta in self.stream(req):
            if delta.final is not None:
                answer = delta.final
        assert answer is not None
        return answer

    async def _verify(self, body: dict[str, Any]) -> dict[str, Any]:
        r = await self._post(body, "/edgewise/verify")
        try:
            out: dict[str, Any] = r.json()
            out["tokens"] = [int(t) for t in out["tokens"]]
            out["logprobs"] = [float(x["logprob"]) for x in out["logprobs"]]
            out["accepted"] = int(out["accepted"])
        except (ValueError, KeyError, TypeError):
            raise self._failed("answered with a malformed verification") from None
        return out

    async def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        if req.uses_tools or req.response_format is not None or req.n > 1:
            raise InvalidRequestError(
                f"tier {self.tier!r} answers by speculative decoding, which does not serve "
                "tools, response_format or n > 1")
        serving = self.node.serving
        if serving is None:
            raise EndpointError(f"tier {self.tier!r}: this node's model is not loaded")
        engine = serving.engine
        n_ctx = serving.info.n_ctx
        prompt = await asyncio.to_thread(engine.chat_prompt, list(req.messages))
        d = self.node.config.sampling
        params = SamplingParams(
            max_tokens=min(req.max_tokens or n_ctx, n_ctx - len(prompt)),
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p, top_k=d.top_k,
            min_p=d.min_p, stop=req.stop, seed=req.seed)
        source = _Rounds(self, engine, asyncio.get_running_loop(), self._model_for(req))
        # Generation reads only steps() and token_bytes() of its engine
        gen = Generation(cast(Engine, source), prompt, params, n_ctx=n_ctx)
        started = time.perf_counter()
        parts: list[str] = []
        items: list[dict[str, Any]] = []
        ttft: float | None = None
        async with AsyncExitStack() as stack:
            await admitted(self.node, stack, serving)
            try:
                async for chunk in stream_generation(gen, serving.executor):
                    lps = logprob_items(chunk.tokens)
                    if ttft is None and (chunk.text or lps):
                        ttft = time.perf_counter() - started
                    parts.append(chunk.text)
                    items.extend(lps)
                    yield Delta(chunk.text, tuple(lps),
                                model=source.model if len(parts) == 1 else None)
            except EdgewiseError:
                raise
            except Exception as exc:
                raise self._failed(f"speculative decoding failed: {exc}") from None
        out = gen.outcome
        self.breaker.record_success()
        answer = ChatAnswer(
            text="".join(parts), finish_reason="length" if out.finish_reason == "length"
            else "stop", model=source.model, prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens, logprob_items=items, ttft_s=ttft,
            total_s=time.perf_counter() - started,
            accepted_prediction_tokens=out.accepted_tokens,
            rejected_prediction_tokens=out.drafted_tokens - out.accepted_tokens)
        yield Delta("", final=answer)


class _Rounds:
    """What :class:`Generation` reads tokens from: rounds of a local greedy draft and
    the upper node's verification (run on a worker thread; the HTTP call on the event
    loop)."""

    def __init__(self, endpoint: SpeculativeEndpoint, engine: Any,
                 loop: asyncio.AbstractEventLoop, model: str) -> None:
        self.endpoint = endpoint
        self.engine = engine
        self.loop = loop
        self.model = model

    def token_bytes(self, token: int) -> bytes:
        return bytes(self.engine.token_bytes(token))

    def steps(self, prompt: Sequence[int], params: SamplingParams,
              should_stop: Callable[[], bool]) -> Iterator[Step]:
        ep = self.endpoint
        context = list(prompt)
        draft_params = SamplingParams(max_tokens=ep.draft_tokens, temperature=0.0)
        rounds = 0
        while not should_stop():
            draft: list[int] = []
            for step in self.engine.steps(context, draft_params, should_stop):
                draft.append(step.token)
                if step.end_of_generation:
                    break
            body = {"prompt": context, "draft": draft, "temperature": params.temperature,
                    "top_p": params.top_p, "top_k": params.top_k, "min_p": params.min_p,
                    # a seed of its own per round: the same draws every round would
                    # tie one round's acceptances to the next's
                    "seed": None if params.seed is None else params.seed + rounds}
            v = asyncio.run_coroutine_threadsafe(ep._verify(body), self.loop).result()
            rounds += 1
            ep.upper_passes += int((v.get("usage") or {}).get("forward_passes") or 0)
            tokens = v["tokens"]
            ep.upper_tokens += len(tokens)
            if v.get("model"):
                self.model = str(v["model"])
            ended = v.get("finish_reason") == "stop"
            for i, (token, logprob) in enumerate(zip(tokens, v["logprobs"], strict=True)):
                yield Step(token, logprob, end_of_generation=ended and i == len(tokens) - 1,
                           accepted=i < v["accepted"], drafted=len(draft) if i == 0 else 0)
                context.append(token)
            if ended or not tokens:
                return

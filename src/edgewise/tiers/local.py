"""A tier endpoint served by this node's own engine: admission (queue / 429), the
engine thread, per-request metrics. Every chat request a node answers locally comes
through here; ``/v1/completions`` uses :class:`LocalRun` directly.

During an A/B split (:meth:`Node.split`) a request is served by the version its split
key picks: :data:`~edgewise.node.request_split_key`, which the router sets from who
asks, or — for a request that did not come through the router — the key of its
messages. Every metric of a run is labelled with its version's label."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from edgewise.chat import ChatAnswer, ChatRequest, Delta, Message, ToolCall
from edgewise.engines import Chunk, Generation, SamplingParams
from edgewise.engines.grammar import ToolGrammar, grammar_for, parse_tool_calls, tool_grammar
from edgewise.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    UnavailableError,
)
from edgewise.node import Node, Serving, request_split_key, split_key
from edgewise.serving import RunStats, stream_generation
from edgewise.tiers.base import EndpointError
from edgewise.tiers.breaker import CircuitBreaker, LatencyEstimate
from edgewise.wire import logprob_items

__all__ = ["LocalEndpoint", "LocalRun", "admitted", "precheck_queue"]


@functools.lru_cache(maxsize=64)
def _grammar(response_format: str) -> str | None:
    """The GBNF of a ``response_format`` (JSON text: a cache key), converted once."""
    return grammar_for(json.loads(response_format))


@functools.lru_cache(maxsize=64)
def _tool_grammar(tools: str, tool_choice: str, parallel: bool) -> ToolGrammar | None:
    """The grammar of a tool-calling answer (JSON texts: cache keys), built once."""
    return tool_grammar(json.loads(tools), json.loads(tool_choice), parallel)


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def _calls_of(answer: ChatAnswer) -> None:
    """Read the tool calls out of a local answer's text (the grammar made them parse):
    the text keeps what came before them; ``finish_reason`` becomes ``tool_calls``."""
    content, calls = parse_tool_calls(answer.text)
    if not calls:
        return
    answer.text = content
    answer.tool_calls = [ToolCall(f"call_{uuid.uuid4().hex[:24]}", name, args)
                         for name, args in calls]
    if answer.finish_reason != "length":
        answer.finish_reason = "tool_calls"


@dataclass
class LocalRun:
    """One generation on the node's engine, and what it measured. ``serving`` is the
    engine the request started on (its prompt was tokenized by it): the run stays on it
    even if the node swaps models meanwhile."""

    node: Node
    serving: Serving
    prompt: list[int]
    params: SamplingParams
    stats: RunStats = field(default_factory=RunStats)
    generation: Generation | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    #: The answer is written in the tool-call format (its calls are read out of it).
    calls_tools: bool = False

    @property
    def model(self) -> str:
        """The served model's id (what the answer's ``model`` field says)."""
        return self.serving.info.model

    def chunks(self) -> AsyncIterator[Chunk]:
        s = self.serving
        self.generation = Generation(s.engine, self.prompt, self.params, n_ctx=s.info.n_ctx)
        return stream_generation(self.generation, s.executor, self.stats)

    def record(self, *, failed: bool = False) -> None:
        """Token and latency metrics (labels: the version's label and tier only) and the
        answer's outcome by version (``failed``: the engine raised)."""
        if self.generation is None:
            return
        out = self.generation.outcome
        m, labels = self.node.metrics, (self.serving.label, self.node.tier)
        outcome = "error" if failed else "cancelled" if out.finish_reason == "cancelled" \
            else "ok"
        m.model_answers.labels(self.serving.label, outcome).inc()
        m.prompt_tokens.labels(*labels).inc(out.prompt_tokens)
        m.completion_tokens.labels(*labels).inc(out.completion_tokens)
        if self.stats.ttft_s is not None:
            m.ttft.labels(*labels).observe(self.stats.ttft_s)
        if out.completion_tokens > 1 and self.stats.decode_s > 0:
            m.tokens_per_second.labels(*labels).observe(
                (out.completion_tokens - 1) / self.stats.decode_s)
        if out.finish_reason == "cancelled":
            m.cancelled.inc()


async def admitted(node: Node, stack: AsyncExitStack, serving: Serving) -> None:
    """Wait for a slot of ``serving``'s engine (held until ``stack`` closes); 429 / 503
    when refused."""
    if node.draining:
        precheck_queue(node)
    admission = serving.admission
    admission.check()
    node.metrics.queue_depth.set(admission.waiting + 1)
    arrived = time.perf_counter()
    try:
        await stack.enter_async_context(admission.slot())
    finally:
        node.metrics.queue_depth.set(admission.waiting)
    node.metrics.queue_wait.observe(time.perf_counter() - arrived)
    node.metrics.active.set(admission.active)
    stack.callback(lambda: node.metrics.active.set(admission.active))


def precheck_queue(node: Node, serving: Serving | None = None) -> None:
    """Refuse with 429 / 503 *before* a stream's 200 headers go out (``serving``: the
    version the request will use; default the node's primary one)."""
    admission = serving.admission if serving is not None else node.admission
    if admission is None:
        raise UnavailableError(node.load_error or "the model is still loading", retry_after=2)
    admission.check()


class LocalEndpoint:
    #: Prompts kept tokenized (the router counts a request's tokens to route it, then
    #: the same messages are answered, and a sampling scorer asks them again).
    _CACHE = 64

    def __init__(self, tier: str, node: Node) -> None:
        self.tier = tier
        self.node = node
        self.label = f"local:{node.config.engine.model}"
        # The local engine does not trip: its failures are request errors, not outages.
        self.breaker = CircuitBreaker(failure_threshold=1_000_000)
        self.latency = LatencyEstimate(alpha=node.config.routing.health.ewma_alpha)
        self._prompts: OrderedDict[tuple[int, tuple[Message, ...], str], list[int]] = \
            OrderedDict()

    @property
    def models(self) -> tuple[str, ...]:
        """The model ids served (both versions' during an A/B split)."""
        return tuple(dict.fromkeys(s.info.model for s in self.node.servings))

    @property
    def tools(self) -> bool:
        """Whether this node's engine calls functions: one that constrains decoding
        (llama.cpp; before the model is loaded, judged by the configured engine)."""
        node = self.node
        if node.ready:
            return all(s.info.grammar for s in node.servings)
        return node.config.engine.kind == "llamacpp"

    def ready(self) -> bool:
        a = self.node.admission
        return self.node.ready and a is not None and not a.draining

    def why_not_ready(self) -> str:
        node = self.node
        if node.draining or (node.admission is not None and node.admission.draining):
            return "the node is shutting down"
        if node.load_error:
            return "its model failed to load; see GET /readyz"
        return "its model is still loading; check GET /readyz"

    def n_ctx(self) -> int:
        """The context window of the version the routed request will use (the router
        asks while deciding, with its split key set); without a key, the smaller of
        the versions'."""
        key = request_split_key.get()
        if key is not None or len(self.node.servings) < 2:
            return self.node.current(key).info.n_ctx
        return min(s.info.n_ctx for s in self.node.servings)

    def serving_for(self, req: ChatRequest) -> Serving:
        """The version that serves ``req``: by the router's split key, else its
        messages' (so one conversation stays on one version)."""
        key = request_split_key.get()
        return self.node.current(key if key is not None else split_key(messages=req.messages))

    async def prompt(self, req: ChatRequest, serving: Serving | None = None) -> list[int]:
        """The request's messages rendered and tokenized by ``serving``'s engine (default:
        the current one), off the event loop (a long conversation takes a while to
        render); cached for the request's later steps."""
        s = serving or self.serving_for(req)
        key = (id(s), req.messages, _key(req.tools) if req.tools else "")
        ids = self._prompts.get(key)
        if ids is None:
            ids = await asyncio.to_thread(s.engine.chat_prompt, list(req.messages),
                                          list(req.tools))
            self._prompts[key] = ids
            if len(self._prompts) > self._CACHE:
                self._prompts.popitem(last=False)
        else:
            self._prompts.move_to_end(key)
        return ids

    async def _run(self, req: ChatRequest) -> LocalRun:
        node = self.node
        serving = self.serving_for(req)
        prompt = await self.prompt(req, serving)
        n_ctx = serving.info.n_ctx
        if len(prompt) >= n_ctx:
            raise ContextLengthError(
                f"this model's context window is {n_ctx} tokens and the prompt uses "
                f"{len(prompt)}; shorten the messages (or serve with a larger engine.n_ctx)",
                param="messages")
        grammar = None
        if req.response_format is not None:
            if not serving.info.grammar:
                raise InvalidRequestError(
                    f"this node's engine ({serving.info.kind}) cannot constrain decoding, so "
                    "it cannot honour response_format; serve with the llamacpp engine or "
                    "route the request to a tier that supports it", param="response_format",
                    code="unsupported_parameter")
            grammar = _grammar(_key(req.response_format))
        triggers: tuple[str, ...] = ()
        tools = _tool_grammar(_key(list(req.tools)), _key(req.tool_choice),
                              req.parallel_tool_calls) if req.tools else None
        if tools is not None:
            if grammar is not None:
                raise InvalidRequestError(
                    "the local engine cannot apply response_format and tools to one answer; "
                    "send one of them (a tool's parameters schema constrains its arguments)",
                    param="response_format", code="unsupported_parameter")
            if not serving.info.grammar:
                raise InvalidRequestError(
                    f"this node's engine ({serving.info.kind}) cannot constrain decoding, so "
                    "it cannot call functions; serve with the llamacpp engine or route the "
                    "request to a tier that calls functions", param="tools",
                    code="unsupported_parameter")
            grammar, triggers = tools.gbnf, tools.triggers
        d = node.config.sampling
        params = SamplingParams(
            max_tokens=min(req.max_tokens or n_ctx, n_ctx - len(prompt)),
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p,
            top_k=d.top_k, min_p=d.min_p, repeat_penalty=d.repeat_penalty,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stop=req.stop, seed=None if req.seed is None else req.seed % (1 << 32),
            top_logprobs=req.top_logprobs, grammar=grammar, grammar_triggers=triggers,
            logprobs=req.logprobs,
        )
        run = LocalRun(node, serving, prompt, params)
        run.calls_tools = tools is not None
        return run

    def _answer(self, run: LocalRun, text: str, items: list[dict[str, Any]],
                started: float) -> ChatAnswer:
        assert run.generation is not None
        out = run.generation.outcome
        answer = ChatAnswer(
            text=text, finish_reason="length" if out.finish_reason == "length" else "stop",
            model=run.model, prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens, logprob_items=items,
            ttft_s=run.stats.ttft_s, total_s=time.perf_counter() - started,
            accepted_prediction_tokens=out.accepted_tokens,
            rejected_prediction_tokens=out.drafted_tokens - out.accepted_tokens)
        if run.calls_tools:
            _calls_of(answer)
        if out.completion_tokens > 1 and run.stats.decode_s > 0:
            self.latency.observe(run.stats.ttft_s,
                                 (out.completion_tokens - 1) / run.stats.decode_s)
        return answer

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        if req.n > 1:
            return await self._choices(req)
        parts: list[str] = []
        items: list[dict[str, Any]] = []
        started = time.perf_counter()
        run = await self._run(req)
        async for delta in self._deltas(run):
            parts.append(delta.text)
            items.extend(delta.logprob_items)
        return self._answer(run, "".join(parts), items, started)

    async def _choices(self, req: ChatRequest) -> ChatAnswer:
        """``n`` independent answers, each a run of its own (the engine batches them),
        seeded ``seed + i`` when the client fixed a seed; the first is the answer."""
        try:
            async with asyncio.TaskGroup() as group:  # one failing cancels the others
                tasks = [group.create_task(self.chat(dataclasses.replace(
                    req, n=1, seed=None if req.seed is None else req.seed + i)))
                    for i in range(req.n)]
        except BaseExceptionGroup as failed:  # the first failure, as one request's
            raise failed.exceptions[0] from None
        first, *rest = [t.result() for t in tasks]
        first.alternatives = rest
        first.completion_tokens = sum(a.completion_tokens for a in (first, *rest))
        first.accepted_prediction_tokens = sum(a.accepted_prediction_tokens
                                               for a in (first, *rest))
        first.rejected_prediction_tokens = sum(a.rejected_prediction_tokens
                                               for a in (first, *rest))
        return first

    async def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        if req.uses_tools:  # calls are read out of the whole answer (the walk asks chat)
            answer = await self.chat(req)
            yield Delta(answer.text, tuple(answer.logprob_items), model=answer.model)
            yield Delta("", final=answer)
            return
        started = time.perf_counter()
        run = await self._run(req)
        parts: list[str] = []
        items: list[dict[str, Any]] = []
        first = True
        async for delta in self._deltas(run):
            parts.append(delta.text)
            items.extend(delta.logprob_items)
            if first:  # say which model answers (the stream's first frame names it)
                delta, first = Delta(delta.text, delta.logprob_items, model=run.model), False
            yield delta
        yield Delta("", final=self._answer(run, "".join(parts), items, started),
                    model=run.model if first else None)

    async def _deltas(self, run: LocalRun) -> AsyncIterator[Delta]:
        async with AsyncExitStack() as stack:
            try:
                await admitted(self.node, stack, run.serving)
            except UnavailableError as exc:  # queue full or draining: try another tier
                raise EndpointError(f"tier {self.tier!r} (local) {exc.message}",
                                    cause=exc) from exc
            chunks = run.chunks()
            failed = False
            try:
                async for chunk in chunks:
                    yield Delta(chunk.text, tuple(logprob_items(chunk.tokens)))
            except EngineError as exc:
                failed = True
                raise EndpointError(f"tier {self.tier!r} (local) engine failed: {exc}",
                                    cause=exc) from exc
            finally:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]
                run.record(failed=failed)

    async def probe(self) -> None:
        if not self.ready():
            raise EndpointError(f"tier {self.tier!r} (local): model not ready")

    async def aclose(self) -> None:
        return None

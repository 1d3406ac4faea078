"""The Engine protocol: what every local inference backend provides.

An engine only has to do the model-specific part — tokenize, render a chat template and
produce sampled tokens with their log-probabilities (:meth:`Engine.steps`). Everything
that is the same for every backend (max_tokens, stop strings, UTF-8 assembly, logprob
formatting, cancellation) lives once in :mod:`edgewise.engines.generation`.

Engines are blocking. The serving layer runs one generation per engine slot on a worker
thread (``EngineInfo.slots``): an engine with one slot is called from one thread at a
time; one with ``slots`` > 1 (a batching engine: llama.cpp with ``engine.parallel``)
must accept ``steps`` and ``score`` from that many threads at once. A batching engine
may also offer ``batch_stats() -> BatchStats`` for ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edgewise.chat import Message

__all__ = [
    "BatchStats",
    "Engine",
    "EngineInfo",
    "SamplingParams",
    "Step",
    "Verification",
]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings (already validated by the API layer)."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: How many alternatives to report per token (0: only the chosen token's logprob).
    top_logprobs: int = 0
    #: Keep sampling past end-of-generation tokens (still flagged on their steps) up to
    #: ``max_tokens``: for speed measurements that must run every token; the API never
    #: sets it.
    ignore_eos: bool = False
    #: A GBNF grammar (root rule ``root``) every sampled token must keep the output
    #: within (``response_format``: engines/grammar.py); engines that cannot constrain
    #: decoding say so in ``EngineInfo.grammar``.
    grammar: str | None = None
    #: Make ``grammar`` lazy (``tool_choice: "auto"``): decoding is free until the whole
    #: output so far matches one of these regular expressions (ECMAScript, as llama.cpp
    #: reads them), then constrained from the start of its first group onwards.
    grammar_triggers: tuple[str, ...] = ()
    #: Whether the steps' logprobs are read (the client asked, or a confidence scorer
    #: will): with a grammar, False lets the engine check only the token it picks
    #: instead of the whole vocabulary, and the logprobs are then the unconstrained
    #: model's. Unconstrained decoding reports exact logprobs either way.
    logprobs: bool = True


@dataclass(frozen=True)
class Step:
    """One sampled token: its id, its log-probability under the model, the top-k."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    #: True when the token ends the sequence (EOS / end-of-turn); it is not emitted.
    end_of_generation: bool = False
    #: Speculative decoding: the token was drafted and the target kept it; ``drafted``
    #: (on the first token a verify pass yields) is how many tokens that pass verified.
    accepted: bool = False
    drafted: int = 0


@dataclass(frozen=True)
class Verification:
    """A peer's draft, verified (``engine.verify``): the kept drafted tokens and the
    model's next one, and the decode calls it took (prefill of an uncached context
    included)."""

    steps: list[Step]
    passes: int


@dataclass
class BatchStats:
    """What a batching engine is doing (``engine.batch_stats()``, read by ``/metrics``).

    Cumulative counters (``steps``, ``batch_sizes``, ``prefix_*``, ``prompt_tokens_*``)
    only grow; the rest is the state after the last step."""

    #: Sequences the engine runs at once (``engine.parallel``).
    parallel: int
    #: Sequences running now, and requests waiting inside the engine for a slot.
    active: int = 0
    waiting: int = 0
    #: KV-cache cells: in all, held by running sequences, and kept by finished ones
    #: for prefix reuse; ``n_ctx_seq`` is one sequence's share.
    kv_cells_total: int = 0
    kv_cells_active: int = 0
    kv_cells_cached: int = 0
    n_ctx_seq: int = 0
    #: Decode steps run, and how many sequences each held: {sequences: steps}.
    steps: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    #: Requests that reused at least one cached prompt token / that reused none, and
    #: the prompt tokens reused vs computed.
    prefix_hits: int = 0
    prefix_misses: int = 0
    prefix_tokens_reused: int = 0
    prompt_tokens_computed: int = 0
    #: Speculative decoding: verify passes run, tokens drafted and kept, and seconds
    #: spent drafting and verifying (cumulative).
    spec_passes: int = 0
    spec_drafted: int = 0
    spec_accepted: int = 0
    spec_draft_seconds: float = 0.0
    spec_verify_seconds: float = 0.0


@dataclass(frozen=True)
class EngineInfo:
    kind: str
    model: str
    n_ctx: int
    n_vocab: int
    sha256: str
    path: str
    size_bytes: int
    #: Generations the engine can run at once.
    slots: int = 1
    chat_template: bool = True
    #: Whether ``SamplingParams.grammar`` is honoured (constrained decoding).
    grammar: bool = False
    #: The most UTF-8 bytes one token can stand for (0: unknown). A text longer than
    #: ``n_ctx × max_token_bytes`` cannot fit the context, whatever its tokenization:
    #: the node refuses it before tokenizing anything.
    max_token_bytes: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A local inference backend (llama.cpp, a fake for tests, transformers later)."""

    def load(self) -> None:
        """Load weights; raise :class:`~edgewise.errors.EngineError` on failure."""

    def close(self) -> None:
        """Free the model."""

    def info(self) -> EngineInfo: ...

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        """Text to token ids (``special``: parse control tokens such as ``<|im_start|>``)."""

    def token_bytes(self, token: int) -> bytes:
        """The bytes one token decodes to (may be a partial UTF-8 sequence)."""

    def chat_prompt(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        """Render messages (and OpenAI ``tools`` definitions) with the model's chat
        template and tokenize the result.

        Only the template's own markup may become control tokens: message content is
        always tokenized as plain text (a user cannot forge ``<|im_start|>system``)."""

    def steps(
        self, prompt: Sequence[int], params: SamplingParams, should_stop: Callable[[], bool]
    ) -> Iterator[Step]:
        """Sample tokens one at a time until EOG (yielded with ``end_of_generation``),
        the context is full, or the caller stops iterating / ``should_stop()`` is true."""

    def score(self, tokens: Sequence[int]) -> list[Step]:
        """Log-probability of each token given those before it (first has none).

        Returns ``len(tokens) - 1`` steps, one per token after the first.
        """

"""A deterministic stand-in engine for tests and for running the node without weights.

It is a real (if tiny and silly) language model, not a canned reply: a fixed vocabulary
of bytes and words, logits that are a pseudo-random function of the last two tokens,
sampling with temperature / top-p / seed, and exact log-softmax logprobs. So the whole
serving stack — stop strings, UTF-8 split across tokens, logprobs, budgets, cancellation —
is exercised without loading a model. ``token_delay_s`` makes it slow on purpose for
concurrency tests; ``fail_after`` makes it raise mid-generation.

It batches like the llama.cpp engine: ``parallel`` generations run at once (``slots``),
and with ``token_delay_s`` they advance on one shared step clock — every running
sequence gets its next token at the same tick, a new one joins at the next tick — so
aggregate throughput grows with concurrency, and ``batch_stats()`` reports the
sequences per step as the real engine does.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgewise.chat import Message
from edgewise.engines.base import BatchStats, EngineInfo, SamplingParams, Step
from edgewise.errors import EngineError

__all__ = ["FakeEngine"]

BOS, EOS = 0, 1
_BYTE0 = 2  # tokens 2..257 are the 256 single bytes
_WORDS = [
    " the", " edge", " node", " answers", " locally", " and", " escalates", " only",
    " when", " it", " must", ".", ",", " café", " 東京", " 🙂", "\n", " Hello", " world",
]
_WORD0 = _BYTE0 + 256


class FakeEngine:
    """See module docstring. ``eos_after``: EOS becomes certain after that many tokens."""

    def __init__(
        self,
        *,
        n_ctx: int = 512,
        eos_after: int = 24,
        token_delay_s: float = 0.0,
        prefill_delay_s: float = 0.0,
        fail_after: int | None = None,
        model: str = "fake-tiny",
        parallel: int = 1,
    ) -> None:
        self.n_ctx = n_ctx
        self.eos_after = eos_after
        self.token_delay_s = token_delay_s
        self.prefill_delay_s = prefill_delay_s
        self.fail_after = fail_after
        self.model = model
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.parallel = parallel
        self._lock = threading.Lock()
        self._active: dict[int, int] = {}  # generation id -> its context length
        self._ticks: dict[int, int] = {}  # tick -> sequences that took a token at it
        self._stats = BatchStats(parallel=parallel, kv_cells_total=n_ctx * parallel,
                                 n_ctx_seq=n_ctx)
        self._vocab: list[bytes] = [b"", b""] + [bytes([i]) for i in range(256)] + [
            w.encode() for w in _WORDS
        ]
        self._word_ids = {w.encode(): _WORD0 + i for i, w in enumerate(_WORDS)}
        self._loaded = False
        self.generations_started = 0
        self.tokens_generated = 0

    # -- Engine protocol -------------------------------------------------------------
    def load(self) -> None:
        self._loaded = True

    def close(self) -> None:
        self._loaded = False

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="fake", model=self.model, n_ctx=self.n_ctx, n_vocab=len(self._vocab),
            sha256=hashlib.sha256(b"fake").hexdigest(), path="(in memory)", size_bytes=0,
            max_token_bytes=max(map(len, self._vocab)), slots=self.parallel,
        )

    def batch_stats(self) -> BatchStats:
        with self._lock:
            now = self._tick_now()
            done = [t for t in self._ticks if t < now]
            for t in done:  # ticks that are over: one step each, of that many sequences
                n = self._ticks.pop(t)
                self._stats.steps += 1
                self._stats.batch_sizes[n] = self._stats.batch_sizes.get(n, 0) + 1
            s = self._stats
            return BatchStats(parallel=s.parallel, active=len(self._active),
                              kv_cells_total=s.kv_cells_total,
                              kv_cells_active=sum(self._active.values()),
                              n_ctx_seq=s.n_ctx_seq, steps=s.steps,
                              batch_sizes=dict(s.batch_sizes))

    def _tick_now(self) -> int:
        return math.floor(time.monotonic() / self.token_delay_s) if self.token_delay_s else 0

    def _wait_tick(self) -> None:
        """Sleep to the next tick of the shared step clock and count this sequence in it."""
        now = time.monotonic()
        tick = math.floor(now / self.token_delay_s) + 1
        time.sleep(max(0.0, tick * self.token_delay_s - now))
        with self._lock:
            self._ticks[tick] = self._ticks.get(tick, 0) + 1

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        data = text.encode("utf-8")
        ids = [BOS] if add_bos else []
        i = 0
        while i < len(data):
            for word, wid in self._word_ids.items():
                if data.startswith(word, i):
                    ids.append(wid)
                    i += len(word)
                    break
            else:
                ids.append(_BYTE0 + data[i])
                i += 1
        return ids

    def token_bytes(self, token: int) -> bytes:
        if not 0 <= token < len(self._vocab):
            raise EngineError(
                f"token id {token} is outside the vocabulary (0..{len(self._vocab) - 1})")
        return self._vocab[token]

    def chat_prompt(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        text = "".join(f"<tools>{json.dumps(t)}</tools>" for t in tools)
        text += "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages) + "<assistant>"
        return self.tokenize(text)

    def _logits(self, context: Sequence[int], n_generated: int) -> np.ndarray:
        key = hashlib.blake2b(repr(tuple(context[-2:])).encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(key, "little"))
        logits = rng.normal(0.0, 1.0, len(self._vocab)).astype(np.float64)
        logits[_WORD0:] += 6.0  # mostly words, sometimes raw bytes
        logits[BOS] = -1e9
        logits[EOS] = 1e3 if n_generated >= self.eos_after else -4.0
        return logits

    def _check(self, tokens: Sequence[int]) -> None:
        if not self._loaded:
            raise EngineError("fake engine used before load()")
        if len(tokens) > self.n_ctx:
            raise EngineError(f"{len(tokens)} tokens exceed the context window of {self.n_ctx}")

    def steps(
        self, prompt: Sequence[int], params: SamplingParams, should_stop: Callable[[], bool]
    ) -> Iterator[Step]:
        self._check(prompt)
        self.generations_started += 1
        if self.prefill_delay_s:
            time.sleep(self.prefill_delay_s)
        rng = np.random.default_rng(params.seed)
        context = list(prompt)
        key = id(context)
        with self._lock:
            self._active[key] = len(context)
        try:
            yield from self._generate(context, params, should_stop, rng, key)
        finally:
            with self._lock:
                self._active.pop(key, None)

    def _generate(self, context: list[int], params: SamplingParams,
                  should_stop: Callable[[], bool], rng: np.random.Generator, key: int
                  ) -> Iterator[Step]:
        n = 0
        while len(context) < self.n_ctx and not should_stop():
            if self.fail_after is not None and n >= self.fail_after:
                raise EngineError("fake engine failure (fail_after reached)")
            logits = self._logits(context, n)
            logz = np.logaddexp.reduce(logits)
            logp = logits - logz
            if params.temperature == 0:
                token = int(np.argmax(logits))
            else:
                p = np.exp((logits - logits.max()) / params.temperature)
                p /= p.sum()
                order = np.argsort(-p)
                keep = order[: max(1, int(np.searchsorted(np.cumsum(p[order]), params.top_p) + 1))]
                q = p[keep] / p[keep].sum()
                token = int(rng.choice(keep, p=q))
            top: tuple[tuple[int, float], ...] = ()
            if params.top_logprobs:
                best = np.argsort(-logp)[: params.top_logprobs]
                top = tuple((int(t), float(logp[t])) for t in best)
            if self.token_delay_s:
                self._wait_tick()
            n += 1
            self.tokens_generated += 1
            yield Step(token, float(logp[token]), top, end_of_generation=token == EOS)
            if token == EOS:
                return
            context.append(token)
            with self._lock:
                self._active[key] = len(context)

    def score(self, tokens: Sequence[int]) -> list[Step]:
        self._check(tokens)
        out = []
        for i in range(1, len(tokens)):
            logits = self._logits(tokens[:i], 0)
            logp = logits - np.logaddexp.reduce(logits)
            out.append(Step(int(tokens[i]), float(logp[tokens[i]])))
        return out


    @classmethod
    def from_config(cls, config: Any, resolve: Callable[[], Any]) -> FakeEngine:
        """The fake engine for an ``engine`` section (it needs no model file)."""
        return cls(n_ctx=config.n_ctx, parallel=config.parallel or 1)


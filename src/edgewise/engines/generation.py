"""The decode loop shared by every engine: budgets, stop strings, UTF-8, logprobs.

An engine yields sampled token ids (:class:`~edgewise.engines.base.Step`); this module
turns them into text chunks a client can be sent:

1. Each token's bytes go through an incremental UTF-8 decoder, so a character split
   across tokens (emoji, CJK, accents) is never sent half-way.
2. Stop strings: text that could still be the start of a stop string is held back; when
   a stop string completes, everything from its first character on is dropped.
3. A token is released (with its logprob) in the chunk that carries its last character,
   so streamed ``logprobs.content`` always lines up with the streamed text.
4. The budget is ``min(max_tokens, n_ctx - len(prompt))``; the loop also ends when the
   engine reports end-of-generation or the caller cancels.

Written by hand: llama.cpp's own loop (``Llama._create_completion``) cannot be told to
report logprobs without ``logits_all=True``, which is several times slower.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from edgewise.chat import TokenLogprob
from edgewise.engines.base import Engine, SamplingParams, Step

__all__ = ["Chunk", "Generation", "Outcome"]


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: list[TokenLogprob]


@dataclass
class Outcome:
    finish_reason: str = "length"  # "stop" | "length" | "cancelled"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Logprob of every generated token, in order (confidence signal for the router).
    logprobs: list[float] = field(default_factory=list)
    #: Speculative decoding: tokens drafted for this answer, and those the model kept.
    drafted_tokens: int = 0
    accepted_tokens: int = 0


class Generation:
    """Iterate to get :class:`Chunk` s; afterwards :attr:`outcome` says how it ended."""

    def __init__(
        self,
        engine: Engine,
        prompt: Sequence[int],
        params: SamplingParams,
        *,
        n_ctx: int,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.prompt = list(prompt)
        self.params = params
        self.budget = max(0, min(params.max_tokens, n_ctx - len(self.prompt)))
        self.should_stop = should_stop
        self.outcome = Outcome(prompt_tokens=len(self.prompt))

    def _token_logprob(self, step: Step, raw: bytes) -> TokenLogprob:
        top = []
        for tok, lp in step.top:
            b = self.engine.token_bytes(tok)
            top.append((b.decode("utf-8", "replace"), list(b), lp))
        return TokenLogprob(raw.decode("utf-8", "replace"), list(raw), step.logprob, top)

    def __iter__(self) -> Iterator[Chunk]:
        stops = [s for s in self.params.stop if s]
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        out = ""  # all decoded text so far
        emitted = 0  # out[:emitted] has been yielded
        # Tokens not yet yielded, each with the offset in `out` where its text ends
        # (None while its bytes are an incomplete UTF-8 sequence).
        pending: list[tuple[TokenLogprob, int | None]] = []
        outcome = self.outcome
        if self.budget == 0:
            outcome.finish_reason = "length"
            return

        def release(upto: int) -> Chunk:
            nonlocal emitted, pending
            ready = [t for t, end in pending if end is not None and end <= upto]
            pending = [(t, end) for t, end in pending if end is None or end > upto]
            chunk = Chunk(out[emitted:upto], ready)
            emitted = upto
            return chunk

        steps = self.engine.steps(self.prompt, self.params, self.should_stop)
        try:
            for step in steps:
                outcome.drafted_tokens += step.drafted
                outcome.accepted_tokens += step.accepted
                if step.end_of_generation:
                    outcome.finish_reason = "stop"
                    break
                raw = self.engine.token_bytes(step.token)
                out += decoder.decode(raw)
                outcome.completion_tokens += 1
                outcome.logprobs.append(step.logprob)
                complete = not decoder.getstate()[0]
                pending.append((self._token_logprob(step, raw), len(out) if complete else None))
                if complete:  # earlier tokens of a now-complete character end here too
                    pending = [(t, len(out) if end is None else end) for t, end in pending]

                safe = len(out)
                if stops:
                    hit = min((i for s in stops if (i := out.find(s, emitted)) >= 0), default=-1)
                    if hit >= 0:
                        outcome.finish_reason = "stop"
                        chunk = release(hit)
                        pending.clear()
                        if chunk.text or chunk.tokens:
                            yield chunk
                        return
                    safe -= _held_back(out, emitted, stops)
                if safe > emitted:
                    yield release(safe)
                if outcome.completion_tokens >= self.budget:
                    outcome.finish_reason = "length"
                    break
                if self.should_stop():
                    outcome.finish_reason = "cancelled"
                    break
            else:
                # The engine ran out of context (or was cancelled) without an EOG token.
                outcome.finish_reason = "cancelled" if self.should_stop() else "length"
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
        out += decoder.decode(b"", final=True)
        pending = [(t, len(out) if end is None else end) for t, end in pending]
        if len(out) > emitted or pending:
            yield release(len(out))


def _held_back(text: str, start: int, stops: list[str]) -> int:
    """Length of the longest suffix of ``text[start:]`` that is a proper prefix of a stop."""
    best = 0
    tail = text[start:]
    for s in stops:
        for n in range(min(len(s) - 1, len(tail)), best, -1):
            if tail.endswith(s[:n]):
                best = n
                break
    return best

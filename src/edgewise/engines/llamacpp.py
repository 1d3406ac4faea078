"""llama.cpp engine (via llama-cpp-python): the default local backend of a node.

Logprobs at full speed: llama-cpp-python only keeps per-token logits with
``logits_all=True``, which copies the whole vocabulary row for every prompt token and is
several times slower (and its ``logits_processor`` hook builds a numpy record array per
token). Instead, after each sampled token we read the logits row the sampler drew from
straight out of the llama.cpp context (``llama_get_logits_ith(ctx, -1)``, zero-copy;
it stays valid until the next decode) and take ``log_softmax`` of it: one max, one exp
and one sum over the vocabulary, ~0.05 ms for 49k entries against ~10 ms per token.

Prompt scoring (:meth:`LlamaCppEngine.score`, for ``echo`` + ``logprobs``) decodes the
prompt once with logits requested for every position of the batch.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgewise.engines.base import ChatMessage, EngineInfo, SamplingParams, Step, register_engine
from edgewise.errors import EngineError
from edgewise.models import ResolvedModel

__all__ = ["LlamaCppEngine"]


TopK = tuple[tuple[int, float], ...]


def _logprobs(logits: np.ndarray, token: int, k: int) -> tuple[float, TopK]:
    """log_softmax(logits)[token] and the top-k alternatives, from one logits row.

    ``log p_i = x_i - logsumexp(x)``, with ``logsumexp(x) = m + log Σ exp(x - m)``,
    ``m = max(x)`` for stability. float32 is enough for the exp/sum (errors ~1e-6).
    """
    m = float(logits.max())
    logz = m + float(np.log(np.exp(logits - m).sum(dtype=np.float64)))
    logp = float(logits[token]) - logz
    if k <= 0:
        return logp, ()
    k = min(k, logits.size)
    if k <= 8:
        # k argmax passes (~5 µs each) beat argpartition over the vocabulary (~0.4 ms).
        work = logits.copy() if k > 1 else logits
        best = []
        for _ in range(k):
            i = int(work.argmax())
            best.append(i)
            if k > 1:
                work[i] = -np.inf
    else:
        part = np.argpartition(logits, -k)[-k:]
        best = [int(t) for t in part[np.argsort(-logits[part])]]
    return logp, tuple((t, float(logits[t]) - logz) for t in best)


class LlamaCppEngine:
    """Serve a GGUF model in-process with llama.cpp."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        lora_path: str | None = None,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_batch = n_batch
        #: A GGUF LoRA adapter applied on top of the model at load time (llama.cpp adds
        #: ``scale · B·A·x`` to each adapted layer; the base file is not modified).
        self.lora_path = lora_path
        self._llm: Any = None
        self._formatter: Any = None
        self._token_bytes: dict[int, bytes] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - the base install includes it
            raise EngineError(
                "llama-cpp-python is not installed: run `make run` or "
                "`pip install llama-cpp-python`"
            ) from exc
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                n_batch=self.n_batch,
                logits_all=False,
                lora_path=self.lora_path,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            what = f"{self.model.path} with adapter {self.lora_path}" if self.lora_path \
                else str(self.model.path)
            raise EngineError(f"llama.cpp could not load {what}: {exc}") from exc
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template:
            model = self._llm._model
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                add_generation_prompt=True,
            )

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise EngineError("llama.cpp engine used before load()")
        return self._llm

    def info(self) -> EngineInfo:
        llm = self.llm
        return EngineInfo(
            kind="llamacpp", model=self.model.name, n_ctx=llm.n_ctx(), n_vocab=llm.n_vocab(),
            sha256=self.model.sha256, path=str(self.model.path),
            size_bytes=self.model.size_bytes, slots=1,
            chat_template=self._formatter is not None,
            extra={"n_threads": str(self.n_threads),
                   **({"lora_adapter": self.lora_path} if self.lora_path else {})},
        )

    # -- text <-> tokens ------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        try:
            tokens: list[int] = self.llm.tokenize(
                text.encode("utf-8"), add_bos=add_bos, special=special
            )
        except (RuntimeError, UnicodeEncodeError) as exc:
            raise EngineError(f"tokenization failed: {exc}") from exc
        bos = self.llm.token_bos()
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]  # template already rendered the BOS text
        return tokens

    def token_bytes(self, token: int) -> bytes:
        piece = self._token_bytes.get(token)
        if piece is None:
            piece = self.llm.detokenize([token])
            self._token_bytes[token] = piece
        return piece

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        if self._formatter is None:
            # Base model without a chat template: a plain transcript it can continue.
            text = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
            return self.tokenize(text)
        try:
            rendered = self._formatter(
                messages=[{"role": m.role, "content": m.content} for m in messages]
            )
        except Exception as exc:  # jinja2 raises its own types, and ValueError via raise_exception
            from edgewise.errors import InvalidRequestError

            raise InvalidRequestError(
                f"the model's chat template rejected these messages: {exc}", param="messages"
            ) from exc
        return self.tokenize(rendered.prompt, special=True)

    # -- generation ---------------------------------------------------------------------
    def steps(
        self, prompt: Sequence[int], params: SamplingParams, should_stop: Callable[[], bool]
    ) -> Iterator[Step]:
        import llama_cpp

        llm = self.llm
        n_ctx = llm.n_ctx()
        if len(prompt) >= n_ctx:
            raise EngineError(f"prompt of {len(prompt)} tokens does not fit n_ctx={n_ctx}")
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        vocab = llm._model.vocab
        ctx = llm._ctx.ctx
        n_vocab = llm.n_vocab()
        position = len(prompt)
        try:
            gen = llm.generate(
                list(prompt),
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                reset=True,
            )
            for token in gen:
                # The row the sampler just drew from is still in the context's logits
                # buffer (the next decode happens when we resume the generator).
                row = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                logprob, top = _logprobs(row, token, params.top_logprobs)
                eog = bool(llama_cpp.llama_vocab_is_eog(vocab, token))
                yield Step(int(token), logprob, top, end_of_generation=eog)
                position += 1
                if eog or position >= n_ctx or should_stop():
                    return
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp generation failed: {exc}") from exc

    def score(self, tokens: Sequence[int], first: int = 1) -> list[Step]:
        """Log-probability of ``tokens[t]`` given ``tokens[:t]``, for ``t`` from ``first``.

        ``first`` > 1 skips the steps the caller does not need — and their logits, which
        for a large vocabulary are a third of the compute (perplexity scores only the
        second half of each chunk).
        """
        tokens = list(tokens)
        self._check_fits(len(tokens))
        with self._scoring():
            return self._run(tokens, 0, max(first, 1), keep_last=False)[0]

    def score_continuations(
        self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[list[Step]]:
        """Score each continuation after one shared prefix, evaluating the prefix once.

        Returns, per continuation, ``log p(c[i] | prefix + c[:i])`` for every token
        ``c[i]`` — the same numbers as :meth:`score` on ``prefix + c``, for a fraction of
        the work when the prefix is long and the continuations short (log-likelihood
        classification: one prompt, a few candidate answers).
        """
        prefix = list(prefix)
        if not prefix:
            raise EngineError("score_continuations needs a non-empty prefix")
        self._check_fits(len(prefix) + max((len(c) for c in continuations), default=0))
        out: list[list[Step]] = []
        with self._scoring():
            _, row = self._run(prefix, 0, len(prefix) + 1, keep_last=True)
            assert row is not None
            for cont in continuations:
                cont = list(cont)
                self.llm._ctx.kv_cache_seq_rm(-1, len(prefix), -1)
                if not cont:
                    out.append([])
                    continue
                steps = [Step(cont[0], _logprobs(row, cont[0], 0)[0])]
                steps += self._run(cont, len(prefix), 1, keep_last=False)[0]
                out.append(steps)
        return out

    def _check_fits(self, n: int) -> None:
        if n > self.llm.n_ctx():
            raise EngineError(f"{n} tokens do not fit n_ctx={self.llm.n_ctx()}")

    @contextlib.contextmanager
    def _scoring(self) -> Iterator[None]:
        """An empty KV cache before and after; llama.cpp errors as EngineError."""
        llm = self.llm
        llm.reset()  # the next generate() re-evaluates its prompt from scratch
        try:
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            yield
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp scoring failed: {exc}") from exc
        finally:
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            llm.reset()

    def _run(
        self, tokens: list[int], n_past: int, first: int, *, keep_last: bool
    ) -> tuple[list[Step], np.ndarray | None]:
        """Decode ``tokens`` at positions ``n_past``…, asking llama.cpp for logits only
        where they are used: the steps for ``tokens[t]``, ``t >= first``, and with
        ``keep_last`` a copy of the last token's row (what follows the sequence)."""
        import llama_cpp

        llm = self.llm
        n_vocab = llm.n_vocab()
        upto = len(tokens) if keep_last else len(tokens) - 1  # the last token predicts nothing
        out: list[Step] = []
        last: np.ndarray | None = None
        for start in range(0, upto, self.n_batch):
            chunk = tokens[start : min(start + self.n_batch, upto)]
            llm._batch.set_batch(batch=chunk, n_past=n_past + start, logits_all=False)
            wanted = [start + j + 1 >= first or (keep_last and start + j == upto - 1)
                      for j in range(len(chunk))]
            for j, want in enumerate(wanted):
                llm._batch.batch.logits[j] = want
            llm._ctx.decode(llm._batch)
            for j, want in enumerate(wanted):
                if not want:
                    continue
                row = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j), shape=(n_vocab,))
                nxt = start + j + 1
                if nxt < len(tokens) and nxt >= first:
                    out.append(Step(tokens[nxt], _logprobs(row, tokens[nxt], 0)[0]))
                if keep_last and start + j == upto - 1:
                    last = row.copy()
        return out, last


def _factory(model: ResolvedModel, **kwargs: Any) -> LlamaCppEngine:
    return LlamaCppEngine(model, **kwargs)


register_engine("llamacpp", _factory)

"""llama.cpp engine (via llama-cpp-python): the default local backend of a node.

Logprobs at full speed: llama-cpp-python only keeps per-token logits with
``logits_all=True``, which copies the whole vocabulary row for every prompt token and is
several times slower. Instead a logits processor — the first sampler in llama.cpp's
chain, so it sees the raw logits of every vocabulary id in id order — records
``log_softmax(logits)`` of each step; the chosen token's logprob is looked up after
sampling. Cost per token: one copy and one logsumexp over the vocabulary (~0.1 ms for a
49k vocabulary), against ~15 ms per token of generation.

Prompt scoring (:meth:`LlamaCppEngine.score`, for ``echo`` + ``logprobs``) decodes the
prompt once with logits requested for every position of the batch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgewise.engines.base import ChatMessage, EngineInfo, SamplingParams, Step, register_engine
from edgewise.errors import EngineError
from edgewise.models import ResolvedModel

__all__ = ["LlamaCppEngine"]


class _LogprobRecorder:
    """A llama-cpp-python logits processor that remembers each step's log-softmax."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.logits: np.ndarray | None = None
        self.logz = 0.0

    def __call__(self, input_ids: Any, scores: np.ndarray) -> np.ndarray:
        logits = np.array(scores, dtype=np.float32, copy=True)
        m = float(logits.max())
        self.logz = m + float(np.log(np.exp(logits - m, dtype=np.float64).sum()))
        self.logits = logits
        return scores  # unchanged: recording must not alter sampling

    def lookup(self, token: int) -> tuple[float, tuple[tuple[int, float], ...]]:
        if self.logits is None:  # cannot happen: the processor runs before every sample
            raise EngineError("llama.cpp sampled a token without calling the logits processor")
        logp = float(self.logits[token]) - self.logz
        if not self.top_k:
            return logp, ()
        k = min(self.top_k, self.logits.size)
        best = np.argpartition(-self.logits, k - 1)[:k]
        best = best[np.argsort(-self.logits[best])]
        return logp, tuple((int(t), float(self.logits[t]) - self.logz) for t in best)


class LlamaCppEngine:
    """Serve a GGUF model in-process with llama.cpp."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_batch = n_batch
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
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError(f"llama.cpp could not load {self.model.path}: {exc}") from exc
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
            extra={"n_threads": str(self.n_threads)},
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
        recorder = _LogprobRecorder(params.top_logprobs)
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        vocab = llm._model.vocab
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
                logits_processor=llama_cpp.LogitsProcessorList([recorder]),
                reset=True,
            )
            for token in gen:
                logprob, top = recorder.lookup(token)
                eog = bool(llama_cpp.llama_vocab_is_eog(vocab, token))
                yield Step(int(token), logprob, top, end_of_generation=eog)
                position += 1
                if eog or position >= n_ctx or should_stop():
                    return
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp generation failed: {exc}") from exc

    def score(self, tokens: Sequence[int]) -> list[Step]:
        import llama_cpp

        llm = self.llm
        tokens = list(tokens)
        n_ctx, n_vocab = llm.n_ctx(), llm.n_vocab()
        if len(tokens) > n_ctx:
            raise EngineError(f"{len(tokens)} tokens do not fit n_ctx={n_ctx}")
        out: list[Step] = []
        llm.reset()  # the next generate() re-evaluates its prompt from scratch
        try:
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            for start in range(0, len(tokens), self.n_batch):
                chunk = tokens[start : start + self.n_batch]
                llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
                llm._ctx.decode(llm._batch)
                for j in range(len(chunk)):
                    nxt = start + j + 1
                    if nxt >= len(tokens):
                        break
                    row = np.ctypeslib.as_array(
                        llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j), shape=(n_vocab,)
                    )
                    m = float(row.max())
                    logz = m + float(np.log(np.exp(row - m, dtype=np.float64).sum()))
                    out.append(Step(tokens[nxt], float(row[tokens[nxt]]) - logz))
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp scoring failed: {exc}") from exc
        finally:
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            llm.reset()
        return out


def _factory(model: ResolvedModel, **kwargs: Any) -> LlamaCppEngine:
    return LlamaCppEngine(model, **kwargs)


register_engine("llamacpp", _factory)

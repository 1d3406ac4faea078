"""llama.cpp engine (via llama-cpp-python): the default local backend of a node.

Logprobs at full speed: llama-cpp-python only keeps per-token logits with
``logits_all=True``, which copies the whole vocabulary row for every prompt token and is
several times slower (and its ``logits_processor`` hook builds a numpy record array per
token). Instead, after each sampled token we read the logits row the sampler drew from
straight out of the llama.cpp context (``llama_get_logits_ith(ctx, -1)``, zero-copy;
it stays valid until the next decode) and take ``log_softmax`` of it: one max, one exp
and one sum over the vocabulary, ~0.05 ms for 49k entries against ~10 ms per token.

Many clients at once: the engine runs up to ``parallel`` sequences in one llama.cpp
context, each in its own KV-cache slot, every decode step one batch over all of them
(continuous batching, chunked prefill, prompt-prefix reuse: :mod:`edgewise.engines.batching`).
``n_ctx`` is each sequence's context; the llama.cpp context has ``parallel × n_ctx``
cells. By default ``parallel`` is as many sequences as fit
:data:`KV_BUDGET_BYTES` of f16 KV cache at that ``n_ctx``, at most
:data:`MAX_DEFAULT_PARALLEL` (:func:`default_parallel`).

Prompt scoring (:meth:`LlamaCppEngine.score`, for ``echo`` + ``logprobs``) decodes the
prompt once with logits requested for every position of the batch, between two decode
steps of the running generations, on a free slot.

**Message content never becomes control tokens** (:meth:`LlamaCppEngine.chat_prompt`).
The chat template's markup (``<|im_start|>``, ``<start_of_turn>``…) must be tokenized
with special-token parsing, but a user message that contains such a string must not be,
or the user can forge a system turn. The template is rendered twice — once with each
message's content replaced by a random marker, once with the real content — and
checked to place every content verbatim where its marker is, or trimmed (``| trim``),
chosen per message: Gemma's template trims user turns but not the system prompt. If no
content contains, or forms across its edges, the text of a control token, the whole
prompt is tokenized in one call, exactly as llama.cpp's server does. User-defined
tokens (Qwen's ``<tool_call>``, Gemma's runs of newlines) do not count: llama.cpp
matches them in plain text too, so they only matter where one crosses a content's edge
into a chain of overlapping special texts that holds a control token's. Otherwise the
template's pieces are tokenized with special parsing and each content as plain text, so
its ``<|im_start|>`` becomes the tokens of the characters ``<``, ``|``, ``im``… A
template that transforms content in any other way is refused (``EngineError``) rather
than tokenized unsafely. A template that renders ``{{ bos_token }}`` supplies the BOS,
so none is added in front of it. ``/v1/completions`` tokenizes a string prompt as plain
text (:meth:`LlamaCppEngine.tokenize`, ``special=False``); token ids are taken as given.

``vocab_only=True`` loads the vocabulary and chat template without the weights, for
tokenization alone (``steps`` and ``score`` then refuse).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgewise.chat import Message
from edgewise.decoding import DraftModel, SpeculativeOptions
from edgewise.engines.base import BatchStats, EngineInfo, SamplingParams, Step, Verification
from edgewise.engines.batching import BatchScheduler, kv_bytes_per_token
from edgewise.engines.cpu import BackendInfo, default_threads, ensure_backend
from edgewise.engines.tools import (
    generic_messages,
    has_tool_traffic,
    template_messages,
    tool_texts,
)
from edgewise.errors import EngineError
from edgewise.models import ResolvedModel, resolve_model

__all__ = ["KV_BUDGET_BYTES", "MAX_DEFAULT_PARALLEL", "LlamaCppEngine", "default_parallel"]

#: KV cache the default ``parallel`` may take (f16 K and V of every layer).
KV_BUDGET_BYTES = 512 * 1024 * 1024
#: The most sequences a default ``parallel`` runs at once: on a few CPU cores batching
#: more than 8 sequences adds little throughput (bench/batching.py) and each costs its KV.
MAX_DEFAULT_PARALLEL = 8
#: Prompt tokens the tiny high-level context (tokenizer only) is made with.
_VOCAB_CTX = 32


def default_parallel(kv_bytes_per_token: int, n_ctx: int) -> int:
    """Sequences a node runs at once by default: as many as fit ``KV_BUDGET_BYTES`` of
    KV cache at ``n_ctx`` tokens each, between 1 and ``MAX_DEFAULT_PARALLEL``."""
    per_seq = max(1, kv_bytes_per_token * n_ctx)
    return max(1, min(MAX_DEFAULT_PARALLEL, KV_BUDGET_BYTES // per_seq))


TopK = tuple[tuple[int, float], ...]
T = TypeVar("T")


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
            if work[i] == -np.inf:  # fewer than k tokens left (a grammar masked the rest)
                break
            best.append(i)
            if k > 1:
                work[i] = -np.inf
    else:
        part = np.argpartition(logits, -k)[-k:]
        best = [int(t) for t in part[np.argsort(-logits[part])]]
    # A grammar masks tokens with -inf: they are not alternatives (and not JSON).
    return logp, tuple((t, float(logits[t]) - logz) for t in best if logits[t] > -np.inf)


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
        vocab_only: bool = False,
        chat_template: str | None = None,
        parallel: int | None = None,
        prefill_chunk: int = 256,
        prefix_cache: bool = True,
        speculative: SpeculativeOptions | None = None,
        flash_attn: bool = False,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        gen, batch = default_threads()
        #: Decode threads (``engine.n_threads``; default: cores − 1, see engines/cpu.py)
        #: and prompt-batch threads (default: every core).
        self.n_threads = n_threads or gen
        self.n_threads_batch = n_threads or batch
        self.n_batch = n_batch
        #: A GGUF LoRA adapter applied on top of the model at load time (llama.cpp adds
        #: ``scale · B·A·x`` to each adapted layer; the base file is not modified).
        self.lora_path = lora_path
        #: Load only the vocabulary and chat template (tokenize, chat_prompt, token_bytes;
        #: no weights, so ``steps`` and ``score`` refuse): a fraction of a second and a
        #: few MB, for tools and tests that only need the model's tokenization.
        self.vocab_only = vocab_only
        #: A Jinja chat template used instead of the GGUF's ``tokenizer.chat_template``
        #: (as llama.cpp's ``--chat-template``): for a base model, or a broken template.
        self.chat_template = chat_template
        #: Sequences decoded together (``None``: :func:`default_parallel`, set at load).
        self.parallel = parallel
        #: Prompt tokens of newly admitted requests decoded per step, across them all.
        self.prefill_chunk = prefill_chunk
        #: Reuse the KV cells of a finished request's prompt prefix (``engine.prefix_cache``).
        self.prefix_cache = prefix_cache
        #: Speculative decoding (``engine.speculative``; None: off).
        self.speculative = speculative
        #: The ``model`` drafter's loaded draft model.
        self._draft: DraftModel | None = None
        #: llama.cpp's flash attention in the batched context (``engine.flash_attn``).
        self.flash_attn = flash_attn
        self._scheduler: BatchScheduler | None = None
        self._llm: Any = None
        self._formatter: Any = None
        self._token_bytes: dict[int, bytes] = {}
        #: The texts of the tokens llama.cpp parses with ``special=True``; None until
        #: loaded, or if the vocabulary has none.
        self._special: _SpecialTexts | None = None
        self._bos_text = ""
        self._max_token_bytes = 0
        self.backend: BackendInfo | None = None

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
        _check_gguf(self.model.path)
        self.backend = ensure_backend()
        try:
            # The high-level Llama holds the model and vocabulary; its own context is
            # kept tiny, the batch scheduler makes the real one.
            self._llm = llama_cpp.Llama(
                model_path=str(self.model.path),
                n_ctx=_VOCAB_CTX,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch,
                n_batch=_VOCAB_CTX,
                logits_all=False,
                lora_path=self.lora_path,
                vocab_only=self.vocab_only,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            what = f"{self.model.path} with adapter {self.lora_path}" if self.lora_path \
                else str(self.model.path)
            raise EngineError(f"llama.cpp could not load {what} (a truncated or corrupt "
                              f"model file?): {exc}") from exc
        if not self.vocab_only:
            try:
                self._start_scheduler()
            except EngineError:
                self._close_draft()
                self._llm.close()
                self._llm = None
                raise
        self._special, self._max_token_bytes = _scan_vocab(self._llm)
        template = self.chat_template or self._llm.metadata.get("tokenizer.chat_template")
        if template:
            model = self._llm._model
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._bos_text = model.token_get_text(bos) if bos != -1 else ""
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=self._bos_text,
                add_generation_prompt=True,
            )

    def _start_scheduler(self) -> None:
        model = self._llm._model.model
        if self.parallel is None:
            self.parallel = default_parallel(kv_bytes_per_token(model), self.n_ctx)
        spec = self.speculative
        if spec is not None and spec.drafter == "model":
            self._draft = DraftModel(Path(spec.options["path"]), self._llm,
                                     parallel=self.parallel, n_ctx=self.n_ctx,
                                     n_threads=self.n_threads, n_batch=self.n_batch,
                                     flash_attn=self.flash_attn)
            spec = dataclasses.replace(spec, context=self._draft)
        self._scheduler = BatchScheduler(
            self._llm, parallel=self.parallel, n_ctx=self.n_ctx, n_batch=self.n_batch,
            prefill_chunk=self.prefill_chunk, n_threads=self.n_threads,
            n_threads_batch=self.n_threads_batch, logprobs=_logprobs,
            prefix_cache=self.prefix_cache, speculative=spec, flash_attn=self.flash_attn)

    def batch_stats(self) -> BatchStats | None:
        """What the batch scheduler is doing (None before load / with ``vocab_only``)."""
        return self._scheduler.stats() if self._scheduler is not None else None

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        self._close_draft()
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _close_draft(self) -> None:
        if self._draft is not None:
            self._draft.close()
            self._draft = None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise EngineError("llama.cpp engine used before load()")
        return self._llm

    def _weights(self) -> Any:
        """The model, for work that needs its weights (not loaded with ``vocab_only``)."""
        if self.vocab_only:
            raise EngineError(f"{self.model.name} was loaded vocab_only (tokenization "
                              "only); load it without vocab_only to generate or score")
        return self.llm

    def info(self) -> EngineInfo:
        llm = self.llm
        sched = self._scheduler
        return EngineInfo(
            kind="llamacpp", model=self.model.name,
            n_ctx=sched.n_ctx if sched is not None else self.n_ctx, n_vocab=llm.n_vocab(),
            sha256=self.model.sha256, path=str(self.model.path),
            size_bytes=self.model.size_bytes, slots=sched.parallel if sched is not None else 1,
            chat_template=self._formatter is not None, grammar=sched is not None,
            max_token_bytes=self._max_token_bytes,
            extra={"n_threads": str(self.n_threads),
                   "n_threads_batch": str(self.n_threads_batch),
                   "cpu_backend": self.backend.variant if self.backend else "unknown",
                   **({"parallel": str(sched.parallel),
                       "kv_cells": str(sched.n_ctx * sched.parallel),
                       "prefill_chunk": str(sched.prefill_chunk)} if sched is not None else {}),
                   "flash_attn": str(self.flash_attn).lower(),
                   **({"speculative": self.speculative.drafter} if self.speculative else {}),
                   **({"lora_adapter": self.lora_path} if self.lora_path else {})},
        )

    @classmethod
    def from_config(cls, config: Any, resolve: Callable[[], ResolvedModel]
                    ) -> LlamaCppEngine:
        """The engine for an ``engine`` config section; ``resolve()`` finds and checks
        its model file (raising ``ModelError`` in one line when it cannot)."""
        model = resolve()
        _check_gguf(model.path)  # before the node starts listening: one line, exit 2
        lora = str(model.adapter) if model.adapter else config.lora_adapter
        spec = config.speculative
        options: dict[str, Any] = {"ngram_max": spec.ngram_max, "ngram_min": spec.ngram_min}
        if spec.drafter == "model":  # found and checked before the node starts
            assert spec.model is not None
            options["path"] = str(resolve_model(spec.model, verify=config.verify_digest).path)
        speculative = None if spec.drafter == "off" else SpeculativeOptions(
            spec.drafter, options, k_max=spec.k_max, max_batch=spec.max_batch,
            margin=spec.min_speedup)
        flash_attn = config.flash_attn == "on" or (
            config.flash_attn == "auto" and speculative is not None and spec.exact)
        return cls(model, n_ctx=config.n_ctx, n_threads=config.n_threads,
                   n_batch=config.n_batch, lora_path=lora, parallel=config.parallel,
                   prefill_chunk=config.prefill_chunk, prefix_cache=config.prefix_cache,
                   speculative=speculative, flash_attn=flash_attn)

    # -- text <-> tokens ------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        try:
            tokens: list[int] = self.llm.tokenize(
                text.encode("utf-8"), add_bos=add_bos, special=special
            )
        except (RuntimeError, UnicodeEncodeError) as exc:
            raise EngineError(f"tokenization failed: {exc}") from exc
        return self.tokenize_fix_bos(tokens)  # template already rendered the BOS text

    def token_bytes(self, token: int) -> bytes:
        piece = self._token_bytes.get(token)
        if piece is None:
            piece = self.llm.detokenize([token])
            self._token_bytes[token] = piece
        return piece

    @property
    def native_tools(self) -> bool:
        """Whether the model's chat template renders tools itself (engines/tools.py)."""
        return self._formatter is not None and "tools" in self._formatter.template

    def chat_prompt(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        """The prompt of ``messages``; ``tools`` (OpenAI function definitions) are
        rendered by the template if it knows them, else written into the system prompt
        (:mod:`edgewise.engines.tools`). Tool texts the template writes outside message
        content must hold no control-token text (refused with 400 otherwise)."""
        native = self.native_tools and bool(tools or has_tool_traffic(messages))
        if not native and (tools or has_tool_traffic(messages)):
            messages, tools = generic_messages(messages, tools), ()
        if self._formatter is None:
            # Base model without a chat template: a plain transcript it can continue,
            # tokenized as text (nothing in it is a control token).
            text = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
            return self.tokenize(text)
        if native:
            self._check_tool_texts(messages, tools)
        contents = [m.content for m in messages]
        nonce = secrets.token_hex(8)
        # an empty content gets no marker: a template may skip it (Qwen's assistant
        # turn with only tool calls), and nothing can hide in it
        markers = [f"EW{nonce}M{i}E" if c else "" for i, c in enumerate(contents)]
        marked = self._render(messages, markers, tools, native)
        real = self._render(messages, contents, tools, native)
        parts = re.split(f"EW{nonce}M(\\d+)E", marked)
        template, slots = parts[0::2], [int(i) for i in parts[1::2]]
        values = _placed(template, [contents[i] for i in slots], real)
        if values is None:
            raise EngineError("the model's chat template changes message content in a way "
                              "edgewise cannot tokenize safely (it supports templates that "
                              "insert content as is or trimmed)")
        # A template that renders the BOS text ({{ bos_token }}) has made the BOS: asking
        # llama.cpp to add one too doubles it (and it warns on every prompt).
        add_bos = not (self._bos_text and template[0].startswith(self._bos_text))
        pieces = _interleave(template, values)
        if self._special is None or not self._special.could_change_controls(pieces):
            return self.tokenize(real, special=True, add_bos=add_bos)
        ids: list[int] = []
        for k, text in enumerate(pieces):
            if text:  # odd k: a message's content, plain text; even k: template markup
                ids += self.tokenize(text, special=k % 2 == 0, add_bos=add_bos and not ids)
        return ids

    def tokenize_fix_bos(self, ids: list[int]) -> list[int]:
        """Drop a doubled BOS (the template rendered its text and add_bos added one)."""
        bos = self.llm.token_bos()
        if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            return ids[1:]
        return ids

    def _check_tool_texts(self, messages: Sequence[Message],
                          tools: Sequence[dict[str, Any]]) -> None:
        if self._special is None:
            return
        for where, text in tool_texts(messages, tools):
            if self._special.could_change_controls(["", text, ""]):
                from edgewise.errors import InvalidRequestError

                raise InvalidRequestError(
                    f"{where} holds the text of one of the model's control tokens, which "
                    "its chat template would turn into markup; remove it", param=where)

    def _render(self, messages: Sequence[Message], contents: Sequence[str],
                tools: Sequence[dict[str, Any]] = (), native: bool = False) -> str:
        try:
            if native:
                rendered = self._formatter(messages=template_messages(messages, contents),
                                           tools=list(tools) or None)
            else:
                rendered = self._formatter(messages=[
                    {"role": m.role, "content": c}
                    for m, c in zip(messages, contents, strict=True)])
        except Exception as exc:  # jinja2 raises its own types, and ValueError via raise_exception
            from edgewise.errors import InvalidRequestError

            raise InvalidRequestError(
                "the model's chat template rejected these messages (its message: "
                f"{_first_line(exc)})", param="messages") from exc
        return str(rendered.prompt)

    # -- generation ---------------------------------------------------------------------
    def steps(
        self, prompt: Sequence[int], params: SamplingParams, should_stop: Callable[[], bool]
    ) -> Iterator[Step]:
        self._weights()
        assert self._scheduler is not None
        return self._scheduler.steps(prompt, params, should_stop)

    def verify(self, context: Sequence[int], draft: Sequence[int], params: SamplingParams,
               should_stop: Callable[[], bool] = lambda: False) -> Verification:
        """A peer's draft after ``context``, verified in one pass: the drafted tokens
        the model keeps, then its own next token (``BatchScheduler.verify``)."""
        self._weights()
        assert self._scheduler is not None
        return self._scheduler.verify(context, draft, params, should_stop)

    def score(self, tokens: Sequence[int], first: int = 1) -> list[Step]:
        """Log-probability of ``tokens[t]`` given ``tokens[:t]``, for ``t`` from ``first``.

        ``first`` > 1 skips the steps the caller does not need — and their logits, which
        for a large vocabulary are a third of the compute (perplexity scores only the
        second half of each chunk).
        """
        tokens = list(tokens)
        self._check_fits(len(tokens))

        def job(seq: int) -> list[Step]:
            return self._run(seq, tokens, 0, max(first, 1), keep_last=False)[0]

        return self._exclusive(job)

    def score_continuations(
        self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[list[Step]]:
        """Score each continuation after one shared prefix, evaluating the prefix once.

        Returns, per continuation, ``log p(c[i] | prefix + c[:i])`` for every token
        ``c[i]`` — the same numbers as :meth:`score` on ``prefix + c``, for a fraction of
        the work when the prefix is long and the continuations short (log-likelihood
        classification: one prompt, a few candidate answers).
        """
        import llama_cpp

        prefix = list(prefix)
        if not prefix:
            raise EngineError("score_continuations needs a non-empty prefix")
        self._check_fits(len(prefix) + max((len(c) for c in continuations), default=0))

        def job(seq: int) -> list[list[Step]]:
            assert self._scheduler is not None
            mem = self._scheduler.memory
            out: list[list[Step]] = []
            _, row = self._run(seq, prefix, 0, len(prefix) + 1, keep_last=True)
            assert row is not None
            for cont in continuations:
                cont = list(cont)
                llama_cpp.llama_memory_seq_rm(mem, seq, len(prefix), -1)
                if not cont:
                    out.append([])
                    continue
                steps = [Step(cont[0], _logprobs(row, cont[0], 0)[0])]
                steps += self._run(seq, cont, len(prefix), 1, keep_last=False)[0]
                out.append(steps)
            return out

        return self._exclusive(job)

    def _check_fits(self, n: int) -> None:
        self._weights()
        assert self._scheduler is not None
        if n > self._scheduler.n_ctx:
            raise EngineError(f"{n} tokens do not fit n_ctx={self._scheduler.n_ctx}")

    def _exclusive(self, job: Callable[[int], T]) -> T:
        """``job(seq_id)`` on the scheduler thread between two decode steps, on a free
        slot with an empty cache; llama.cpp errors come back as EngineError."""
        assert self._scheduler is not None
        return self._scheduler.exclusive(job)

    def _run(
        self, seq: int, tokens: list[int], n_past: int, first: int, *, keep_last: bool
    ) -> tuple[list[Step], np.ndarray | None]:
        """Decode ``tokens`` of sequence ``seq`` at positions ``n_past``…, asking llama.cpp
        for logits only where they are used: the steps for ``tokens[t]``, ``t >= first``,
        and with ``keep_last`` a copy of the last token's row (what follows the
        sequence). Runs on the scheduler thread (:meth:`_exclusive`)."""
        import llama_cpp

        assert self._scheduler is not None
        ctx, batch = self._scheduler.context, self._scheduler.batch
        n_vocab = self.llm.n_vocab()
        upto = len(tokens) if keep_last else len(tokens) - 1  # the last token predicts nothing
        out: list[Step] = []
        last: np.ndarray | None = None
        for start in range(0, upto, self.n_batch):
            chunk = tokens[start : min(start + self.n_batch, upto)]
            wanted = [start + j + 1 >= first or (keep_last and start + j == upto - 1)
                      for j in range(len(chunk))]
            batch.n_tokens = len(chunk)
            for j, t in enumerate(chunk):
                batch.token[j], batch.pos[j], batch.n_seq_id[j] = t, n_past + start + j, 1
                batch.seq_id[j][0], batch.logits[j] = seq, wanted[j]
            rc = llama_cpp.llama_decode(ctx, batch)
            if rc != 0:
                raise EngineError(f"llama.cpp scoring failed (decode status {rc})")
            for j, want in enumerate(wanted):
                if not want:
                    continue
                row = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(ctx, j), shape=(n_vocab,))
                nxt = start + j + 1
                if nxt < len(tokens) and nxt >= first:
                    out.append(Step(tokens[nxt], _logprobs(row, tokens[nxt], 0)[0]))
                if keep_last and start + j == upto - 1:
                    last = row.copy()
        return out, last


def _interleave(template: Sequence[str], values: Sequence[str]) -> list[str]:
    """template[0], values[0], template[1], values[1], … template[-1]."""
    out = [template[0]]
    for t, v in zip(template[1:], values, strict=True):
        out += [v, t]
    return out


def _placed(template: Sequence[str], contents: Sequence[str], real: str) -> list[str] | None:
    """Each content as the template put it into ``real``: verbatim or trimmed (``| trim``,
    which is Python's ``str.strip()``), chosen per message — Gemma's template trims user
    turns but not the system prompt — or None if ``real`` is not ``template[0], c0,
    template[1], c1, …`` for such a choice.

    A depth-first search over the two choices per content, verbatim first; a (content,
    position) pair is visited once, so it is linear in practice and polynomial at worst.
    """
    if not real.startswith(template[0]):
        return None
    # Search states: (content index, position in real, node); node i of ``nodes`` is
    # (value chosen, parent node), -1 the root — the choices made, without copying them.
    nodes: list[tuple[str, int]] = []
    stack = [(0, len(template[0]), -1)]
    seen: set[tuple[int, int]] = set()
    while stack:
        k, pos, node = stack.pop()
        if k == len(contents):
            if pos != len(real):
                continue
            out: list[str] = []
            while node >= 0:
                value, node = nodes[node]
                out.append(value)
            return out[::-1]
        if (k, pos) in seen:
            continue
        seen.add((k, pos))
        after = template[k + 1]
        for value in reversed(list(dict.fromkeys((contents[k], contents[k].strip())))):
            end = pos + len(value)  # pushed trimmed first, so verbatim is tried first
            if real.startswith(value, pos) and real.startswith(after, end):
                nodes.append((value, node))
                stack.append((k + 1, end + len(after), len(nodes) - 1))
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _check_gguf(path: str | Path) -> None:
    """Refuse a file that is not a GGUF model before llama.cpp opens it (a wrong file
    otherwise fails deep inside the loader, or not at all until the first request)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise EngineError(f"cannot read the model file {path}: {exc.strerror}") from exc
    if head[:4] != b"GGUF":
        raise EngineError(f"{path} is not a GGUF model file (it does not start with the "
                          "GGUF magic); pass a .gguf file or a catalogue name "
                          "(`edgewise models`)")
    if len(head) < 8:
        raise EngineError(f"{path} is truncated (shorter than a GGUF header)")


#: llama.cpp's token attributes (``enum llama_token_attr``) that ``parse_special``
#: matches in text.
_ATTR_UNKNOWN, _ATTR_CONTROL, _ATTR_USER_DEFINED = 1 << 0, 1 << 3, 1 << 4


@dataclass(frozen=True)
class _SpecialTexts:
    """The texts of a vocabulary's special tokens, and whether content can change which
    control tokens a prompt holds if it is tokenized in one call with special parsing.

    llama.cpp's special parsing cuts the text at special tokens' texts, longest first;
    of two texts that overlap, one is taken. So a content is unsafe if the text of a
    control (or unknown) token occurs in it or across its edges — it would become that
    token — or if a user-defined token's text (llama.cpp matches those in plain text too:
    Gemma's runs of newlines and HTML tags, Qwen's ``<tool_call>``) crosses its edge and
    a chain of overlapping special texts leads from it to a control token's text, which
    it could take apart. A user-defined token inside a content tokenizes the same either
    way, so it alone does not force the split path (nor does Gemma's three-newline token
    made of a system prompt's last newline and the two its template puts after it).
    """

    #: Matches every text (``regex``'s named lists match a set of literal strings without
    #: trying each at every position).
    matcher: Any
    #: The texts of control and unknown tokens; the rest are user-defined.
    control: frozenset[str]
    longest: int

    @classmethod
    def of(cls, texts: Iterable[str], control: Iterable[str]) -> _SpecialTexts | None:
        import regex

        texts = sorted(set(texts))
        if not texts:
            return None
        return cls(regex.compile(r"\L<special>", special=texts), frozenset(control),
                   max(map(len, texts)))

    def could_change_controls(self, pieces: Sequence[str]) -> bool:
        """For ``pieces`` = template markup, content, markup, … content, markup."""
        bounds = list(itertools.accumulate(map(len, pieces), initial=0))
        joined, reach = "".join(pieces), self.longest - 1
        for k in range(1, len(pieces), 2):  # piece k is joined[bounds[k]:bounds[k + 1]]
            a, b = bounds[k], bounds[k + 1]
            for m in self.matcher.finditer(joined, max(0, a - reach),
                                           min(len(joined), b + reach), overlapped=True):
                s, e = m.span()
                if s >= b or e <= a:
                    continue  # does not touch this content
                if m.group() in self.control:
                    return True
                if (s < a or e > b) and self._reaches_control(joined, s, e):
                    return True
        return False

    def _reaches_control(self, joined: str, s: int, e: int) -> bool:
        """Whether the texts that overlap ``joined[s:e]``, those that overlap them, and so
        on, include a control token's. (Texts apart from such a chain are parsed the same
        whatever it holds.)"""
        reach = self.longest - 1
        lo, hi, grew = s, e, True
        while grew:  # [lo, hi): the chain's span (overlapping texts leave no gaps)
            grew = False
            for m in self.matcher.finditer(joined, max(0, lo - reach),
                                           min(len(joined), hi + reach), overlapped=True):
                s2, e2 = m.span()
                if s2 < hi and e2 > lo:
                    if m.group() in self.control:
                        return True
                    if s2 < lo or e2 > hi:
                        lo, hi, grew = min(lo, s2), max(hi, e2), True
        return False


def _scan_vocab(llm: Any) -> tuple[_SpecialTexts | None, int]:
    """One pass over the vocabulary: the texts of the tokens llama.cpp parses as special,
    and the most bytes a token's text has — an upper bound on what one token decodes to
    (GPT-2 byte-level BPE and SentencePiece spell a byte with one or more bytes)."""
    import llama_cpp

    vocab = llm._model.vocab
    special, control, widest = set(), set(), 0
    get_attr, get_text = llama_cpp.llama_vocab_get_attr, llama_cpp.llama_vocab_get_text
    for t in range(llm.n_vocab()):
        raw = get_text(vocab, t) or b""
        widest = max(widest, len(raw))
        attr = get_attr(vocab, t) if raw else 0
        if attr & (_ATTR_CONTROL | _ATTR_USER_DEFINED | _ATTR_UNKNOWN):
            text = raw.decode("utf-8", "replace")
            special.add(text)
            if attr & (_ATTR_CONTROL | _ATTR_UNKNOWN):
                control.add(text)
    return _SpecialTexts.of(special, control), widest


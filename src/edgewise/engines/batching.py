"""Continuous batching for the llama.cpp engine: many sequences, one context, one decode.

One llama.cpp context holds ``parallel`` sequences, each in a KV-cache slot of its own
(``seq_id`` = slot index; ``kv_unified = False``, so llama.cpp splits the context into
``parallel`` streams of ``n_ctx`` cells each). A scheduler thread owns the context and
loops over *steps*; each step is one ``llama_decode`` of one ``llama_batch`` holding

- the last sampled token of every running sequence (logits requested for that row), and
- the next chunk of the prompt of every sequence still being prefilled, up to
  ``prefill_chunk`` prompt tokens per step across all of them (chunked prefill: a long
  prompt costs the running streams a few short stalls instead of one long one), the last
  prompt token with logits.

Then every row with logits is sampled with its sequence's own llama.cpp sampler chain
(its own parameters and seed; the chain llama-cpp-python's ``Llama.generate`` builds)
and its logprobs are read from that row (``llama_get_logits_ith``, zero-copy), so
logprobs cost one log-softmax per token as before, never ``logits_all``.

Admission: a request handed to :meth:`BatchScheduler.submit` takes a free slot at the
next step — it never waits for the batch to drain; with every slot taken it waits in
FIFO order. A consumer that stops reading (its iterator is closed, or its
``should_stop()`` turns true) frees its slot at the next step; a sequence that reaches
the end of its slot's cells ends (the generation loop reports ``length``) and cannot
touch another slot's cells.

Prompt-prefix reuse: a finished sequence leaves its tokens in its slot's KV cells. A new
request takes the free slot whose cached tokens share the longest prefix with its prompt
(ties: the least recently used), keeps those cells (``llama_memory_seq_rm`` drops the
rest) and prefills only the remainder — the same system prompt, or a conversation
re-sent with one more turn, is not recomputed. What is cached is dropped only when its
slot is taken for a different prompt. (llama-server's ``cache_prompt`` does the same.)

Prompt scoring (``echo`` + ``logprobs``, perplexity) runs as an *exclusive job* between
two steps, on a free slot whose cache it clears.

Written by hand on llama-cpp-python's low-level bindings: llama-cpp-python serves one
sequence per ``Llama`` (its own server runs requests one at a time), and llama.cpp's
C++ server scheduler is not exposed to Python.
"""

from __future__ import annotations

import dataclasses
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from edgewise.decoding import (
    ChainParams,
    CostModel,
    Draft,
    Drafter,
    NoDraft,
    Speculation,
    SpeculativeOptions,
    accept_greedy,
    accept_sampled,
    chain_probs,
    drafter_names,
    make_drafter,
)
from edgewise.engines.base import BatchStats, SamplingParams, Step, Verification
from edgewise.errors import EngineError

__all__ = ["BatchScheduler", "kv_bytes_per_token"]

#: Tokens of the previous output the repetition penalties look at (llama-cpp-python's
#: ``last_n_tokens_size`` default, so sampling matches what the node did before).
_PENALTY_LAST_N = 64
_END = object()
T = TypeVar("T")


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of f16 K and V cache one token takes in every layer of ``model`` (a
    ``llama_model_p``): ``2 × n_layer × n_head_kv × head_dim × 2``."""
    import llama_cpp

    n_layer = llama_cpp.llama_model_n_layer(model)
    n_head = max(1, llama_cpp.llama_model_n_head(model))
    n_head_kv = llama_cpp.llama_model_n_head_kv(model) or n_head
    head_dim = llama_cpp.llama_model_n_embd(model) // n_head
    return int(2 * n_layer * n_head_kv * head_dim * 2)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


#: llama.cpp's ``llama_token_data`` as a numpy record.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
#: Constrained sampling asks the grammar about this many most likely tokens first
#: (:meth:`BatchScheduler._sample_top`), and masks the whole vocabulary only when the
#: rest holds more than ``FAST_TAIL`` of the allowed ones' probability mass.
FAST_TOP = 32
FAST_TAIL = 1e-4

@dataclass
class _Slot:
    seq_id: int
    #: The tokens whose K/V its cells hold, positions 0…len-1.
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: float = 0.0


def _chain(p: SamplingParams) -> tuple[ChainParams | None, np.random.Generator | None]:
    """The request's sampling chain and its seeded draws (None, None: greedy)."""
    if p.temperature == 0.0:
        return None, None
    return (ChainParams(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                        min_p=p.min_p), np.random.default_rng(p.seed))


def _results(seq: _Seq) -> Iterator[Step]:
    """The steps the scheduler hands ``seq``'s caller, until its end (or its error)."""
    while True:
        item = seq.out.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, Step)
        yield item


@dataclass
class _Spec:
    """A sequence's speculation: its drafter, its acceptance estimate and draft-length
    choice, its chain (None: greedy) and random draws, the draft being verified."""

    drafter: Drafter
    policy: Speculation
    chain: ChainParams | None
    rng: np.random.Generator | None
    draft: Draft | None = None
    #: A peer's draft to verify once (:meth:`BatchScheduler.verify`), then end.
    forced: list[int] | None = None


@dataclass
class _Seq:
    prompt: list[int]
    params: SamplingParams
    should_stop: Callable[[], bool]
    out: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)
    slot: _Slot | None = None
    sampler: Any = None
    #: The llama.cpp grammar sampler of a constrained request (``params.grammar``).
    grammar: Any = None
    #: Prompt tokens not yet decoded.
    pending: list[int] = field(default_factory=list)
    #: The sampled token to feed at the next step (None while prefilling).
    next_token: int | None = None
    generated: int = 0
    #: The batch row whose logits this step samples from (-1: none).
    row: int = -1
    closed: bool = False
    #: An exclusive job instead of a generation: called with the slot's seq_id.
    job: Callable[[int], object] | None = None
    queued_at: float = field(default_factory=time.perf_counter)
    #: Speculative decoding (None: this sequence decodes plainly).
    spec: _Spec | None = None
    #: A verification (:meth:`BatchScheduler.verify`): the prompt's last token, fed
    #: with the draft in the verify pass instead of being prefilled.
    held: int | None = None
    #: Decode calls this sequence took part in.
    decodes: int = 0


class BatchScheduler:
    """The scheduler thread and the llama.cpp context it owns (module docstring).

    ``llm`` is the loaded ``llama_cpp.Llama`` (its model and vocabulary are used; its
    own small context is not). ``n_ctx`` is the context of one sequence.
    """

    def __init__(self, llm: Any, *, parallel: int, n_ctx: int, n_batch: int,
                 prefill_chunk: int, n_threads: int, n_threads_batch: int,
                 logprobs: Callable[[np.ndarray, int, int], tuple[float, Any]],
                 prefix_cache: bool = True,
                 speculative: SpeculativeOptions | None = None,
                 flash_attn: bool = False) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.parallel = parallel
        if speculative is not None and speculative.drafter not in drafter_names():
            raise EngineError(f"unknown drafter {speculative.drafter!r} (engine.speculative"
                              f".drafter); known: {', '.join(drafter_names())}")
        self.speculative = speculative
        #: The measured costs of plain steps, verify passes and drafting (speculation).
        self.costs = CostModel()
        #: Keep finished sequences' cells for the next prompt that shares their prefix.
        self.prefix_cache = prefix_cache
        self.n_batch = n_batch
        self.prefill_chunk = max(1, min(prefill_chunk, n_batch - parallel)) \
            if n_batch > parallel else 1
        self._logprobs = logprobs
        self._llm = llm
        # The high-level context's parameters (flash attention off, rope and yarn from
        # the model…: the numbers the node computed before batching), resized.
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * parallel
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = True
        # Flash attention computes each query row on its own, so a verify pass of k + 1
        # rows rounds every row as a one-row decode does (ggml's plain attention takes
        # other kernels for several rows of one stream: greedy texts then part at
        # near-ties). Off by default: it is ~13 % slower at 2k tokens of context here.
        params.flash_attn_type = 1 if flash_attn else 0  # LLAMA_FLASH_ATTN_TYPE_*
        make_context: Any = _internals.LlamaContext  # untyped
        try:
            self._ctx = make_context(model=llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise EngineError(
                f"llama.cpp could not make a context of {parallel} × {n_ctx} tokens (out "
                "of memory? lower engine.parallel or engine.n_ctx)") from exc
        if getattr(llm, "_lora_adapter", None) is not None:
            import ctypes

            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales):
                self._ctx.close()
                raise EngineError("llama.cpp could not apply the LoRA adapter to the "
                                  "batched context")
        #: Cells per sequence as llama.cpp made them (it may round the split).
        self.n_ctx = min(n_ctx, int(llama_cpp.llama_n_ctx_seq(self._ctx.ctx)))
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._vocab = llm._model.vocab
        self._n_vocab = int(llm.n_vocab())
        self._slots = [_Slot(i) for i in range(parallel)]
        self._inbox: queue.SimpleQueue[_Seq | None] = queue.SimpleQueue()
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._stats = BatchStats(parallel=parallel, kv_cells_total=self.n_ctx * parallel,
                                 n_ctx_seq=self.n_ctx)
        self._stats_lock = threading.Lock()
        #: Candidates for constrained sampling (one llama_token_data per vocabulary
        #: entry, made on first use) and a numpy view of them.
        self._candidates: Any = None
        self._cand: np.ndarray = np.empty(0)
        self._ids: np.ndarray = np.empty(0)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="edgewise-batch",
                                        daemon=True)
        self._thread.start()

    # -- the callers' side (any thread) --------------------------------------------------
    def steps(self, prompt: Sequence[int], params: SamplingParams,
              should_stop: Callable[[], bool]) -> Iterator[Step]:
        """The tokens of one generation, sampled by the scheduler thread."""
        if not prompt:
            raise EngineError("cannot generate from an empty prompt")
        if len(prompt) >= self.n_ctx:
            raise EngineError(f"prompt of {len(prompt)} tokens does not fit n_ctx={self.n_ctx}")
        seq = _Seq(list(prompt), params, should_stop)
        if params.grammar is not None:
            seq.grammar = self._grammar(params.grammar, params.grammar_triggers)
        self._submit(seq)
        try:
            yield from _results(seq)
        finally:
            seq.closed = True  # the scheduler frees the slot at its next step

    def verify(self, context: Sequence[int], draft: Sequence[int], params: SamplingParams,
               should_stop: Callable[[], bool] = lambda: False) -> Verification:
        """Verify a peer's ``draft`` after ``context`` in one pass (after prefilling the
        part of ``context`` not cached): the drafted tokens the model keeps and its own
        next token, as steps — the greedy rule, or the speculative sampling rule for a
        deterministic draft (``params``' chain and seed). Fewer when one is an
        end-of-generation token."""
        if len(context) < 1 or len(context) + len(draft) >= self.n_ctx:
            raise EngineError(f"{len(context)} context and {len(draft)} draft tokens do "
                              f"not fit n_ctx={self.n_ctx}")
        seq = _Seq(list(context), dataclasses.replace(params, max_tokens=len(draft) + 1),
                   should_stop)
        seq.held = seq.prompt[-1]
        seq.spec = _Spec(NoDraft(), Speculation(self.costs), *_chain(params),
                         forced=list(draft))
        self._submit(seq)
        steps = list(_results(seq))
        return Verification(steps, seq.decodes)

    def exclusive(self, job: Callable[[int], T]) -> T:
        """Run ``job(seq_id)`` on the scheduler thread between two steps, on a free slot
        whose cells are cleared before and after; return what it returns."""
        seq = _Seq([], SamplingParams(max_tokens=0), lambda: False, job=job)
        self._submit(seq)
        item = seq.out.get()
        if isinstance(item, BaseException):
            raise item
        return cast(T, item)

    @property
    def context(self) -> Any:
        """The ``llama_context_p`` (for exclusive jobs, on the scheduler thread)."""
        return self._ctx.ctx

    @property
    def memory(self) -> Any:
        return self._mem

    @property
    def batch(self) -> Any:
        """The ``llama_batch`` of ``n_batch`` tokens (for exclusive jobs)."""
        return self._batch

    def stats(self) -> BatchStats:
        with self._stats_lock:
            s = self._stats
            return BatchStats(
                parallel=s.parallel, active=s.active, waiting=s.waiting,
                kv_cells_total=s.kv_cells_total, kv_cells_active=s.kv_cells_active,
                kv_cells_cached=s.kv_cells_cached, n_ctx_seq=s.n_ctx_seq, steps=s.steps,
                batch_sizes=dict(s.batch_sizes), prefix_hits=s.prefix_hits,
                prefix_misses=s.prefix_misses, prefix_tokens_reused=s.prefix_tokens_reused,
                prompt_tokens_computed=s.prompt_tokens_computed, spec_passes=s.spec_passes,
                spec_drafted=s.spec_drafted, spec_accepted=s.spec_accepted,
                spec_draft_seconds=s.spec_draft_seconds,
                spec_verify_seconds=s.spec_verify_seconds)

    def close(self) -> None:
        import llama_cpp

        if self._thread.is_alive():
            self._stop = True
            self._inbox.put(None)
            self._thread.join()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()

    def _submit(self, seq: _Seq) -> None:
        if self._stop or not self._thread.is_alive():
            raise EngineError("the llama.cpp engine is closed")
        self._inbox.put(seq)

    # -- the scheduler thread --------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop:
                self._take_inbox(block=not self._running and not self._waiting)
                if self._stop:
                    break
                self._drop_finished()
                self._admit()
                if self._running:
                    self._step()
                self._publish()
        except BaseException as exc:  # pragma: no cover - a bug in the loop itself
            self._fail_all(EngineError(f"the batch scheduler stopped: {exc}"))
            raise
        self._fail_all(EngineError("the llama.cpp engine was closed"))

    def _take_inbox(self, *, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                if item is None:
                    return  # close(): _stop is set
                self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return

    def _drop_finished(self) -> None:
        """Free the slots of sequences whose consumer went away or asked to stop, and
        forget waiting ones that did."""
        running: list[_Seq] = []
        waiting: deque[_Seq] = deque()
        for seq in self._running:
            (running.append if not self._gone(seq) else self._finish)(seq)
        for seq in self._waiting:
            (waiting.append if not self._gone(seq) else self._finish)(seq)
        self._running, self._waiting = running, waiting

    @staticmethod
    def _gone(seq: _Seq) -> bool:
        return seq.job is None and (seq.closed or seq.should_stop())

    def _admit(self) -> None:
        import llama_cpp

        while self._waiting:
            free = [s for s in self._slots if not s.busy]
            if not free:
                return
            seq = self._waiting.popleft()
            if seq.job is not None:
                slot = min(free, key=lambda s: (len(s.tokens), s.last_used))
                self._run_job(seq, slot)
                continue
            # The free slot that has cached the longest prefix of this prompt; ties (and
            # no match at all) go to the least recently used one.
            slot = max(free, key=lambda s: (_common_prefix(s.tokens, seq.prompt),
                                            -s.last_used))
            reuse = _common_prefix(slot.tokens, seq.prompt) if self.prefix_cache else 0
            reuse = min(reuse, len(seq.prompt) - 1)  # the last token is decoded for logits
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, reuse, -1)
            del slot.tokens[reuse:]
            slot.busy = True
            seq.slot = slot
            seq.sampler = self._sampler(seq.params)
            if seq.held is not None:  # a verification: the last token goes with the draft
                seq.pending = seq.prompt[reuse:-1]
                if not seq.pending:
                    seq.next_token = seq.held
            else:
                seq.pending = seq.prompt[reuse:]
                seq.spec = self._speculation(seq)
            self._running.append(seq)
            with self._stats_lock:
                st = self._stats
                st.prefix_tokens_reused += reuse
                st.prompt_tokens_computed += len(seq.pending)
                if reuse:
                    st.prefix_hits += 1
                else:
                    st.prefix_misses += 1

    def _run_job(self, seq: _Seq, slot: _Slot) -> None:
        import llama_cpp

        assert seq.job is not None
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, 0, -1)
        slot.tokens.clear()
        try:
            result: object = seq.job(slot.seq_id)
        except BaseException as exc:
            result = exc if isinstance(exc, EngineError) else EngineError(
                f"llama.cpp scoring failed: {exc}")
        finally:
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, 0, -1)
            slot.last_used = time.monotonic()
        seq.out.put(result)

    def _grammar(self, gbnf: str, triggers: Sequence[str] = ()) -> Any:
        """A llama.cpp grammar sampler for ``gbnf`` (root rule ``root``); with
        ``triggers`` (``SamplingParams.grammar_triggers``), a lazy one — llama.cpp's own
        mechanism for tool calls: it constrains nothing until the output matches a
        trigger, then matches from the trigger's first group."""
        import ctypes

        import llama_cpp

        if not triggers:
            g = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"),
                                                     b"root")
        else:
            patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
            g = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
                self._vocab, gbnf.encode("utf-8"), b"root", patterns, len(triggers),
                (llama_cpp.llama_token * 1)(), 0)
        if not g:
            raise EngineError("llama.cpp could not parse the grammar of this request")
        return g

    def _sampler(self, p: SamplingParams) -> Any:
        """The request's llama.cpp sampler chain; None for plain greedy decoding (no
        penalties), which is the argmax of the logits row (:meth:`_sample`) — what
        llama.cpp's greedy sampler returns, without copying the vocabulary into a
        candidates array for every token."""
        from llama_cpp import _internals

        if p.temperature == 0.0 and p.repeat_penalty == 1.0 and not p.frequency_penalty \
                and not p.presence_penalty:
            return None

        make: Any = _internals.LlamaSampler  # untyped
        s = make()
        s.add_penalties(n_vocab=self._n_vocab, penalty_last_n=_PENALTY_LAST_N,
                        penalty_repeat=p.repeat_penalty, penalty_freq=p.frequency_penalty,
                        penalty_present=p.presence_penalty)
        if p.temperature == 0.0:
            s.add_greedy()
        else:
            seed = p.seed if p.seed is not None else random.getrandbits(32)
            s.add_top_k(p.top_k)
            s.add_typical(1.0, 1)
            s.add_top_p(p.top_p, 1)
            s.add_min_p(p.min_p, 1)
            s.add_temp(p.temperature)
            s.add_dist(seed)
        return s

    def _step(self) -> None:
        """One step: a decode of every running sequence's next token; a verify pass of
        each sequence that drafted (its next token and the draft, logits for every
        row); then prompt chunks of sequences being prefilled (see :meth:`_decode` for
        why these are separate decodes)."""
        for seq in self._running:
            seq.row = -1
        decoders = sorted((s for s in self._running if s.next_token is not None),
                          key=lambda s: s.slot.seq_id if s.slot is not None else -1)
        spec = self.speculative
        speculate = spec is not None and len(decoders) <= spec.max_batch
        plain: list[tuple[_Seq, list[int], int]] = []
        verify: list[list[tuple[_Seq, list[int], int]]] = []
        for seq in decoders:
            token = seq.next_token
            assert token is not None
            seq.next_token = None
            draft = self._draft(seq) if seq.spec is not None and (
                speculate or seq.spec.forced is not None) else None
            if draft is None:
                plain.append((seq, [token], 1))
            else:
                verify.append([(seq, [token, *draft.tokens], len(draft.tokens) + 1)])
        groups: list[tuple[str, list[tuple[_Seq, list[int], int]]]] = []
        if plain:
            groups.append(("plain", plain))
        groups += [("verify", work) for work in verify]
        budget = self.prefill_chunk
        for seq in self._running:  # oldest first: the one admitted first finishes first
            if seq.pending and budget > 0:
                take = seq.pending[:budget]
                del seq.pending[:len(take)]
                budget -= len(take)
                wants = 0 if seq.pending or seq.held is not None else 1
                groups.append(("prompt", [(seq, take, wants)]))
        n_seqs = len(decoders) + sum(kind == "prompt" for kind, _ in groups)
        with self._stats_lock:
            self._stats.steps += 1
            self._stats.batch_sizes[n_seqs] = self._stats.batch_sizes.get(n_seqs, 0) + 1
        ended: set[int] = set()
        for kind, work in groups:
            t0 = time.perf_counter()
            failed = self._decode(work, prompt=kind == "prompt")
            elapsed = time.perf_counter() - t0
            if failed is not None:
                for seq in self._running:
                    self._forget(seq)
                    self._finish(seq, failed)
                self._running = []
                return
            if kind == "plain" and len(work) == 1 and spec is not None:
                self.costs.plain(elapsed)
            # Each decode overwrites the logits of the one before: sample now.
            for seq, tokens, _ in work:
                if kind == "verify":
                    self.costs.verify(len(tokens), elapsed)
                    if not self._verify(seq, elapsed):
                        ended.add(id(seq))
                elif seq.row >= 0 and not self._sample(seq):
                    ended.add(id(seq))
                elif kind == "prompt" and seq.held is not None and not seq.pending:
                    seq.next_token = seq.held  # prefilled: verify at the next step
                seq.row = -1
        keep: list[_Seq] = []
        for seq in self._running:
            (self._finish if id(seq) in ended else keep.append)(seq)
        self._running = keep

    def _decode(self, work: list[tuple[_Seq, list[int], int]], *, prompt: bool
                ) -> EngineError | None:
        """One ``llama_decode`` of ``(sequence, tokens, rows with logits)`` entries (the
        last that many tokens get logits; ``seq.row`` is the first of them).

        Batch-invariant numerics. With one KV stream per sequence llama.cpp computes
        attention per stream, and a stream's attention products take llama.cpp's
        ``tinyBLAS`` kernels when the stream has two or more query rows in the
        micro-batch and ggml's vector kernels when it has one — with other rounding
        (SmolLM2's logprobs moved by up to 0.17 between the two). Decode tokens are
        always one row per stream, alone or beside 7 others: the same kernels. A prompt
        chunk is several rows — unless it is a single token (the last prompt token
        after a prefix-cache hit, or a chunk boundary leaving one): that one gets a
        second, throw-away row, the same token one position on in the same sequence,
        its cell dropped right after. Prompt chunks go in decodes of their own (llama.cpp
        would cut a mixed batch into micro-batches of equal token counts per sequence
        anyway) and are sampled right after, since each decode overwrites the logits of
        the one before. So a request's tokens and logprobs are the same alone or
        batched, whatever the chunking or the cache (tests/test_batching.py).
        """
        import llama_cpp

        batch = self._batch
        batch.n_tokens = 0
        pads: list[tuple[int, int]] = []

        def add(token: int, seq_id: int, pos: int, logits: bool) -> int:
            i = int(batch.n_tokens)
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
            batch.n_tokens = i + 1
            return i

        for seq, tokens, n_logits in work:
            slot = seq.slot
            assert slot is not None
            seq.decodes += 1
            start = len(slot.tokens)
            first = len(tokens) - n_logits
            for j, t in enumerate(tokens):
                row = add(t, slot.seq_id, start + j, j >= first)
                if j == first:
                    seq.row = row
            slot.tokens.extend(tokens)
            if prompt and len(tokens) == 1 and start + 1 < self.n_ctx:
                add(tokens[0], slot.seq_id, start + 1, False)  # the second row
                pads.append((slot.seq_id, start + 1))
        rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
        for seq_id, pos in pads:
            llama_cpp.llama_memory_seq_rm(self._mem, seq_id, pos, -1)
        if rc != 0:
            # 1: no room in the KV cache (cannot happen with per-slot bounds), <0: error.
            return EngineError(f"llama.cpp decode failed (status {rc})")
        return None

    def _forget(self, seq: _Seq) -> None:
        """Drop a slot's cells after a failed decode: what it wrote is unknown."""
        import llama_cpp

        if seq.slot is not None:
            llama_cpp.llama_memory_seq_rm(self._mem, seq.slot.seq_id, 0, -1)
            seq.slot.tokens.clear()

    def _sample(self, seq: _Seq) -> bool:
        """Sample the sequence's next token from its row; False when it has ended."""
        import llama_cpp

        assert seq.slot is not None
        try:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, seq.row),
                                        shape=(self._n_vocab,))
            if seq.grammar is not None:
                token, row = self._sample_constrained(seq, row)
            elif seq.sampler is None:
                token = int(row.argmax())
            else:
                token = int(seq.sampler.sample(self._ctx, seq.row))
            logprob, top = self._logprobs(row, token, seq.params.top_logprobs)
        except Exception as exc:  # a sampler failure ends this sequence only
            seq.out.put(EngineError(f"llama.cpp sampling failed: {exc}"))
            return False
        eog = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        seq.out.put(Step(token, logprob, top, end_of_generation=eog))
        seq.generated += 1
        if seq.spec is not None:
            seq.spec.drafter.extend((token,))
        # The token is fed at the next step: it needs a cell, and the slot has n_ctx.
        if (eog and not seq.params.ignore_eos) or seq.generated >= seq.params.max_tokens > 0 \
                or len(seq.slot.tokens) >= self.n_ctx:
            return False
        seq.next_token = token
        return True

    # -- speculative decoding ------------------------------------------------------------
    def _speculation(self, seq: _Seq) -> _Spec | None:
        """The sequence's speculation state, or None when it decodes plainly: no
        ``engine.speculative``, or a request the verify rule does not cover here (a
        grammar, repetition penalties: their state follows every token)."""
        o, p = self.speculative, seq.params
        if o is None or seq.grammar is not None or p.repeat_penalty != 1.0 \
                or p.frequency_penalty or p.presence_penalty:
            return None
        drafter = make_drafter(o.drafter, o.options, o.context)
        drafter.extend(seq.prompt)
        return _Spec(drafter, Speculation(self.costs, k_max=o.k_max, margin=o.margin),
                     *_chain(p))

    def _draft(self, seq: _Seq) -> Draft | None:
        """The sequence's draft for this step (None: decode it plainly): as long as the
        policy finds worth it, within its token budget and its slot's cells."""
        spec, slot, p = seq.spec, seq.slot, seq.params
        assert spec is not None and slot is not None
        if spec.forced is not None:  # a peer's draft (verify() checked that it fits)
            spec.draft = Draft(list(spec.forced)) if spec.forced else None
            return spec.draft
        room = self.n_ctx - len(slot.tokens) - 2
        if p.max_tokens > 0:
            room = min(room, p.max_tokens - seq.generated - 1)
        k = spec.policy.length(room)
        if k <= 0:
            return None
        t0 = time.perf_counter()
        draft = spec.drafter.draft(k)
        elapsed = time.perf_counter() - t0
        self.costs.drafted(len(draft.tokens), elapsed - draft.catch_up_s)
        with self._stats_lock:
            self._stats.spec_draft_seconds += elapsed
        if not draft.tokens:
            return None
        del draft.tokens[k:]
        spec.draft = draft
        return draft

    def _verify(self, seq: _Seq, elapsed: float) -> bool:
        """Keep what the target agrees with of the draft just decoded after the
        sequence's next token (:mod:`edgewise.decoding.verify`), emit those tokens and
        the target's own next one, and drop the cells of the rejected rest; False when
        the sequence has ended."""
        import llama_cpp

        spec, slot, p = seq.spec, seq.slot, seq.params
        assert spec is not None and spec.draft is not None and slot is not None
        draft, spec.draft = spec.draft, None
        k = len(draft.tokens)
        try:
            rows = [np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx.ctx, seq.row + j),
                shape=(self._n_vocab,)) for j in range(k + 1)]
            if spec.chain is None:
                tops = [int(r.argmax()) for r in rows]
                m = accept_greedy(tops, draft.tokens)
                nxt = tops[m]
            else:
                assert spec.rng is not None
                m, nxt = accept_sampled([chain_probs(r, spec.chain) for r in rows],
                                        draft.tokens, draft.q, spec.rng)
            emitted = [*draft.tokens[:m], nxt]
            scored = [(t, *self._logprobs(rows[i], t, p.top_logprobs))
                      for i, t in enumerate(emitted)]
        except Exception as exc:  # a failure ends this sequence only
            seq.out.put(EngineError(f"llama.cpp speculative verification failed: {exc}"))
            return False
        # The cells of the next token and the kept drafts stay; the rest go.
        keep = len(slot.tokens) - k + m
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1)
        del slot.tokens[keep:]
        spec.policy.update(k, m)
        with self._stats_lock:
            st = self._stats
            st.spec_passes += 1
            st.spec_drafted += k
            st.spec_accepted += m
            st.spec_verify_seconds += elapsed
        for i, (token, logprob, top) in enumerate(scored):
            eog = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
            seq.out.put(Step(token, logprob, top, end_of_generation=eog, accepted=i < m,
                             drafted=k if i == 0 else 0))
            seq.generated += 1
            spec.drafter.extend((token,))
            if (eog and not p.ignore_eos) or seq.generated >= p.max_tokens > 0:
                return False
        if len(slot.tokens) >= self.n_ctx or spec.forced is not None:
            return False
        seq.next_token = nxt
        return True

    def _sample_constrained(self, seq: _Seq, row: np.ndarray) -> tuple[int, np.ndarray]:
        """Sample within the request's grammar; returns the token and the masked row,
        so the reported logprobs are those of the *constrained* distribution: softmax
        of the model's logits over the tokens the grammar allows at that point (before
        temperature, top-k/top-p, like unconstrained ones).

        Checking the whole vocabulary (49k–152k tokens) against a grammar costs about
        as much as a decode step, so it is avoided where the answer is the same:

        - when nobody reads the logprobs (``SamplingParams.logprobs`` false, no
          ``top_logprobs``): the token is picked first and only it is checked
          (:meth:`_sample_unscored`, llama.cpp's own order); the step's logprob is
          then the unconstrained model's;
        - else the grammar is asked about the :data:`FAST_TOP` likeliest tokens
          (:meth:`_sample_top`), which gives the exact constrained logprobs when the
          rest of the vocabulary holds too little probability to matter.

        Otherwise the whole vocabulary is masked (:meth:`_sample_masked`)."""
        p = seq.params
        fast = self._sample_unscored(seq, row) if not p.logprobs and not p.top_logprobs \
            else self._sample_top(seq, row)
        return fast if fast is not None else self._sample_masked(seq, row)

    def _sample_unscored(self, seq: _Seq, row: np.ndarray) -> tuple[int, np.ndarray] | None:
        """Pick, then check (logprobs unread). Greedy: the highest-logit token of the
        :data:`FAST_TOP` likeliest that the grammar allows — exactly the full mask's
        argmax, since every other token has a lower logit. Sampled: the request's chain
        picks from the whole row as if unconstrained, and the token is kept if the
        grammar allows it; else None (mask and pick again). Keeping an allowed pick and
        re-picking from the allowed tokens otherwise draws each allowed token with its
        renormalised probability (rejection sampling), after the chain's top-k / top-p
        cut, as llama.cpp's sampler does. None too when no top token is allowed."""
        import ctypes

        import llama_cpp

        if seq.sampler is None:
            k = min(FAST_TOP, self._n_vocab)
            top = np.argpartition(row, -k)[-k:]
            top = top[np.argsort(-row[top], kind="stable")]
            allowed = self._allowed(seq, top, row)
            if allowed.size == 0:
                return None
            token = int(allowed[0])
        else:
            cur = self._full(row)
            llama_cpp.llama_sampler_apply(seq.sampler.sampler, ctypes.byref(cur))
            token = int(self._cand["id"][cur.selected])
            if self._allowed(seq, np.array([token]), row).size == 0:
                return None
            llama_cpp.llama_sampler_accept(seq.sampler.sampler, token)
        llama_cpp.llama_sampler_accept(seq.grammar, token)
        return token, row

    def _allowed(self, seq: _Seq, tokens: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Those of ``tokens`` (in order) the request's grammar allows next."""
        import ctypes

        import llama_cpp

        small = (llama_cpp.llama_token_data * tokens.size)()
        view = np.frombuffer(cast(Any, small), dtype=_TOKEN_DATA)
        view["id"], view["logit"], view["p"] = tokens, row[tokens], 0.0
        cur = llama_cpp.llama_token_data_array(
            data=ctypes.cast(small, llama_cpp.llama_token_data_p), size=tokens.size,
            selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(seq.grammar, ctypes.byref(cur))
        allowed: np.ndarray = tokens[np.isfinite(view["logit"])]
        return allowed

    def _full(self, row: np.ndarray) -> Any:
        """The whole logits row as a llama.cpp candidates array (reused buffer)."""
        import ctypes

        import llama_cpp

        if self._candidates is None:
            self._candidates = (llama_cpp.llama_token_data * self._n_vocab)()
            self._cand = np.frombuffer(self._candidates, dtype=_TOKEN_DATA)
            self._ids = np.arange(self._n_vocab, dtype=np.int32)
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = row
        cand["p"] = 0.0
        return llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._candidates, llama_cpp.llama_token_data_p),
            size=self._n_vocab, selected=-1, sorted=False)

    def _sample_top(self, seq: _Seq, row: np.ndarray) -> tuple[int, np.ndarray] | None:
        """The grammar over the :data:`FAST_TOP` highest logits; the answer when the
        tokens outside them cannot matter: they hold less than :data:`FAST_TAIL` of the
        probability mass of the allowed ones among them (raw logits, and at the
        request's temperature when it is above 1), so the constrained logprobs are
        exact to within that (log 1 ± 1e-4) and the greedy choice is exactly the full
        mask's. None (mask the whole vocabulary) when no top token is allowed, the tail
        is heavier, fewer top tokens are allowed than ``top_logprobs`` asks for, or
        penalties may lower the top logits (they would lift the tail)."""
        import ctypes

        import llama_cpp

        p = seq.params
        if p.repeat_penalty != 1.0 or p.frequency_penalty or p.presence_penalty:
            return None
        k = min(FAST_TOP, self._n_vocab)
        top = np.argpartition(row, -k)[-k:]
        top = top[np.argsort(-row[top], kind="stable")]
        allowed = self._allowed(seq, top, row)
        if allowed.size == 0 or allowed.size < p.top_logprobs:
            return None
        scale = 1.0 / p.temperature if p.temperature > 1.0 else 1.0
        x = row.astype(np.float64) * scale
        e = np.exp(x - x.max())
        if e.sum() - e[top].sum() > FAST_TAIL * e[allowed].sum():
            return None
        masked = np.full_like(row, -np.inf)
        masked[allowed] = row[allowed]
        if seq.sampler is None:
            token = int(allowed[0])
        else:  # the request's chain over the allowed top tokens
            pick = (llama_cpp.llama_token_data * allowed.size)()
            pv = np.frombuffer(cast(Any, pick), dtype=_TOKEN_DATA)
            pv["id"], pv["logit"], pv["p"] = allowed, row[allowed], 0.0
            pcur = llama_cpp.llama_token_data_array(
                data=ctypes.cast(pick, llama_cpp.llama_token_data_p), size=allowed.size,
                selected=-1, sorted=True)
            llama_cpp.llama_sampler_apply(seq.sampler.sampler, ctypes.byref(pcur))
            token = int(pv["id"][pcur.selected])
            llama_cpp.llama_sampler_accept(seq.sampler.sampler, token)
        llama_cpp.llama_sampler_accept(seq.grammar, token)
        return token, masked

    def _sample_masked(self, seq: _Seq, row: np.ndarray) -> tuple[int, np.ndarray]:
        """The grammar over the whole vocabulary: it sets the logits of every token it
        does not allow to -inf, then the request's own chain (or the argmax) picks from
        what is left; both are told the token."""
        import ctypes

        import llama_cpp

        cur = self._full(row)
        cand = self._cand
        llama_cpp.llama_sampler_apply(seq.grammar, ctypes.byref(cur))
        masked = cand["logit"].copy()  # the grammar only writes -inf; order is kept
        if not np.isfinite(masked.max()):
            raise EngineError("the request's grammar allows no token here")
        if seq.sampler is None:
            token = int(masked.argmax())
        else:
            llama_cpp.llama_sampler_apply(seq.sampler.sampler, ctypes.byref(cur))
            token = int(cand["id"][cur.selected])
            llama_cpp.llama_sampler_accept(seq.sampler.sampler, token)
        llama_cpp.llama_sampler_accept(seq.grammar, token)
        return token, masked

    def _finish(self, seq: _Seq, error: BaseException | None = None) -> None:
        slot = seq.slot
        if slot is not None:
            slot.busy = False
            slot.last_used = time.monotonic()
            seq.slot = None
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        if seq.grammar is not None:
            import llama_cpp

            llama_cpp.llama_sampler_free(seq.grammar)
            seq.grammar = None
        if seq.spec is not None:
            seq.spec.drafter.close()
            seq.spec = None
        seq.out.put(error if error is not None else _END)

    def _fail_all(self, error: EngineError) -> None:
        for seq in [*self._running, *self._waiting]:
            self._finish(seq, error)
        self._running, self._waiting = [], deque()
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._finish(item, error)

    def _publish(self) -> None:
        with self._stats_lock:
            st = self._stats
            st.active = len(self._running)
            st.waiting = len(self._waiting)
            st.kv_cells_active = sum(len(s.tokens) for s in self._slots if s.busy)
            st.kv_cells_cached = sum(len(s.tokens) for s in self._slots if not s.busy)

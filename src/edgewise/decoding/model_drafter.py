"""The ``model`` drafter: a small model with the target's tokenizer drafts greedily.

:class:`DraftModel` is loaded once per engine (its weights, and one llama.cpp context
with a KV-cache slot per target sequence slot: ``parallel × n_ctx`` cells, like the
target's). Each target sequence gets a :class:`DraftSequence` on a slot of its own.
To draft ``k`` tokens it brings its slot up to date with the sequence (the cells of the
longest common prefix with what it decoded before are kept — so after a verify pass
only the rejected drafts are dropped, and a long prompt is read once), then decodes
``k − 1`` single tokens, each the argmax of the last.

Greedy drafts are a point mass, which the speculative sampling rule takes as it is
(:func:`edgewise.decoding.verify.accept_sampled`): sampled output stays the target's
distribution, only the acceptance rate is lower than drafting by sampling would give.

The draft model must share the target's vocabulary (same size, and the same text for
every token id checked): Qwen2.5-Coder-0.5B drafts for Qwen2.5-Coder-1.5B. Written on
llama-cpp-python's low-level bindings, since its ``draft_model`` hook only drafts with
``logits_all`` on the target (an n_ctx × n_vocab buffer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.decoding.drafters import Draft, NoDraft, register_drafter
from edgewise.errors import EngineError

__all__ = ["DraftModel", "DraftSequence"]

#: Token ids whose texts are compared between the draft and target vocabularies.
_VOCAB_PROBES = 512
#: Reading more new tokens than this at once is the prompt, not drafting's own cost.
_CATCH_UP = 8


class DraftModel:
    """The draft model's weights and batched context (module docstring).

    ``target`` is the target's loaded ``llama_cpp.Llama`` (its vocabulary is checked
    against the draft's)."""

    def __init__(self, path: Path, target: Any, *, parallel: int, n_ctx: int,
                 n_threads: int, n_batch: int = 512, flash_attn: bool = False) -> None:
        import llama_cpp
        from llama_cpp import _internals

        try:
            self._llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64,
                                        n_threads=n_threads, logits_all=False,
                                        verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError(f"llama.cpp could not load the draft model {path}: "
                              f"{exc}") from exc
        try:
            self._check_vocab(target, path)
            params = llama_cpp.llama_context_params.from_buffer_copy(
                self._llm.context_params)
            params.n_ctx = n_ctx * parallel
            params.n_batch = params.n_ubatch = n_batch
            params.n_seq_max = parallel
            params.kv_unified = False
            params.n_threads = params.n_threads_batch = n_threads
            params.no_perf = True
            params.flash_attn_type = 1 if flash_attn else 0
            make_context: Any = _internals.LlamaContext  # untyped
            try:
                self._ctx = make_context(model=self._llm._model, params=params,
                                         verbose=False)
            except ValueError as exc:
                raise EngineError(f"llama.cpp could not make the draft model's context of "
                                  f"{parallel} × {n_ctx} tokens (out of memory?)") from exc
        except BaseException:
            self._llm.close()
            raise
        self.n_ctx = min(n_ctx, int(llama_cpp.llama_n_ctx_seq(self._ctx.ctx)))
        self.n_batch = n_batch
        self.n_vocab = int(self._llm.n_vocab())
        self._vocab = self._llm._model.vocab
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._free = list(range(parallel))
        self.path = path

    def _check_vocab(self, target: Any, path: Path) -> None:
        n_draft, n_target = int(self._llm.n_vocab()), int(target.n_vocab())
        probes = np.linspace(0, min(n_draft, n_target) - 1, _VOCAB_PROBES).astype(int)
        mine, theirs = self._llm._model, target._model
        if n_draft != n_target or any(
                mine.token_get_text(int(t)) != theirs.token_get_text(int(t)) for t in probes):
            raise EngineError(
                f"the draft model {path.name} does not share the target's vocabulary "
                f"({n_draft} vs {n_target} tokens, or other token texts): pick a draft "
                "model of the same family (e.g. qwen2.5-coder-0.5b-instruct for "
                "qwen2.5-coder-1.5b-instruct)")

    def sequence(self) -> DraftSequence | None:
        """A drafter on a free slot; None when every slot is taken."""
        if not self._free:
            return None
        return DraftSequence(self, self._free.pop())

    def release(self, seq_id: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, 0, -1)
        self._free.append(seq_id)

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()
        self._llm.close()

    # -- the scheduler thread ---------------------------------------------------------------
    def decode(self, seq_id: int, start: int, tokens: list[int]) -> np.ndarray:
        """Decode ``tokens`` at positions ``start…`` of slot ``seq_id`` (in batches of
        ``n_batch``); the logits row of the last one."""
        import llama_cpp

        batch = self._batch
        last = 0
        for i in range(0, len(tokens), self.n_batch):
            part = tokens[i:i + self.n_batch]
            batch.n_tokens = len(part)
            for j, t in enumerate(part):
                batch.token[j] = t
                batch.pos[j] = start + i + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq_id
                batch.logits[j] = j == len(part) - 1
            last = len(part) - 1
            rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
            if rc != 0:
                raise EngineError(f"llama.cpp decode of the draft model failed (status {rc})")
        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, last)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def drop(self, seq_id: int, start: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, start, -1)

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))


class DraftSequence:
    """One target sequence's drafter on a slot of the draft model (module docstring)."""

    def __init__(self, model: DraftModel, seq_id: int) -> None:
        self.model = model
        self.seq_id = seq_id
        self.tokens: list[int] = []
        #: The tokens whose cells the slot holds (positions 0…len-1).
        self.cached: list[int] = []
        self._closed = False

    def extend(self, tokens: Any) -> None:
        self.tokens.extend(tokens)

    def draft(self, k: int) -> Draft:
        m = self.model
        tokens = self.tokens
        if not tokens or len(tokens) + k >= m.n_ctx:
            return Draft([])
        common = 0
        limit = min(len(self.cached), len(tokens) - 1)  # the last token is decoded again
        while common < limit and self.cached[common] == tokens[common]:
            common += 1
        m.drop(self.seq_id, common)
        del self.cached[common:]
        t0 = time.perf_counter()
        row = m.decode(self.seq_id, common, tokens[common:])
        catch_up = time.perf_counter() - t0 if len(tokens) - common > _CATCH_UP else 0.0
        self.cached.extend(tokens[common:])
        out: list[int] = []
        for i in range(k):
            t = int(row.argmax())
            out.append(t)
            if i == k - 1 or m.is_eog(t):
                break
            row = m.decode(self.seq_id, len(self.cached), [t])
            self.cached.append(t)
        return Draft(out, catch_up_s=catch_up)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.model.release(self.seq_id)


def _factory(options: dict[str, Any], context: Any) -> Any:
    if not isinstance(context, DraftModel):
        raise EngineError("the model drafter needs a loaded draft model "
                          "(engine.speculative.model)")
    return context.sequence() or NoDraft()


register_drafter("model", _factory)

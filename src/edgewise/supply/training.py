"""Pieces the training stages share: tokenized examples, batches, the LR schedule.

Why a hand-written loop rather than ``transformers.Trainer``: the stages need a step
callback into the build's progress bar, validation on a schedule with early stopping
that keeps the best weights *in memory* (the adapter is small; the stage writes only its
final outputs, atomically), exact control of threads and seeds on a 2-core CPU, and
metrics in the manifest rather than in TensorBoard/W&B logs. The loop itself is ~40
lines; peft does the LoRA, PyTorch the optimisation.
"""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Tokenized",
    "batches",
    "completion_nll",
    "load_causal_lm",
    "lr_lambda",
    "pack_texts",
    "setup_torch",
    "tokenize_examples",
]


@dataclass
class Tokenized:
    """One training example: token ids and labels (-100 where no loss is taken)."""

    ids: list[int]
    labels: list[int]


#: What a checkpoint folder needs besides the weights and config.json.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "generation_config.json")


def save_model(model: Any, source: Path, out: Path) -> Path:
    """Save ``model`` to ``out`` as a checkpoint, with the tokenizer files of the folder
    it was loaded from (``source``)."""
    model.save_pretrained(str(out))
    copy_tokenizer(source, out)
    return out


def copy_tokenizer(source: Path, out: Path, extra: Sequence[str] = ()) -> None:
    for name in (*TOKENIZER_FILES, *extra):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def optimizer_step(params: Any, opt: Any, sched: Any, max_norm: float = 1.0) -> None:
    """Clip the gradient norm, step the optimiser and the schedule, clear the gradients."""
    import torch

    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    sched.step()
    opt.zero_grad()


def setup_torch(threads: int, seed: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)


def load_causal_lm(path: Path) -> tuple[Any, Any]:
    """A float32 model in eval mode and its tokenizer, from a checkpoint folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgewise.supply.vocab import check_not_pruned

    check_not_pruned(path, "this stage")
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    return model, tok


def tokenize_examples(tok: Any, examples: Sequence[Any], *, max_length: int,
                      add_eos: bool) -> list[Tokenized]:
    """Prompt (with BOS, as the node tokenizes a prompt) + completion (+ EOS, so the
    served model stops); the loss covers only the completion. Too-long examples lose
    prompt tokens from the left (BOS is kept)."""
    out = []
    eos = tok.eos_token_id
    for e in examples:
        p = list(tok(e.prompt, add_special_tokens=True).input_ids)
        c = list(tok(e.completion, add_special_tokens=False).input_ids)
        if add_eos and eos is not None:
            c.append(eos)
        c = c[: max_length - 1]
        keep = max_length - len(c)
        if len(p) > keep:
            p = p[:1] + p[len(p) - keep + 1:]
        out.append(Tokenized(p + c, [-100] * len(p) + c))
    return out


def pack_texts(tok: Any, texts: Sequence[str], *, length: int, limit: int | None,
               seed: int) -> list[list[int]]:
    """Texts tokenized, concatenated (EOS between) and cut into ``length``-token rows,
    each starting with BOS — the usual LM calibration/distillation batches (no padding)."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    stream: list[int] = []
    for t in texts:
        stream.extend(tok(t, add_special_tokens=False).input_ids)
        if eos is not None:
            stream.append(eos)
    body = length - (bos is not None)
    rows = [([bos] if bos is not None else []) + stream[i:i + body]
            for i in range(0, len(stream) - body + 1, body)]
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def batches(items: Sequence[Tokenized], size: int, pad: int, *, shuffle: bool,
            seed: int) -> Iterator[tuple[Any, Any, Any]]:
    """(input_ids, attention_mask, labels) tensors, *left*-padded per batch.

    Left padding puts every completion at the end of its row, so only the last few
    positions need logits (:func:`completion_nll`). Positions shift by the padding, but
    RoPE attention depends only on relative positions, so the masked pads change
    nothing."""
    import torch

    order = list(range(len(items)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), size):
        group = [items[j] for j in order[i:i + size]]
        width = max(len(g.ids) for g in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        for r, g in enumerate(group):
            n = len(g.ids)
            ids[r, width - n:] = torch.tensor(g.ids)
            mask[r, width - n:] = 1
            labels[r, width - n:] = torch.tensor(g.labels)
        yield ids, mask, labels


def completion_nll(model: Any, ids: Any, mask: Any, labels: Any) -> tuple[Any, int]:
    """(sum of NLL over completion tokens, their count) for a left-padded batch.

    Only the last ``k + 1`` positions get logits (``logits_to_keep``), ``k`` the longest
    completion: the vocabulary projection is most of a small model's compute (Gemma 3
    270M: 168M of its 268M parameters), and prompts need none.
    """
    import torch

    k = int((labels != -100).sum(dim=1).max())
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=k + 1).logits[:, :-1]
    tgt = labels[:, -k:]                      # logits[:, j] predict tokens[:, T - k + j]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                            tgt.reshape(-1), ignore_index=-100,
                                            reduction="sum")
    return nll, int((tgt != -100).sum())


def lr_lambda(total: int, warmup: float) -> Any:
    """Linear warm-up over ``warmup × total`` steps, then linear decay to 0."""
    w = max(1, int(total * warmup))

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return max(0.0, (total - step) / max(1, total - w))

    return f


def steps_for(n_items: int, batch: int, accum: int, epochs: float, max_steps: int | None) -> int:
    """Optimizer steps for ``epochs`` passes (or ``max_steps`` if smaller)."""
    per_epoch = math.ceil(n_items / batch / accum)
    total = max(1, math.ceil(per_epoch * epochs))
    return min(total, max_steps) if max_steps else total

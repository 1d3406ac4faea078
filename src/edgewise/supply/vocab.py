"""Vocabulary pruning: keep the tokens a deployment's text uses, drop the rest.

Small multilingual models spend most of their weights on the vocabulary: Gemma 3 270M
has a 262,144 × 640 embedding (tied with the output layer) — 168M of its 268M
parameters — while English news text uses ~14k distinct tokens. Removing the unused
rows shrinks the file ~4× for a fixed text domain ("vocabulary trimming", Ushio et al.
2023, "An Efficient Multilingual Language Model Compression through Vocabulary
Trimming", arXiv:2305.15020). Hand-written: no installed library edits a GGUF
vocabulary.

Which tokens are kept:

1. every token the calibration text tokenizes to;
2. every special token (control, user-defined, byte-fallback and unknown types, except
   the ``<unused…>`` placeholders), and the BOS/EOS/UNK/PAD ids;
3. the **closure** that makes the tokenizer segment the calibration text exactly as
   before. llama.cpp's SentencePiece tokenizer (``llama``) merges adjacent symbols
   bottom-up whenever their concatenation is a token, so every intermediate piece of a
   kept token is a substring of it: keeping all substrings that are tokens keeps every
   merge the original run made (merges it never made cannot matter). The byte-level BPE
   tokenizer (``gpt2``) applies ranked merges ``a b → ab``: each kept token's two parts
   are kept, recursively, and a merge survives when its parts and result do.

Text outside the calibration domain still tokenizes (into smaller pieces, down to
single characters or byte tokens), but the model has seen those segmentations less:
choose calibration text that covers what the device will serve.

The token ids are renumbered in order, so the low special ids (PAD 0, EOS 1, BOS 2 …)
usually keep their values; the embedding (and an untied output layer) keep the same
rows. The Hugging Face tokenizer is *not* rewritten: the checkpoint gets a
``vocab_keep.json`` (the kept old ids) that the GGUF conversion applies to the
vocabulary it copies from the source GGUF, and stages that would need the HF tokenizer
refuse to start after it. So vocabulary pruning goes last, followed by ``quantize``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.errors import StageError

__all__ = ["KEEP_FILE", "VocabInfo", "check_not_pruned", "keep_ids", "read_vocab"]

KEEP_FILE = "vocab_keep.json"

# llama.cpp token types (gguf-py ``TokenType``)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class VocabInfo:
    model: str              # ``llama`` (SentencePiece) or ``gpt2`` (byte-level BPE)
    tokens: list[str]
    types: list[int]
    merges: list[str] | None
    special_ids: dict[str, int]


def read_vocab(gguf_path: Path) -> VocabInfo:
    """The vocabulary stored in a GGUF file."""
    import gguf

    fields = gguf.GGUFReader(str(gguf_path)).fields

    def get(name: str) -> Any:
        f = fields.get(name)
        return f.contents() if f is not None else None

    tokens = get("tokenizer.ggml.tokens")
    if not tokens:
        raise StageError(f"{gguf_path} has no tokenizer.ggml.tokens to prune")
    types = get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    special = {k: int(get(k)) for k in fields
               if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")}
    return VocabInfo(model=str(get("tokenizer.ggml.model")), tokens=list(tokens),
                     types=list(types), merges=get("tokenizer.ggml.merges"),
                     special_ids=special)


def keep_ids(info: VocabInfo, used: Iterable[int]) -> list[int]:
    """Old ids to keep, ascending (see the module docstring for the rule)."""
    if info.model not in ("llama", "gpt2"):
        raise StageError(f"vocabulary pruning supports SentencePiece (llama) and byte-level "
                         f"BPE (gpt2) tokenizers, not {info.model!r}")
    keep = {i for i in used if 0 <= i < len(info.tokens)}
    keep |= set(info.special_ids.values())
    keep |= {i for i, t in enumerate(info.types)
             if t in (UNKNOWN, USER_DEFINED, BYTE)
             or (t == CONTROL and not info.tokens[i].startswith("<unused"))}
    index = {tok: i for i, tok in enumerate(info.tokens)}
    if info.model == "llama":
        for i in list(keep):
            s = info.tokens[i]
            if info.types[i] not in (NORMAL, USER_DEFINED):
                continue
            for lo in range(len(s)):          # every substring that is a token
                for hi in range(lo + 1, len(s) + 1):
                    j = index.get(s[lo:hi])
                    if j is not None and info.types[j] == NORMAL:
                        keep.add(j)
    else:
        keep |= {i for i, s in enumerate(info.tokens) if len(s) == 1}   # byte alphabet
        parts: dict[str, tuple[str, str]] = {}
        for m in info.merges or []:
            a, _, b = m.partition(" ")
            parts.setdefault(a + b, (a, b))
        stack = [info.tokens[i] for i in keep]
        while stack:
            pair = parts.get(stack.pop())
            if pair is None:
                continue
            for p in pair:
                j = index.get(p)
                if j is not None and j not in keep:
                    keep.add(j)
                    stack.append(p)
    return sorted(keep)


def write_keep(model_dir: Path, keep: list[int], info: VocabInfo) -> None:
    (model_dir / KEEP_FILE).write_text(json.dumps(
        {"keep": keep, "tokenizer": info.model, "original_size": len(info.tokens)}))


def check_not_pruned(model_dir: Path, what: str) -> None:
    """Refuse to run ``what`` on a checkpoint whose vocabulary was pruned."""
    if (model_dir / KEEP_FILE).is_file():
        raise StageError(
            f"{what} cannot start from {model_dir}: its vocabulary was pruned, and the "
            "Hugging Face tokenizer no longer matches it. Put `prune: {method: vocab}` "
            "last, followed only by `quantize` (GGUF types) or `export: {formats: [gguf]}`")

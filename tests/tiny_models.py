"""Tiny language models built from a config in the test, with a real tokenizer.

GGUF conversion needs a real tokenizer (llama.cpp re-implements it from the vocabulary
and merges), so the tiny model gets a byte-level BPE trained here with the `tokenizers`
library on a fixed paragraph: ~300 tokens, deterministic, offline. llama.cpp does not
know the hash of this pre-tokenizer, so recipes name it (``pre_tokenizer: gpt-2``: the
same byte-level split GPT-2 uses).

The weights are random (seeded) but the model is briefly trained on the corpus so it is
a language model of it (greedy generation is not pure noise, distillation and pruning
have structure to keep).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CORPUS = [
    "the cat sat on the mat and the dog sat on the log.",
    "a red apple is sweet and a green apple is sour.",
    "the sun rises in the east and sets in the west.",
    "water boils at one hundred degrees and freezes at zero.",
    "birds fly south in winter and north in spring.",
    "the quick brown fox jumps over the lazy dog.",
    "one two three four five six seven eight nine ten.",
    "monday tuesday wednesday thursday friday saturday sunday.",
]
COLOURS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue",
           "snow": "white", "coal": "black", "orange": "orange", "plum": "purple"}


def corpus_text(repeat: int = 4) -> str:
    rng = random.Random(0)
    lines = [s for _ in range(repeat) for s in CORPUS]
    rng.shuffle(lines)
    return "\n".join(lines) + "\n"


def build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    chat = [f"user: what colour is {k}?\nassistant: {v}" for k, v in COLOURS.items()]
    tok.train_from_iterator(CORPUS * 4 + chat * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))


def build_tiny_llama(out: Path, *, layers: int = 2, hidden: int = 64,
                     intermediate: int = 128, train_steps: int = 60, seed: int = 0) -> Path:
    """A 2-layer Llama checkpoint with its tokenizer, lightly trained on the corpus."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(cfg)
    if train_steps:
        ids = tok(corpus_text(), return_tensors="pt").input_ids[:, :256]
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(train_steps):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
    model.save_pretrained(str(out))
    return out


def write_colour_chat(path: Path, n: int = 64, seed: int = 0) -> Path:
    """A labelled chat dataset: 'what colour is X?' -> colour (8 classes)."""
    rng = random.Random(seed)
    items = list(COLOURS.items())
    with path.open("w") as f:
        for _ in range(n):
            k, v = rng.choice(items)
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"what colour is {k}?"},
                {"role": "assistant", "content": v}]}) + "\n")
    return path


def write_text(path: Path, repeat: int = 4) -> Path:
    path.write_text(corpus_text(repeat))
    return path

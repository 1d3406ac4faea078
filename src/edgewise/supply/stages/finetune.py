"""The ``finetune`` stage: LoRA (Hu et al. 2021, arXiv:2106.09685) with HF peft.

For a frozen weight ``W [out, in]``, LoRA learns ``B [out, r]`` and ``A [r, in]`` and
uses ``W + (alpha / r) · B A``; ``B`` starts at zero, so step 0 is the base model. Only
``A`` and ``B`` are trained (≈1–2 % of a 270M model at r = 16 on every linear layer).

Steps:

1. read the chat/completion JSONL, split train/validation (seeded; or a named
   validation set); tokenize prompt + completion (+ EOS) — loss on the completion only;
2. AdamW on the LoRA parameters, linear warm-up then linear decay, gradient clipping 1;
3. every ``eval_every`` steps (and at step 0) compute the validation loss (mean NLL per
   completion token); keep the best adapter weights; stop early after ``patience``
   evaluations without an improvement larger than ``min_delta``;
4. restore the best weights; save the peft adapter (``adapter/``), convert it to a GGUF
   adapter (``adapter.gguf``, llama.cpp's ``convert_lora_to_gguf.py``) and add a variant
   *base GGUF + adapter* that a node serves with ``engine.lora_adapter``;
5. with ``merge: true``, also write the merged checkpoint (``model/``), which becomes the
   working model of the following stages.

Chat examples are rendered like the node renders chat for a model without a chat
template (:func:`edgewise.supply.data.render_chat_prompt`), and every GGUF the supply
chain writes leaves the template out, so a node serves a variant in the format it was
trained and evaluated in. (Training in an instruct model's own template is not
supported yet; for the base models this chain targets there is none.)
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, with_config

from edgewise.artifacts.variant import Variant
from edgewise.supply.convert import gguf_quantization, hf_to_gguf, lora_to_gguf
from edgewise.supply.data import load_examples, split_examples
from edgewise.supply.deps import require
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult
from edgewise.supply.training import (
    batches,
    completion_nll,
    load_causal_lm,
    lr_lambda,
    optimizer_step,
    save_model,
    setup_torch,
    steps_for,
    tokenize_examples,
)

__all__ = ["Finetune", "FinetuneParams", "LoraParams"]


@with_config(STRICT)
@dataclass
class LoraParams:
    r: Annotated[int, Field(ge=1, le=1024)] = 16
    alpha: Annotated[int, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    #: Module names to adapt (every attention and MLP projection by default).
    targets: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@with_config(STRICT)
@dataclass
class FinetuneParams:
    #: A chat or completion dataset (recipe name).
    dataset: str
    #: A separate validation set; default: hold out ``validation`` of ``dataset``.
    validation_dataset: str | None = None
    validation: Annotated[float, Field(gt=0, le=0.5)] = 0.1
    lora: LoraParams = field(default_factory=LoraParams)
    epochs: Annotated[float, Field(gt=0, le=100)] = 1.0
    max_steps: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=512)] = 8
    grad_accum: Annotated[int, Field(ge=1, le=512)] = 1
    lr: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.05
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_length: Annotated[int, Field(ge=8, le=32768)] = 256
    eval_every: Annotated[int, Field(ge=1)] = 25
    patience: Annotated[int, Field(ge=1)] = 3
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    #: Use at most this many training / validation examples (after the split).
    max_examples: Annotated[int, Field(ge=1)] | None = None
    max_val_examples: Annotated[int, Field(ge=1)] | None = 256
    #: Write the merged model; later stages then start from it.
    merge: bool = False
    #: End each completion with EOS so the served model stops after its answer.
    add_eos: bool = True


def has_chat_template(path: Path) -> bool:
    try:
        import gguf

        return "tokenizer.chat_template" in gguf.GGUFReader(str(path)).fields
    except (ImportError, OSError, ValueError):
        return True  # unknown: be safe, write a base without one


class Finetune(Stage):
    """LoRA fine-tuning with validation, early stopping, a GGUF adapter and optional merge."""

    kind = "finetune"
    Params = FinetuneParams
    dataset_fields = ("dataset", "validation_dataset")

    def produces_model(self, params: FinetuneParams) -> bool:
        return params.merge

    def run(self, params: FinetuneParams, ctx: StageContext) -> StageResult:
        require("torch", "transformers", "peft", feature="the finetune stage")
        import torch
        from peft import LoraConfig, get_peft_model

        setup_torch(ctx.threads, ctx.seed)
        ds = ctx.datasets[params.dataset]
        examples = load_examples(ds.path, ds.format)
        if params.validation_dataset:
            vds = ctx.datasets[params.validation_dataset]
            train, val = examples, load_examples(vds.path, vds.format)
        else:
            train, val = split_examples(examples, params.validation, ctx.seed)
        train = train[:params.max_examples] if params.max_examples else train
        val = val[:params.max_val_examples] if params.max_val_examples else val

        base, tok = load_causal_lm(ctx.model.hf_dir)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        tr = tokenize_examples(tok, train, max_length=params.max_length, add_eos=params.add_eos)
        va = tokenize_examples(tok, val, max_length=params.max_length, add_eos=params.add_eos)
        lcfg = LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha,
                          lora_dropout=params.lora.dropout,
                          target_modules=list(params.lora.targets), task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` alias.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            model = get_peft_model(base, lcfg)
        trainable = [p for p in model.parameters() if p.requires_grad]
        n_trainable = sum(p.numel() for p in trainable)
        n_total = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
        total = steps_for(len(tr), params.batch_size, params.grad_accum, params.epochs,
                          params.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, params.warmup))

        def val_loss() -> float:
            """Mean NLL per completion token over the validation set."""
            model.eval()
            nll, n = 0.0, 0
            with torch.no_grad():
                for ids, mask, labels in batches(va, params.batch_size, pad, shuffle=False,
                                                 seed=0):
                    s, c = completion_nll(model, ids, mask, labels)
                    nll += float(s)
                    n += c
            model.train()
            return nll / max(n, 1)

        def lora_state() -> dict[str, Any]:
            return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}

        t0 = time.monotonic()
        initial = val_loss()
        best, best_step, best_state = initial, 0, lora_state()
        curve = [(0, initial)]
        train_curve: list[tuple[int, float]] = []
        bad_evals, step, stopped_early, tokens = 0, 0, False, 0
        model.train()
        epoch = 0
        while step < total and not stopped_early:
            micro = 0
            for ids, mask, labels in batches(tr, params.batch_size, pad, shuffle=True,
                                             seed=ctx.seed + epoch):
                s, c = completion_nll(model, ids, mask, labels)
                loss = s / max(c, 1)          # mean NLL per completion token
                (loss / params.grad_accum).backward()
                tokens += int(mask.sum())
                micro += 1
                if micro % params.grad_accum:
                    continue
                optimizer_step(trainable, opt, sched)
                step += 1
                loss_value = float(loss.detach())
                train_curve.append((step, loss_value))
                ctx.progress(step, total, f"step {step}/{total} loss {loss_value:.3f} "
                                          f"val {best:.3f}")
                if step % params.eval_every == 0 or step == total:
                    vl = val_loss()
                    curve.append((step, vl))
                    if vl < best - params.min_delta:
                        best, best_step, best_state, bad_evals = vl, step, lora_state(), 0
                    else:
                        bad_evals += 1
                        if bad_evals >= params.patience:
                            stopped_early = True
                            break
                if step >= total:
                    break
            epoch += 1
        seconds = time.monotonic() - t0
        model.load_state_dict(best_state, strict=False)
        model.eval()

        adapter_dir = ctx.out_dir / "adapter"
        model.save_pretrained(str(adapter_dir))
        ctx.progress(total, total, "converting the adapter to GGUF")
        adapter = lora_to_gguf(adapter_dir, ctx.model.hf_dir, ctx.out_dir / "adapter.gguf")
        result = StageResult(metrics={
            "train_examples": len(tr), "validation_examples": len(va),
            "trainable_parameters": n_trainable, "total_parameters": n_total,
            "steps": step, "planned_steps": total, "stopped_early": stopped_early,
            "initial_val_loss": initial, "best_val_loss": best, "best_step": best_step,
            "val_curve": curve, "train_curve": train_curve[:: max(1, len(train_curve) // 200)],
            "seconds": seconds, "train_tokens_per_s": tokens / seconds if seconds else None,
            "val_perplexity_before": math.exp(initial), "val_perplexity_after": math.exp(best)})

        base_gguf = ctx.model.gguf
        # Serve on the source file only if a node renders chat for it as we trained
        # (no chat template); else on an F16 conversion, which has none.
        if base_gguf is None or has_chat_template(base_gguf):
            base_gguf = hf_to_gguf(ctx.model, ctx.out_dir / "base.f16.gguf")
            base_ref, base_q = ctx.rel(base_gguf), "F16"
        else:
            base_ref, base_q = str(base_gguf), gguf_quantization(base_gguf)
        result.variants.append(Variant(
            name=f"{ctx.stage_id}.lora", format="gguf", path=base_ref,
            quantization=f"{base_q}+LoRA", stage=ctx.stage_id, adapter=ctx.rel(adapter),
            size_bytes=base_gguf.stat().st_size + adapter.stat().st_size))
        if params.merge:
            merged = model.merge_and_unload()
            out = save_model(merged, ctx.model.hf_dir, ctx.out_dir / "model")
            result.model = out
        return result

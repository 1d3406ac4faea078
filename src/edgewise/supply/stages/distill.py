"""The ``distill`` stage: train the working model (the student) to match a teacher's
next-token distributions.

Loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531), per token position ``t`` with teacher logits ``z_T`` and student
logits ``z_S`` over the vocabulary::

    p_T = softmax(z_T / τ),  log q_S = log_softmax(z_S / τ)
    L_KD = τ² · KL(p_T ‖ q_S) = τ² · Σ_v p_T(v) · (log p_T(v) − log q_S(v))
    L    = α · L_KD + (1 − α) · CE(next token, softmax(z_S))

averaged over positions. The temperature ``τ`` > 1 softens both distributions so the
student also learns the teacher's ranking of unlikely tokens ("dark knowledge"); the τ²
factor keeps the gradient scale independent of τ.

**Which KL, and why forward.** Forward KL(p_T‖q_S) is *mode-covering*: the student is
penalised wherever the teacher puts mass, computed exactly over the full vocabulary on
fixed text — one teacher forward per batch, no sampling. Reverse KL(q_S‖p_T) (MiniLLM,
Gu et al. 2024, arXiv:2306.08543) and on-policy/generalised JSD (GKD, Agarwal et al.
2024, arXiv:2306.13649) are mode-seeking and work best on *student-generated* sequences;
generating those every step is far beyond a 2-core CPU budget, and on fixed data their
advantage largely disappears. Logit-level forward KL is also what Minitron (Muralidharan
et al. 2024, arXiv:2407.14679) uses to recover pruned students, which is how this stage
is meant to be used: ``prune`` (layers or channels) → ``distill`` from the unpruned model.

By default the (tied) embedding stays frozen: for a 262k-token vocabulary it is most of
the model and its optimiser state would triple the memory; the transformer blocks learn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, with_config

from edgewise.errors import StageError
from edgewise.supply.data import load_texts
from edgewise.supply.deps import require
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult
from edgewise.supply.training import (
    load_causal_lm,
    lr_lambda,
    optimizer_step,
    pack_texts,
    save_model,
    setup_torch,
)

__all__ = ["Distill", "DistillParams", "kd_loss"]


@with_config(STRICT)
@dataclass
class DistillParams:
    #: Training text (any dataset format).
    dataset: str
    #: The teacher: ``base`` or the id of an earlier stage that produced a model.
    teacher: str = "base"
    temperature: Annotated[float, Field(gt=0, le=20)] = 2.0
    #: Weight of the KD term; ``1 − alpha`` goes to next-token cross-entropy.
    alpha: Annotated[float, Field(ge=0, le=1)] = 1.0
    seq_len: Annotated[int, Field(ge=8, le=8192)] = 128
    #: Training sequences (packed ``seq_len``-token rows) at most.
    samples: Annotated[int, Field(ge=2)] | None = 512
    validation: Annotated[float, Field(gt=0, le=0.5)] = 0.1
    max_steps: Annotated[int, Field(ge=1)] = 200
    batch_size: Annotated[int, Field(ge=1, le=256)] = 4
    lr: Annotated[float, Field(gt=0, lt=1)] = 1e-4
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.05
    eval_every: Annotated[int, Field(ge=1)] = 25
    patience: Annotated[int, Field(ge=1)] = 3
    freeze_embeddings: bool = True


def kd_loss(student_logits: Any, teacher_logits: Any, labels: Any | None, *,
            temperature: float, alpha: float) -> tuple[Any, Any]:
    """(total loss, KL at temperature 1), both means over positions.

    ``student_logits``/``teacher_logits``: ``[B, T, V]`` predicting position ``t + 1``;
    ``labels``: ``[B, T]`` next tokens (or None when ``alpha`` is 1).
    """
    import torch.nn.functional as F

    v = student_logits.size(-1)
    s = student_logits.reshape(-1, v).float()
    t = teacher_logits.reshape(-1, v).float()
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    # KL(p_T || q_S) summed over the vocabulary, averaged over positions ("batchmean").
    kd = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature ** 2
    loss = alpha * kd
    if alpha < 1 and labels is not None:
        loss = loss + (1 - alpha) * F.cross_entropy(s, labels.reshape(-1))
    with_t1 = kd / temperature ** 2 if temperature == 1 else F.kl_div(
        F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    return loss, with_t1.detach()


class Distill(Stage):
    """Knowledge distillation (forward KL on logits) from a teacher into the working model."""

    kind = "distill"
    Params = DistillParams
    dataset_fields = ("dataset",)
    model_fields = ("teacher",)

    def produces_model(self, params: DistillParams) -> bool:
        return True

    def run(self, params: DistillParams, ctx: StageContext) -> StageResult:
        require("torch", "transformers", feature="the distill stage")
        import torch

        if params.teacher not in ctx.models:
            raise StageError(f"teacher {params.teacher!r} is not base or an earlier stage "
                             f"with a model ({', '.join(ctx.models)})")
        setup_torch(ctx.threads, ctx.seed)
        student, tok = load_causal_lm(ctx.model.hf_dir)
        teacher, _ = load_causal_lm(ctx.models[params.teacher].hf_dir)
        if teacher.config.vocab_size != student.config.vocab_size:
            raise StageError("teacher and student must share a vocabulary "
                             f"({teacher.config.vocab_size} vs {student.config.vocab_size})")
        for p in teacher.parameters():
            p.requires_grad_(False)
        ds = ctx.datasets[params.dataset]
        rows = pack_texts(tok, load_texts(ds.path, ds.format), length=params.seq_len,
                          limit=params.samples, seed=ctx.seed)
        if len(rows) < 2:
            raise StageError(f"dataset {params.dataset!r} gives {len(rows)} sequences of "
                             f"{params.seq_len} tokens; need at least 2 (lower seq_len)")
        n_val = max(1, round(len(rows) * params.validation))
        train, val = rows[:-n_val], rows[-n_val:]
        probe = train[:max(1, min(len(train), 16))]   # fixed subset: "KL on training data"
        if params.freeze_embeddings:
            for p in student.get_input_embeddings().parameters():
                p.requires_grad_(False)
            out_emb = student.get_output_embeddings()
            if out_emb is not None:
                for p in out_emb.parameters():
                    p.requires_grad_(False)
        trainable = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=params.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(params.max_steps, params.warmup))

        def mean_kl(seqs: list[list[int]]) -> float:
            student.eval()
            total = 0.0
            with torch.no_grad():
                for i in range(0, len(seqs), params.batch_size):
                    ids = torch.tensor(seqs[i:i + params.batch_size])
                    _, kl = kd_loss(student(input_ids=ids).logits[:, :-1],
                                    teacher(input_ids=ids).logits[:, :-1], None,
                                    temperature=1.0, alpha=1.0)
                    total += float(kl.detach()) * len(ids)
            student.train()
            return total / len(seqs)

        t0 = time.monotonic()
        kl_train_before, kl_val_before = mean_kl(probe), mean_kl(val)
        best, best_step, bad = kl_val_before, 0, 0
        best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        curve = [(0, kl_val_before)]
        losses: list[tuple[int, float]] = []
        step, epoch, stopped = 0, 0, False
        student.train()
        while step < params.max_steps and not stopped:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(
                ctx.seed + epoch)).tolist()
            for i in range(0, len(order), params.batch_size):
                ids = torch.tensor([train[j] for j in order[i:i + params.batch_size]])
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids).logits[:, :-1]
                s_logits = student(input_ids=ids).logits[:, :-1]
                loss, kl = kd_loss(s_logits, t_logits, ids[:, 1:],
                                   temperature=params.temperature, alpha=params.alpha)
                loss.backward()
                optimizer_step(trainable, opt, sched)
                step += 1
                loss_value = float(loss.detach())
                losses.append((step, loss_value))
                ctx.progress(step, params.max_steps, f"step {step} KL {float(kl.detach()):.3f} "
                                                     f"val {best:.3f}")
                if step % params.eval_every == 0 or step == params.max_steps:
                    v = mean_kl(val)
                    curve.append((step, v))
                    if v < best:
                        best, best_step, bad = v, step, 0
                        best_state = {k: t.detach().clone()
                                      for k, t in student.state_dict().items()}
                    else:
                        bad += 1
                        if bad >= params.patience:
                            stopped = True
                            break
                if step >= params.max_steps:
                    break
            epoch += 1
        student.load_state_dict(best_state)
        kl_train_after = mean_kl(probe)
        seconds = time.monotonic() - t0
        out = save_model(student, ctx.model.hf_dir, ctx.out_dir / "model")
        return StageResult(model=out, metrics={
            "teacher": params.teacher, "loss": "forward KL(teacher||student) at temperature "
            f"{params.temperature}, x tau^2, alpha {params.alpha}",
            "train_sequences": len(train), "validation_sequences": len(val),
            "steps": step, "stopped_early": stopped, "best_step": best_step,
            "kl_train_before": kl_train_before, "kl_train_after": kl_train_after,
            "kl_val_before": kl_val_before, "kl_val_after": best, "val_curve": curve,
            "train_curve": losses[:: max(1, len(losses) // 200)], "seconds": seconds,
            "trainable_parameters": sum(p.numel() for p in trainable),
            "student_parameters": sum(p.numel() for p in student.parameters()),
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "kl_unit": "nats per token, temperature 1"})

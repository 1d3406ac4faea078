"""A client's work in a federated round: train the LoRA adapter on this node's data,
starting from the global adapter, and hand back only the adapter.

:class:`LocalTrainer` holds the base model with a LoRA adapter (HF peft, the supply
chain's ``finetune`` recipe: same tokenisation, batches, loss on the completion only,
AdamW, clipped gradients — :mod:`edgewise.supply.training`) for the whole run, so a
round costs only its steps. Per round (:meth:`LocalTrainer.fit`):

1. load the global adapter's tensors into the model (the server's aggregate; at round 0
   the shared initial adapter, :meth:`LocalTrainer.initial`: ``A`` from the run's seed,
   ``B = 0`` — peft's init, so every client starts from the same point);
2. ``steps`` optimizer steps on local batches (seeded by the round) with loss

       L(w) = NLL(w) + (μ / 2) ‖w − w_global‖²                  (FedProx, Li et al. 2020)

   where ``μ = 0`` is plain FedAvg's local SGD; with ``freeze_a`` (FFA-LoRA, see
   :mod:`edgewise.federated.lora`) the ``lora_A`` tensors do not train;
3. return the adapter's tensors (numpy, float32 → float64), the number of training
   examples (the aggregation weight) and the mean training loss.

:meth:`LocalTrainer.evaluate` is the mean NLL per completion token of any adapter on any
examples (held-out data, per node or pooled). Nothing here reads another node's data or
sends anything: the caller (a Flower ``ClientApp``, a simulation, a test) decides what
leaves the node — the adapter only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgewise.errors import AggregationError, ConfigError, MissingDependencyError

__all__ = ["LocalConfig", "LocalResult", "LocalTrainer"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LocalConfig:
    """The local-training part of a federated recipe."""

    r: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 10
    batch_size: int = 8
    lr: float = 5e-4
    max_length: int = 128
    #: FedProx's proximal weight μ (0: FedAvg's local training).
    proximal_mu: float = 0.0
    #: FFA-LoRA: keep ``lora_A`` at the shared init (the default aggregation needs it).
    freeze_a: bool = True
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "steps", "batch_size", "max_length", "threads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"local.{name} {getattr(self, name)!r}: an integer >= 1")
        if not 0 < self.lr < 1:
            raise ConfigError(f"local.lr {self.lr!r}: between 0 and 1 (e.g. 5e-4)")
        if self.proximal_mu < 0:
            raise ConfigError(f"local.proximal_mu {self.proximal_mu!r}: >= 0 (0: FedAvg)")
        if not self.targets:
            raise ConfigError("local.targets: name at least one module to adapt "
                              "(e.g. [q_proj, v_proj])")


@dataclass
class LocalResult:
    adapter: dict[str, Array]
    examples: int
    train_loss: float
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)


def _canonical(name: str) -> str:
    return re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", name)


def _require() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "federated local training needs torch, transformers and peft, from edgewise's "
            "`supply` extra: run `make test` or `.venv/bin/pip install -e '.[supply]'`"
        ) from exc


class LocalTrainer:
    """The base model (a checkpoint folder) with a LoRA adapter, trained per round."""

    def __init__(self, base: Path, cfg: LocalConfig) -> None:
        _require()
        import torch
        from peft import LoraConfig, get_peft_model

        from edgewise.supply.training import load_causal_lm, setup_torch

        self.cfg = cfg
        setup_torch(cfg.threads, cfg.seed)  # the seed fixes the shared initial A
        model, self.tok = load_causal_lm(base)
        lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0,
                          target_modules=list(cfg.targets), task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            try:
                self.model = get_peft_model(model, lcfg)
            except ValueError as exc:  # peft: no module matches the targets
                raise ConfigError(f"local.targets {list(cfg.targets)}: no module of {base} "
                                  "matches; name its linear layers (e.g. q_proj, "
                                  "v_proj)") from exc
        self.pad = (self.tok.pad_token_id if self.tok.pad_token_id is not None
                    else (self.tok.eos_token_id or 0))
        self._names = [k for k in self.model.state_dict() if "lora_" in k]
        if not self._names:
            raise ConfigError(f"local.targets {list(cfg.targets)}: no module of {base} "
                              "matches; name its linear layers (e.g. q_proj, v_proj)")
        self._initial = self.adapter()
        self._torch = torch

    # -- adapter tensors ---------------------------------------------------------------------
    def adapter(self) -> dict[str, Array]:
        """The model's LoRA tensors now (peft's names)."""
        state = self.model.state_dict()
        return {k: state[k].detach().cpu().numpy().astype(np.float64) for k in self._names}

    def initial(self) -> dict[str, Array]:
        """The run's shared starting adapter (A from the seed, B = 0)."""
        return {k: v.copy() for k, v in self._initial.items()}

    def load(self, adapter: Mapping[str, npt.ArrayLike]) -> None:
        """Put ``adapter``'s tensors into the model; AggregationError when it is not this
        model's adapter (names or shapes: a model mismatch between server and client)."""
        torch = self._torch
        state = self.model.state_dict()
        # peft names a factor <module>.lora_A.<adapter>.weight; lora.join_adapter leaves
        # the adapter name out: both are accepted
        canon = {_canonical(k): k for k in self._names}
        given = {_canonical(k): v for k, v in adapter.items()}
        missing = sorted(canon[c] for c in set(canon) - set(given))
        extra = sorted(set(given) - set(canon))
        if missing or extra:
            raise AggregationError(
                "the global adapter does not fit this node's model: "
                + (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}")
                + f" ({len(missing)} missing, {len(extra)} unexpected): the server and this "
                  "client use different base models or LoRA targets")
        tensors = {}
        for c, k in canon.items():
            value = np.asarray(given[c], dtype=np.float32)
            if value.shape != tuple(state[k].shape):
                raise AggregationError(f"global adapter tensor {k} has shape {value.shape}, "
                                       f"this model's is {tuple(state[k].shape)} (another "
                                       "rank or base model)")
            tensors[k] = torch.from_numpy(value)
        self.model.load_state_dict(tensors, strict=False)

    # -- training and evaluation ---------------------------------------------------------------
    def fit(self, adapter: Mapping[str, npt.ArrayLike], examples: Sequence[Any], *,
            round_no: int) -> LocalResult:
        """One round of local training from ``adapter`` (module docstring, steps 1–3)."""
        from edgewise.supply.training import (
            batches,
            completion_nll,
            optimizer_step,
            tokenize_examples,
        )

        torch = self._torch
        cfg = self.cfg
        if not examples:
            raise ConfigError("this node has no training examples for the run")
        self.load(adapter)
        items = tokenize_examples(self.tok, examples, max_length=cfg.max_length, add_eos=True)
        params = []
        for name, p in self.model.named_parameters():
            train = "lora_" in name and not (cfg.freeze_a and "lora_A" in name)
            p.requires_grad_(train)
            if train:
                params.append((name, p))
        trainable = [p for _, p in params]
        anchor = {n: p.detach().clone() for n, p in params} if cfg.proximal_mu else {}
        opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
        self.model.train()
        losses, step, epoch = [], 0, 0
        while step < cfg.steps:
            for ids, mask, labels in batches(items, cfg.batch_size, self.pad, shuffle=True,
                                             seed=cfg.seed * 100_003 + round_no * 101 + epoch):
                s, c = completion_nll(self.model, ids, mask, labels)
                loss = s / max(c, 1)
                if cfg.proximal_mu:  # FedProx: (μ/2)‖w − w_global‖²
                    prox = sum(((p - anchor[n]) ** 2).sum() for n, p in params)
                    loss = loss + 0.5 * cfg.proximal_mu * prox
                loss.backward()
                optimizer_step(trainable, opt, sched)
                losses.append(float(loss.detach()))
                step += 1
                if step >= cfg.steps:
                    break
            epoch += 1
        self.model.eval()
        return LocalResult(adapter=self.adapter(), examples=len(items),
                           train_loss=float(np.mean(losses)), steps=step)

    def evaluate(self, adapter: Mapping[str, npt.ArrayLike], examples: Sequence[Any]
                 ) -> float:
        """Mean NLL per completion token of the model with ``adapter`` on ``examples``."""
        return self.score(adapter, examples)[0]

    def score(self, adapter: Mapping[str, npt.ArrayLike], examples: Sequence[Any]
              ) -> tuple[float, float]:
        """(mean NLL per completion token, exact-match rate) of the model with ``adapter``
        on ``examples``; an example matches when every completion token is the model's
        most likely next token (teacher forcing: one forward pass, no sampling)."""
        from edgewise.supply.training import batches, tokenize_examples

        torch = self._torch
        self.load(adapter)
        items = tokenize_examples(self.tok, examples, max_length=self.cfg.max_length,
                                  add_eos=True)
        self.model.eval()
        nll, n, exact = 0.0, 0, 0
        with torch.no_grad():
            for ids, mask, labels in batches(items, self.cfg.batch_size, self.pad,
                                             shuffle=False, seed=0):
                k = int((labels != -100).sum(dim=1).max())
                logits = self.model(input_ids=ids, attention_mask=mask,
                                    logits_to_keep=k + 1).logits[:, :-1]
                tgt = labels[:, -k:]
                nll += float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100,
                    reduction="sum"))
                n += int((tgt != -100).sum())
                hit = (logits.argmax(-1) == tgt) | (tgt == -100)
                exact += int(hit.all(dim=1).sum())
        return nll / max(n, 1), exact / max(len(items), 1)

"""The ``prune`` stage: unstructured (Wanda, magnitude) and structured (layers, MLP
channels) pruning with a calibration set.

Hand-written because no installed library does it for these models (torch's
``nn.utils.prune`` only applies masks; it has no activation-aware criterion).

**Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
Models", arXiv:2306.11695). For a linear layer ``y = W x`` with ``W [out, in]`` and
calibration inputs ``X [tokens, in]``, the score of a weight is

    S_ij = |W_ij| · ‖X_:,j‖₂

(its magnitude times the L2 norm of the input feature it multiplies, over all
calibration tokens), and within each output row ``i`` the ``sparsity × in`` weights with
the lowest scores are set to zero (per-output comparison groups, the paper's best
setting). We collect ``‖X_j‖₂`` for every linear layer in one forward pass of the dense
model (the paper feeds each block the outputs of the already-pruned blocks; one pass is
the cheap variant, ~2× faster on CPU). ``magnitude`` is the baseline with ``S = |W|``.
The checkpoint stays dense (zeros are stored): GGUF and ONNX have no sparse format, so
unstructured sparsity changes quality, not size or speed, until a sparse kernel exists.

**Layers** (ShortGPT, Men et al. 2024, arXiv:2403.03853). The block influence of decoder
layer ``l`` is ``BI_l = 1 − E_t[cos(h_l,t, h_l+1,t)]`` — how much the layer changes the
hidden state of token ``t`` — averaged over calibration tokens; the
``round(sparsity × L)`` layers with the lowest BI are removed. The model gets smaller and
faster by that fraction of its non-embedding weights.

**Channels** (structured MLP width pruning, as in LLM-Pruner / Minitron's width axis).
The importance of intermediate channel ``c`` of layer ``l`` is
``‖a_c‖₂ · ‖W_down[:, c]‖₂``, where ``a = act(gate(x)) ⊙ up(x)`` is the input of
``down_proj`` over the calibration tokens; every layer keeps its top ``k`` channels with
``k = (1 − sparsity) × intermediate`` rounded down to ``multiple_of`` (the same for all
layers, as the configs need; 256 keeps llama.cpp's k-quants applicable). ``gate``/``up``
lose rows, ``down`` loses columns.

Structured pruning loses more quality than unstructured at the same fraction; follow it
with ``distill`` (teacher: the unpruned model) to recover — that is Minitron's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, with_config

from edgewise.errors import StageError
from edgewise.supply.data import load_texts
from edgewise.supply.deps import require
from edgewise.supply.stage import STRICT, Stage, StageContext, StageResult
from edgewise.supply.training import load_causal_lm, pack_texts, save_model, setup_torch
from edgewise.supply.vocab import keep_ids, read_vocab, write_keep

__all__ = ["Prune", "PruneParams", "decoder_layers", "wanda_mask"]


@with_config(STRICT)
@dataclass
class PruneParams:
    method: Literal["wanda", "magnitude", "layers", "channels", "vocab"]
    #: Fraction removed: of each row's weights (wanda, magnitude), of the decoder layers
    #: (layers), of each MLP's intermediate channels (channels). Not used by ``vocab``
    #: (it keeps what the calibration text needs; see ``edgewise.supply.vocab``).
    sparsity: Annotated[float, Field(gt=0, lt=1)] | None = None
    #: Calibration text (any dataset format); required except for ``magnitude``.
    calibration: str | None = None
    #: Calibration sequences and their length in tokens.
    samples: Annotated[int, Field(ge=1, le=4096)] = 64
    seq_len: Annotated[int, Field(ge=8, le=8192)] = 128
    #: ``channels``: keep a multiple of this many channels.
    multiple_of: Annotated[int, Field(ge=1)] = 256

    def __post_init__(self) -> None:
        if self.method != "magnitude" and self.calibration is None:
            raise ValueError(f"method {self.method!r} needs a `calibration` dataset")
        if self.method != "vocab" and self.sparsity is None:
            raise ValueError(f"method {self.method!r} needs `sparsity` (a fraction in (0, 1))")

    @property
    def fraction(self) -> float:
        """``sparsity`` for the methods that require it (checked above)."""
        return float(self.sparsity or 0.0)


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of a causal LM (Llama/Gemma/Qwen shape)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.layers; pruning supports "
                         "Llama-style decoders (Llama, Gemma, Qwen, SmolLM)")
    return layers


def wanda_mask(weight: Any, act_norm: Any, sparsity: float) -> Any:
    """Boolean mask of the weights to zero: per row, the lowest ``|W| · ‖X_j‖`` scores.

    ``weight [out, in]``, ``act_norm [in]`` (use ones for magnitude pruning).
    """
    import torch

    score = weight.abs() * act_norm.unsqueeze(0)          # [out, in]
    k = int(weight.shape[1] * sparsity)                    # weights removed per row
    mask = torch.zeros_like(weight, dtype=torch.bool)
    if k:
        idx = torch.topk(score, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, True)
    return mask


def _linears(layers: Any) -> dict[str, Any]:
    import torch

    return {name: mod for name, mod in layers.named_modules()
            if isinstance(mod, torch.nn.Linear)}


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, tuple) else x


class Prune(Stage):
    """Remove weights (unstructured) or layers / MLP channels (structured)."""

    kind = "prune"
    Params = PruneParams
    dataset_fields = ("calibration",)

    def produces_model(self, params: PruneParams) -> bool:
        return True

    def run(self, params: PruneParams, ctx: StageContext) -> StageResult:
        require("torch", "transformers", feature="the prune stage")
        import torch

        setup_torch(ctx.threads, ctx.seed)
        model, tok = load_causal_lm(ctx.model.hf_dir)
        rows: list[list[int]] = []
        if params.method == "vocab":
            pass  # tokenizes the whole calibration text itself, with llama.cpp
        elif params.calibration is not None:
            ds = ctx.datasets[params.calibration]
            rows = pack_texts(tok, load_texts(ds.path, ds.format), length=params.seq_len,
                              limit=params.samples, seed=ctx.seed)
            if not rows:
                raise ValueError(f"calibration set {params.calibration!r} has fewer than "
                                 f"{params.seq_len} tokens; lower seq_len or add text")
        before = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            method = getattr(self, f"_{params.method}")
            metrics: dict[str, Any] = method(model, rows, params, ctx)
        metrics.update(parameters_before=before,
                       parameters_after=sum(p.numel() for p in model.parameters()),
                       calibration_sequences=len(rows), seq_len=params.seq_len)
        out = save_model(model, ctx.model.hf_dir, ctx.out_dir / "model")
        if params.method == "vocab":
            write_keep(out, metrics.pop("_keep"), metrics.pop("_info"))
        return StageResult(model=out, metrics=metrics)

    # -- calibration ------------------------------------------------------------------
    @staticmethod
    def _forward_all(model: Any, rows: list[list[int]], ctx: StageContext, note: str) -> None:
        import torch

        for i, row in enumerate(rows):
            ctx.progress(i, len(rows), note)
            model(input_ids=torch.tensor([row]), use_cache=False)

    # -- unstructured -----------------------------------------------------------------
    def _wanda(self, model: Any, rows: list[list[int]], params: PruneParams,
               ctx: StageContext) -> dict[str, Any]:
        import torch

        linears = _linears(decoder_layers(model))
        sq: dict[str, Any] = {n: torch.zeros(m.in_features, dtype=torch.float64)
                              for n, m in linears.items()}

        def hook(name: str) -> Any:
            def f(_mod: Any, inputs: Any) -> None:
                x = _first(inputs).reshape(-1, inputs[0].shape[-1]).double()
                sq[name] += (x * x).sum(0)           # Σ_t x_tj², per input feature j
            return f

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in linears.items()]
        try:
            self._forward_all(model, rows, ctx, "collecting activation norms")
        finally:
            for h in handles:
                h.remove()
        return self._apply_masks(linears, {n: v.sqrt().float() for n, v in sq.items()},
                                 params.fraction)

    def _magnitude(self, model: Any, rows: list[list[int]], params: PruneParams,
                   ctx: StageContext) -> dict[str, Any]:
        import torch

        linears = _linears(decoder_layers(model))
        return self._apply_masks(linears, {n: torch.ones(m.in_features)
                                           for n, m in linears.items()}, params.fraction)

    @staticmethod
    def _apply_masks(linears: dict[str, Any], norms: dict[str, Any],
                     sparsity: float) -> dict[str, Any]:
        zeros = total = 0
        for name, mod in linears.items():
            mask = wanda_mask(mod.weight.data, norms[name], sparsity)
            mod.weight.data[mask] = 0.0
            zeros += int((mod.weight.data == 0).sum())
            total += mod.weight.numel()
        return {"sparsity_target": sparsity, "sparsity_achieved": zeros / max(total, 1),
                "pruned_linear_layers": len(linears), "zero_weights": zeros}

    # -- structured -------------------------------------------------------------------
    def _vocab(self, model: Any, rows: list[list[int]], params: PruneParams,
               ctx: StageContext) -> dict[str, Any]:
        """Keep the embedding rows of the tokens the calibration text needs (vocab.py)."""
        import llama_cpp
        import torch

        source = ctx.model.vocab_gguf
        if source is None:
            raise StageError("vocabulary pruning needs a model that came from a GGUF file "
                             "(its vocabulary is copied from there); this one came from a "
                             "Hugging Face checkpoint")
        info = read_vocab(source)
        assert params.calibration is not None
        ds = ctx.datasets[params.calibration]
        texts = load_texts(ds.path, ds.format)
        # The ids llama.cpp itself produces: the tokenizer that will serve the model.
        llm = llama_cpp.Llama(str(source), vocab_only=True, verbose=False)
        used: set[int] = set()
        try:
            lines = [ln for t in texts for ln in t.splitlines() if ln.strip()]
            for i, line in enumerate(lines):
                if i % 2000 == 0:
                    ctx.progress(i, len(lines), "tokenizing the calibration text")
                used.update(llm.tokenize(line.encode(), add_bos=False, special=False))
        finally:
            llm.close()
        keep = keep_ids(info, used)
        idx = torch.tensor(keep)
        emb = model.get_input_embeddings()
        old_rows = emb.weight.shape[0]
        if old_rows != len(info.tokens):
            raise StageError(f"the embedding has {old_rows} rows but {source.name} has "
                             f"{len(info.tokens)} tokens; cannot map them")
        out_emb = model.get_output_embeddings()
        tied = out_emb is not None and out_emb.weight is emb.weight
        emb.weight = torch.nn.Parameter(emb.weight.data[idx].clone())
        emb.num_embeddings = len(keep)
        if out_emb is not None:
            if tied:
                out_emb.weight = emb.weight
            else:
                out_emb.weight = torch.nn.Parameter(out_emb.weight.data[idx].clone())
            out_emb.out_features = len(keep)
        model.config.vocab_size = len(keep)
        return {"vocab_before": len(info.tokens), "vocab_after": len(keep),
                "calibration_tokens_distinct": len(used), "tokenizer": info.model,
                "_keep": keep, "_info": info}

    def _layers(self, model: Any, rows: list[list[int]], params: PruneParams,
                ctx: StageContext) -> dict[str, Any]:
        import torch

        layers = decoder_layers(model)
        n = len(layers)
        sims = torch.zeros(n, dtype=torch.float64)
        count = 0

        def hook(i: int) -> Any:
            def f(_mod: Any, args: Any, kwargs: Any, output: Any) -> None:
                h_in = (args[0] if args else kwargs["hidden_states"]).flatten(0, -2)
                h_out = _first(output).flatten(0, -2)
                sims[i] += torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1).double().sum()
            return f

        handles = [layer.register_forward_hook(hook(i), with_kwargs=True)
                   for i, layer in enumerate(layers)]
        try:
            for i, row in enumerate(rows):
                ctx.progress(i, len(rows), "measuring block influence")
                model(input_ids=torch.tensor([row]), use_cache=False)
                count += len(row)
        finally:
            for h in handles:
                h.remove()
        influence = (1 - sims / max(count, 1)).tolist()      # BI_l = 1 - E[cos]
        drop = max(1, round(params.fraction * n))
        if drop >= n:
            raise ValueError(f"sparsity {params.fraction} would remove all {n} layers")
        removed = sorted(sorted(range(n), key=lambda i: influence[i])[:drop])
        keep = [i for i in range(n) if i not in removed]
        model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
        for new_idx, layer in enumerate(model.model.layers):
            attn = getattr(layer, "self_attn", None)
            if attn is not None and hasattr(attn, "layer_idx"):
                attn.layer_idx = new_idx   # KV-cache slot
        cfg = model.config
        cfg.num_hidden_layers = len(keep)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [cfg.layer_types[i] for i in keep]
        return {"block_influence": influence, "removed_layers": removed,
                "layers_before": n, "layers_after": len(keep)}

    def _channels(self, model: Any, rows: list[list[int]], params: PruneParams,
                  ctx: StageContext) -> dict[str, Any]:
        import torch

        layers = decoder_layers(model)
        mlps = [layer.mlp for layer in layers]
        for m in mlps:
            if not all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj")):
                raise ValueError("channel pruning needs gated MLPs (gate_proj, up_proj, "
                                 "down_proj)")
        width = mlps[0].down_proj.in_features
        sq = [torch.zeros(width, dtype=torch.float64) for _ in mlps]

        def hook(i: int) -> Any:
            def f(_mod: Any, inputs: Any) -> None:
                a = _first(inputs).reshape(-1, width).double()
                sq[i] += (a * a).sum(0)               # Σ_t a_tc² for each channel c
            return f

        handles = [m.down_proj.register_forward_pre_hook(hook(i)) for i, m in enumerate(mlps)]
        try:
            self._forward_all(model, rows, ctx, "collecting channel activations")
        finally:
            for h in handles:
                h.remove()
        mult = min(params.multiple_of, width)
        keep_n = max(mult, int(width * (1 - params.fraction)) // mult * mult)
        for i, m in enumerate(mlps):
            importance = sq[i].sqrt().float() * m.down_proj.weight.norm(dim=0)
            keep = torch.topk(importance, keep_n).indices.sort().values
            for name in ("gate_proj", "up_proj"):
                old = getattr(m, name)
                new = torch.nn.Linear(old.in_features, keep_n, bias=old.bias is not None)
                new.weight.data = old.weight.data[keep].clone()
                if old.bias is not None:
                    new.bias.data = old.bias.data[keep].clone()
                setattr(m, name, new)
            old = m.down_proj
            new = torch.nn.Linear(keep_n, old.out_features, bias=old.bias is not None)
            new.weight.data = old.weight.data[:, keep].clone()
            if old.bias is not None:
                new.bias.data = old.bias.data.clone()
            m.down_proj = new
            if hasattr(m, "intermediate_size"):
                m.intermediate_size = keep_n
        model.config.intermediate_size = keep_n
        return {"intermediate_before": width, "intermediate_after": keep_n,
                "channel_sparsity_achieved": 1 - keep_n / width}

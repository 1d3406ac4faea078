"""LoRA-aware aggregation of client adapters.

A LoRA adapter on a frozen weight ``W`` (``out × in``) adds ``ΔW = s · B A`` with
``B: out × r``, ``A: r × in`` and ``s = α / r`` (Hu et al. 2021, eq. 3). A federated
round has ``n`` clients' adapters ``(A_i, B_i)`` and weights ``p_i`` (their example
counts, normalised). What the round should produce is the weighted mean of the *updates*:

    ΔW* = Σ p_i B_i A_i                                                        (1)

FedAvg on the tensors averages A and B separately, and

    (Σ p_i B_i)(Σ p_j A_j) = Σ_i Σ_j p_i p_j B_i A_j  ≠  (1)

— the cross terms ``B_i A_j`` (i ≠ j) are products of factors trained on different data,
an update nobody computed. The error grows as clients drift apart (non-IID data, more
local steps). Two sound choices, registered by name (:data:`AGGREGATORS`):

``ffa`` (default) — FFA-LoRA (Sun, Li, Ding, Wu: "Improving LoRA in Privacy-preserving
    Federated Learning", ICLR 2024): every client starts from the same ``A`` (drawn from
    the run's seed) and keeps it frozen; only ``B`` trains. Then ``(1)`` is
    ``(Σ p_i B_i) A`` exactly: averaging ``B`` *is* averaging the updates, at no server
    cost, with half the parameters to send and to noise under differential privacy (the
    reason the paper proposes it). The price is expressiveness: ``A`` stays random.
``product`` — average the products exactly, ``(1)``, then factor the result back to rank
    ``r`` by a truncated SVD ``ΔW* ≈ U_r Σ_r V_rᵀ``, ``B = U_r Σ_r^½``, ``A = Σ_r^½ V_rᵀ``:
    the best rank-``r`` approximation in Frobenius norm (Eckart–Young), exact whenever
    ``rank(ΔW*) ≤ r`` — which is not the case in general (a sum of ``n`` rank-``r``
    matrices has rank up to ``n r``). Both factors train; the server pays an SVD of an
    ``out × in`` matrix per adapted module per round, and the clients all restart from the
    same re-factored ``(A, B)``.
``naive`` — ``A`` and ``B`` averaged separately: kept to measure what the other two fix
    (:func:`product_error`), never a default.

Adapters are plain mappings ``module -> LoraPair`` of numpy arrays (what a client's peft
state dict holds, :func:`split_adapter` / :func:`join_adapter`), so the same code runs
in a Flower ``ServerApp``, a test, or a benchmark. Written here because Flower's
strategies aggregate flat arrays and know nothing of LoRA's factorisation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgewise.errors import AggregationError

__all__ = ["AGGREGATORS", "DEFAULT_AGGREGATOR", "Adapter", "LoraPair", "aggregate",
           "join_adapter", "product_error", "register_aggregator", "split_adapter"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LoraPair:
    """One adapted module's factors: ``a`` is ``r × in``, ``b`` is ``out × r``."""

    a: Array
    b: Array

    def __post_init__(self) -> None:
        if self.a.ndim != 2 or self.b.ndim != 2 or self.b.shape[1] != self.a.shape[0]:
            raise AggregationError(
                f"a LoRA pair needs A (r × in) and B (out × r) with the same r; got A "
                f"{self.a.shape} and B {self.b.shape}")

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    def delta(self) -> Array:
        """``B A`` (``out × in``), the update before the ``α / r`` scale."""
        return self.b @ self.a


Adapter = Mapping[str, LoraPair]
#: ``aggregate(adapters, weights) -> adapter``; weights are positive and sum to 1.
Aggregator = Callable[[Sequence[Adapter], Sequence[float]], dict[str, LoraPair]]

_PEFT = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.[^.]+)?\.weight$")


def split_adapter(state: Mapping[str, npt.ArrayLike]) -> dict[str, LoraPair]:
    """A peft LoRA state dict (``<module>.lora_A[.<name>].weight`` and ``lora_B``) as
    pairs per module. AggregationError for a module with one factor only, or a key that
    is not a LoRA factor."""
    halves: dict[str, dict[str, Array]] = {}
    for key, value in state.items():
        m = _PEFT.match(key)
        if m is None:
            raise AggregationError(f"adapter tensor {key!r} is not a LoRA factor "
                                   "(<module>.lora_A.weight / <module>.lora_B.weight)")
        halves.setdefault(m["module"], {})[m["factor"]] = np.asarray(value, dtype=np.float64)
    pairs = {}
    for module, h in sorted(halves.items()):
        if set(h) != {"A", "B"}:
            raise AggregationError(f"adapter module {module!r} has lora_{''.join(h)} but "
                                   "not both lora_A and lora_B")
        pairs[module] = LoraPair(a=h["A"], b=h["B"])
    return pairs


def join_adapter(pairs: Adapter) -> dict[str, Array]:
    """The inverse of :func:`split_adapter` (peft's default key names)."""
    out: dict[str, Array] = {}
    for module, p in pairs.items():
        out[f"{module}.lora_A.weight"] = p.a
        out[f"{module}.lora_B.weight"] = p.b
    return out


def _wsum(p: Sequence[float], arrays: Sequence[Array]) -> Array:
    """``Σ p_i x_i``."""
    out = np.zeros_like(arrays[0])
    for pi, x in zip(p, arrays, strict=True):
        out += pi * x
    return out


def _check(adapters: Sequence[Adapter], weights: Sequence[float]) -> list[float]:
    if not adapters:
        raise AggregationError("no client adapters to aggregate in this round")
    if len(weights) != len(adapters):
        raise AggregationError(f"{len(adapters)} adapters but {len(weights)} weights")
    w = [float(x) for x in weights]
    if any(not np.isfinite(x) or x <= 0 for x in w):
        raise AggregationError(f"client weights must be positive numbers, got {w}")
    total = sum(w)
    modules = set(adapters[0])
    for i, ad in enumerate(adapters[1:], start=1):
        if set(ad) != modules:
            missing = sorted(modules ^ set(ad))[:3]
            raise AggregationError(f"client {i}'s adapter covers other modules than client "
                                   f"0's ({', '.join(missing)}…): a model mismatch")
        for m in modules:
            if ad[m].a.shape != adapters[0][m].a.shape or \
                    ad[m].b.shape != adapters[0][m].b.shape:
                raise AggregationError(
                    f"client {i}'s {m} has A {ad[m].a.shape}, B {ad[m].b.shape}; client 0's "
                    f"A {adapters[0][m].a.shape}, B {adapters[0][m].b.shape}: another rank "
                    "or base model")
    return [x / total for x in w]


def naive(adapters: Sequence[Adapter], weights: Sequence[float]) -> dict[str, LoraPair]:
    """FedAvg on the factors: ``(Σ p_i A_i, Σ p_i B_i)`` (module docstring: biased)."""
    p = _check(adapters, weights)
    return {m: LoraPair(a=_wsum(p, [ad[m].a for ad in adapters]),
                        b=_wsum(p, [ad[m].b for ad in adapters])) for m in adapters[0]}


def ffa(adapters: Sequence[Adapter], weights: Sequence[float], *,
        atol: float = 1e-6) -> dict[str, LoraPair]:
    """FFA-LoRA: the shared frozen ``A`` and ``Σ p_i B_i`` — exactly ``(1)``.
    AggregationError when a client's ``A`` is not the shared one (it trained A, or
    started from another seed)."""
    p = _check(adapters, weights)
    out = {}
    for m in adapters[0]:
        a = adapters[0][m].a
        for i, ad in enumerate(adapters[1:], start=1):
            if not np.allclose(ad[m].a, a, rtol=0, atol=atol):
                diff = float(np.max(np.abs(ad[m].a - a)))
                raise AggregationError(
                    f"client {i}'s lora_A of {m} differs from client 0's (max |Δ| "
                    f"{diff:.3g}): FFA-LoRA needs A frozen at the run's shared init; use "
                    "aggregation 'product' for clients that train A")
        out[m] = LoraPair(a=a.copy(), b=_wsum(p, [ad[m].b for ad in adapters]))
    return out


def product(adapters: Sequence[Adapter], weights: Sequence[float]) -> dict[str, LoraPair]:
    """The exact mean of the products ``Σ p_i B_i A_i``, re-factored to rank ``r`` by a
    truncated SVD (module docstring)."""
    p = _check(adapters, weights)
    out = {}
    for m in adapters[0]:
        r = adapters[0][m].rank
        mean = _wsum(p, [ad[m].delta() for ad in adapters])
        u, s, vt = np.linalg.svd(mean, full_matrices=False)  # mean = u diag(s) vt
        root = np.sqrt(s[:r])
        # B = U_r Σ_r^½ (out × r), A = Σ_r^½ V_rᵀ (r × in): B A = U_r Σ_r V_rᵀ
        out[m] = LoraPair(a=root[:, None] * vt[:r], b=u[:, :r] * root[None, :])
    return out


AGGREGATORS: dict[str, Aggregator] = {}
DEFAULT_AGGREGATOR = "ffa"


def register_aggregator(name: str, fn: Aggregator) -> None:
    """Add an aggregation by name; a name already taken is refused."""
    if name in AGGREGATORS:
        raise ValueError(f"LoRA aggregation {name!r} is already registered")
    AGGREGATORS[name] = fn


for _name, _fn in (("ffa", ffa), ("product", product), ("naive", naive)):
    register_aggregator(_name, _fn)


def aggregate(name: str, adapters: Sequence[Adapter],
              weights: Sequence[float]) -> dict[str, LoraPair]:
    """Aggregate with the registered ``name`` (AggregationError for an unknown one)."""
    fn = AGGREGATORS.get(name)
    if fn is None:
        raise AggregationError(f"unknown LoRA aggregation {name!r}; choose one of "
                               f"{', '.join(sorted(AGGREGATORS))}")
    return fn(adapters, weights)


def product_error(adapters: Sequence[Adapter], weights: Sequence[float],
                  result: Adapter) -> float:
    """How far ``result`` is from the mean of the updates ``(1)``: the relative Frobenius
    error ``‖Σ_m (B A − ΔW*_m)‖ / ‖ΔW*‖`` over all modules (0: exact)."""
    p = _check(adapters, weights)
    num = den = 0.0
    for m in adapters[0]:
        exact = _wsum(p, [ad[m].delta() for ad in adapters])
        num += float(np.sum((result[m].delta() - exact) ** 2))
        den += float(np.sum(exact ** 2))
    return float(np.sqrt(num / den)) if den > 0 else 0.0

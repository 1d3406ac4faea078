"""LoRA-aware aggregation: averaging A and B separately is measurably not averaging the
updates B·A; FFA-LoRA (shared frozen A) is exact; the product aggregation is exact when
the mean update fits the rank and otherwise the best rank-r approximation."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import AggregationError
from edgewise.federated.lora import (
    AGGREGATORS,
    DEFAULT_AGGREGATOR,
    LoraPair,
    aggregate,
    join_adapter,
    product_error,
    register_aggregator,
    split_adapter,
)

OUT, IN, R = 24, 16, 4


def _clients(n: int, *, shared_a: bool, seed: int = 0) -> list[dict[str, LoraPair]]:
    """``n`` clients' adapters on two modules, as after local training from a common
    start: B moved from zero, A shared (FFA-LoRA) or trained too."""
    rng = np.random.default_rng(seed)
    a0 = {m: rng.normal(0, 1 / np.sqrt(IN), (R, IN)) for m in ("q_proj", "v_proj")}
    out = []
    for _ in range(n):
        out.append({m: LoraPair(a=a0[m] if shared_a else a0[m] + rng.normal(0, 0.3, (R, IN)),
                                b=rng.normal(0, 0.1, (OUT, R))) for m in a0})
    return out


def test_the_default_is_ffa_and_the_registry_refuses_a_taken_name() -> None:
    assert DEFAULT_AGGREGATOR == "ffa" and {"ffa", "product", "naive"} <= set(AGGREGATORS)
    with pytest.raises(ValueError, match="already registered"):
        register_aggregator("ffa", AGGREGATORS["naive"])
    with pytest.raises(AggregationError, match="unknown LoRA aggregation 'fedsvd'"):
        aggregate("fedsvd", _clients(2, shared_a=True), [1, 1])


def test_averaging_a_and_b_separately_is_not_averaging_the_updates() -> None:
    clients, w = _clients(4, shared_a=False), [10, 20, 30, 40]
    naive = aggregate("naive", clients, w)
    assert product_error(clients, w, naive) > 0.2  # the cross terms B_i A_j
    # with a shared A the naive mean happens to be exact — that is FFA-LoRA's point
    shared = _clients(4, shared_a=True)
    assert product_error(shared, w, aggregate("naive", shared, w)) < 1e-12


def test_ffa_is_exact_and_refuses_clients_that_trained_a() -> None:
    clients, w = _clients(5, shared_a=True, seed=1), [1, 2, 3, 4, 5]
    got = aggregate("ffa", clients, w)
    assert product_error(clients, w, got) < 1e-12
    np.testing.assert_array_equal(got["q_proj"].a, clients[0]["q_proj"].a)  # A stays put
    p = np.array(w) / sum(w)
    mean_b = sum(pi * c["v_proj"].b for pi, c in zip(p, clients, strict=True))
    np.testing.assert_allclose(got["v_proj"].b, mean_b)
    with pytest.raises(AggregationError, match="client 1's lora_A of q_proj differs"):
        aggregate("ffa", _clients(2, shared_a=False), [1, 1])


def test_product_is_exact_within_the_rank_and_else_the_best_rank_r() -> None:
    shared, w = _clients(3, shared_a=True, seed=2), [3, 1, 1]
    assert product_error(shared, w, aggregate("product", shared, w)) < 1e-10
    clients = _clients(3, shared_a=False, seed=3)  # the mean update has rank up to 3r
    got = aggregate("product", clients, w)
    err = product_error(clients, w, got)
    naive = product_error(clients, w, aggregate("naive", clients, w))
    assert 0 < err < naive
    # Eckart–Young: the error is exactly the energy of the singular values beyond r
    p = np.array(w) / sum(w)
    tail = total = 0.0
    for m in ("q_proj", "v_proj"):
        mean = sum(pi * (c[m].b @ c[m].a) for pi, c in zip(p, clients, strict=True))
        s = np.linalg.svd(mean, compute_uv=False)
        tail += float(np.sum(s[R:] ** 2))
        total += float(np.sum(s ** 2))
    assert err == pytest.approx(np.sqrt(tail / total), rel=1e-9)
    assert got["q_proj"].a.shape == (R, IN) and got["q_proj"].b.shape == (OUT, R)


def test_peft_state_dicts_split_and_join() -> None:
    rng = np.random.default_rng(4)
    layer = "base_model.model.layers.0.self_attn"
    state = {
        f"{layer}.q_proj.lora_A.default.weight": rng.normal(size=(R, IN)),
        f"{layer}.q_proj.lora_B.default.weight": rng.normal(size=(OUT, R)),
        f"{layer}.v_proj.lora_A.weight": rng.normal(size=(R, IN)),
        f"{layer}.v_proj.lora_B.weight": rng.normal(size=(OUT, R)),
    }
    pairs = split_adapter(state)
    assert sorted(pairs) == ["base_model.model.layers.0.self_attn.q_proj",
                             "base_model.model.layers.0.self_attn.v_proj"]
    joined = join_adapter(pairs)
    assert len(joined) == 4
    np.testing.assert_array_equal(
        joined["base_model.model.layers.0.self_attn.q_proj.lora_A.weight"],
        state["base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight"])
    with pytest.raises(AggregationError, match="has lora_A but not both"):
        split_adapter({"m.lora_A.weight": np.zeros((R, IN))})
    with pytest.raises(AggregationError, match="is not a LoRA factor"):
        split_adapter({"m.weight": np.zeros((R, IN))})


def test_mismatched_clients_are_refused_with_who_and_what() -> None:
    a, b = _clients(2, shared_a=True)
    with pytest.raises(AggregationError, match="no client adapters"):
        aggregate("ffa", [], [])
    with pytest.raises(AggregationError, match="positive numbers"):
        aggregate("ffa", [a, b], [1, 0])
    wrong_rank = {**b, "q_proj": LoraPair(a=np.zeros((R + 1, IN)), b=np.zeros((OUT, R + 1)))}
    with pytest.raises(AggregationError, match="client 1's q_proj has A \\(5, 16\\)"):
        aggregate("product", [a, wrong_rank], [1, 1])
    other_model = {"k_proj": b["q_proj"]}
    with pytest.raises(AggregationError, match="other modules than client 0's"):
        aggregate("naive", [a, other_model], [1, 1])
    with pytest.raises(AggregationError, match="same r"):
        LoraPair(a=np.zeros((R, IN)), b=np.zeros((OUT, R + 1)))

"""A client's local round on a tiny Llama built in the test: only the adapter changes
(and with FFA-LoRA only its B), FedProx keeps it nearer the global adapter, a federated
average of two nodes' adapters learns what both nodes' data teach, and an adapter of
another model is refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import AggregationError, ConfigError
from edgewise.federated.local import LocalConfig, LocalTrainer
from edgewise.federated.lora import aggregate, join_adapter, split_adapter
from edgewise.supply.data import Example
from tiny_models import COLOURS, build_tiny_llama

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", train_steps=20)


def _examples(things: list[str], n: int = 24) -> list[Example]:
    return [Example(prompt=f"what colour is {things[i % len(things)]}? ",
                    completion=COLOURS[things[i % len(things)]]) for i in range(n)]


def _dist(a: dict[str, np.ndarray], b: dict[str, np.ndarray], part: str) -> float:
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a if part in k)))


def test_a_round_trains_b_only_and_fedprox_stays_nearer(base: Path) -> None:
    t = LocalTrainer(base, LocalConfig(r=4, alpha=8, steps=8, batch_size=8, lr=5e-3))
    start = t.initial()
    assert all(np.all(v == 0) for k, v in start.items() if "lora_B" in k)  # peft's init
    res = t.fit(start, _examples(["apple", "sky"]), round_no=0)
    assert res.examples == 24 and res.steps == 8 and np.isfinite(res.train_loss)
    assert _dist(res.adapter, start, "lora_A") == 0.0  # FFA-LoRA: A frozen
    free = _dist(res.adapter, start, "lora_B")
    assert free > 0
    prox = LocalTrainer(base, LocalConfig(r=4, alpha=8, steps=8, batch_size=8, lr=5e-3,
                                          proximal_mu=50.0))
    held = prox.fit(start, _examples(["apple", "sky"]), round_no=0)
    assert 0 < _dist(held.adapter, start, "lora_B") < free
    both = LocalTrainer(base, LocalConfig(r=4, alpha=8, steps=4, freeze_a=False))
    assert _dist(both.fit(start, _examples(["apple"]), round_no=0).adapter, start,
                 "lora_A") > 0


def test_averaging_two_nodes_learns_what_both_teach(base: Path) -> None:
    t = LocalTrainer(base, LocalConfig(r=4, alpha=8, steps=15, batch_size=8, lr=1e-2))
    node_a, node_b = _examples(["apple", "sky"]), _examples(["grass", "snow"])
    start = t.initial()
    ra = t.fit(start, node_a, round_no=0)
    rb = t.fit(start, node_b, round_no=0)
    avg = join_adapter(aggregate("ffa", [split_adapter(ra.adapter), split_adapter(rb.adapter)],
                                 [ra.examples, rb.examples]))

    def loss(adapter: dict[str, np.ndarray], data: list[Example]) -> float:
        return t.evaluate(adapter, data[:8])

    # each node alone learns its own colours, not the other's
    assert loss(ra.adapter, node_a) < loss(start, node_a) - 0.5
    assert loss(ra.adapter, node_b) > loss(rb.adapter, node_b)
    # the average has learnt from both: better than the start on each node's data, and
    # better on each node's data than the other node's adapter alone
    for data, other in ((node_a, rb.adapter), (node_b, ra.adapter)):
        assert loss(avg, data) < loss(start, data) - 0.1
        assert loss(avg, data) < loss(other, data)


def test_another_models_adapter_and_bad_settings_are_refused(base: Path) -> None:
    t = LocalTrainer(base, LocalConfig(r=4, alpha=8, steps=1))
    start = t.initial()
    wrong = {k: np.zeros((8, 8)) if "lora_A" in k else v for k, v in start.items()}
    with pytest.raises(AggregationError, match=r"has shape \(8, 8\).*another rank or base"):
        t.load(wrong)
    with pytest.raises(AggregationError, match="does not fit this node's model: missing"):
        t.load(dict(list(start.items())[1:]))
    with pytest.raises(ConfigError, match="no training examples"):
        t.fit(start, [], round_no=0)
    with pytest.raises(ConfigError, match=re.escape("local.lr 2")):
        LocalConfig(lr=2)
    with pytest.raises(ConfigError, match=r"no module of .* matches"):
        LocalTrainer(base, LocalConfig(targets=("nonexistent_proj",)))

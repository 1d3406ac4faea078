"""Simulated nodes' data: one pooled JSONL file split into ``N`` non-IID partitions.

Only simulations use this (``edgewise federate run --simulate N``); a deployed node reads
its own file and nothing else. Three splits, all seeded by the recipe's seed:

``iid``        a shuffle cut into ``N`` near-equal parts (the easy case, for contrast);
``key``        one node per value of a JSON field (e.g. Shakespeare's ``speaker``): the
               ``N`` values with the most examples, ties broken by the value;
``dirichlet``  for each label (a JSON field), its examples are dealt to the nodes in
               proportions drawn from ``Dir(α·1_N)`` (Hsu, Qi, Brown 2019): small ``α``
               gives each node a few labels, large ``α`` approaches IID. Redrawn (up to
               100 times) until every node has at least two examples.

Then each node's examples are split into training and held-out data (``data.holdout``),
the held-out part being what federated evaluation and the benchmarks score on. Written
here because Flower Datasets partitions Hugging Face datasets, not a node's JSONL files.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.errors import DatasetError
from edgewise.supply.data import Example, load_examples

__all__ = ["NodeData", "partition", "split_holdout"]


@dataclass(frozen=True)
class NodeData:
    train: list[Example]
    holdout: list[Example]


def _keys(path: Path, key: str) -> list[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is None or isinstance(value, dict | list):
            raise DatasetError(f"{path}:{n}: the partition key {key!r} is missing or not a "
                               "string/number (simulation.key)")
        out.append(str(value))
    return out


def split_holdout(examples: Sequence[Example], holdout: float, seed: int) -> NodeData:
    """A seeded shuffle; the last ``holdout`` share (at least one when there are two or
    more examples and ``holdout`` > 0) is held out."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    if holdout <= 0 or len(order) < 2:
        return NodeData(order, [])
    n = min(len(order) - 1, max(1, round(len(order) * holdout)))
    return NodeData(order[:-n], order[-n:])


def partition(path: str | Path, fmt: str, nodes: int, *, how: str, key: str | None = None,
              alpha: float = 0.5, seed: int = 0) -> list[list[Example]]:
    """The pooled file's examples dealt to ``nodes`` simulated nodes (module docstring).

    Raises:
        DatasetError: the file does not parse (file and line), or cannot give every node
            an example.
    """
    p = Path(path)
    examples = load_examples(p, fmt)
    if nodes < 1:
        raise DatasetError("a simulation needs at least one node")
    if how == "iid":
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        parts = [[examples[i] for i in order[k::nodes]] for k in range(nodes)]
    elif how == "key":
        assert key is not None
        groups: dict[str, list[Example]] = defaultdict(list)
        for value, ex in zip(_keys(p, key), examples, strict=True):
            groups[value].append(ex)
        if len(groups) < nodes:
            raise DatasetError(f"{p}: {len(groups)} distinct values of {key!r}, fewer than "
                               f"the {nodes} simulated nodes")
        ranked = sorted(groups, key=lambda v: (-len(groups[v]), v))[:nodes]
        parts = [groups[v] for v in ranked]
    elif how == "dirichlet":
        assert key is not None
        parts = _dirichlet(examples, _keys(p, key), nodes, alpha, seed)
    else:
        raise DatasetError(f"unknown partition {how!r}: iid, key or dirichlet")
    empty = [i for i, part in enumerate(parts) if not part]
    if empty:
        raise DatasetError(f"{p}: {len(examples)} examples cannot give each of {nodes} "
                           f"simulated nodes one (node {empty[0]} has none)")
    return parts


def _dirichlet(examples: Sequence[Example], labels: Sequence[str], nodes: int,
               alpha: float, seed: int) -> list[list[Example]]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = np.random.default_rng(seed)
    if len(examples) < 2 * nodes:
        raise DatasetError(f"{len(examples)} examples are too few for {nodes} nodes with a "
                           "Dirichlet split (at least two each)")
    parts: list[list[int]] = []
    for _ in range(100):
        parts = [[] for _ in range(nodes)]
        for label in sorted(by_label):
            idx = list(by_label[label])
            rng.shuffle(idx)
            shares = rng.dirichlet([alpha] * nodes)
            cuts = (np.cumsum(shares)[:-1] * len(idx)).round().astype(int)
            for node, chunk in enumerate(np.split(np.array(idx), cuts)):
                parts[node].extend(int(i) for i in chunk)
        if min(len(part) for part in parts) >= 2:
            break
    else:
        raise DatasetError(f"a Dirichlet split with alpha {alpha} left a node with fewer "
                           f"than two of the {len(examples)} examples in 100 draws; raise "
                           "simulation.alpha or use fewer nodes")
    return [[examples[i] for i in sorted(part)] for part in parts]

"""A labelled probe set through a loaded engine: the quality gate of a rollout.

The set is a JSONL file in the ``evaluate`` stage's task format (``chat`` or
``completion`` examples, the supply chain's own parser and errors,
:func:`edgewise.supply.data.load_examples`; the format is detected from the first line).
Each example is scored the way ``evaluate`` scores task accuracy
(:mod:`edgewise.supply.stages.evaluate`): every distinct answer in the set is scored as a
continuation of the prompt — the sum of its tokens' log-probabilities — and the most
likely one is the prediction. No sampling and no answer parsing, so two versions compared
on the same set differ only by their weights. Here the scores come from the serving
engine's own :meth:`~edgewise.engines.base.Engine.score`, so the probe runs on exactly
what the node serves (the engine's worker thread, not a second copy of the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgewise.engines import Engine
from edgewise.errors import DatasetError
from edgewise.supply.data import Example, load_examples

__all__ = ["MAX_PROBES", "ProbeScore", "load_probe_set", "probe_accuracy"]

#: Examples a probe set may hold (each costs one scoring pass per answer on the node).
MAX_PROBES = 2000


@dataclass(frozen=True)
class ProbeScore:
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def load_probe_set(path: str | Path) -> list[Example]:
    """The examples of a probe file (``chat`` or ``completion`` JSONL).

    Raises:
        DatasetError: names the file and line of the first problem.
    """
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"probe set {p}: cannot read it: {exc}") from exc
    if not first:
        raise DatasetError(f"probe set {p} is empty: it needs labelled examples")
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    fmt = "chat" if isinstance(head, dict) and "messages" in head else "completion"
    examples = load_examples(p, fmt)
    if len(examples) > MAX_PROBES:
        raise DatasetError(f"probe set {p} has {len(examples)} examples; at most "
                           f"{MAX_PROBES} are run on a node")
    if len({e.completion for e in examples}) < 2:
        raise DatasetError(f"probe set {p}: every example has the same answer, so any model "
                           "scores 100%; it needs at least two distinct answers")
    return examples


def probe_accuracy(engine: Engine, examples: list[Example]) -> ProbeScore:
    """Log-likelihood accuracy of ``engine`` on ``examples`` (module docstring).
    Blocking: call it on the engine's own worker thread."""
    choices = sorted({e.completion for e in examples})
    correct = 0
    for e in examples:
        prompt = engine.tokenize(e.prompt, add_bos=True)
        best, best_score = None, float("-inf")
        for c in choices:
            full = engine.tokenize(e.prompt + c, add_bos=True)
            start = max(_common_prefix(prompt, full), 1)
            steps = engine.score(full)  # steps[i] is the log-prob of full[i + 1]
            total = sum(s.logprob for s in steps[start - 1:])
            if total > best_score:
                best, best_score = c, total
        correct += best == e.completion
    return ProbeScore(n=len(examples), correct=correct)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

"""The numbers of ``bench/cascade.py``: per-example tables, the held-out strategies and
their costs, AUROC, bootstrap, re-drawn splits. Pure functions of cached answers."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgewise.chat import ChatAnswer
from edgewise.routing.calibrate import CalibrationResult, calibrate_threshold
from edgewise.routing.confidence import Scorer, ScorerOptions, build_scorer


@dataclass
class Table:
    """Per-example arrays of one dataset, in example order. Small-model numbers are the
    scored run's (greedy answer with alternatives, then the samples, same conditions)."""

    small_ok: list[bool]
    large_ok: list[bool]
    answers: list[ChatAnswer]  # the small model's greedy answers
    samples: list[list[ChatAnswer]]  # k sampled answers each
    sample_tokens: list[list[int]]  # completion tokens of each sample
    sample_wall: list[list[float]]
    large_tokens: list[int]
    small_tokens: list[int]  # greedy answer, prompt + completion
    small_wall: list[float]
    large_wall: list[float]
    conf: dict[str, list[float]] = field(default_factory=dict)  # scorer -> confidence

    def take(self, idx: Sequence[int]) -> Table:
        def pick(xs: Sequence[Any]) -> list[Any]:
            return [xs[i] for i in idx]

        return Table(pick(self.small_ok), pick(self.large_ok), pick(self.answers),
                     pick(self.samples), pick(self.sample_tokens), pick(self.sample_wall),
                     pick(self.large_tokens), pick(self.small_tokens), pick(self.small_wall),
                     pick(self.large_wall), {k: pick(v) for k, v in self.conf.items()})

    @property
    def n(self) -> int:
        return len(self.small_ok)


def calibrate(t: Table, scorer: str, target: float) -> CalibrationResult:
    # Cost in the currency of the target: tokens the large model processes.
    return calibrate_threshold(t.conf[scorer], t.small_ok, t.large_ok,
                               [0] * t.n, t.large_tokens, target=target)


def drawn_samples(t: Table, scorer: Scorer, threshold: float) -> list[int]:
    """Samples the router draws per example at ``threshold``: none for a scorer that
    does not sample; else one at a time until :meth:`Scorer.decided` (early stop)."""
    if not scorer.samples:
        return [0] * t.n
    out = []
    for a, ss in zip(t.answers, t.samples, strict=True):
        m = 0
        while m < scorer.samples and not scorer.decided(a, ss[:m], threshold):
            m += 1
        out.append(m)
    return out


def evaluate(t: Table, threshold: float, scorer: Scorer, random_seeds: int, seed: int,
             key: str | None = None) -> dict[str, dict[str, float]]:
    """Held-out strategies. Costs: large-model tokens (the target's currency) and wall
    time as ratios to always-large; small-model tokens with the sampling cost split out
    (``sample_*``: what the router's samples add, with early stopping)."""
    n = t.n
    ref_tokens, ref_wall = sum(t.large_tokens), sum(t.large_wall)
    ref_acc = sum(t.large_ok) / n
    greedy_decode = sum(a.completion_tokens for a in t.answers)
    greedy_wall = sum(t.small_wall)

    def row(escalate: Sequence[bool], small_all: bool, drawn: Sequence[int] = ()
            ) -> dict[str, float]:
        drawn = list(drawn) or [0] * n
        acc = sum(lg if e else s for s, lg, e in zip(t.small_ok, t.large_ok, escalate,
                                                     strict=True)) / n
        large_tok = sum(c for c, e in zip(t.large_tokens, escalate, strict=True) if e)
        large_wall = sum(w for w, e in zip(t.large_wall, escalate, strict=True) if e)
        asked = [True] * n if small_all else [not e for e in escalate]
        small_tok = sum(c for c, a in zip(t.small_tokens, asked, strict=True) if a)
        small_wall = sum(w for w, a in zip(t.small_wall, asked, strict=True) if a)
        s_decode = sum(sum(toks[:m]) for toks, m in zip(t.sample_tokens, drawn, strict=True))
        s_prompt = sum(a.prompt_tokens * m for a, m in zip(t.answers, drawn, strict=True))
        s_wall = sum(sum(w[:m]) for w, m in zip(t.sample_wall, drawn, strict=True))
        return {"accuracy": acc, "escalation_rate": sum(escalate) / n,
                "accuracy_ratio": acc / ref_acc if ref_acc else float("nan"),
                "large_tokens": large_tok, "large_token_ratio": large_tok / ref_tokens,
                "small_tokens": small_tok + s_decode + s_prompt,
                "samples_per_example": sum(drawn) / n,
                "sample_decode_tokens": s_decode, "sample_prompt_tokens": s_prompt,
                "sample_wall_s": s_wall,
                # What sampling adds, against the small model answering once (greedy).
                "sample_decode_ratio": s_decode / greedy_decode if greedy_decode else 0.0,
                "sample_wall_ratio": s_wall / greedy_wall if greedy_wall else 0.0,
                "wall_ratio": (large_wall + small_wall + s_wall) / ref_wall}

    conf = t.conf[key or scorer.name]
    cascade_esc = [c < threshold for c in conf]
    k = sum(cascade_esc)
    rng = random.Random(seed)
    runs = []
    for _ in range(random_seeds):  # random routing: k of n sent straight to large
        chosen = set(rng.sample(range(n), k))
        runs.append(row([i in chosen for i in range(n)], small_all=False))
    rand = {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
    rand["accuracy_std"] = statistics.pstdev(r["accuracy"] for r in runs)
    oracle = [lg and not s for s, lg in zip(t.small_ok, t.large_ok, strict=True)]
    return {"always-small": row([False] * n, True), "always-large": row([True] * n, False),
            "random (matched rate)": rand,
            "calibrated cascade": row(cascade_esc, True, drawn_samples(t, scorer, threshold)),
            "oracle cascade (reference)": row(oracle, True)}


def hindsight(t: Table, scorer: str, target: float, cost_target: float) -> dict[str, float]:
    """The most accurate threshold of ``scorer`` on ``t`` itself among those within the
    token budget — chosen in hindsight, so an upper bound of what calibration could
    find: if even this misses the target, the signal is too weak, not the calibration."""
    r = calibrate(t, scorer, target)
    ok = [p for p in r.curve if p.cost <= cost_target * r.large_cost + 1e-9]
    best = max(ok, key=lambda p: (p.accuracy, -p.cost))
    return {"threshold": best.threshold, "escalation_rate": best.escalation_rate,
            "accuracy_ratio": best.accuracy / r.large_accuracy if r.large_accuracy else 0.0,
            "large_token_ratio": best.cost / r.large_cost}


def auroc(conf: Sequence[float], ok: Sequence[bool]) -> float:
    """P(confidence of a right small answer > that of a wrong one), ties half: how well
    the scorer separates answers to keep from answers to escalate (0.5 = chance)."""
    pos = [c for c, k in zip(conf, ok, strict=True) if k]
    neg = [c for c, k in zip(conf, ok, strict=True) if not k]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def bootstrap_ratio(t: Table, threshold: float, scorer: str, reps: int, seed: int
                    ) -> tuple[float, float]:
    """95 % paired-bootstrap interval of cascade accuracy ÷ always-large accuracy."""
    n = t.n
    casc = [lg if c < threshold else s
            for s, lg, c in zip(t.small_ok, t.large_ok, t.conf[scorer], strict=True)]
    rng = random.Random(seed)
    ratios = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        big = sum(t.large_ok[i] for i in idx)
        if big:
            ratios.append(sum(casc[i] for i in idx) / big)
    ratios.sort()
    if not ratios:
        return float("nan"), float("nan")
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def split(n: int, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return sorted(idx[: n // 2]), sorted(idx[n // 2:])


def pick_scorer(cal: Table, names: Sequence[str], target: float
                ) -> tuple[str, dict[str, CalibrationResult]]:
    """Calibrate each scorer; the headline is the one cheapest on the calibration half
    (large-model tokens, the target's currency; ties: more accurate, then name order)."""
    results = {name: calibrate(cal, name, target) for name in names}
    best = min(results, key=lambda k: (results[k].chosen.cost, -results[k].chosen.accuracy))
    return best, results


def met(row: dict[str, float], target: float, cost_target: float) -> bool:
    return row["accuracy_ratio"] >= target - 1e-12 and row["large_token_ratio"] <= cost_target


def resplits(t: Table, scorers: dict[str, Scorer], target: float, cost_target: float,
             n_splits: int, seed: int) -> dict[str, dict[str, float]]:
    """Re-draw the calibration/held-out split many times: how often does the held-out
    cascade meet the target — with the scorer picked on each calibration half (the
    headline procedure, key ``picked``), and with each scorer alone?"""
    keys = ["picked", *scorers]
    hits = dict.fromkeys(keys, 0)
    accs: dict[str, list[float]] = {k: [] for k in keys}
    costs: dict[str, list[float]] = {k: [] for k in keys}
    for s in range(n_splits):
        cal_i, held_i = split(t.n, seed + 1000 + s)
        cal, held = t.take(cal_i), t.take(held_i)
        name, res = pick_scorer(cal, list(scorers), target)
        for key in keys:
            which = name if key == "picked" else key
            r = evaluate(held, res[which].threshold, scorers[which], 1, s)["calibrated cascade"]
            hits[key] += met(r, target, cost_target)
            accs[key].append(r["accuracy_ratio"])
            costs[key].append(r["large_token_ratio"])
    return {k: {"splits": n_splits, "met_fraction": hits[k] / n_splits,
                "accuracy_ratio_mean": statistics.fmean(accs[k]),
                "accuracy_ratio_p10": sorted(accs[k])[n_splits // 10],
                "large_token_ratio_mean": statistics.fmean(costs[k])} for k in keys}


def agreement_sweep(t: Table, cal_i: Sequence[int], held_i: Sequence[int], samples: int,
                    target: float, cost_target: float, seed: int
                    ) -> dict[str, dict[str, float]]:
    """``agreement`` with the first 1..k samples: what each extra sample buys."""
    out = {}
    for k in range(1, samples + 1):
        sc = build_scorer("agreement", ScorerOptions(samples=k))
        name = f"agreement_k{k}"
        t.conf[name] = [sc(a, ss[:k]) for a, ss in zip(t.answers, t.samples, strict=True)]
        cal, held = t.take(cal_i), t.take(held_i)
        r = calibrate(cal, name, target)
        ev = evaluate(held, r.threshold, sc, 1, seed, key=name)["calibrated cascade"]
        out[str(k)] = {**ev, "threshold": r.threshold, "auroc": auroc(t.conf[name], t.small_ok),
                       "target_met": met(ev, target, cost_target)}
        del t.conf[name]
    return out

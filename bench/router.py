"""The learned router on real data: routing by the prompt alone, against the cascade.

Small tier ``qwen2.5-coder-0.5b-instruct``, large tier ``qwen2.5-coder-1.5b-instruct``.
Nothing is generated here: every answer (text, prompt and completion tokens, logprobs,
wall time) is read from ``bench/cascade.py``'s cache
(``bench/results/cascade_cache/<model>__<dataset>.jsonl``), for the examples of its
``load_mmlu(1000, 0)`` and ``load_gsm8k(250, 0)`` cached for *both* models (``n`` is
reported; the cache grows while ``bench/cascade.py --answers-only`` runs).

Per dataset, for each of ``--seeds`` seeds:

1. **Split** the examples (seeded) into train 50 %, calibration 25 %, test 25 %.
2. **Train** with ``edgewise.routing.learned.train`` on the train split: the text is what
   the node's router reads (``router_text``: the last user message), the labels whether
   each model's cached answer is correct; real MiniLM embeddings; ``train`` picks its
   head by cross-validated APGR.
3. **Calibrate** on the calibration split: the router's thresholds for a 50 % share of
   large calls (``threshold_for_share``) and for 95 % of always-large accuracy
   (``threshold_for_quality``); the post-hoc cascade's threshold (``calibrate_threshold``,
   target 95 %, cost = large-model tokens, as in ``bench/cascade.py``) for each confidence
   scorer computable from the cached logprobs, keeping the cheapest, as ``bench/cascade.py``
   does; for router + cascade, for each router share 0, 10 … 90 % the cascade threshold
   re-calibrated on the calibration examples the router keeps small, keeping the cheapest
   combination.
4. **Evaluate on the test split**: accuracy, share of large-model calls, large-model tokens
   (prompt + completion) and total wall time (the cached ``wall_s`` of every model call
   made, plus the measured mean routing latency for each prompt a router scores), both
   as ratios to always-large, for: always-small, always-large, random routing at the
   learned router's rates (mean of ``--random-draws`` draws), the cascade (the small model
   answers everything, escalated examples pay small + large), the learned router alone,
   router + cascade, and the oracle router (large exactly where small is wrong and large
   right). APGR / CPT(50 %) / CPT(80 %) (``edgewise.routing.router_eval``) of the learned
   router, of the cascade's confidence read as a router score (1 − confidence), of random
   scores and of prompt length alone; a bootstrap 95 % interval on the first seed.

Also: which head ``train`` chose and every candidate's cross-validated APGR; training time
and, separately, ``train`` on 2,000 examples (both datasets' prompts, repeated with a
suffix); the router directory's size; the latency of ``LearnedRouter.score_one`` (MiniLM
included) on 200 real prompts after warm-up, with the default threads (torch and the BLAS
under numpy / scikit-learn: one per core, as the node runs it) and with every pool limited
to one thread ("1 thread"; the training check too). Targets (issue 15): ≥ 95 % of
always-large accuracy at ≤ 50 % of its cost in tokens and in wall time on at least one
dataset, APGR > 0.62 on both, training 2,000 examples < 2 min, routing p95 ≤ 15 ms.

    .venv/bin/python bench/router.py                     # a few minutes on 2 cores
    .venv/bin/python bench/router.py --seeds 2 --datasets mmlu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import cascade
from edgewise.routing.calibrate import calibrate_threshold
from edgewise.routing.confidence import score as confidence
from edgewise.routing.learned import LearnedRouter, TrainReport, length_features, router_text
from edgewise.routing.learned import train as train_router
from edgewise.routing.router_eval import (
    bootstrap,
    metrics,
    share_at,
    threshold_for_quality,
    threshold_for_share,
)
from router_report import markdown

RESULTS = Path(__file__).parent / "results"
#: Cascade scorers computable from the cached greedy logprobs alone (``answer_prob`` and
#: ``margin`` need token strings / alternatives, ``agreement`` samples: the scored run).
LOGPROB_SCORERS = ("mean_prob", "min_prob", "tail_mean_prob")
ROUTER_SHARES = tuple(i / 10 for i in range(10))  # router + cascade: router shares tried
TARGET, COST_TARGET, APGR_TARGET = 0.95, 0.5, 0.62
TRAIN_CHECK_N, TRAIN_CHECK_S, P95_TARGET_MS = 2000, 120.0, 15.0
LOADERS = {"mmlu": (cascade.load_mmlu, 1000), "gsm8k": (cascade.load_gsm8k, 250)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- data -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """One dataset's examples answered by both models, as arrays in example order."""

    name: str
    ids: list[int]  # row of the dataset file
    prompts: list[str]  # what the router reads: the last user message
    small_ok: np.ndarray  # (n,) bool
    large_ok: np.ndarray
    small_tokens: np.ndarray  # (n,) prompt + completion
    large_tokens: np.ndarray
    small_wall: np.ndarray  # (n,) seconds
    large_wall: np.ndarray
    conf: dict[str, np.ndarray]  # cascade scorer -> (n,) confidence of the small answer

    @property
    def n(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> Data:
        return Data(self.name, [self.ids[i] for i in idx], [self.prompts[i] for i in idx],
                    self.small_ok[idx], self.large_ok[idx], self.small_tokens[idx],
                    self.large_tokens[idx], self.small_wall[idx], self.large_wall[idx],
                    {k: v[idx] for k, v in self.conf.items()})


def _read_cache(cache: Path, model: str, dataset: str) -> dict[tuple[int, str], Any]:
    """``cascade.read_cache``, retried: the labelling job may be appending a line."""
    for attempt in range(5):
        try:
            return cascade.read_cache(cache, model, dataset)
        except json.JSONDecodeError:
            if attempt == 4:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def load_data(name: str, cache: Path) -> tuple[Data, dict[str, Any]]:
    """The examples of ``name`` cached for both models, and how many each model has."""
    load, n = LOADERS[name]
    examples = load(n, 0)
    small = _read_cache(cache, cascade.SMALL, name)
    large = _read_cache(cache, cascade.LARGE, name)
    keys = [(e.index, e.prompt_hash()) for e in examples]
    exs = [e for e, k in zip(examples, keys, strict=True) if k in small and k in large]
    srows = [small[(e.index, e.prompt_hash())] for e in exs]
    lrows = [large[(e.index, e.prompt_hash())] for e in exs]

    def ok(rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([cascade.correct(e, r["text"]) for e, r in zip(exs, rows, strict=True)],
                        dtype=bool)

    def tokens(rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([r["prompt_tokens"] + r["completion_tokens"] for r in rows])

    def wall(rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.array([r["wall_s"] for r in rows], dtype=np.float64)

    conf = {s: np.array([confidence(s, r["logprobs"]) for r in srows])
            for s in LOGPROB_SCORERS}
    data = Data(name, [e.index for e in exs], [router_text(e.messages) for e in exs],
                ok(srows), ok(lrows), tokens(srows), tokens(lrows), wall(srows), wall(lrows),
                conf)
    counts = {"loaded": len(examples), "small_cached": sum(k in small for k in keys),
              "large_cached": sum(k in large for k in keys), "both": len(exs),
              # 1-min load average while each answer was timed (cascade.py records it)
              "small_loadavg_mean": statistics.fmean(r.get("loadavg", math.nan)
                                                     for r in srows),
              "large_loadavg_mean": statistics.fmean(r.get("loadavg", math.nan)
                                                     for r in lrows)}
    return data, counts


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train 50 %, calibration 25 %, test 25 % (sorted indices)."""
    order = np.random.default_rng(seed).permutation(n)
    a, b = n // 2, n // 2 + n // 4
    return np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b:])


def gain_classes(d: Data) -> dict[str, float]:
    s, lg = d.small_ok, d.large_ok
    return {"large right, small wrong": float(np.mean(lg & ~s)),
            "both right": float(np.mean(lg & s)), "both wrong": float(np.mean(~lg & ~s)),
            "small right, large wrong": float(np.mean(s & ~lg))}


def wall_facts(d: Data) -> dict[str, float]:
    """How far wall time can fall: always-small's total against always-large's (no mix of
    the two models goes below it), and how much of each model's total the slowest 5 % of
    its cached calls take (stalls while other processes shared the cores)."""
    def slowest(w: np.ndarray) -> float:
        top = np.sort(w)[::-1][:max(1, len(w) // 20)]
        return float(top.sum() / w.sum())

    return {"always_small_wall_ratio": float(d.small_wall.sum() / d.large_wall.sum()),
            "small_slowest_5pct_share": slowest(d.small_wall),
            "large_slowest_5pct_share": slowest(d.large_wall),
            "small_tokens_mean": float(d.small_tokens.mean()),
            "large_tokens_mean": float(d.large_tokens.mean())}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return mid - half, mid + half


# -- training, size, latency --------------------------------------------------------------

def jsonl(datasets: Sequence[Data], copies: int = 1) -> str:
    """Training data for ``train``; copy ``j > 0`` of a prompt gets `` (copy j)`` added."""
    lines = []
    for j in range(copies):
        suffix = f" (copy {j})" if j else ""
        for d in datasets:
            for i, p, s, lg in zip(d.ids, d.prompts, d.small_ok, d.large_ok, strict=True):
                lines.append(json.dumps({"id": f"{d.name}-{i}-{j}", "prompt": p + suffix,
                                         "small_correct": bool(s),
                                         "large_correct": bool(lg)}))
    return "\n".join(lines) + "\n"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def train_on(d: Data, seed: int, work: Path) -> tuple[LearnedRouter, TrainReport, int]:
    """Train on ``d`` (real MiniLM), load the directory back; its size in bytes."""
    data, out = work / f"{d.name}-{seed}.jsonl", work / f"{d.name}-{seed}-router"
    data.write_text(jsonl([d]), encoding="utf-8")
    report = train_router(data, out, seed=seed, log=lambda m: log(f"    {m}"))
    return LearnedRouter.load(out), report, dir_bytes(out)


def training_check(datasets: Sequence[Data], work: Path) -> dict[str, Any]:
    """``train`` on 2,000 examples: every prompt of every dataset, repeated with a suffix
    until there are enough, with torch's default threads and with one."""
    import torch

    total = sum(d.n for d in datasets)
    lines = jsonl(datasets, math.ceil(TRAIN_CHECK_N / total)).splitlines()[:TRAIN_CHECK_N]
    path = work / "train-check.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    default = torch.get_num_threads()
    out: dict[str, Any] = {"n": len(lines), "distinct_prompts": total}
    for label, threads in (("default", default), ("1 thread", 1)):
        with one_thread(threads == 1):
            load0 = os.getloadavg()[0]
            rep = train_router(path, work / f"check-router-{threads}", seed=0)
        out[label] = {"threads": threads, "seconds": rep.seconds,
                      "embed_seconds": rep.embed_seconds, "chosen": rep.chosen,
                      "loadavg_1min": load0, "met": rep.seconds < TRAIN_CHECK_S}
        log(f"train on {len(lines)} examples, threads {label} ({threads}): "
            f"{rep.seconds:.1f} s (embedding {rep.embed_seconds:.1f} s), load {load0:.1f}")
    out["dir_bytes"] = dir_bytes(work / "check-router-1")
    return out


@contextmanager
def one_thread(on: bool) -> Iterator[None]:
    """With ``on``: torch's intra-op pool and every BLAS / OpenMP pool (numpy, scikit-
    learn) limited to one thread; else the defaults (one per core). On cores that
    llama.cpp is also using, a pool of spinning threads per core is much slower."""
    if not on:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(old)


def latency(router: LearnedRouter, prompts: Sequence[str], calls: int, seed: int
            ) -> dict[str, Any]:
    """p50/p95 of ``score_one`` (embedding included) on ``calls`` real prompts after a
    warm-up, with torch's default threads and with one thread."""
    import torch

    rng = np.random.default_rng(seed)
    pick = [prompts[i] for i in rng.choice(len(prompts), min(calls, len(prompts)),
                                           replace=False)]
    default = torch.get_num_threads()
    out: dict[str, Any] = {"calls": len(pick)}
    for label, threads in (("default", default), ("1 thread", 1)):
        with one_thread(threads == 1):
            for p in pick[:10]:  # warm-up
                router.score_one(p)
            load0 = os.getloadavg()[0]
            times = []
            for p in pick:
                t0 = time.perf_counter()
                router.score_one(p)
                times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1e3
        out[label] = {"threads": threads, "p50_ms": float(np.percentile(ms, 50)),
                      "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()),
                      "max_ms": float(ms.max()), "loadavg_1min": load0}
        log(f"  latency, threads {label} ({threads}): p50 {out[label]['p50_ms']:.1f} ms, "
            f"p95 {out[label]['p95_ms']:.1f} ms (load {load0:.1f})")
    return out


# -- strategies on the test split ------------------------------------------------------

def outcome(t: Data, ask_small: np.ndarray, ask_large: np.ndarray, scored: bool,
            lat_s: dict[str, float]) -> dict[str, float]:
    """One strategy's numbers. ``ask_large``: the large model is called and its answer
    returned; ``ask_small``: the small one is called; ``scored``: every prompt goes
    through the learned router first (``lat_s``: mean seconds per prompt by setting)."""
    assert np.all(ask_small | ask_large)
    acc = float(np.mean(np.where(ask_large, t.large_ok, t.small_ok)))
    ref_acc = float(np.mean(t.large_ok))
    wall = float(t.small_wall[ask_small].sum() + t.large_wall[ask_large].sum())
    ref_wall = float(t.large_wall.sum())
    row = {"accuracy": acc, "accuracy_ratio": acc / ref_acc if ref_acc else math.nan,
           "large_share": float(np.mean(ask_large)),
           "large_token_ratio": float(t.large_tokens[ask_large].sum() / t.large_tokens.sum())}
    for key, s in lat_s.items():
        row[f"wall_ratio{key}"] = (wall + (s * t.n if scored else 0.0)) / ref_wall
    return row


def random_outcome(t: Data, k: int, draws: int, seed: int, lat_s: dict[str, float]
                   ) -> dict[str, float]:
    """Mean over ``draws`` random choices of ``k`` prompts sent straight to large."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(draws):
        big = np.zeros(t.n, dtype=bool)
        big[rng.choice(t.n, k, replace=False)] = True
        rows.append(outcome(t, ~big, big, False, lat_s))
    out = {key: statistics.fmean(r[key] for r in rows) for key in rows[0]}
    out["accuracy_std_over_draws"] = statistics.pstdev(r["accuracy"] for r in rows)
    return out


def calibrated_cascade(c: Data, scorer: str) -> float:
    """The cascade's threshold on ``c`` (cost: large-model tokens, as bench/cascade.py)."""
    return calibrate_threshold(c.conf[scorer], c.small_ok, c.large_ok, [0] * c.n,
                               c.large_tokens, target=TARGET).threshold


def pick_scorer(c: Data) -> str:
    """The logprob scorer whose calibrated cascade is cheapest on ``c`` (ties: more
    accurate, then order), bench/cascade.py's rule."""
    def key(s: str) -> tuple[float, float]:
        r = calibrate_threshold(c.conf[s], c.small_ok, c.large_ok, [0] * c.n,
                                c.large_tokens, target=TARGET)
        return r.chosen.cost, -r.chosen.accuracy

    return min(LOGPROB_SCORERS, key=key)


def router_cascade(c: Data, c_scores: np.ndarray, scorer: str) -> dict[str, float]:
    """Router + cascade, calibrated: for each router share, the cascade threshold on the
    calibration examples the router keeps small; the cheapest in large-model tokens
    (ties: more accurate) among combinations meeting the target on ``c``."""
    best: tuple[float, float, dict[str, float]] | None = None
    need = TARGET * float(np.mean(c.large_ok))
    for share in ROUTER_SHARES:
        t_r = threshold_for_share(c_scores, share)
        high = c_scores >= t_r
        if high.all():
            continue
        t_c = calibrated_cascade(c.take(np.flatnonzero(~high)), scorer)
        esc = high | (c.conf[scorer] < t_c)
        acc = float(np.mean(np.where(esc, c.large_ok, c.small_ok)))
        cost = float(c.large_tokens[esc].sum())
        if acc >= need - 1e-12 and (best is None or (cost, -acc) < best[:2]):
            best = (cost, -acc, {"router_share_target": share, "router_threshold": t_r,
                                 "cascade_threshold": t_c,
                                 "calibration_share": float(np.mean(esc))})
    assert best is not None  # share 0 with the cascade always qualifies
    return best[2]


def router_scores(t: Data, learned: np.ndarray, scorer: str, seed: int
                  ) -> dict[str, dict[str, float] | None]:
    """APGR, CPT(50/80 %) of router scores on the test split (None: zero gap there)."""
    candidates = {
        "learned router": learned,
        "cascade confidence (1 − c)": 1.0 - t.conf[scorer],
        "random": np.random.default_rng(seed + 7).random(t.n),
        # the length head's score is monotone in log characters: same ranking
        "length only": length_features(t.prompts)[:, 0],
    }
    out: dict[str, dict[str, float] | None] = {}
    for name, s in candidates.items():
        try:
            out[name] = metrics(s, t.small_ok, t.large_ok).as_dict()
        except ValueError:
            out[name] = None
    return out


def run_seed(d: Data, seed: int, work: Path, args: argparse.Namespace,
             lat: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, calibrate and evaluate one seed; (its results, the latency measured on
    the first seed and passed on to the others)."""
    tr_i, cal_i, test_i = split(d.n, seed)
    tr, c, t = d.take(tr_i), d.take(cal_i), d.take(test_i)
    router, rep, size = train_on(tr, seed, work)
    if lat is None:
        lat = latency(router, d.prompts, args.latency_calls, seed)
    lat_s = {"": lat["default"]["mean_ms"] / 1e3, "_1thread": lat["1 thread"]["mean_ms"] / 1e3}
    c_scores, t_scores = router.score(c.prompts), router.score(t.prompts)
    scorer = pick_scorer(c)
    t_cas = calibrated_cascade(c, scorer)
    t_share = threshold_for_share(c_scores, 0.5)
    t_qual = threshold_for_quality(c_scores, c.small_ok, c.large_ok, TARGET)
    rc = router_cascade(c, c_scores, scorer)
    everyone, nobody = np.ones(t.n, dtype=bool), np.zeros(t.n, dtype=bool)
    escalate = t.conf[scorer] < t_cas
    at_share, at_qual = t_scores >= t_share, t_scores >= t_qual
    rc_high = t_scores >= rc["router_threshold"]
    rc_esc = ~rc_high & (t.conf[scorer] < rc["cascade_threshold"])
    oracle = t.large_ok & ~t.small_ok
    strategies = {
        "always-small": outcome(t, everyone, nobody, False, lat_s),
        "always-large": outcome(t, nobody, everyone, False, lat_s),
        "random (router @ share 0.5's rate)": random_outcome(
            t, int(at_share.sum()), args.random_draws, seed, lat_s),
        "random (router @ quality 0.95's rate)": random_outcome(
            t, int(at_qual.sum()), args.random_draws, seed, lat_s),
        "cascade": outcome(t, everyone, escalate, False, lat_s),
        "learned router @ share 0.5": outcome(t, ~at_share, at_share, True, lat_s),
        "learned router @ quality 0.95": outcome(t, ~at_qual, at_qual, True, lat_s),
        "learned router + cascade": outcome(t, ~rc_high, rc_high | rc_esc, True, lat_s),
        "oracle router": outcome(t, ~oracle, oracle, False, lat_s),
    }
    scores = router_scores(t, t_scores, scorer, seed)
    res: dict[str, Any] = {
        "seed": seed, "n_train": tr.n, "n_calibration": c.n, "n_test": t.n,
        "chosen_head": rep.chosen, "cv": rep.cv, "train_seconds": rep.seconds,
        "embed_seconds": rep.embed_seconds, "router_dir_bytes": size,
        "cascade_scorer": scorer, "cascade_threshold": t_cas,
        "share_threshold": t_share, "share_calibration": share_at(c_scores, t_share),
        "share_test": share_at(t_scores, t_share),
        "quality_threshold": t_qual, "quality_share_calibration": share_at(c_scores, t_qual),
        "quality_share_test": share_at(t_scores, t_qual),
        "router_cascade": rc, "strategies": strategies, "router_metrics": scores}
    if seed == args.seed0:
        try:
            ci, dropped = bootstrap(t_scores, t.small_ok, t.large_ok,
                                    resamples=args.bootstrap, seed=seed)
            res["bootstrap_95"] = {k: [v.low, v.high] for k, v in ci.items()}
            res["bootstrap_dropped"] = dropped
        except ValueError:  # both models equally accurate on this test split
            res["bootstrap_95"], res["bootstrap_dropped"] = None, args.bootstrap
    lr = scores["learned router"]
    log(f"  {d.name} seed {seed}: {rep.chosen} ({rep.seconds:.1f} s), test APGR "
        f"{lr['apgr'] if lr else float('nan'):.3f}, router+cascade share "
        f"{strategies['learned router + cascade']['large_share']:.2f}")
    return res, lat


# -- summary ------------------------------------------------------------------------------

def mean_std(xs: Sequence[float]) -> dict[str, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "n": len(xs)}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    names = list(runs[0]["strategies"])
    strat = {s: {k: mean_std([r["strategies"][s][k] for r in runs])
                 for k in runs[0]["strategies"][s]} for s in names}
    met = {s: sum(r["strategies"][s]["accuracy_ratio"] >= TARGET - 1e-12
                  and r["strategies"][s]["large_token_ratio"] <= COST_TARGET
                  and r["strategies"][s]["wall_ratio"] <= COST_TARGET for r in runs) / len(runs)
           for s in names}
    scorers = list(runs[0]["router_metrics"])
    rm = {s: {k: mean_std([r["router_metrics"][s][k] for r in runs
                           if r["router_metrics"][s] is not None])
              for k in ("apgr", "cpt50", "cpt80", "pgr_at_50")} for s in scorers}
    cv: dict[str, list[float]] = {}
    for r in runs:
        for name, m in r["cv"].items():
            cv.setdefault("blend (best knn, best linear)" if name.startswith("blend")
                          else name, []).append(m["apgr"])

    def ms(key: str) -> dict[str, float]:
        return mean_std([r[key] for r in runs])

    return {"strategies": strat, "target_met_fraction": met, "router_metrics": rm,
            "cv_apgr": {k: mean_std(v) for k, v in cv.items()},
            "chosen_heads": [r["chosen_head"] for r in runs],
            "cascade_scorers": [r["cascade_scorer"] for r in runs],
            "router_cascade_shares": [r["router_cascade"]["router_share_target"]
                                      for r in runs],
            "train_seconds": ms("train_seconds"), "embed_seconds": ms("embed_seconds"),
            "router_dir_bytes": ms("router_dir_bytes"),
            "share_test": ms("share_test"), "quality_share_calibration":
                ms("quality_share_calibration"), "quality_share_test": ms("quality_share_test")}


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with what was measured and met / not met."""
    routed = ("learned router @ share 0.5", "learned router @ quality 0.95",
              "learned router + cascade")
    cost_hits = []
    for ds, d in report["datasets"].items():
        for name in routed:
            m = {k: v["mean"] for k, v in d["summary"]["strategies"][name].items()}
            if (m["accuracy_ratio"] >= TARGET - 1e-12 and m["large_token_ratio"] <= COST_TARGET
                    and m["wall_ratio"] <= COST_TARGET):
                cost_hits.append(f"{ds} / {name}")
    apgr = {ds: d["summary"]["router_metrics"]["learned router"]["apgr"]["mean"]
            for ds, d in report["datasets"].items()}
    p95 = {label: {ds: d["latency"][label]["p95_ms"] for ds, d in report["datasets"].items()}
           for label in ("default", "1 thread")}
    tc = report.get("training_check")
    return {
        "quality_at_half_cost": {"met": bool(cost_hits), "where": cost_hits},
        "apgr_above_0.62_on_both": {"met": len(apgr) == 2 and all(
            v > APGR_TARGET for v in apgr.values()), "apgr": apgr},
        "train_2000_under_2_min": {
            "met": bool(tc and tc["default"]["met"]),
            "met_with_1_thread": bool(tc and tc["1 thread"]["met"]),
            "seconds": tc["default"]["seconds"] if tc else None},
        "routing_p95_at_most_15_ms": {
            "met": all(v <= P95_TARGET_MS for v in p95["default"].values()),
            "met_with_1_thread": all(v <= P95_TARGET_MS for v in p95["1 thread"].values()),
            "p95_ms": p95["default"], "p95_ms_1_thread": p95["1 thread"]},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="splits (train/calibration/test)")
    ap.add_argument("--seed0", type=int, default=0, help="first seed (bootstrap on it)")
    ap.add_argument("--datasets", default="mmlu,gsm8k", help="comma-separated: mmlu,gsm8k")
    ap.add_argument("--random-draws", type=int, default=1000)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--latency-calls", type=int, default=200)
    ap.add_argument("--skip-train-check", action="store_true",
                    help=f"skip timing train on {TRAIN_CHECK_N} examples")
    ap.add_argument("--cache", type=Path, default=RESULTS / "cascade_cache")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="only rebuild the targets and the Markdown of a saved router.json")
    args = ap.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        report["targets"] = targets(report)
        return write(report, args.out)
    names = [x.strip() for x in args.datasets.split(",") if x.strip()]
    bad = [x for x in names if x not in LOADERS]
    if bad or not names:
        ap.error(f"--datasets: unknown {bad or names}; allowed: {', '.join(LOADERS)}")
    import torch

    report: dict[str, Any] = {"settings": {
        "seeds": args.seeds, "seed0": args.seed0, "datasets": names,
        "random_draws": args.random_draws, "bootstrap": args.bootstrap,
        "latency_calls": args.latency_calls, "target": TARGET, "cost_target": COST_TARGET,
        "small": cascade.SMALL, "large": cascade.LARGE, "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg()[0]}, "datasets": {}}
    t0 = time.perf_counter()
    all_data = []
    with tempfile.TemporaryDirectory(prefix="edgewise-router-bench-") as tmp:
        work = Path(tmp)
        for name in names:
            d, counts = load_data(name, args.cache)
            log(f"{name}: {counts['both']} examples cached for both models")
            all_data.append(d)
            runs, lat = [], None
            for seed in range(args.seed0, args.seed0 + args.seeds):
                res, lat = run_seed(d, seed, work, args, lat)
                runs.append(res)
            k = int(d.small_ok.sum())
            report["datasets"][name] = {
                "counts": counts, "latency": lat, "summary": summarize(runs), "runs": runs,
                "full_set": {"small_accuracy": k / d.n,
                             "small_accuracy_ci95": wilson(k, d.n),
                             "large_accuracy": float(d.large_ok.mean()),
                             "chance": 0.25 if name == "mmlu" else None,
                             "gain_classes": gain_classes(d), "wall": wall_facts(d)}}
        if not args.skip_train_check:
            report["training_check"] = training_check(all_data, work)
    report["settings"]["loadavg_end"] = os.getloadavg()[0]
    report["settings"]["seconds"] = time.perf_counter() - t0
    report["targets"] = targets(report)
    return write(report, args.out)


def write(report: dict[str, Any], out: Path) -> int:
    md = markdown(report)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "router.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "router.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

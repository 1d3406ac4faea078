"""The Markdown report of ``bench/router.py`` (from its ``router.json``).

    .venv/bin/python bench/router.py --render bench/results/router.json
"""

from __future__ import annotations

from typing import Any


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def pm(m: dict[str, float], percent: bool = True) -> str:
    if percent:
        return f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f} %"
    return f"{m['mean']:.3f} ± {m['std']:.3f}"


def mark(ok: bool, with_1_thread: bool = False) -> str:
    if ok:
        return "**met**"
    return "**not met** (met with 1 thread)" if with_1_thread else "**not met**"


def dataset_md(ds: str, d: dict[str, Any], seeds: int) -> list[str]:
    s, c, fs = d["summary"], d["counts"], d["full_set"]
    w = fs["wall"]
    r0 = d["runs"][0]
    lines = [f"## {ds}: {c['both']} examples answered by both models", "",
             f"Loaded {c['loaded']}; cached for the small model {c['small_cached']}, for the "
             f"large {c['large_cached']}. Per seed: train {r0['n_train']}, calibration "
             f"{r0['n_calibration']}, test {r0['n_test']}. Whole set: small "
             f"{pct(fs['small_accuracy'])}, large {pct(fs['large_accuracy'])}. Mean 1-min load "
             f"average while the cached answers were timed: small "
             f"{c['small_loadavg_mean']:.1f}, large {c['large_loadavg_mean']:.1f}. Always-small "
             f"takes {pct(w['always_small_wall_ratio'])} of always-large's wall time on the "
             f"whole set (tokens per call: small {w['small_tokens_mean']:.0f}, large "
             f"{w['large_tokens_mean']:.0f}), the floor of any mix of the two; the slowest 5 % "
             f"of cached calls take {pct(w['small_slowest_5pct_share'])} (small) and "
             f"{pct(w['large_slowest_5pct_share'])} (large) of each model's total, so wall "
             "ratios on a test split swing with the few stalls it happens to hold.", "",
             f"Test split, mean ± std over {seeds} seed{'s' * (seeds != 1)} (wall time: cached "
             "model time plus the mean routing latency per prompt a router scores, with "
             "the default threads / with 1 thread):", "",
             "| strategy | accuracy | vs always-large | large calls | large tokens vs "
             "always-large | wall vs always-large | wall (router 1 thread) | "
             "seeds meeting the target |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in s["strategies"].items():
        lines.append(f"| {name} | {pm(m['accuracy'])} | {pm(m['accuracy_ratio'])} | "
                     f"{pm(m['large_share'])} | {pm(m['large_token_ratio'])} | "
                     f"{pm(m['wall_ratio'])} | {pm(m['wall_ratio_1thread'])} | "
                     f"{s['target_met_fraction'][name]:.0%} |")
    lines += ["", "Target per seed: accuracy ≥ 95 % of always-large with large-model tokens "
              "and wall time (default threads) each ≤ 50 % of always-large's.", "",
              f"Calibration error: the share-0.5 threshold sends {pm(s['share_test'])} of test "
              f"prompts large (target 50 %); the quality-0.95 threshold sends "
              f"{pm(s['quality_share_calibration'])} of calibration prompts and "
              f"{pm(s['quality_share_test'])} of test prompts. Router + cascade: router share "
              f"chosen on calibration per seed {s['router_cascade_shares']}; cascade scorer "
              f"per seed {s['cascade_scorers']}.", "",
              "Router scores on the test split (mean ± std over seeds; the cascade's "
              "confidence read as a router score is 1 − confidence; length only ranks by "
              "log characters, as the length head does):", "",
              "| score | APGR | CPT(50 %) | CPT(80 %) | PGR at 50 % calls |",
              "|---|---:|---:|---:|---:|"]
    for name, m in s["router_metrics"].items():
        lines.append(f"| {name} | {pm(m['apgr'], False)} | {pm(m['cpt50'])} | "
                     f"{pm(m['cpt80'])} | {pm(m['pgr_at_50'], False)} |")
    b = r0["bootstrap_95"]
    ci = (f"APGR {b['apgr'][0]:.3f} – {b['apgr'][1]:.3f}, CPT(50 %) {pct(b['cpt50'][0])} – "
          f"{pct(b['cpt50'][1])}, CPT(80 %) {pct(b['cpt80'][0])} – {pct(b['cpt80'][1])}"
          if b else "none (both models equally accurate on the split)")
    undefined = sum(r["router_metrics"]["learned router"] is None for r in d["runs"])
    lines += ["", f"Learned router, seed {r0['seed']}, bootstrap 95 % intervals on its "
              f"{r0['n_test']} test examples: {ci} ({r0['bootstrap_dropped']} resamples "
              f"dropped: zero gap). Seeds whose test split has no gap (APGR undefined, left "
              f"out of the means): {undefined}.", "",
              f"Heads chosen by `train` per seed: {', '.join(s['chosen_heads'])}. "
              "Cross-validated APGR on the train split (mean ± std over seeds):", "",
              "| candidate | CV APGR |", "|---|---:|"]
    for name, m in s["cv_apgr"].items():
        lines.append(f"| {name} | {pm(m, False)} |")
    lat = d["latency"]
    ts, es = s["train_seconds"], s["embed_seconds"]
    lines += ["", f"Training {ts['mean']:.1f} ± {ts['std']:.1f} s per seed (embedding "
              f"{es['mean']:.1f} ± {es['std']:.1f} s); router directory "
              f"{s['router_dir_bytes']['mean'] / 1024:.0f} KiB. Routing latency "
              f"(`score_one`, {lat['calls']} prompts after warm-up):", "",
              "| threads | p50 | p95 | mean | max | load average |",
              "|---|---:|---:|---:|---:|---:|"]
    for label in ("default", "1 thread"):
        x = lat[label]
        lines.append(f"| {label} ({x['threads']}) | {x['p50_ms']:.1f} ms | "
                     f"{x['p95_ms']:.1f} ms | {x['mean_ms']:.1f} ms | {x['max_ms']:.1f} ms | "
                     f"{x['loadavg_1min']:.1f} |")
    return [*lines, ""]


def limit_md(report: dict[str, Any]) -> list[str]:
    lines = ["## How much there is to route", "",
             "Whole sets. Chance on MMLU is 25 % (four options). A router can only gain on "
             "the first class and loses on the last:", "",
             "| dataset | small | 95 % CI | large | large right, small wrong | both right | "
             "both wrong | small right, large wrong |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for ds, d in report["datasets"].items():
        fs = d["full_set"]
        g = fs["gain_classes"]
        lo, hi = fs["small_accuracy_ci95"]
        lines.append(f"| {ds} | {pct(fs['small_accuracy'])} | {pct(lo)} – {pct(hi)} | "
                     f"{pct(fs['large_accuracy'])} | "
                     + " | ".join(pct(v) for v in g.values()) + " |")
    return [*lines, ""]


def markdown(report: dict[str, Any]) -> str:
    st = report["settings"]
    t = report["targets"]
    lines = [f"# Learned router benchmark ({st['date']})", "",
             f"Machine: {st['machine']}, {st['cpus']} CPUs, Python {st['python']}, torch "
             f"{st['torch_threads']} threads by default (\"1 thread\": torch and every BLAS / "
             "OpenMP pool limited to one); 1-min load average at start "
             f"{st['loadavg_start']:.1f}, at end {st['loadavg_end']:.1f} (another process — "
             "the answer-labelling job — may have shared the cores: latencies and training "
             "times are then inflated; cached accuracies and tokens are not). Small "
             f"`{st['small']}`, large `{st['large']}`; answers from the cascade cache; "
             f"{st['seeds']} seeds; split train 50 % / calibration 25 % / test 25 %.", "",
             "## Targets (issue 15)", "", "| target | measured | |", "|---|---|---|"]
    q = t["quality_at_half_cost"]
    lines.append("| ≥ 95 % of always-large accuracy at ≤ 50 % of its tokens and wall time "
                 "(a learned-router strategy, mean over seeds, one dataset suffices) | "
                 f"{', '.join(q['where']) or 'no dataset / strategy'} | {mark(q['met'])} |")
    a = t["apgr_above_0.62_on_both"]
    lines.append("| APGR > 0.62 on both datasets (test, mean over seeds) | "
                 + ", ".join(f"{k} {v:.3f}" for k, v in a["apgr"].items())
                 + f" | {mark(a['met'])} |")
    if report.get("training_check"):
        tc = report["training_check"]
        tt = t["train_2000_under_2_min"]
        lines.append(f"| training on {tc['n']} examples < 2 min (2 cores) | default threads "
                     f"{tc['default']['seconds']:.1f} s (load {tc['default']['loadavg_1min']:.1f}"
                     f"), 1 thread {tc['1 thread']['seconds']:.1f} s | "
                     f"{mark(tt['met'], tt['met_with_1_thread'])} |")
    p = t["routing_p95_at_most_15_ms"]
    lines.append("| routing p95 ≤ 15 ms | default threads "
                 + ", ".join(f"{k} {v:.1f} ms" for k, v in p["p95_ms"].items())
                 + "; 1 thread " + ", ".join(f"{k} {v:.1f} ms"
                                            for k, v in p["p95_ms_1_thread"].items())
                 + f" | {mark(p['met'], p['met_with_1_thread'])} |")
    lines.append("")
    for ds, d in report["datasets"].items():
        lines += dataset_md(ds, d, st["seeds"])
    lines += limit_md(report)
    if report.get("training_check"):
        tc = report["training_check"]
        lines += ["## Training time on 2,000 examples", "",
                  f"{tc['distinct_prompts']} distinct prompts, repeated with a suffix to "
                  f"{tc['n']}; chosen head {tc['default']['chosen']}; directory "
                  f"{tc['dir_bytes'] / 1024:.0f} KiB. A timing check only: copies of one "
                  "prompt fall into different cross-validation folds, so the choice of head "
                  "means nothing here.", "",
                  "| threads | train | of which embedding | load average |",
                  "|---|---:|---:|---:|"]
        for label in ("default", "1 thread"):
            x = tc[label]
            lines.append(f"| {label} ({x['threads']}) | {x['seconds']:.1f} s | "
                         f"{x['embed_seconds']:.1f} s | {x['loadavg_1min']:.1f} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------

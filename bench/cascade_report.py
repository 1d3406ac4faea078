"""The Markdown report and the plot of ``bench/cascade.py`` (from its JSON report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _dataset(ds: str, d: dict[str, Any], s: dict[str, Any]) -> list[str]:
    fs = d["full_set"]
    lines = [f"## {ds}: {d['n']} examples ({d['n_calibration']} calibration, "
             f"{d['n_heldout']} held-out)", "",
             f"Whole set: small {pct(fs['small_accuracy'])}, large "
             f"{pct(fs['large_accuracy'])}. The small model's greedy answers come from the "
             f"scored run (with alternatives and samples); {fs['greedy_differs_from_first_run']}"
             f" of {d['n']} differ from the first run's (accuracy there "
             f"{pct(fs['first_run_small_accuracy'])}): llama.cpp's numerics depend on how the "
             "prompt was batched, so near-tie tokens can flip.", "",
             "Calibration half, per scorer (threshold = cheapest meeting the target):", "",
             "| scorer | threshold | escalated | accuracy | large tokens vs always-large |",
             "|---|---:|---:|---:|---:|"]
    for name, c in d["calibration"].items():
        mark = " **(chosen)**" if name == d["scorer"] else ""
        lines.append(f"| {name}{mark} | {min(c['threshold'], 1):.4f} | "
                     f"{pct(c['escalation_rate'])} | {pct(c['accuracy'])} | "
                     f"{pct(c['cost_ratio'])} |")
    lines += ["", f"Held-out half, headline cascade (scorer `{d['scorer']}`, the cheapest on "
                  f"the calibration half; threshold {min(d['threshold'], 1):.4f}):", "",
              "| strategy | accuracy | vs always-large | escalated | large-model tokens | "
              "small-model tokens | wall time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in d["heldout"].items():
        acc = pct(r["accuracy"]) + (f" ± {pct(r['accuracy_std'])}"
                                    if "accuracy_std" in r else "")
        lines.append(f"| {name} | {acc} | {pct(r['accuracy_ratio'])} | "
                     f"{pct(r['escalation_rate'])} | {r['large_tokens']:.0f} "
                     f"({pct(r['large_token_ratio'])}) | {r['small_tokens']:.0f} | "
                     f"{pct(r['wall_ratio'])} |")
    lines += ["", "Held-out half, every scorer (each calibrated on the calibration half; "
                  "AUROC: P(a right small answer scores above a wrong one), 0.5 = chance, "
                  "whole set / held-out half; samples: drawn per example by the router, "
                  "which stops once the rest cannot change the decision; extra decode: "
                  "tokens the samples generate ÷ tokens of the small model's one answer; "
                  "hindsight: the most accurate threshold within the token budget chosen on "
                  "the held-out half itself, an upper bound of what calibration can find):",
              "", "| scorer | AUROC | escalated | accuracy vs always-large | large tokens vs "
                  "always-large | samples | extra small decode | extra small wall | target | "
                  f"hindsight best at ≤ {pct(s['cost_target'])} tokens |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name, r in d["heldout_by_scorer"].items():
        ok = d["heldout_target_met_by_scorer"][name]
        hs = d["hindsight_at_cost_target"][name]
        lines.append(f"| {name} | {d['auroc'][name]:.3f} / {d['auroc_heldout'][name]:.3f} | "
                     f"{pct(r['escalation_rate'])} | {pct(r['accuracy_ratio'])} | "
                     f"{pct(r['large_token_ratio'])} | {r['samples_per_example']:.2f} | "
                     f"+{pct(r['sample_decode_ratio'])} | +{pct(r['sample_wall_ratio'])} | "
                     f"{'**met**' if ok else 'not met'} | {pct(hs['accuracy_ratio'])} |")
    lines += ["", f"`agreement` with the first k of the {s['samples']} samples (held-out; "
                  "threshold calibrated per k):", "",
              "| k | AUROC | escalated | accuracy vs always-large | large tokens vs "
              "always-large | samples drawn | extra small decode | target |",
              "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for k, r in d["agreement_by_samples"].items():
        lines.append(f"| {k} | {r['auroc']:.3f} | {pct(r['escalation_rate'])} | "
                     f"{pct(r['accuracy_ratio'])} | {pct(r['large_token_ratio'])} | "
                     f"{r['samples_per_example']:.2f} | +{pct(r['sample_decode_ratio'])} | "
                     f"{'**met**' if r['target_met'] else 'not met'} |")
    lo, hi = d["bootstrap_accuracy_ratio_95"]
    rs = d["resplits"]
    picked = rs["picked"]
    lines += ["", f"Sampling cost, whole set: the {s['samples']} samples generate "
                  f"{fs['sample_decode_tokens_mean']:.0f} tokens per example against "
                  f"{fs['small_decode_tokens_mean']:.0f} for the small model's answer "
                  f"({fs['sample_decode_tokens_mean'] / fs['small_decode_tokens_mean']:.1f}×; "
                  f"{pct(fs['samples_at_max_tokens'])} of samples hit max_tokens) and take "
                  f"{fs['sample_wall_mean_s']:.2f} s against {fs['small_wall_mean_s']:.2f} s "
                  f"(the prompt is already in llama.cpp's KV cache; a remote tier would also "
                  "bill each sample's prompt tokens, which the small-model tokens column "
                  f"counts). The large model takes {fs['large_wall_mean_s']:.2f} s per "
                  f"example. Mean 1-min load average while answering: small "
                  f"{fs['small_loadavg_mean']:.1f}, large {fs['large_loadavg_mean']:.1f} "
                  "(2 cores; above ~2 other processes were competing, so wall times are "
                  "inflated and noisy; token counts and accuracies are not).", "",
              f"Headline cascade ÷ always-large accuracy, 95 % paired bootstrap: {pct(lo)} – "
              f"{pct(hi)}. Over {picked['splits']} re-drawn splits the held-out cascade "
              f"(scorer picked on each calibration half) met the target in "
              f"{pct(picked['met_fraction'])} (mean accuracy ratio "
              f"{pct(picked['accuracy_ratio_mean'])}, 10th percentile "
              f"{pct(picked['accuracy_ratio_p10'])}; mean large-token ratio "
              f"{pct(picked['large_token_ratio_mean'])}); per scorer: " + "; ".join(
                  f"`{k}` {pct(v['met_fraction'])} (accuracy {pct(v['accuracy_ratio_mean'])}"
                  f" at {pct(v['large_token_ratio_mean'])} tokens)"
                  for k, v in rs.items() if k != "picked") + ".", "",
              f"**Target {'met' if d['target_met'] else 'NOT met'} on held-out {ds}** by the "
              "headline cascade" + (
                  "; met by " + ", ".join(f"`{k}`" for k, v in
                                          d["heldout_target_met_by_scorer"].items() if v)
                  if any(d["heldout_target_met_by_scorer"].values()) else
                  "; by no scorer") + ".", ""]
    return lines


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"# Cascade benchmark ({s['date']})", "",
             f"small `{s['small']}`, large `{s['large']}`, greedy answers; samples for "
             f"`agreement`: {s['samples']} per example at temperature "
             f"{s['sample_temperature']:g} (top_p 0.95, top_k 40, min_p 0.05, the node's "
             "defaults). Target: held-out accuracy ≥ "
             f"{pct(s['target'])} of always-large at ≤ {pct(s['cost_target'])} of its "
             "large-model tokens.", ""]
    for ds, d in report["datasets"].items():
        lines += _dataset(ds, d, s)
    o = report["router_overhead"]
    lines += ["## Router decision overhead", "",
              f"`edgewise.routing.policy.route` on a 4-tier fleet, {o['calls']} calls: "
              f"p50 {o['p50_us']:.1f} µs, p99 {o['p99_us']:.1f} µs, max {o['max_us']:.0f} µs "
              f"(target p99 < 1 ms: {'met' if o['p99_us'] < 1000 else 'NOT met'}).", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], curves: dict[str, dict[str, Any]], path: Path) -> None:
    """Held-out accuracy against large-model tokens for every threshold of every scorer,
    with the baselines, the calibrated cascades and the oracle. Between two thresholds a
    line is what escalating a random share of the examples tied at the upper one would
    give (in expectation); the router does not do that, it escalates all or none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6.5 * len(curves), 6.2), squeeze=False)
    colours = dict(zip(next(iter(curves.values()))["curves"],
                       ["tab:blue", "tab:orange", "tab:brown", "tab:cyan", "tab:pink",
                        "tab:green", "tab:olive", "tab:gray"], strict=False))
    for ax, (ds, c) in zip(axes[0], curves.items(), strict=True):
        d = report["datasets"][ds]
        h = d["heldout"]
        for name, pts in c["curves"].items():
            main = name == c["scorer"]
            ax.plot([p["cost"] for p in pts], [p["accuracy"] for p in pts], ".-", ms=3,
                    lw=2.0 if main else 0.9, alpha=1 if main else 0.6, color=colours[name],
                    label=f"{name} (AUROC {d['auroc'][name]:.2f})"
                          + (" — headline" if main else ""))
            r = d["heldout_by_scorer"][name]
            ax.plot([r["large_token_ratio"]], [r["accuracy"]], "*", ms=13 if main else 9,
                    color=colours[name], mec="k", mew=0.6)
        s, lg = h["always-small"], h["always-large"]
        ax.plot([0, 1], [s["accuracy"], lg["accuracy"]], "k--", lw=1,
                label="random routing (expected)")
        ax.plot([0], [s["accuracy"]], "o", color="tab:red", ms=8, label="always-small")
        ax.plot([1], [lg["accuracy"]], "s", color="tab:purple", ms=8, label="always-large")
        oc = h["oracle cascade (reference)"]
        ax.plot([oc["large_token_ratio"]], [oc["accuracy"]], "^", color="k", ms=8,
                mec="k", label="oracle cascade (reference)")
        ax.axhline(report["settings"]["target"] * lg["accuracy"], color="grey", lw=0.8,
                   ls=":")
        ax.axvline(report["settings"]["cost_target"], color="grey", lw=0.8, ls=":")
        ax.set_title(f"{ds} held-out (n={d['n_heldout']}); ● = a threshold, "
                     "★ = the calibrated one", fontsize=10)
        ax.set_xlabel("large-model tokens ÷ always-large")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)

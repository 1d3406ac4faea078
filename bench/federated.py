"""Federated LoRA fine-tuning, measured: quality on a non-IID task, ε against quality,
overhead against plain Flower, poisoning and drop-outs, scale, and a deployment run.

    .venv/bin/python bench/federated.py [--only quality,dp,overhead,poison,dropout,secure,
                                          scale,deploy]

Needs Flower's environment (`make federated`). SmolLM2-135M-Instruct (the default
model's GGUF, converted once to a float32 checkpoint and cached), LoRA r=8 on q_proj and
v_proj, every run through `edgewise federate run --simulate N` (Flower's simulation
engine, Ray, one thread per client) unless it says otherwise.

**The task** (non-IID, labelled): eight made-up languages, each with its own plural
suffix ("In Zorbish, the plural of river is" → " riverzek"); 64 words each. The examples
are dealt to the nodes by a Dirichlet split over the language (α = 0.3): most nodes see
one or two languages often and the others rarely. Every node holds out 25 % of its own
examples — words it never trained on — and quality is the exact-match rate on them
(every completion token the model's first choice), the mean over nodes weighted by
held-out size. A node learns a suffix from its examples and applies it to new words;
one that rarely saw a language gets its plurals wrong.

- **quality**: local-only (each node trains alone, the same steps as its federated
  training), federated (FedAvg, FFA-LoRA) and centralized (all nodes' training data
  pooled, the same total steps: the ceiling), each on every node's held-out data; the
  share of the local→centralized gap federated closes.
- **dp**: ε (δ = 1e-5, no sampling credit: every node in every round) and quality at
  noise multipliers 0 (no DP), 0.5, 1, 2, clip 0.5, distributed noise, 5 rounds.
- **overhead**: the same rounds, nodes and local steps through plain Flower
  (bench/federated_plain.py: FedAvg.start, the full adapter each way) and through
  edgewise; wall time of the server's rounds, bytes per node per round, and the full
  model's bytes for contrast.
- **poison**: 1 of 5 nodes (20 %) sends ``global − 10·update`` (sign-flipped, scaled):
  FedAvgM, FedMedian, and FedMedian with FedAvgM's server step (lr 2.5, momentum 0.5)
  attacked, against the clean runs.
- **dropout**: 10 nodes, 30 % of the sampled nodes disappear each round
  (``clients.min`` 7); distributed DP noise, so ε is charged at the noise that arrived.
- **secure**: SecAgg+ against the same runs without it (FedAvgM quality; FedAvg overhead),
  side by side; then SecAgg+ with distributed DP noise on 10 nodes, 3 of which vanish
  each round after sending their masked update (``clients.min`` 6).
- **scale**: the tiny test Llama, 100 to 1,000 virtual nodes, 10 per round: time per round.
- **deploy**: real ``flower-superlink`` + 4 ``flower-supernode`` processes, TLS and
  SuperNode authentication from a fleet made here (control plane, 4 enrolled nodes),
  3 rounds of the tiny test Llama on the plural task, the artifact published into the
  fleet's registry.

Writes bench/results/federated.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))  # tiny_models (the scale section's model)

from federated_lora import WORDS  # noqa: E402  (the same 64 words)

LANGS = {"Zorbish": "zek", "Quenyan": "ath", "Morvic": "ulo", "Tessian": "ir",
         "Belgar": "osk", "Liranth": "ema", "Dovvic": "un", "Shaelic": "ith"}
MODEL = "smollm2-135m-instruct"
NODES, ROUNDS, STEPS = 5, 5, 6
#: The federated runs: the same 30 local steps per node as local-only, in shorter rounds
#: (less client drift between averages).
FED_ROUNDS, FED_STEPS = 15, 2
LOCAL = {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"], "steps": STEPS,
         "batch_size": 8, "lr": 3e-3, "max_length": 48, "threads": 1}


def progress(msg: str) -> None:
    print(f"[federated] {msg}", file=sys.stderr, flush=True)


def write_pool(path: Path) -> Path:
    with path.open("w") as f:
        for lang, suffix in LANGS.items():
            for w in WORDS:
                f.write(json.dumps({"prompt": f"In {lang}, the plural of {w} is",
                                    "completion": f" {w}{suffix}", "lang": lang}) + "\n")
    return path


def recipe(work: Path, name: str, *, nodes: int = NODES, rounds: int = FED_ROUNDS,
           base: str = MODEL, **over: Any) -> Any:
    from edgewise.federated.recipe import parse_federated_recipe

    data: dict[str, Any] = {
        "name": name, "base": base, "rounds": rounds, "seed": 0,
        "clients": {"per_round": nodes, "min": nodes, "timeout_s": 1800},
        "local": {**LOCAL, "steps": FED_STEPS}, "data": {"format": "completion", "holdout": 0.25},
        "simulation": {"dataset": {"path": str(work / "pool.jsonl"), "format": "completion"},
                       "partition": "dirichlet", "key": "lang", "alpha": 0.3},
        "output": str(work / "runs" / name)}
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) \
            else v
    return parse_federated_recipe(data, root=work)


def simulate(r: Any, nodes: int, **kw: Any) -> dict[str, Any]:
    from edgewise.federated.run import run

    t0 = time.perf_counter()
    status = run(r, simulate=nodes, fresh=True, artifact=False,
                 on_status=lambda s: progress(f"{r.name}: {s.state}, {len(s.rounds)} rounds"),
                 **kw)
    wall = time.perf_counter() - t0
    last = status.rounds[-1] if status.rounds else None
    return {"state": status.state, "error": status.error, "wall_s": wall,
            "server_s": (status.finished or 0) - status.started,
            "rounds": len(status.rounds), "epsilon": status.epsilon,
            "initial_exact": status.initial_eval_exact, "initial_loss": status.initial_eval_loss,
            "exact": last.eval_exact if last else None, "loss": last.eval_loss if last else None,
            "bytes_up_per_node": (last.bytes_up / max(1, len(last.replied))) if last else None,
            "per_round": [{"round": x.round, "replied": len(x.replied), "failed": len(x.failed),
                           "exact": x.eval_exact, "loss": x.eval_loss, "epsilon": x.epsilon,
                           "noise_multiplier": x.noise_multiplier, "seconds": x.seconds,
                           "secure": x.secure, "bytes_up": x.bytes_up}
                          for x in status.rounds]}


def node_splits(r: Any, nodes: int) -> list[Any]:
    from edgewise.federated.partition import partition, split_holdout

    sim = r.simulation
    parts = partition(sim.dataset.path, sim.dataset.format, nodes, how=sim.partition,
                      key=sim.key, alpha=sim.alpha, seed=r.seed)
    return [split_holdout(p, r.data.holdout, r.seed) for p in parts]


def weighted(scores: list[tuple[float, int]]) -> float:
    return sum(s * n for s, n in scores) / max(1, sum(n for _, n in scores))


# -- sections --------------------------------------------------------------------------------
def quality(work: Path, out: dict[str, Any]) -> None:
    from edgewise.federated.local import LocalTrainer
    from edgewise.supply.convert import resolve_source

    r = recipe(work, "fedavg")
    old = out.get("quality") or {}
    if REUSE and "local_only" in old and "centralized" in old:
        if "federated" not in old:
            old["federated"] = simulate(r, NODES)
        if "federated_fedadam" not in old:
            ra = recipe(work, "fedadam", strategy={"name": "fedadam", "eta": 0.01,
                                                   "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3})
            old["federated_fedadam"] = simulate(ra, NODES)
        rm = recipe(work, "fedavgm", strategy={"name": "fedavgm", "server_learning_rate": 2.5,
                                               "server_momentum": 0.5})
        old["federated_fedavgm"] = simulate(rm, NODES)
        _gap(old)
        save(out)
        return
    base = resolve_source(MODEL, progress=progress).state.hf_dir
    splits = node_splits(r, NODES)
    trainer = LocalTrainer(base, recipe(work, "local", rounds=ROUNDS,
                                        local={"steps": STEPS}).local_config())
    sec: dict[str, Any] = {"nodes": NODES, "rounds": ROUNDS, "local_steps": STEPS,
                           "train_examples": [len(s.train) for s in splits],
                           "holdout_examples": [len(s.holdout) for s in splits]}
    out["quality"] = sec
    base_scores = [trainer.score(trainer.initial(), s.holdout) for s in splits]
    sec["base"] = weighted([(b[1], len(s.holdout)) for b, s in zip(base_scores, splits,
                                                                   strict=True)])
    t0 = time.perf_counter()
    local = []
    for i, s in enumerate(splits):  # each node alone, ROUNDS × STEPS steps
        adapter = trainer.initial()
        for rnd in range(ROUNDS):
            adapter = trainer.fit(adapter, s.train, round_no=rnd).adapter
        loss, exact = trainer.score(adapter, s.holdout)
        local.append({"node": i, "exact": exact, "loss": loss, "holdout": len(s.holdout)})
        progress(f"node {i} alone: exact {exact:.3f} on its held-out data")
    sec["local_only"] = {"per_node": local, "seconds": time.perf_counter() - t0,
                         "exact": weighted([(x["exact"], x["holdout"]) for x in local])}
    save(out)
    pooled = [e for s in splits for e in s.train]
    t0 = time.perf_counter()
    adapter = trainer.initial()
    for rnd in range(ROUNDS * NODES):  # all nodes' local steps, on all the data
        adapter = trainer.fit(adapter, pooled, round_no=rnd).adapter
    central = [trainer.score(adapter, s.holdout) for s in splits]
    sec["centralized"] = {"seconds": time.perf_counter() - t0, "exact": weighted(
        [(c[1], len(s.holdout)) for c, s in zip(central, splits, strict=True)]),
        "per_node": [c[1] for c in central]}
    progress(f"centralized: exact {sec['centralized']['exact']:.3f}")
    save(out)
    sec["federated"] = simulate(r, NODES)
    _gap(sec)
    save(out)


def _gap(sec: dict[str, Any]) -> None:
    lo, ce = sec["local_only"]["exact"], sec["centralized"]["exact"]
    for key in ("federated", "federated_fedadam", "federated_fedavgm"):
        if key in sec:
            fed = sec[key]["exact"]
            sec[key]["gap_closed"] = (fed - lo) / (ce - lo) if ce != lo else None
    fed = sec["federated"]["exact"]
    sec["gap_closed"] = (fed - lo) / (ce - lo) if ce != lo else None
    sec["fed_rounds"], sec["fed_steps"] = FED_ROUNDS, FED_STEPS
    progress(f"federated: exact {fed:.3f}; closes {sec['gap_closed']}")


def dp(work: Path, out: dict[str, Any]) -> None:
    sec: dict[str, Any] = {"delta": 1e-5, "clip_norm": 0.5, "rounds": 5, "runs": []}
    out["dp"] = sec
    for z in (0.5, 1.0, 2.0):
        r = recipe(work, f"dp-{z:g}", rounds=5, privacy={"noise_multiplier": z,
                                                         "clip_norm": 0.5, "delta": 1e-5})
        res = simulate(r, NODES)
        sec["runs"].append({"noise_multiplier": z, **res})
        progress(f"z={z}: ε {res['epsilon']}, exact {res['exact']}")
        save(out)


def overhead(work: Path, out: dict[str, Any]) -> None:
    from edgewise.federated.run import _prepare, flower_env, flower_python
    from edgewise.supply.convert import resolve_source

    rounds = 3
    r = recipe(work, "overhead-edgewise", rounds=rounds, data={"holdout": 0.0},
               strategy={"name": "fedavg"})
    ours = simulate(r, NODES)
    plain_r = recipe(work, "overhead-plain", rounds=rounds, data={"holdout": 0.0})
    _run_dir, plan = _prepare(plain_r, nodes=NODES, fresh=True, say=progress)
    plan_file = work / "plain-plan.json"
    plan_file.write_text(json.dumps(plan))
    res_file = work / "plain-result.json"
    t0 = time.perf_counter()
    subprocess.run([str(flower_python()), str(HERE / "federated_plain.py"), str(plan_file),
                    str(res_file)], env=flower_env(), check=True,
                   stdout=(work / "plain.log").open("wb"), stderr=subprocess.STDOUT)
    plain = json.loads(res_file.read_text()) | {"process_s": time.perf_counter() - t0}
    base = resolve_source(MODEL).state.hf_dir
    full = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    out["overhead"] = {"rounds": rounds, "nodes": NODES, "local_steps": FED_STEPS,
                       "edgewise": ours, "plain_flower": plain,
                       "ratio_server_s": ours["server_s"] / plain["server_s"],
                       "full_model_bytes": full}
    progress(f"overhead: edgewise {ours['server_s']:.1f} s, plain {plain['server_s']:.1f} s")
    save(out)


def poison(work: Path, out: dict[str, Any]) -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ.update({"EW_BENCH_MALICIOUS": "0", "EW_BENCH_ATTACK": "signflip",
                       "EW_BENCH_SCALE": "10"})
    sec: dict[str, Any] = {"malicious": [0], "of": NODES, "attack": "global - 10 x update",
                           "runs": {}}
    if (out.get("poison") or {}).get("attack") == sec["attack"]:
        sec["runs"] = out["poison"]["runs"]  # keep the runs this bench run does not redo
    out["poison"] = sec
    # EW_BENCH_POISON: which strategies to (re)run, default all
    chosen = os.environ.get("EW_BENCH_POISON", ",".join(POISON)).split(",")
    try:
        for strategy in (s for s in POISON if s in chosen):
            r = recipe(work, f"poison-{strategy}", strategy=STRATEGY[strategy])
            sec["runs"][strategy] = simulate(r, NODES, client_app="federated_attack:client")
            progress(f"poisoned {strategy}: exact {sec['runs'][strategy]['exact']}")
            save(out)
        for strategy in (s for s in POISON[1:] if s in chosen):
            r = recipe(work, f"clean-{strategy}", strategy=STRATEGY[strategy])
            sec["runs"][f"{strategy}-clean"] = simulate(r, NODES)
            save(out)
    finally:
        for k in ("EW_BENCH_MALICIOUS", "EW_BENCH_ATTACK", "EW_BENCH_SCALE"):
            os.environ.pop(k, None)


def dropout(work: Path, out: dict[str, Any]) -> None:
    from tiny_models import build_tiny_llama

    tiny = build_tiny_llama(work / "tiny", train_steps=20)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ["EW_BENCH_DROP"] = "0.3"
    try:
        r = recipe(work, "dropout", nodes=10, rounds=3, base=str(tiny),
                   clients={"per_round": 10, "min": 6},
                   local={"r": 4, "alpha": 8, "steps": 3, "lr": 1e-2},
                   privacy={"noise_multiplier": 1.0, "clip_norm": 0.5, "delta": 1e-5})
        out["dropout"] = simulate(r, 10, client_app="federated_attack:client")
    finally:
        os.environ.pop("EW_BENCH_DROP", None)
    save(out)


def secure(work: Path, out: dict[str, Any]) -> None:
    """SecAgg+ against the same run without it, side by side; then SecAgg+ with DP and
    30 % of the nodes vanishing after their masked update, on the real model."""
    sec: dict[str, Any] = {"runs": {}}
    out["secure"] = sec
    fedavgm = STRATEGY["fedavgm"]
    for name, extra in (("quality-plain", {}), ("quality-secure", {"secure_aggregation": {}})):
        r = recipe(work, f"secure-{name}", strategy=fedavgm, **extra)
        sec["runs"][name] = simulate(r, NODES)
        progress(f"{name}: exact {sec['runs'][name]['exact']}")
        save(out)
    for name, extra in (("overhead-plain", {}), ("overhead-secure",
                                                 {"secure_aggregation": {}})):
        r = recipe(work, f"secure-{name}", rounds=3, data={"holdout": 0.0},
                   strategy={"name": "fedavg"}, **extra)
        sec["runs"][name] = simulate(r, NODES)
        save(out)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    os.environ.update({"EW_BENCH_DROP": "0.3", "EW_BENCH_DROP_STAGE": "unmask"})
    try:
        r = recipe(work, "secure-dp-vanish", nodes=10, rounds=3,
                   clients={"per_round": 10, "min": 6}, secure_aggregation={},
                   privacy={"noise_multiplier": 1.0, "clip_norm": 0.5, "delta": 1e-5})
        sec["runs"]["dp-vanish"] = simulate(r, 10, client_app="federated_attack:client")
    finally:
        for k in ("EW_BENCH_DROP", "EW_BENCH_DROP_STAGE"):
            os.environ.pop(k, None)
    progress(f"secure dp vanish: {sec['runs']['dp-vanish']['state']}")
    save(out)


def scale(work: Path, out: dict[str, Any]) -> None:
    from tiny_models import build_tiny_llama

    tiny = build_tiny_llama(work / "tiny-scale", train_steps=20)
    big = work / "pool-big.jsonl"
    rng = random.Random(0)
    with big.open("w") as f:
        for i in range(4000):
            lang = rng.choice(list(LANGS))
            w = rng.choice(WORDS)
            f.write(json.dumps({"prompt": f"In {lang}, the plural of {w} is",
                                "completion": f" {w}{LANGS[lang]}", "lang": lang,
                                "id": i}) + "\n")
    sec: list[dict[str, Any]] = []
    out["scale"] = sec
    for n in (100, 1000, 5000):
        r = recipe(work, f"scale-{n}", nodes=n, rounds=2, base=str(tiny),
                   clients={"per_round": 10, "min": 10},
                   local={"r": 4, "alpha": 8, "steps": 2, "batch_size": 4},
                   data={"holdout": 0.0},
                   simulation={"dataset": {"path": str(big), "format": "completion"},
                               "partition": "iid"})
        res = simulate(r, n)
        sec.append({"nodes": n, **res, "per_round_s": [x["seconds"] for x in res["per_round"]]})
        progress(f"scale {n}: {res['state']} {res['wall_s']:.0f} s")
        save(out)
        if res["state"] != "completed":
            break


def deploy(work: Path, out: dict[str, Any]) -> None:
    """A fleet made here: control plane, 4 enrolled nodes, SuperLink, 4 SuperNodes."""
    from cryptography.hazmat.primitives import serialization  # noqa: F401

    from edgewise.control.release import init_releases
    from edgewise.control.settings import ControlSettings, save_settings
    from edgewise.control.superlink import SuperLink
    from edgewise.federated.deploy import SuperNode, submit
    from edgewise.security.keys import load_private_key
    from edgewise.security.pki import init_ca
    from fleet_harness import ControlServer, join_node

    phrase = b"bench-passphrase"
    os.environ["EDGEWISE_CA_PASSPHRASE"] = phrase.decode()
    ctl = work / "ctl"
    init_ca(ctl, fleet="bench", passphrase=phrase)
    save_settings(ctl, ControlSettings(fleet="bench", heartbeat_s=5.0))
    init_releases(ctl / "tuf", passphrase=phrase)
    with ControlServer(ctl) as cs:
        states = [join_node(cs, f"site{i}", "device", work / f"site{i}") for i in range(4)]
    from tiny_models import build_tiny_llama

    tiny = build_tiny_llama(work / "tiny-deploy", train_steps=20)
    r = recipe(work, "deploy", rounds=3, base=str(tiny), pre_tokenizer="gpt-2",
               clients={"per_round": 4, "min": 4},
               local={"r": 4, "alpha": 8, "steps": 4, "lr": 1e-2}, simulation=None)
    splits = node_splits(recipe(work, "x"), 4)
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = SuperLink(ctl, port=port)
    nodes = []
    t0 = time.perf_counter()
    try:
        link.start()
        link.serve_in_background()
        for i, st in enumerate(states):
            f = work / f"site{i}.jsonl"
            f.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion})
                                 + "\n" for e in splits[i].train + splits[i].holdout))
            node = SuperNode(st.dir, link.address, f, data_format="completion", base=str(tiny))
            node.start(say=progress)
            nodes.append(node)
        key = load_private_key((ctl / "tuf" / "keys" / "release.key").read_bytes(),
                               passphrase=phrase)
        status = submit(r, superlink=link.address, ca=link.ca_file, release_key=key,
                        say=progress)
    finally:
        for n in nodes:
            n.stop()
        link.stop()
    wall = time.perf_counter() - t0
    from typer.testing import CliRunner

    from edgewise.cli import app

    res = CliRunner().invoke(app, ["control", "publish", str(r.output), "--name", "plurals",
                                   "--dir", str(ctl), "--json"])
    published = json.loads(res.output)["version"] if res.exit_code == 0 else res.output
    out["deploy"] = {"state": status.state, "error": status.error, "wall_s": wall,
                     "rounds": [{"round": x.round, "replied": len(x.replied),
                                 "exact": x.eval_exact, "seconds": x.seconds,
                                 "bytes_up": x.bytes_up} for x in status.rounds],
                     "initial_exact": status.initial_eval_exact,
                     "registered": sorted(link.registered) if link.registered else [],
                     "published": published if isinstance(published, str) else
                     {k: published[k] for k in ("ref", "kind", "total_bytes")}}
    save(out)


REUSE = False
STRATEGY: dict[str, dict[str, Any]] = {
    "fedavgm": {"name": "fedavgm", "server_learning_rate": 2.5, "server_momentum": 0.5},
    "fedmedian": {"name": "fedmedian"},
    "fedmedian-m": {"name": "fedmedian", "server_learning_rate": 2.5, "server_momentum": 0.5},
    "multikrum-m": {"name": "multikrum", "num_malicious_nodes": 1, "num_nodes_to_select": 3,
                    "server_learning_rate": 2.5, "server_momentum": 0.5}}
#: The poisoning runs: FedAvgM, then the robust strategies (each attacked and clean).
POISON = ("fedavgm", "fedmedian", "fedmedian-m", "multikrum-m")
SECTIONS = {"quality": quality, "dp": dp, "overhead": overhead, "poison": poison,
            "dropout": dropout, "secure": secure, "scale": scale, "deploy": deploy}


def save(out: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "federated.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (RESULTS / "federated.md").write_text(table(out))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def table(out: dict[str, Any]) -> str:
    lines = [f"# Federated LoRA fine-tuning ({out.get('model')}, {out.get('machine')})", ""]
    q = out.get("quality")
    if q and "federated" in q:
        lines += ["## Quality on a non-IID task", "",
                  f"{q['nodes']} nodes, Dirichlet α 0.3 over 8 made-up plural rules; "
                  f"local-only: {q['rounds']} × {q['local_steps']} steps per node; federated: "
                  f"{q.get('fed_rounds')} rounds × {q.get('fed_steps')} local steps (the same "
                  "30 per node); centralized: all nodes' steps on the pooled data. Exact "
                  "match on each node's held-out words.", "",
                  "| | exact match | |", "|---|---:|---|",
                  f"| base model | {_pct(q['base'])} | |",
                  f"| local-only (each node alone) | {_pct(q['local_only']['exact'])} | "
                  f"{q['local_only']['seconds']:.0f} s |",
                  f"| federated (FedAvg, FFA-LoRA) | {_pct(q['federated']['exact'])} | "
                  f"{q['federated']['wall_s']:.0f} s; closes "
                  f"{_pct(q['federated'].get('gap_closed'))} of the gap |",
                  *([f"| federated (FedAdam η 0.01, FFA-LoRA) | "
                     f"{_pct(q['federated_fedadam']['exact'])} | "
                     f"{q['federated_fedadam']['wall_s']:.0f} s; closes "
                     f"{_pct(q['federated_fedadam'].get('gap_closed'))} of the gap |"]
                    if "federated_fedadam" in q else []),
                  *([f"| federated (FedAvgM, server lr 2.5, momentum 0.5, FFA-LoRA) | "
                     f"{_pct(q['federated_fedavgm']['exact'])} | "
                     f"{q['federated_fedavgm']['wall_s']:.0f} s; closes "
                     f"{_pct(q['federated_fedavgm'].get('gap_closed'))} of the gap |"]
                    if "federated_fedavgm" in q else []),
                  f"| centralized (pooled, the ceiling) | {_pct(q['centralized']['exact'])} "
                  f"| {q['centralized']['seconds']:.0f} s |", "",
                  "Target: federated closes ≥ 80 % of the local-only → centralized gap.",
                  ""]
    d = out.get("dp")
    if d and d["runs"]:
        fed = (q or {}).get("federated", {})
        lines += ["## ε against quality", "",
                  f"δ = {d['delta']:g}, clip {d['clip_norm']}, distributed noise, every node "
                  f"every round (no sampling credit), FedAvg, {d.get('rounds', 5)} rounds × "
                  f"{FED_STEPS} local steps; the no-DP row is the 15-round FedAvg run.", "",
                  "| noise multiplier | ε | exact match |", "|---:|---:|---:|",
                  f"| 0 (no DP) | ∞ | {_pct(fed.get('exact'))} |"]
        lines += [f"| {x['noise_multiplier']:g} | {x['epsilon']:.2f} | {_pct(x['exact'])} |"
                  for x in d["runs"]]
        lines += [""]
    o = out.get("overhead")
    if o:
        lines += ["## Overhead against plain Flower", "",
                  f"{o['nodes']} nodes, {o['rounds']} rounds × {o['local_steps']} steps, same "
                  "trainer and partitions.", "",
                  "| | server rounds | process | bytes up per node per round |",
                  "|---|---:|---:|---:|",
                  f"| plain Flower FedAvg (full adapter) | {o['plain_flower']['server_s']:.1f} s "
                  f"| {o['plain_flower']['process_s']:.1f} s | "
                  f"{o['plain_flower']['bytes_per_node']:,.0f} |",
                  f"| edgewise (FFA-LoRA: B only) | {o['edgewise']['server_s']:.1f} s | "
                  f"{o['edgewise']['wall_s']:.1f} s | "
                  f"{o['edgewise']['bytes_up_per_node']:,.0f} |", "",
                  f"Ratio (server rounds): **{o['ratio_server_s']:.2f}×** (target ≤ 1.1×). "
                  f"The full model is {o['full_model_bytes']:,} bytes.", ""]
    p = out.get("poison")
    if p and p["runs"]:
        clean = (q or {}).get("federated_fedavgm", {}).get("exact")
        lines += ["## Poisoning", "",
                  f"{len(p['malicious'])} of {p['of']} nodes send {p['attack']}.", "",
                  "| run | exact match |", "|---|---:|",
                  f"| FedAvgM, clean | {_pct(clean)} |"]
        names = {"fedavgm": "FedAvgM, attacked", "fedmedian": "FedMedian, attacked",
                 "fedmedian-clean": "FedMedian, clean",
                 "fedmedian-m": "FedMedian + server step (lr 2.5, momentum 0.5), attacked",
                 "fedmedian-m-clean": "FedMedian + server step (lr 2.5, momentum 0.5), clean",
                 "multikrum-m": "MultiKrum (f 1, keep 3) + server step, attacked",
                 "multikrum-m-clean": "MultiKrum (f 1, keep 3) + server step, clean"}
        lines += [f"| {names.get(k, k)} | {_pct(v['exact'])} |" for k, v in p["runs"].items()]
        lines += [""]
    dr = out.get("dropout")
    if dr:
        lines += ["## 30 % drop-out", "", "| round | answered of 10 | ε |", "|---:|---:|---:|"]
        lines += [f"| {x['round']} | {x['replied']} | {x['epsilon']:.2f} |"
                  for x in dr["per_round"]]
        lines += ["", f"Run state: {dr['state']}.", ""]
    se = (out.get("secure") or {}).get("runs", {})
    if se:
        lines += ["## Secure aggregation (SecAgg+)", "",
                  f"FedAvgM runs: {NODES} nodes, {FED_ROUNDS} rounds × {FED_STEPS} steps; "
                  "overhead runs: FedAvg, 3 rounds, no evaluation; each pair side by side in "
                  "one bench run.", "",
                  "| run | exact match | server rounds | bytes up per node per round |",
                  "|---|---:|---:|---:|"]
        names = {"quality-plain": "FedAvgM", "quality-secure": "FedAvgM + SecAgg+",
                 "overhead-plain": "FedAvg (overhead)",
                 "overhead-secure": "FedAvg + SecAgg+ (overhead)"}
        for k, label in names.items():
            if k in se:
                x = se[k]
                lines.append(f"| {label} | {_pct(x['exact'])} | {x['server_s']:.1f} s | "
                             f"{x['bytes_up_per_node']:,.0f} |")
        if "overhead-plain" in se and "overhead-secure" in se:
            ratio = se["overhead-secure"]["server_s"] / se["overhead-plain"]["server_s"]
            lines += ["", f"SecAgg+ costs **{ratio:.2f}×** the server time of the same run "
                          "without it.", ""]
        v = se.get("dp-vanish")
        if v:
            lines += ["", "SecAgg+ with DP (z 1, clip 0.5, distributed noise, δ 1e-5), 10 "
                          "nodes, 3 of them vanishing each round after their masked update:",
                      "", "| round | keys | masked vectors in the sum | answered unmask | ε | "
                          "saturated |", "|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {x['round']} | {x['secure'].get('keyed')} | "
                      f"{x['secure'].get('masked')} | {x['secure'].get('unmasked')} | "
                      f"{x['epsilon']:.2f} | {x['secure'].get('saturated')} |"
                      for x in v["per_round"]]
            lines += ["", f"Run state: {v['state']}{': ' + v['error'] if v['error'] else ''}"
                          f"; exact match {_pct(v['exact'])} (base {_pct(v['initial_exact'])}).",
                      ""]
    sc = out.get("scale")
    if sc:
        lines += ["## Scale (tiny Llama, 10 nodes per round)", "",
                  "| virtual nodes | state | seconds per round | wall |", "|---:|---|---|---:|"]
        lines += [f"| {x['nodes']} | {x['state']} | "
                  f"{', '.join(f'{s:.1f}' for s in x['per_round_s'])} | {x['wall_s']:.0f} s |"
                  for x in sc]
        lines += [""]
    dep = out.get("deploy")
    if dep:
        lines += ["## Deployment run", "",
                  "Real flower-superlink + 4 flower-supernode processes, TLS from the fleet "
                  "CA, SuperNode authentication with the nodes' fleet keys, signed app "
                  "bundle; then `control publish`.", "",
                  "| round | nodes | exact match | seconds | bytes up |",
                  "|---:|---:|---:|---:|---:|"]
        lines += [f"| {x['round']} | {x['replied']} | {_pct(x['exact'])} | {x['seconds']:.1f} "
                  f"| {x['bytes_up']:,} |" for x in dep["rounds"]]
        lines += ["", f"State {dep['state']}, {dep['wall_s']:.0f} s end to end; registry: "
                      f"{dep['published']}.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--reuse", action="store_true", help="keep the stored local-only and "
                                                          "centralized numbers")
    args = ap.parse_args()
    global REUSE
    REUSE = args.reuse
    path = RESULTS / "federated.json"
    out: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    out.update({"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                           f"{platform.python_version()}", "model": MODEL,
                "lora": LOCAL})
    with tempfile.TemporaryDirectory(prefix="ew-bench-fed-") as tmp:
        work = Path(tmp)
        write_pool(work / "pool.jsonl")
        for name in args.only.split(","):
            progress(f"== {name}")
            t0 = time.perf_counter()
            SECTIONS[name](work, out)
            progress(f"== {name} done in {time.perf_counter() - t0:.0f} s")
    save(out)
    print(table(out))


if __name__ == "__main__":
    main()

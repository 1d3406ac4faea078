"""`edgewise federate run --simulate N` end to end: Flower's simulation engine (Ray) in
Flower's own environment, a tiny Llama built in the test, non-IID partitions.

A run trains an adapter the held-out data likes better than the base, leaves an
artifact the registry accepts and llama.cpp serves, and nothing of the nodes' text
reaches the status, manifest, plan or log; a private run stops before it would exceed
its ε budget, at the ε a reference accountant computes; a node whose data does not
parse says so by file and line and is dropped, and the run fails with one line instead
of hanging."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app
from edgewise.federated.privacy import DpAccountant
from edgewise.federated.status import read_status
from tiny_models import COLOURS, build_tiny_llama

pytest.importorskip("peft")
pytestmark = pytest.mark.timeout(600)

MARK = "zq-private-"  # in every prompt: must never leave a node


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", train_steps=20)


def _pool(path: Path, n: int = 160) -> Path:
    rng = random.Random(0)
    items = list(COLOURS.items())
    with path.open("w") as f:
        for i in range(n):
            k, v = items[i % len(items)]
            f.write(json.dumps({"prompt": f"{MARK}{rng.randrange(10**6)} what colour is {k}? ",
                                "completion": v, "label": k}) + "\n")
    return path


def _write(tmp: Path, base: Path, body: str) -> Path:
    _pool(tmp / "pool.jsonl")
    r = tmp / "federated.yaml"
    r.write_text(f"name: colours\nbase: {base}\npre_tokenizer: gpt-2\n"
                 "local: {r: 4, alpha: 8, steps: 6, batch_size: 8, lr: 1.0e-2}\n"
                 "data: {format: completion, holdout: 0.25}\n"
                 "simulation: {dataset: {path: pool.jsonl, format: completion}, "
                 "partition: dirichlet, key: label, alpha: 0.5}\n" + body)
    return r


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())  # rich wraps at the terminal width


def test_a_simulated_run_trains_and_leaves_a_servable_artifact(tmp_path: Path,
                                                               base: Path) -> None:
    recipe = _write(tmp_path, base, "rounds: 2\nclients: {per_round: 4, min: 3, "
                                    "timeout_s: 300}\n")
    code, out = _cli("federate", "run", str(recipe), "--simulate", "6")
    assert code == 0, out
    assert "round 1/2: " in out and "round 2/2: " in out and "completed" in out
    run_dir = tmp_path / "runs" / "colours"
    status = read_status(run_dir)
    assert status.state == "completed" and len(status.rounds) == 2 and status.nodes_total == 6
    assert all(len(r.replied) >= 3 and r.bytes_up > 0 for r in status.rounds)
    # FFA-LoRA: only B travels (less than half of this adapter), the same each way
    from safetensors.numpy import load_file

    tensors = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    b = [a.nbytes for k, a in tensors.items() if ".lora_B." in k]
    first = status.rounds[0]
    per_node = first.bytes_up / len(first.replied)
    assert per_node == first.bytes_down / len(first.sampled)
    assert sum(b) <= per_node < sum(b) + 256 * len(b)  # B's float32 + Flower's framing
    assert status.initial_eval_loss is not None and status.rounds[-1].eval_loss is not None
    assert status.rounds[-1].eval_loss < status.initial_eval_loss
    # the artifact: what `control publish` reads, with the run's lineage
    from edgewise.control.publish import read_directory

    pub, _ = read_directory(run_dir)
    assert pub.kind == "adapter" and pub.lineage.stages == ["federated:federated"]
    paths = {f.path for f in pub.files}
    assert {"manifest.json", "adapter.gguf", "base.f16.gguf",
            "adapter/adapter_model.safetensors"} <= paths
    stage = pub.manifest["stages"][0]["metrics"]
    assert stage["rounds"] == 2 and stage["strategy"] == "fedavg" and stage["epsilon"] is None
    assert stage["base_sha256"] == status.base["sha256"] and len(stage["per_round"]) == 2
    # nothing of the nodes' text left them
    for name in ("status.json", "manifest.json", "plan.json", "flower.log"):
        assert MARK not in (run_dir / name).read_text(), name
    # llama.cpp serves base + the federated adapter
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import ResolvedModel

    gguf = run_dir / "base.f16.gguf"
    e = LlamaCppEngine(ResolvedModel("b", gguf, "", gguf.stat().st_size, None), n_ctx=128,
                       n_threads=1, lora_path=str(run_dir / "adapter.gguf"))
    e.load()
    try:
        assert len(e.tokenize("what colour is sky?")) > 2
    finally:
        e.close()
    code, out = _cli("federate", "status", str(run_dir))
    assert code == 0 and "colours: completed (simulation), 2/2 rounds" in out
    assert "no differential privacy" in out and "held-out loss of the base model" in out
    code, out = _cli("federate", "run", str(recipe), "--simulate", "6")
    assert code == 2 and "holds an earlier run (completed): pass --fresh" in out


def test_a_private_run_stops_before_its_budget_at_the_reference_epsilon(
        tmp_path: Path, base: Path) -> None:
    z, delta = 1.0, 1e-5
    ref = DpAccountant(delta=delta)
    eps2 = [ref.spend(z) for _ in range(3)]  # ε after rounds 1, 2, 3 (all 4 answer, q = 1)
    budget = (eps2[1] + eps2[2]) / 2
    recipe = _write(tmp_path, base, "rounds: 5\nclients: {per_round: 4, min: 4, "
                                    "timeout_s: 300}\n"
                                    f"privacy: {{noise_multiplier: {z}, clip_norm: 0.5, "
                                    f"delta: {delta}, max_epsilon: {budget}}}\n")
    code, out = _cli("federate", "run", str(recipe), "--simulate", "4")
    assert code == 0, out
    assert "stopped" in out and "round 3 could spend" in out
    status = read_status(tmp_path / "runs" / "colours")
    assert status.state == "stopped" and len(status.rounds) == 2
    assert status.epsilon == pytest.approx(eps2[1], rel=1e-9) and status.epsilon <= budget
    assert [r.noise_multiplier for r in status.rounds] == [z, z]
    assert status.adapter == "adapter" and status.privacy["sampling_rate"] == 1.0
    code, out = _cli("federate", "status", str(tmp_path / "runs" / "colours"))
    assert f"ε {eps2[1]:.3f} of {budget}" in out and "why it ended: round 3" in out


def test_a_node_whose_data_does_not_parse_is_dropped_and_the_run_fails_clearly(
        tmp_path: Path, base: Path) -> None:
    recipe = _write(tmp_path, base, "rounds: 2\nclients: {per_round: 3, min: 2, "
                                    "timeout_s: 120}\n")
    pool = tmp_path / "pool.jsonl"
    lines = pool.read_text().splitlines()
    lines[6] = '{"prompt": "zq-private-broken", '
    pool.write_text("\n".join(lines) + "\n")
    code, out = _cli("federate", "run", str(recipe), "--simulate", "3")
    assert code == 2
    assert "the run failed: round 1: 0 of 3 sampled nodes answered, fewer than clients.min 2" \
        in out and "pool.jsonl:7: not valid JSON" in out
    status = read_status(tmp_path / "runs" / "colours")
    assert status.state == "failed" and status.adapter is None
    assert all(n.state == "dropped" and "pool.jsonl:7" in n.reason
               for n in status.nodes.values())
    assert MARK not in (tmp_path / "runs" / "colours" / "status.json").read_text()


# A ClientApp that is edgewise's own, except that three of the ten virtual nodes vanish
# after sending their masked update (they fail the unmask stage).
VANISH = '''
from flwr.app import Error, Message
from flwr.clientapp import ClientApp
from edgewise.federated import flower as ew, secagg

client = ClientApp()
GONE = {0, 3, 7}


@client.train()
def train(msg, context):
    stage = msg.content.config_records.get(secagg.RECORD)
    if stage is not None and stage["stage"] == "unmask" \\
            and int(context.node_config["partition-id"]) in GONE:
        return Message(Error(code=ew.CODE_OTHER, reason="vanished"), reply_to=msg)
    return ew._train(msg, context)


@client.evaluate()
def evaluate(msg, context):
    return ew._evaluate(msg, context)
'''


def test_secure_aggregation_with_distributed_noise_survives_30_percent_vanishing(
        tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SecAgg+, DP clipping, each node's noise share and the accountant in one run: 3 of
    10 nodes vanish after their masked update; the round completes with all 10 in the
    sum, and ε is spent at the noise of 10 shares."""
    from edgewise.federated.recipe import load_federated_recipe
    from edgewise.federated.run import run

    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "vanish.py").write_text(VANISH)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "apps"))
    z, delta = 1.0, 1e-5
    recipe = _write(tmp_path, base, "rounds: 1\nclients: {per_round: 10, min: 6, "
                                    "timeout_s: 300}\nsecure_aggregation: true\n"
                                    f"privacy: {{noise_multiplier: {z}, clip_norm: 0.5, "
                                    f"delta: {delta}}}\n")
    status = run(load_federated_recipe(recipe), simulate=10, client_app="vanish:client",
                 artifact=False)
    assert status.state == "completed", status.error
    r = status.rounds[0]
    assert r.secure["masked"] == 10 and r.secure["unmasked"] == 7, r.secure
    assert r.secure["saturated"] == 0 and r.secure["threshold"] == 6
    assert len(r.replied) == 10 and sorted(r.failed.values()) == ["unmask: vanished"] * 3
    ref = DpAccountant(delta=delta)
    assert r.noise_multiplier == z and r.epsilon == pytest.approx(ref.spend(z), rel=1e-9)
    assert status.adapter == "adapter" and status.secure_aggregation["protocol"] == "SecAgg+"
    assert MARK not in (tmp_path / "runs" / "colours" / "status.json").read_text()
    code, out = _cli("federate", "status", str(tmp_path / "runs" / "colours"))
    assert code == 0 and "the server saw only the sum of the updates" in out


# One of three virtual nodes hangs in its first round, far longer than clients.timeout_s.
HANG = '''
import time
from flwr.clientapp import ClientApp
from edgewise.federated import flower as ew

client = ClientApp()


@client.train()
def train(msg, context):
    if int(context.node_config["partition-id"]) == 0 and msg.content["config"]["server-round"] == 1:
        time.sleep(75)
    return ew._train(msg, context)


@client.evaluate()
def evaluate(msg, context):
    return ew._evaluate(msg, context)
'''


def test_a_node_that_hangs_is_timed_out_and_the_run_goes_on(
        tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from edgewise.federated.recipe import load_federated_recipe
    from edgewise.federated.run import run

    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "hang.py").write_text(HANG)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "apps"))
    recipe = _write(tmp_path, base, "rounds: 2\nclients: {per_round: 3, min: 2, "
                                    "timeout_s: 30}\n").read_text()
    (tmp_path / "federated.yaml").write_text(recipe.replace("holdout: 0.25", "holdout: 0"))
    t0 = time.monotonic()
    status = run(load_federated_recipe(tmp_path / "federated.yaml"), simulate=3,
                 client_app="hang:client", artifact=False)
    assert status.state == "completed", status.error
    first = status.rounds[0]
    assert len(first.replied) == 2 and list(first.failed.values()) == [
        "no reply within clients.timeout_s 30 s"]
    # cut at the timeout, not after the hanging node's 75 s (a loaded machine needs the
    # 30 s for the others' first round: model load and training)
    assert 30 <= first.seconds < 75 and time.monotonic() - t0 < 300
    assert status.adapter == "adapter"

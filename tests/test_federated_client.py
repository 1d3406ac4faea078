"""edgewise's Flower ClientApp on its own, in Flower's environment: what a node answers
when the run does not fit it, and that its answers never quote its data.

Each case builds the train message the server would send and calls the ClientApp's
train function in a `.venv-federated` child (Flower lives there, not in the node's
environment)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgewise.federated.recipe import parse_federated_recipe
from edgewise.federated.run import flower_env, flower_python
from tiny_models import build_tiny_llama

pytest.importorskip("peft")
pytestmark = pytest.mark.timeout(300)

SCRIPT = r"""
import json, sys
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app import RecordDict as RD
from edgewise.federated import flower as ew
from edgewise.federated.local import LocalTrainer
from edgewise.federated.recipe import from_json

from flwr.supercore.task_identity import TaskIdentity

TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # as a run sets them
case = json.loads(sys.argv[1])
recipe = from_json(case["recipe"])
trainer = LocalTrainer(__import__("pathlib").Path(case["base"]), recipe.local_config())
initial = trainer.initial()
sent = {k: initial[k] for k in ew.trained_names(initial, recipe.aggregation)}
sent.update({k: np.zeros(v, dtype=np.float32) for k, v in case.get("extra", {}).items()})
digest = case.get("a_digest") or ew.a_digest(initial)
config = ConfigRecord({"recipe": json.dumps(case["recipe"]), "base-path": case["base"],
                       "base-sha256": case["server_sha256"], "a-digest": digest,
                       "server-round": 1, "expected": 1.0})
msg = Message(RD({"arrays": ArrayRecord({k: Array(np.asarray(v, np.float32))
                                         for k, v in sent.items()}), "config": config}),
              dst_node_id=7, message_type="train")
ctx = Context(run_id=1, node_id=7, node_config=case["node_config"], state=RD(),
              run_config={})
reply = ew._train(msg, ctx)
print(json.dumps({"error": reply.error.reason if reply.has_error() else None,
                  "code": reply.error.code if reply.has_error() else None,
                  "sent": sorted(reply.content["arrays"].keys()) if not reply.has_error()
                  else None}))
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", train_steps=0)


def _answer(tmp_path: Path, base: Path, node_config: dict[str, str], **case: object
            ) -> dict[str, object]:
    recipe = parse_federated_recipe({"name": "c", "base": str(base), "rounds": 1,
                                     "local": {"r": 4, "alpha": 8, "steps": 1},
                                     "data": {"format": "completion"}}, root=tmp_path)
    body = {"recipe": recipe.to_json(), "base": str(base), "server_sha256": "a" * 64,
            "node_config": node_config, **case}
    out = subprocess.run([str(flower_python()), "-c", SCRIPT, json.dumps(body)],
                         capture_output=True, text=True, env=flower_env(), timeout=240,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    answer: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def _data(tmp_path: Path, text: str) -> str:
    p = tmp_path / "node.jsonl"
    p.write_text(text)
    return str(p)


GOOD = '{"prompt": "what colour is sky? ", "completion": "blue"}\n' * 4


def test_a_node_answers_with_b_only_and_refuses_what_does_not_fit(tmp_path: Path,
                                                                 base: Path) -> None:
    ok = _answer(tmp_path, base, {"data-path": _data(tmp_path, GOOD), "base-sha256": "a" * 64})
    assert ok["error"] is None and ok["sent"] and all(".lora_B." in k for k in ok["sent"])
    # another base model on this node than the run's
    other = _answer(tmp_path, base, {"data-path": _data(tmp_path, GOOD),
                                     "base-sha256": "b" * 64})
    assert other["code"] == 4102 and "this node's base model is bbbbbbbbbbbb, the run's is " \
        "aaaaaaaaaaaa" in str(other["error"])
    # another initial A (another seed, targets or library version on the server)
    seed = _answer(tmp_path, base, {"data-path": _data(tmp_path, GOOD)}, a_digest="0" * 64)
    assert seed["code"] == 4102 and "initial LoRA A differs" in str(seed["error"])
    # a tensor this node's model does not have
    extra = _answer(tmp_path, base, {"data-path": _data(tmp_path, GOOD)},
                    extra={"model.layers.9.self_attn.q_proj.lora_B.default.weight": [64, 4]})
    assert extra["code"] == 4102 and "which this node's model does not" in str(extra["error"])


def test_bad_data_is_named_by_file_and_line_and_never_quoted(tmp_path: Path,
                                                            base: Path) -> None:
    secret = "Jane Doe, MRN 4417-22, diagnosis"
    bad = _answer(tmp_path, base, {"data-path": _data(tmp_path, GOOD + f"{secret}\n")})
    assert bad["code"] == 4101 and "node.jsonl:5: not valid JSON" in str(bad["error"])
    wrong = _answer(tmp_path, base, {"data-path": _data(
        tmp_path, GOOD + json.dumps({"prompt": secret, "completion": 3}) + "\n")})
    assert wrong["code"] == 4101 and "node.jsonl:5: expected" in str(wrong["error"])
    none = _answer(tmp_path, base, {})
    assert none["code"] == 4101 and "this node has no data" in str(none["error"])
    for a in (bad, wrong):
        assert "Jane" not in str(a["error"]) and "4417" not in str(a["error"])

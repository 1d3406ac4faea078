"""A deployment run on real Flower processes: `flower-superlink` with TLS from the fleet
CA and SuperNode authentication, four `flower-supernode`s beside enrolled fleet nodes
(keys from their fleet identity), a tiny Llama built in the test.

The run completes end to end into the registry; a node that was never enrolled and a
revoked one cannot join; an app bundle without the release key's signature is refused
by every node, and the run fails with one line instead of hanging."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import free_port
from edgewise.cli import app
from edgewise.federated.recipe import parse_federated_recipe
from edgewise.security.keys import generate_key, load_private_key, private_pem
from fleet_harness import PASSPHRASE, ControlServer, join_node, releasing_control_dir
from tiny_models import COLOURS, build_tiny_llama

pytest.importorskip("peft")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", train_steps=20)


def _node_data(path: Path, things: list[str], n: int = 24) -> Path:
    rng = random.Random(len(things))
    with path.open("w") as f:
        for i in range(n):
            k = things[i % len(things)]
            f.write(json.dumps({"prompt": f"zq-node-secret-{rng.randrange(10**6)} what colour "
                                          f"is {k}? ", "completion": COLOURS[k]}) + "\n")
    return path


def _wait(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_a_deployment_run_on_superlink_and_supernodes_of_the_fleet(
        tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewise.control.superlink import SuperLink
    from edgewise.federated.deploy import SuperNode, submit

    ctl = tmp_path / "ctl"
    releasing_control_dir(ctl, monkeypatch)
    with ControlServer(ctl) as cs:
        states = [join_node(cs, f"n{i}", "device", tmp_path / f"s{i}") for i in range(5)]
        cs.cp.revoke("n4", by="test")
    rogue = tmp_path / "rogue"  # a copy of a node's state with a key never enrolled
    shutil.copytree(tmp_path / "s0", rogue)
    (rogue / "node.key").write_bytes(private_pem(generate_key()))
    link = SuperLink(ctl, port=free_port(), sync_s=1.0)
    nodes: list[SuperNode] = []
    try:
        link.start()
        assert sorted(link.registered) == ["n0", "n1", "n2", "n3"]  # n4 is revoked
        link.serve_in_background()
        colours = list(COLOURS)
        for i, state_dir in enumerate([*(s.dir for s in states), rogue]):
            data = _node_data(tmp_path / f"data{i}.jsonl", colours[2 * (i % 4): 2 * (i % 4) + 2])
            nodes.append(SuperNode(state_dir, link.address, data, data_format="completion"))
            nodes[-1].start()
        recipe = parse_federated_recipe({
            "name": "colours-fed", "base": str(base), "pre_tokenizer": "gpt-2", "rounds": 1,
            "clients": {"per_round": 4, "min": 4, "timeout_s": 180},
            "local": {"r": 4, "alpha": 8, "steps": 4, "batch_size": 8, "lr": 1e-2},
            "data": {"format": "completion", "holdout": 0.25}}, root=tmp_path)
        key = load_private_key((ctl / "tuf" / "keys" / "release.key").read_bytes(),
                               passphrase=PASSPHRASE)
        lines: list[str] = []
        status = submit(recipe, superlink=link.address, ca=link.ca_file, release_key=key,
                        on_status=lambda s: lines.append(s.state), say=lines.append,
                        index=ctl / "federated")
        assert status.state == "completed", status.error
        assert status.mode == "deployment" and len(status.rounds) == 1
        assert status.nodes_total == 4 and all(len(r.replied) == 4 for r in status.rounds)
        assert status.rounds[-1].eval_loss < status.initial_eval_loss  # type: ignore[operator]
        assert any("signed with the fleet's release key" in line for line in lines)
        # the revoked node and the key never enrolled did not get in
        for n in (nodes[4], nodes[5]):
            assert "Failed to activate SuperNode" in (n.folder / "supernode.log").read_text()
        run_dir = tmp_path / "runs" / "colours-fed"
        for name in ("status.json", "manifest.json", "plan.json"):
            assert "zq-node-secret" not in (run_dir / name).read_text()
        # on the fleet page's list, and into the registry
        from edgewise.federated.status import indexed_runs

        (listed, listed_status), = indexed_runs(ctl / "federated")
        assert listed == "colours-fed" and listed_status is not None
        assert listed_status.state == "completed"
        res = CliRunner().invoke(app, ["control", "publish", str(run_dir), "--name",
                                       "colours-fed", "--dir", str(ctl), "--json"])
        assert res.exit_code == 0, res.output
        published = json.loads(res.output)["version"]
        assert published["kind"] == "adapter" and published["ref"] == "colours-fed@1"

        # revoking a node takes it out of the next run: the SuperLink unregisters its key
        with ControlServer(ctl) as cs:
            cs.cp.revoke("n3", by="test")
        _wait("n3 unregistered", lambda: "n3" not in link.registered)

        # a bundle the release key did not sign: every node refuses it
        bad = parse_federated_recipe({
            "name": "unsigned", "base": str(base), "rounds": 1,
            "clients": {"per_round": 3, "min": 2, "timeout_s": 120},
            "local": {"r": 4, "alpha": 8, "steps": 2},
            "data": {"format": "completion", "holdout": 0.0}}, root=tmp_path)
        status = submit(bad, superlink=link.address, ca=link.ca_file, release_key=key,
                        signature="AAAA")
        assert status.state == "failed"
        assert "sampled nodes answered, fewer than clients.min 2" in status.error
        assert "The FAB could not be verified" in status.error
        for n in nodes[:3]:
            assert "is not signed by the fleet's release key; refused" in \
                (n.folder / "supernode.log").read_text()
    finally:
        for n in nodes:
            n.stop()
        link.stop()
    assert not any(p for p in os.listdir(tmp_path) if p.startswith("ew-ray-"))

"""Canary rollouts on the real control plane and real joined nodes: a version that
fails its quality gate at the first step is taken back from the canary on its own and
never reaches the other node; one that passes every step moves the alias and reaches
every node. Plus the plan's parsing and the gates' arithmetic."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.control.page import FleetPage
from edgewise.control.rollouts import (
    Evidence,
    Gate,
    Plan,
    Rollout,
    Step,
    evaluate,
    parse_gate,
    parse_steps,
)
from edgewise.engines.base import Step as TokenStep
from edgewise.engines.fake import FakeEngine
from edgewise.errors import ConflictError, InvalidRequestError
from edgewise.node import split_point
from fleet_harness import (
    ControlServer,
    NodeServer,
    join_node,
    registered_engine,
    releasing_control,
)
from test_control_admin import remote, run_cli
from test_registry import artifact

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
PROBES = "".join(json.dumps({"prompt": f"Is {i} a number? Answer:", "completion": c}) + "\n"
                 for i, c in enumerate([" yes", " yes", " yes", " no"]))


class ProbeFake(FakeEngine):
    """A fake release whose answers lean to " yes" (a good model: 3 of 4 probes right)
    or, when its weights say "bad", to " no" (1 of 4)."""

    def __init__(self, *, prefer: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.prefer = prefer.encode()

    def score(self, tokens: Sequence[int]) -> list[TokenStep]:
        text = b"".join(self.token_bytes(t) for t in tokens[1:])
        lp = 0.0 if text.endswith(self.prefer) else -1.0
        return [TokenStep(int(t), lp) for t in tokens[1:]]


def _probefake(ec: Any, resolve: Any) -> FakeEngine:
    path = Path(resolve().path)
    weights = path.read_bytes()
    prefer = " no" if b"bad" in weights else " yes"
    return ProbeFake(prefer=prefer, n_ctx=ec.n_ctx, model="release-" + path.parts[-4],
                     fail_after=1 if b"fails" in weights else None)


@pytest.fixture(autouse=True)
def _engine() -> Iterator[None]:
    with registered_engine("probefake", _probefake):
        yield


@pytest.fixture
def cs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlServer]:
    yield from releasing_control(tmp_path, monkeypatch)


def _node(cs: ControlServer, tmp: Path, name: str) -> NodeServer:
    join_node(cs, name, "device", tmp / name / "fleet")
    return NodeServer(tmp / name / "fleet", engine={"kind": "probefake"},
                      fleet={"heartbeat_s": 0.5, "update": {"model": "gemma",
                                                            "alias": "stable"}})


def _served(node: NodeServer) -> str:
    r = httpx.post(f"{node.url}/v1/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["model"])


def _wait(what: str, cond: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _reports(cs: ControlServer, node: str) -> dict[str, Any]:
    rec = cs.cp.node(node)
    return dict((rec.heartbeat or {}).get("update") or {}) if rec else {}


@contextlib.contextmanager
def _two_nodes_on_v1(cs: ControlServer, tmp: Path) -> Iterator[tuple[NodeServer, NodeServer]]:
    """gemma@1 published under stable, and two joined nodes serving it."""
    cs.cp.registry_publish(artifact(tmp / "b1", "gemma"), name="gemma", by="ops",
                           alias="stable")
    with _node(cs, tmp, "edge-a") as a, _node(cs, tmp, "edge-b") as b:
        for n in (a, b):
            _wait(f"{n.name} on v1", lambda n=n: _reports(cs, n.name).get("installed") == 1)
        yield a, b


def _installs(node: NodeServer) -> list[str]:
    return [e.record.reason for e in node.app.state.router.audit.query()
            if e.record.route == "fleet/update" and e.record.outcome == "answered"]


def test_a_bad_version_is_rolled_back_at_the_first_step_and_a_good_one_completes(
        cs: ControlServer, tmp_path: Path) -> None:
    cp = cs.cp
    with _two_nodes_on_v1(cs, tmp_path) as (a, b):
        cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="bad"), name="gemma",
                            by="ops")
        r = cp.rollout_start("gemma@2", by="ops", steps="1,100", bake_s=1.0,
                             probes=PROBES.encode())
        assert r.incumbent == 1 and len(r.assigned) == 1 and len(r.eligible) == 2
        assert [g.text for g in r.plan.gates] == ["error_rate<=0.05", "accuracy_drop<=0.02"]
        with pytest.raises(ConflictError, match="still active"):
            cp.rollout_start("gemma@2", by="ops", probes=PROBES.encode())
        canary = a if r.assigned == ["edge-a"] else b
        other = b if canary is a else a
        done = _wait("the rollback", lambda: (x := cp.rollout(r.id)).state != "running"
                     and x.phase == "done" and x)
        assert done.state == "rolled_back"
        assert "accuracy_drop<=0.02 failed" in done.reason and canary.name in done.reason
        assert "0.250 on v2 vs 0.750 on v1" in done.reason
        assert [e.kind for e in done.events] == ["start", "deployed", "rollback"]
        _wait("the canary back on v1",
              lambda: _reports(cs, canary.name).get("installed") == 1)
        assert _served(canary) == "release-1"
        probe = _reports(cs, canary.name)["probe"]
        assert probe["accuracy"] == 0.25 and probe["incumbent_accuracy"] == 0.75
        # the other node never ran (or even downloaded) version 2
        assert not (other.member.state.dir / "models" / "gemma" / "2").exists()
        assert not any("gemma@2" in why for why in _installs(other))
        assert any("gemma@1 (rolled back)" in why for why in _installs(canary))
        assert cp.registry.aliases("gemma") == {"stable": 1}
        audit = [e.record for e in cp.audit.query()
                 if e.record.route == "control/rollout_rollback"]
        assert [e.outcome for e in audit] == ["refused:gate"]
        html = FleetPage(fleet="acme").fleet([], now=datetime.now(UTC), ca_fingerprint="x",
                                             admin=True, rollouts=[done.to_json()])
        assert 'id="rollouts"' in html and "rolled back" in html
        assert "<code>accuracy_drop&lt;=0.02</code> 0.5 — fail" in html

        # a good version passes both steps and moves the alias
        cp.registry_publish(artifact(tmp_path / "b3", "gemma", seed="3"), name="gemma",
                            by="ops")
        r3 = cp.rollout_start("gemma@3", by="ops", steps="1,100", bake_s=1.0,
                              probes=PROBES.encode())
        done = _wait("the rollout to complete",
                     lambda: (x := cp.rollout(r3.id)).state == "completed" and x, 90)
        assert [e.kind for e in done.events] == ["start", "deployed", "step", "deployed",
                                                 "complete"]
        # the alias moves right after the rollout is marked complete
        _wait("the alias", lambda: cp.registry.aliases("gemma") == {"stable": 3}, 10)
        moves = cp.registry.history("gemma", "stable")
        assert moves[-1].moved_by == f"rollout/{r3.id}"
        for n in (a, b):
            _wait(f"{n.name} on v3", lambda n=n: _reports(cs, n.name).get("installed") == 3)
            assert _served(n) == "release-3"
        assert [r.id for r in cp.rollout_list(name="gemma")] == [r3.id, r.id]


def _traffic(nodes: Sequence[NodeServer], users: int) -> dict[str, int]:
    """One chat request per user per node; how many each served model answered (and
    how many failed: ``"failed"``)."""
    got: dict[str, int] = {}
    for n in nodes:
        for i in range(users):
            r = httpx.post(f"{n.url}/v1/chat/completions",
                           json={**CHAT, "user": f"user-{i}"}, timeout=30)
            key = str(r.json()["model"]) if r.status_code == 200 else "failed"
            got[key] = got.get(key, 0) + 1
    return got


def _ask(node: NodeServer, users: Sequence[str]) -> dict[str, int]:
    """A chat request per user: how many each served model answered (or "failed")."""
    got: dict[str, int] = {}
    for user in users:
        r = httpx.post(f"{node.url}/v1/chat/completions", json={**CHAT, "user": user},
                       timeout=30)
        key = str(r.json()["model"]) if r.status_code == 200 else "failed"
        got[key] = got.get(key, 0) + 1
    return got


def test_an_ab_rollout_compares_both_versions_on_the_same_nodes(
        cs: ControlServer, tmp_path: Path) -> None:
    """--split: the canary serves the new version beside the incumbent to a share of
    its requesters; the gates read each version's own telemetry from that node; a
    version whose answers fail is taken back (the split ends on the incumbent), a good
    one completes and then serves alone."""
    cp = cs.cp
    with _two_nodes_on_v1(cs, tmp_path) as (a, b):
        cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="fails"), name="gemma",
                            by="ops")
        r = cp.rollout_start("gemma@2", by="ops", steps="1,100", bake_s=30.0, split=50)
        assert r.plan.split == 0.5 and r.pointer(None)["split"] == 0.5
        canary = a if r.assigned == ["edge-a"] else b
        other = b if canary is a else a
        _wait("the canary's split", lambda: _reports(cs, canary.name).get("split")
              == {"version": 2, "share": 0.5})
        assert _reports(cs, canary.name)["installed"] == 1  # still serving v1 beside
        ready = httpx.get(f"{canary.url}/readyz").json()
        assert ready["split"] == {"a": "gemma@1", "b": "gemma@2", "share": 0.5}
        # users on each side of the split (the key of an anonymous request: its `user`)
        users = [f"user-{i}" for i in range(200)]
        on_a = [u for u in users if split_point("user:" + u) >= 0.5][:20]
        on_b = [u for u in users if split_point("user:" + u) < 0.5][:20]
        _wait("the bake", lambda: cp.rollout(r.id).phase == "baking")
        # the incumbent's side first, for a few heartbeats, then the new version's
        served = _ask(canary, on_a * 2)
        assert served == {"release-1": len(on_a) * 2}  # every one of them on v1
        time.sleep(1.5)
        for _ in range(40):
            got = _ask(canary, on_b[:5])
            served = {k: served.get(k, 0) + v for k, v in got.items()}
            if cp.rollout(r.id).state != "running":
                break
        assert served.get("failed", 0) >= 1 and "release-2" not in served
        done = _wait("the rollback", lambda: (x := cp.rollout(r.id)).state != "running"
                     and x.phase == "done" and x)
        assert done.state == "rolled_back" and "error_rate<=0.05 failed" in done.reason
        values = done.gate_values
        assert values["new"]["requests"] >= 1 and values["new"]["error_rate"] == 1.0
        assert values["incumbent"]["requests"] >= 1  # the canary's own v1 answers
        assert values["incumbent"]["error_rate"] == 0.0
        _wait("the split ended", lambda: not _reports(cs, canary.name).get("split"))
        assert httpx.get(f"{canary.url}/readyz").json()["split"] is None
        assert _traffic([canary], 10) == {"release-1": 10}
        assert not (other.member.state.dir / "models" / "gemma" / "2").exists()
        html = FleetPage(fleet="acme").fleet([], now=datetime.now(UTC), ca_fingerprint="x",
                                             admin=True, rollouts=[done.to_json()])
        assert "1/2 done, A/B 50%" in html

        # a good version: split on each step's nodes, then alone everywhere
        cp.registry_publish(artifact(tmp_path / "b3", "gemma", seed="3"), name="gemma",
                            by="ops")
        r3 = cp.rollout_start("gemma@3", by="ops", steps="1,100", bake_s=1.0, split=25)
        _wait("the canary's split", lambda: _reports(cs, r3.assigned[0]).get("split"))
        done = _wait("the rollout to complete",
                     lambda: (x := cp.rollout(r3.id)).state == "completed" and x, 90)
        assert [e.kind for e in done.events] == ["start", "deployed", "step", "deployed",
                                                 "complete"]
        for n in (a, b):
            _wait(f"{n.name} on v3 alone",
                  lambda n=n: (u := _reports(cs, n.name)).get("installed") == 3
                  and not u.get("split"))
            assert _traffic([n], 8) == {"release-3": 8}
            by_model = (cs.cp.node(n.name).heartbeat or {})["by_model"]  # type: ignore[union-attr]
            assert "gemma@3" in by_model


def test_pause_holds_a_rollout_and_abort_takes_it_back(cs: ControlServer,
                                                       tmp_path: Path) -> None:
    cp = cs.cp
    cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops",
                        alias="stable")
    with _node(cs, tmp_path, "edge-a") as a:
        _wait("v1", lambda: _reports(cs, a.name).get("installed") == 1)
        cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="2"), name="gemma",
                            by="ops")
        r = cp.rollout_start("gemma@2", by="ops", steps="100", bake_s=3600)
        _wait("the canary on v2", lambda: _reports(cs, a.name).get("installed") == 2)
        assert cp.rollout_action(r.id, "pause", by="ops", why="weekend").state == "paused"
        resumed = cp.rollout_action(r.id, "resume", by="ops")
        assert resumed.state == "running"
        aborted = cp.rollout_action(r.id, "abort", by="ops", why="changed our mind")
        assert aborted.state == "aborted" and "changed our mind" in aborted.reason
        _wait("the node back on v1", lambda: _reports(cs, a.name).get("installed") == 1)
        assert _served(a) == "release-1"
        with pytest.raises(ConflictError, match="aborted"):
            cp.rollout_action(r.id, "resume", by="ops")
        kinds = [e.kind for e in cp.rollout(r.id).events]
        assert kinds[0] == "start" and kinds[-3:] == ["pause", "resume", "aborted"]

        # the same through the admin CLI, remotely, as an A/B rollout
        ctl = remote(cs, cs.access_token("admin"))
        out = run_cli("control", "rollout", "start", "gemma@2", "--steps", "100",
                      "--bake", "3600", "--split", "20", *ctl)
        assert out.exit_code == 0, out.output
        assert "replacing v1 (stable)" in out.output
        assert "A/B: 20% of each node" in out.output
        rid = int(re.search(r"rollout (\d+):", out.output).group(1))  # type: ignore[union-attr]
        _wait("the split", lambda: _reports(cs, a.name).get("split")
              == {"version": 2, "share": 0.2})
        _wait("the bake", lambda: cp.rollout(rid).phase == "baking")
        out = run_cli("control", "rollout", "status", str(rid), "--json", *ctl)
        assert out.exit_code == 0, out.output
        got = json.loads(out.stdout)
        assert got["plan"]["split"] == 0.2 and got["phase"] == "baking"
        out = run_cli("control", "rollout", "abort", str(rid), "--why", "enough", *ctl)
        assert out.exit_code == 0, out.output
        _wait("the split ended", lambda: not _reports(cs, a.name).get("split"))
        assert _served(a) == "release-1"
        out = run_cli("control", "rollout", "start", "gemma@2", "--split", "100", *ctl)
        assert out.exit_code != 0 and "--split 100: the percentage" in out.output


def test_a_rollout_needs_a_node_an_incumbent_and_a_valid_probe_set(
        cs: ControlServer, tmp_path: Path) -> None:
    cp = cs.cp
    cp.registry_publish(artifact(tmp_path / "b1", "gemma"), name="gemma", by="ops")
    cp.registry_publish(artifact(tmp_path / "b2", "gemma", seed="2"), name="gemma", by="ops")
    with pytest.raises(InvalidRequestError, match="has no alias stable"):
        cp.rollout_start("gemma@2", by="ops")
    cp.alias_set("gemma", 1, "stable", by="ops")
    with pytest.raises(InvalidRequestError, match="no node follows gemma"):
        cp.rollout_start("gemma@2", by="ops")
    with pytest.raises(InvalidRequestError, match="already names gemma@1"):
        cp.rollout_start("gemma@1", by="ops")
    with pytest.raises(InvalidRequestError, match="probe set:2: expected"):
        cp.rollout_start("gemma@2", by="ops", probes=b'{"prompt": "a", "completion": "b"}\n'
                                                      b'{"oops": 1}\n')
    with pytest.raises(InvalidRequestError, match="needs a probe set"):
        cp.rollout_start("gemma@2", by="ops", gates=["accuracy_drop<=0.1"])
    refused = [e.record.outcome for e in cp.audit.query()
               if e.record.route == "control/rollout_start"]
    assert len(refused) == 5 and all(o.startswith("refused:") for o in refused)


# -- the plan and the gates ---------------------------------------------------------------
def test_gates_parse_and_refuse_what_they_cannot_mean() -> None:
    assert parse_gate("ttft_p95<=1.5x") == Gate("ttft_p95", "<=", 1.5, relative=True)
    assert parse_gate(" error_rate <= 0.05 ").text == "error_rate<=0.05"
    for bad, match in [("ttft_p95>=2", "passes when it is <="), ("latency<=3", "unknown metric"),
                       ("error_rate<=0.1x", "absolute"), ("tokens_per_s", "METRIC<=VALUE")]:
        with pytest.raises(InvalidRequestError, match=match):
            parse_gate(bad)


def test_steps_are_shares_or_counts_and_always_end_at_every_node() -> None:
    steps = parse_steps("1,25,100")
    assert [s.nodes(10) for s in steps] == [1, 3, 10]
    assert [s.nodes(2) for s in steps] == [1, 1, 2]
    assert [s.text for s in parse_steps("2n,50")] == ["2n", "50", "100"]
    assert Step(count=5).nodes(3) == 3
    for bad in ("0", "101", "x", "0n", ""):
        with pytest.raises(InvalidRequestError):
            parse_steps(bad)


def _rollout(gates: list[str]) -> Rollout:
    now = datetime.now(UTC)
    return Rollout(id=1, name="gemma", version=2, incumbent=1, alias="stable",
                   plan=Plan(steps=parse_steps("100"), gates=[parse_gate(g) for g in gates],
                             bake_s=1),
                   state="running", step=0, phase="baking", phase_at=now,
                   eligible=["a", "b"], assigned=["a"], gate_values={},
                   reason="", revision=0, created_at=now, created_by="t", updated_at=now)


def test_relative_gates_compare_with_the_incumbent_and_wait_for_data() -> None:
    r = _rollout(["ttft_p95<=1.5x", "tokens_per_s>=0.8x", "error_rate<=0.05"])
    ev = Evidence(key=(1, 0, ""))
    values, failed = evaluate(r, ev)
    assert failed is None and all(g["pass"] is None for g in values["gates"].values())
    ev.incumbent.add({"ttft_p95_ms": 100.0, "decode_tps_p50": 50.0, "error_rate": 0.0}, 10)
    ev.new.add({"ttft_p95_ms": 140.0, "decode_tps_p50": 45.0, "error_rate": 0.0}, 10)
    values, failed = evaluate(r, ev)
    assert failed is None and values["gates"]["ttft_p95<=1.5x"]["pass"] is True
    ev.new.add({"ttft_p95_ms": 400.0, "decode_tps_p50": 45.0, "error_rate": 0.2}, 10)
    values, failed = evaluate(r, ev)
    assert failed is not None and failed.startswith("gate ttft_p95<=1.5x failed")
    assert "over 20 requests" in failed
    assert values["gates"]["error_rate<=0.05"]["pass"] is False  # 0.1 over both intervals

"""SecAgg+ (edgewise.federated.secagg) on its own, in Flower's environment: the server's
four stages against real nodes' stage handlers in one process, the transport an in-process
grid that hands each message to its node (and lets nodes vanish at any stage).

What the server gets is the weighted mean of the updates within quantisation error and
never a node's update; nodes vanishing at each stage leave a round that completes (30 %
after their masked update) or stops in one line before anything is unmasked; a share
tampered with in transit, a server asking for both shares of a node, a threshold at most
half and stages out of order are refused; masks use the whole secret (Flower's 32-bit
fold does not)."""

from __future__ import annotations

import json
import subprocess

import pytest

from edgewise.federated.run import flower_env, flower_python

pytestmark = pytest.mark.timeout(300)

SCRIPT = r'''
import json
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.app import RecordDict
from flwr.supercore.task_identity import TaskIdentity
from edgewise.federated import secagg

TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
SHAPES = {"a": (6, 5), "b": (7,)}


class InProcessGrid:
    """Hands each message to its node's `client_step`; `vanish`: stage → nodes that stop
    answering from that stage on; `tamper`: flip a byte of the shares sent to that node."""

    def __init__(self, nodes, updates, weights, vanish=None, tamper=None):
        self.ctx = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(),
                               run_config={}) for n in nodes}
        self.updates, self.weights = updates, weights
        self.vanish, self.tamper = vanish or {}, tamper
        self.gone, self.replies, self.stages = set(), [], []

    def get_node_ids(self):
        return sorted(self.ctx)

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for m in messages:
            n = m.metadata.dst_node_id
            rec = m.content.config_records[secagg.RECORD]
            self.stages.append(rec["stage"])
            self.gone |= set(self.vanish.get(rec["stage"], ()))
            if n in self.gone:
                continue
            if rec["stage"] == "mask" and n == self.tamper and rec["ctxts"]:
                bad = bytearray(rec["ctxts"][0]); bad[40] ^= 1
                rec["ctxts"] = [bytes(bad)] + list(rec["ctxts"][1:])

            def train(msg, ctx, n=n):
                return (self.updates[n], self.weights[n],
                        MetricRecord({"examples": int(self.weights[n]), "train-loss": 1.0}))
            try:
                r = secagg.client_step(m, self.ctx[n], train)
            except secagg.SecureAggregationError as e:
                r = Message(Error(code=1, reason=str(e)), reply_to=m)
            self.replies.append((n, r))
            out.append(r)
        return out


def scenario(n=10, vanish=None, tamper=None, shares=1.0, threshold=0.6, dp=False):
    rng = np.random.default_rng(1)
    nodes = list(range(1000, 1000 + n))
    updates = {k: {name: rng.normal(0, 0.05, s) for name, s in SHAPES.items()}
               for k in nodes}
    weights = {k: 1.0 if dp else float(20 + 7 * i) for i, k in enumerate(nodes)}
    grid = InProcessGrid(nodes, updates, weights, vanish, tamper)
    msgs = [Message(RecordDict({"arrays": ArrayRecord({name: Array(np.zeros(s, np.float32))
                                                      for name, s in SHAPES.items()})}),
                    dst_node_id=k, message_type="train") for k in nodes]
    cfg = secagg.SecureConfig(shares=shares, threshold=threshold, clip=1.0,
                              max_weight=1.0 if dp else 1000.0, min_nodes=3, timeout=5)
    out = {"stages": None}
    try:
        res = secagg.aggregate(grid, msgs, cfg, 3)
    except secagg.SecureAggregationError as e:
        out.update(error=str(e), stages=sorted(set(grid.stages)))
        return out
    w = np.array([weights[k] for k in res.masked])
    want = {name: sum(weights[k] * updates[k][name] for k in res.masked) / w.sum()
            for name in SHAPES}
    # what the server received: no arrays, and no vector near any node's quantised update
    leaked = any(len(r.content.array_records) for _, r in grid.replies
                 if not r.has_error())
    near = 0
    for k, r in grid.replies:
        if r.has_error() or "masked" not in r.content.config_records[secagg.RECORD]:
            continue
        vec = np.frombuffer(r.content[secagg.RECORD]["masked"], "<u4").astype(np.float64)
        lv = secagg.levels(n)
        flat = np.concatenate([updates[k][s].ravel() for s in sorted(SHAPES)])
        q = (flat * weights[k] / cfg.max_weight + 1) * (lv - 1) / 2
        near += int(np.mean(np.abs(vec[:-1] - q) < 4) > 0.5)  # within rounding
    out.update(error=None, masked=len(res.masked), unmasked=len(res.unmasked),
               err=max(float(np.max(np.abs(res.mean[k] - want[k]))) for k in SHAPES),
               failed={str(k): v[1] for k, v in res.failed.items()}, leaked=leaked,
               near=near, weight=res.weight, shares=res.shares, threshold=res.threshold)
    return out


def refusals():
    """A node's answers to a server that breaks the protocol."""
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})

    def step(cfg):
        m = Message(RecordDict({secagg.RECORD: ConfigRecord(cfg)}), dst_node_id=5,
                    message_type="train")
        try:
            return secagg.client_step(m, ctx, None).content[secagg.RECORD]
        except secagg.SecureAggregationError as e:
            return str(e)

    setup = {"stage": "setup", "round": 1, "shares": 5, "threshold": 3, "levels": 2**28,
             "sampled": 5, "clip": 1.0, "max-weight": 1.0}
    low = step({**setup, "threshold": 2})
    order = step({"stage": "unmask", "round": 1, "active": [5], "dead": []})
    keys = step(setup)
    skip = step({"stage": "mask", "round": 1, "srcs": [], "ctxts": []})
    return {"low": low, "order": order, "skip": skip, "keys": sorted(keys.keys())}


def both_shares():
    """The unmask stage asking one node for both kinds of share of a neighbour."""
    grid_nodes = [1, 2, 3, 4]
    ctxs = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(),
                       run_config={}) for n in grid_nodes}

    def call(n, cfg, train=None):
        m = Message(RecordDict({secagg.RECORD: ConfigRecord(cfg)}), dst_node_id=n,
                    message_type="train")
        return secagg.client_step(m, ctxs[n], train).content[secagg.RECORD]

    setup = {"stage": "setup", "round": 1, "shares": 4, "threshold": 3, "levels": 2**28,
             "sampled": 4, "clip": 1.0, "max-weight": 1.0}
    keys = {n: call(n, setup) for n in grid_nodes}
    share = {"stage": "share-keys", "round": 1, "nids": grid_nodes,
             "pk1": [keys[n]["pk1"] for n in grid_nodes],
             "pk2": [keys[n]["pk2"] for n in grid_nodes]}
    sent = {n: call(n, share) for n in grid_nodes}
    to1 = [(s, c) for s in grid_nodes if s != 1
           for d, c in zip(sent[s]["dsts"], sent[s]["ctxts"]) if d == 1]
    zero = lambda m, c: ({"a": np.zeros(3)}, 1.0, MetricRecord({"examples": 1}))
    call(1, {"stage": "mask", "round": 1, "srcs": [s for s, _ in to1],
             "ctxts": [c for _, c in to1]}, zero)
    try:
        call(1, {"stage": "unmask", "round": 1, "active": [1, 2, 3], "dead": [2]})
        return "answered"
    except secagg.SecureAggregationError as e:
        return str(e)


def masks():
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    a = bytes(range(32))
    b = bytes([a[0] ^ 1, *a[1:4], a[4] ^ 1, *a[5:]])  # the same 32-bit fold
    flower_same = bool(np.array_equal(pseudo_rand_gen(a, 2**32, [(8,)])[0],
                                      pseudo_rand_gen(b, 2**32, [(8,)])[0]))
    ours_same = bool(np.array_equal(secagg._mask(a, "x", 8), secagg._mask(b, "x", 8)))
    return {"flower_same": flower_same, "ours_same": ours_same}


print(json.dumps({
    "clean": scenario(),
    "dp": scenario(dp=True),
    "unmask30": scenario(vanish={"unmask": [1000, 1004, 1008]}),
    "early": scenario(vanish={"setup": [1001], "share-keys": [1002], "mask": [1003, 1005]}),
    "ring": scenario(n=12, shares=7, threshold=0.6, vanish={"unmask": [1000]}),
    "tamper": scenario(tamper=1006),
    "too_few": scenario(vanish={"mask": [1000, 1001, 1002, 1003, 1004]}),
    "cannot_unmask": scenario(vanish={"unmask": [1000, 1001, 1002, 1003, 1004]}),
    "refusals": refusals(), "both": both_shares(), "masks": masks()}))
'''


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, object]]:
    out = subprocess.run([str(flower_python()), "-c", SCRIPT], capture_output=True,
                         text=True, env=flower_env(), timeout=280, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    data: dict[str, dict[str, object]] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def _ok(r: dict[str, object]) -> None:
    assert r["error"] is None, r["error"]
    assert r["err"] < 1e-6  # type: ignore[operator]  # quantisation error only
    assert r["leaked"] is False and r["near"] == 0


def test_the_server_gets_the_weighted_mean_and_no_update(
        results: dict[str, dict[str, object]]) -> None:
    clean = results["clean"]
    _ok(clean)
    assert clean["masked"] == clean["unmasked"] == 10 and clean["failed"] == {}
    assert clean["shares"] == 10 and clean["threshold"] == 6
    _ok(results["dp"])
    assert results["dp"]["weight"] == pytest.approx(10, abs=1e-6)


def test_a_round_survives_30_percent_vanishing_after_their_masked_update(
        results: dict[str, dict[str, object]]) -> None:
    r = results["unmask30"]
    _ok(r)
    assert r["masked"] == 10 and r["unmasked"] == 7  # all ten vectors are in the sum
    assert sorted(r["failed"].values()) == ["unmask: no reply within 5 s"] * 3  # type: ignore[union-attr]


def test_nodes_vanishing_before_their_vector_are_left_out_of_the_sum(
        results: dict[str, dict[str, object]]) -> None:
    r = results["early"]
    _ok(r)
    assert r["masked"] == 6 and set(r["failed"]) == {"1001", "1002", "1003", "1005"}  # type: ignore[arg-type]
    ring = results["ring"]  # SecAgg+: each node shares with 7 of 12
    _ok(ring)
    assert ring["shares"] == 7 and ring["threshold"] == 5 and ring["masked"] == 12


def test_a_share_tampered_in_transit_is_caught_and_its_node_left_out(
        results: dict[str, dict[str, object]]) -> None:
    r = results["tamper"]
    _ok(r)
    assert r["masked"] == 9
    assert "does not decrypt (tampered in transit)" in r["failed"]["1006"]  # type: ignore[index]


def test_too_few_vectors_stop_the_round_before_anything_is_unmasked(
        results: dict[str, dict[str, object]]) -> None:
    r = results["too_few"]
    assert "secure aggregation stops at mask: 5 of 10 sampled nodes left, fewer than 6" \
        in str(r["error"])
    assert "unmask" not in r["stages"]  # type: ignore[operator]
    r = results["cannot_unmask"]
    assert "cannot remove node" in str(r["error"]) and "fewer than threshold 6" in str(
        r["error"])


def test_a_node_refuses_what_the_protocol_forbids(
        results: dict[str, dict[str, object]]) -> None:
    r = results["refusals"]
    assert "threshold 2 of 5 shares is at most half" in str(r["low"])
    assert "stage unmask of round 1 arrived, expected setup" in str(r["order"])
    assert r["keys"] == ["pk1", "pk2"]
    assert "stage mask of round 1 arrived, expected share-keys" in str(r["skip"])
    assert "asks for both shares of node 2; refused" in str(results["both"])


def test_masks_use_the_whole_secret(results: dict[str, dict[str, object]]) -> None:
    # two secrets with the same 32-bit fold: one mask under Flower's PRG, two here
    assert results["masks"] == {"flower_same": True, "ours_same": False}

"""Secure aggregation (SecAgg+) for one federated round: the server learns the weighted
mean of the sampled nodes' updates and nothing else, and a round whose nodes vanish after
sending their masked update still completes.

The protocol is SecAgg+ (Bell et al., CCS 2020, after Bonawitz et al., CCS 2017) as
Flower 1.42 implements it (``flwr.server.workflow.SecAggPlusWorkflow`` and
``flwr.client.mod.secaggplus_mod``), built on Flower's own primitives: its elliptic-curve
key pairs and ECDH (``flwr.supercore.primitives.asymmetric``), HKDF + Fernet for the
shares sent through the server (``…secure_aggregation.crypto.symmetric_encryption``) and
Shamir's secret sharing (``…crypto.shamir``, pycryptodome). The driver of the four stages
is written here, on both sides, because Flower's cannot be used as it is:

1. ``SecAggPlusWorkflow`` runs only inside Flower's legacy ``DefaultWorkflow`` (a
   ``LegacyContext`` and a ``flwr.server.strategy`` strategy), not in the Message API's
   ``Strategy.start`` a run is built on; here it runs as one train round of any
   averaging strategy (:class:`~edgewise.federated.flower._SecureGrid`).
2. Its masks come from ``pseudo_rand_gen``, which folds the 32-byte secret to a 32-bit
   seed for numpy's Mersenne Twister: a pairwise mask is found by trying 2**32 seeds.
   Here every mask is the ChaCha20 keystream keyed by SHA-256 of the whole secret.
3. A node that vanishes before it has shared its keys makes Flower's unmask stage ask for
   shares nobody holds, and the round aborts; here it is simply not in the sum. Only a
   node that shared its keys and then sent no masked vector needs its pairwise masks
   removed, and only those are asked for.
4. Sums are ``uint32`` with wrap-around, and the quantisation levels are sized to the
   sampled count, so a sum cannot overflow (Flower's defaults wrap past 1024 nodes).

Stages, each a ``train`` message carrying the config record :data:`RECORD`:

``setup``       server → round parameters; node → two fresh public keys.
``share-keys``  server → its ring neighbours' public keys; node → for each neighbour,
                a Shamir share of its mask seed and of its first private key, encrypted
                to that neighbour (the server forwards what it cannot read).
``mask``        server → the global adapter, the recipe, the shares addressed to the
                node; node → trains, and sends ``quantise(w·update), w`` plus its own
                mask plus one pairwise mask per neighbour (``+`` or ``-`` by node id, so
                pairs cancel in the sum), and its metrics (loss, example count).
``unmask``      server → which neighbours sent a vector and which vanished; node → the
                seed shares of the first, the private-key shares of the second.

The server then removes each summed node's own mask (its seed, rebuilt from
``threshold`` shares) and the pairwise masks of the nodes that vanished (their private
key, rebuilt), and is left with the sum. It never asks for the unmask shares unless at
least ``threshold`` (and ``clients.min``) vectors are in the sum, and a node never gives
both kinds of share for one neighbour. What the server sees of a node is public keys,
ciphertexts, a masked vector (uniform without the masks) and its training metrics (loss,
example count, steps, saturated coordinates), which travel in the clear beside the
vector, as in Flower; they are not the update.

With differential privacy each node's update is clipped to ``C`` and carries its noise
share (std ``σ``) before it is quantised; the quantiser's range is ``C + 10σ``, so a
coordinate of the share is cut with probability below ``2Φ(−10) ≈ 1.5·10⁻²³``, a term
far below δ. Saturated coordinates are counted and reported every round.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.serverapp import Grid
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

from edgewise.errors import FederatedError

__all__ = ["RECORD", "SecureConfig", "SecureRound", "aggregate", "client_step", "levels",
           "ring"]

#: The stage's config record, in both directions; :data:`STATE` holds a node's protocol
#: state between stages (in its ``Context.state``).
RECORD, STATE = "secagg", "secagg-state"
SETUP, SHARE, MASK, UNMASK = "setup", "share-keys", "mask", "unmask"
STAGES = (SETUP, SHARE, MASK, UNMASK)
MOD_BITS = 32

Arrays = dict[str, np.ndarray]
#: What a node's training gives the ``mask`` stage: its update (tensor name → array),
#: its weight and its metrics.
Train = Callable[[Message, Context], tuple[Arrays, float, MetricRecord]]


class SecureAggregationError(FederatedError):
    """The protocol cannot go on (one line: which stage, which node, why); ``failed``:
    the nodes that failed so far, with their error code and reason."""

    def __init__(self, message: str, failed: dict[int, tuple[int, str]] | None = None
                 ) -> None:
        super().__init__(message)
        self.failed = dict(failed or {})


def levels(nodes: int) -> int:
    """Quantisation levels such that ``nodes`` values below it sum to less than 2**32."""
    return 1 << (MOD_BITS - max(1, math.ceil(math.log2(max(nodes, 2)))))


def ring(nodes: list[int], shares: int) -> dict[int, set[int]]:
    """Each node's neighbours (itself included): ``shares`` consecutive nodes of the ring
    ``nodes`` (in that order) centred on it; everyone when ``shares >= len(nodes)``."""
    half = shares >> 1
    n = len(nodes)
    return {nid: {nodes[(i + d) % n] for d in range(-half, half + 1)}
            for i, nid in enumerate(nodes)}


def _mask(secret: bytes, label: str, size: int) -> np.ndarray:
    """``size`` uniform uint32 from ChaCha20 keyed by SHA-256(label, secret)."""
    key = hashlib.sha256(b"edgewise secagg+ mask\0" + label.encode() + b"\0"
                         + secret).digest()
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(4 * size)), dtype="<u4").astype(np.uint32)


def _pair(private: bytes, public: bytes) -> bytes:
    return bytes(generate_shared_key(bytes_to_private_key(private),
                                     bytes_to_public_key(public)))


# -- node ------------------------------------------------------------------------------------
def client_step(msg: Message, context: Context, train: Train) -> Message:
    """A node's answer to one SecAgg+ stage (``train`` runs in the ``mask`` stage).

    Raises:
        SecureAggregationError: the server asked for something the protocol forbids
            (a stage out of order, a threshold at most half the shares, both shares of
            one neighbour) or a share does not decrypt.
    """
    cfg = msg.content.config_records[RECORD]
    stage = str(cfg["stage"])
    stored = context.state.config_records.get(STATE)
    state: dict[str, Any] = dict(stored.items()) if stored is not None else {}
    if stage == SETUP:
        state = {}
    else:
        last = str(state.get("stage", ""))
        want = STAGES[STAGES.index(last) + 1] if last in STAGES[:-1] else SETUP
        if stage != want or int(cfg["round"]) != state.get("round"):
            raise SecureAggregationError(
                f"secure aggregation: stage {stage} of round {cfg['round']} arrived, "
                f"expected {want} of round {state.get('round', '?')}")
    extra: dict[str, Any] = {}
    if stage == SETUP:
        out = _setup(state, cfg, msg.metadata.dst_node_id)
    elif stage == SHARE:
        out = _share(state, cfg)
    elif stage == MASK:
        out, metrics = _masked(state, cfg, *train(msg, context))
        extra["metrics"] = metrics
    elif stage == UNMASK:
        out = _unmask(state, cfg)
    else:
        raise SecureAggregationError(f"secure aggregation: unknown stage {stage!r}")
    state["stage"] = stage
    context.state.config_records[STATE] = ConfigRecord(state)
    return Message(RecordDict({RECORD: ConfigRecord(out), **extra}), reply_to=msg)


def _setup(state: dict[str, Any], cfg: ConfigRecord, nid: int) -> dict[str, Any]:
    shares, threshold = int(cfg["shares"]), int(cfg["threshold"])
    lv, sampled = int(cfg["levels"]), int(cfg["sampled"])
    if threshold < 2 or 2 * threshold <= shares:
        raise SecureAggregationError(
            f"secure aggregation: threshold {threshold} of {shares} shares is at most half: "
            "a minority could rebuild a node's secrets; refused")
    if lv < 2 or lv & (lv - 1) or lv * sampled > 1 << MOD_BITS:
        raise SecureAggregationError(f"secure aggregation: {lv} levels for {sampled} nodes "
                                     "would overflow the 32-bit sum; refused")
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    state.update(round=int(cfg["round"]), nid=nid, shares=shares, threshold=threshold,
                 levels=lv, clip=float(cfg["clip"]), max_weight=float(cfg["max-weight"]),
                 sk1=private_key_to_bytes(sk1), pk1=public_key_to_bytes(pk1),
                 sk2=private_key_to_bytes(sk2), pk2=public_key_to_bytes(pk2))
    return {"pk1": state["pk1"], "pk2": state["pk2"]}


def _share(state: dict[str, Any], cfg: ConfigRecord) -> dict[str, Any]:
    nid, threshold = int(state["nid"]), int(state["threshold"])
    nids = [int(x) for x in cfg["nids"]]
    pk1s, pk2s = list(cfg["pk1"]), list(cfg["pk2"])
    if nid not in nids or pk1s[nids.index(nid)] != state["pk1"] \
            or pk2s[nids.index(nid)] != state["pk2"]:
        raise SecureAggregationError("secure aggregation: the server's key list does not "
                                     "hold this node's own public keys")
    if len(set(pk1s) | set(pk2s)) != 2 * len(nids) or len(set(nids)) != len(nids):
        raise SecureAggregationError("secure aggregation: repeated node ids or public keys")
    if not threshold <= len(nids) <= int(state["shares"]):
        raise SecureAggregationError(
            f"secure aggregation: {len(nids)} neighbours, outside threshold {threshold} .. "
            f"shares {state['shares']}")
    seed = os.urandom(32)
    seed_shares = create_shares(seed, threshold, int(state["shares"]))
    sk1_shares = create_shares(bytes(state["sk1"]), threshold, int(state["shares"]))
    dsts, ctxts = [], []
    for i, (other, pk2) in enumerate(zip(nids, pk2s, strict=True)):
        if other == nid:
            own = i
            continue
        plain = share_keys_plaintext_concat(nid, other, seed_shares[i], sk1_shares[i])
        dsts.append(other)
        ctxts.append(encrypt(_pair(bytes(state["sk2"]), bytes(pk2)), plain))
    state.update(seed=seed, peers=nids, peer_pk1=pk1s, peer_pk2=pk2s, held=[nid],
                 held_seed=[seed_shares[own]], held_sk1=[sk1_shares[own]])
    return {"dsts": dsts, "ctxts": ctxts}


def _masked(state: dict[str, Any], cfg: ConfigRecord, update: Arrays, weight: float,
            metrics: MetricRecord) -> tuple[dict[str, Any], MetricRecord]:
    nid, peers = int(state["nid"]), [int(x) for x in state["peers"]]
    held, held_seed, held_sk1 = list(state["held"]), list(state["held_seed"]), \
        list(state["held_sk1"])
    for src, ctxt in zip(cfg["srcs"], cfg["ctxts"], strict=True):
        src = int(src)
        if src not in peers or src == nid or src in held:
            raise SecureAggregationError(f"secure aggregation: a share from node {src}, "
                                         "which is not a neighbour of this node")
        try:
            plain = decrypt(_pair(bytes(state["sk2"]),
                                  bytes(state["peer_pk2"][peers.index(src)])), bytes(ctxt))
        except InvalidToken:
            raise SecureAggregationError(f"secure aggregation: the share from node {src} "
                                         "does not decrypt (tampered in transit)") from None
        real_src, dst, seed_share, sk1_share = share_keys_plaintext_separate(plain)
        if real_src != src or dst != nid:
            raise SecureAggregationError(f"secure aggregation: the share said to come from "
                                         f"node {src} is from {real_src} to {dst}")
        held.append(src)
        held_seed.append(seed_share)
        held_sk1.append(sk1_share)
    threshold = int(state["threshold"])
    if len(held) < threshold:
        raise SecureAggregationError(f"secure aggregation: {len(held)} neighbours shared "
                                     f"keys with this node, fewer than threshold {threshold}")
    clip, lv = float(state["clip"]), int(state["levels"])
    ratio = min(max(weight, 0.0), float(state["max_weight"])) / float(state["max_weight"])
    flat = np.concatenate([np.asarray(update[k], np.float64).ravel()
                           for k in sorted(update)]) * ratio
    saturated = int(np.count_nonzero(np.abs(flat) > clip))
    scaled = (np.clip(flat, -clip, clip) + clip) * ((lv - 1) / (2 * clip))
    rng = np.random.default_rng()  # stochastic rounding: unbiased
    quantised = np.minimum(np.floor(scaled + rng.random(scaled.shape)), lv - 1)
    vec = np.append(quantised.astype(np.uint32), np.uint32(round(ratio * (lv - 1))))
    vec += _mask(bytes(state["seed"]), f"self:{state['round']}", vec.size)
    for other in held[1:]:
        m = _mask(_pair(bytes(state["sk1"]), bytes(state["peer_pk1"][peers.index(other)])),
                  f"pair:{state['round']}", vec.size)
        vec = vec + m if nid > other else vec - m  # wraps mod 2**32
    state.update(held=held, held_seed=held_seed, held_sk1=held_sk1)
    metrics = MetricRecord({**dict(metrics.items()), "secagg-saturated": saturated})
    return {"masked": vec.astype("<u4").tobytes()}, metrics


def _unmask(state: dict[str, Any], cfg: ConfigRecord) -> dict[str, Any]:
    active = [int(x) for x in cfg["active"]]
    dead = [int(x) for x in cfg["dead"]]
    held = [int(x) for x in state["held"]]
    both = set(active) & set(dead)
    if both:
        raise SecureAggregationError(f"secure aggregation: the server asks for both shares "
                                     f"of node {min(both)}; refused")
    if int(state["nid"]) in dead or any(n not in held for n in active + dead):
        raise SecureAggregationError("secure aggregation: the server asks for shares this "
                                     "node does not hold; refused")
    if len(active) < int(state["threshold"]):
        raise SecureAggregationError(f"secure aggregation: {len(active)} vectors in the "
                                     f"sum, fewer than threshold {state['threshold']}")
    shares = [state["held_seed"][held.index(n)] for n in active]
    shares += [state["held_sk1"][held.index(n)] for n in dead]
    return {"nids": active + dead, "shares": shares}


# -- server ----------------------------------------------------------------------------------
@dataclass
class SecureConfig:
    """One round's parameters (from the recipe's ``secure_aggregation`` and privacy)."""

    shares: float = 1.0  # <= 1: that share of the sampled nodes; else a count
    threshold: float = 0.6  # share of a node's shares that rebuilds its secrets (> 0.5)
    clip: float = 1.0  # the quantiser's range: [-clip, clip]
    max_weight: float = 1000.0  # a node's weight is min(weight, max_weight) / max_weight
    min_nodes: int = 3  # fewer vectors in the sum and nothing is unmasked
    timeout: float = 600.0  # each stage waits this long for its replies


@dataclass
class SecureRound:
    """What the server learned from one round: the mean update and who did what."""

    mean: Arrays
    weight: float
    sampled: list[int]
    keyed: list[int]  # sent public keys
    shared: list[int]  # sent their encrypted shares
    masked: list[int]  # their vectors are in the sum
    unmasked: list[int]  # answered the unmask stage
    shares: int
    threshold: int
    #: node → (error code, one-line reason); the stage is named in the reason.
    failed: dict[int, tuple[int, str]] = field(default_factory=dict)
    metrics: dict[int, MetricRecord] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    saturated: int = 0


def _size(content: RecordDict) -> int:
    """Bytes on the wire, about (``ConfigRecord.count_bytes`` fails on an empty list)."""
    total = 0
    for record in content.values():
        if not isinstance(record, ConfigRecord):
            total += record.count_bytes()
            continue
        for key, value in record.items():
            items = value if isinstance(value, list) else [value]
            total += len(key) + sum(len(v) if isinstance(v, bytes | str) else 8
                                    for v in items)
    return total


class _Stages:
    def __init__(self, grid: Grid, round_no: int, timeout: float) -> None:
        self.grid, self.round, self.timeout = grid, round_no, timeout
        self.failed: dict[int, tuple[int, str]] = {}
        self.up = self.down = 0

    def ask(self, stage: str, payloads: dict[int, RecordDict]) -> dict[int, Message]:
        messages = []
        for nid, content in payloads.items():
            self.down += _size(content)
            messages.append(Message(content, dst_node_id=nid, message_type=MessageType.TRAIN,
                                    group_id=str(self.round)))
        ok: dict[int, Message] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            if nid not in payloads:
                continue
            if reply.has_error():
                self.failed[nid] = (reply.error.code,
                                    f"{stage}: {reply.error.reason or reply.error.code}")
            elif RECORD not in reply.content.config_records:
                self.failed[nid] = (0, f"{stage}: the reply has no secure-aggregation record")
            else:
                self.up += _size(reply.content)
                ok[nid] = reply
        for nid in payloads:
            if nid not in ok and nid not in self.failed:
                self.failed[nid] = (0, f"{stage}: no reply within {self.timeout:g} s")
        return ok


def _prune(nodes: set[int], neighbours: dict[int, set[int]], threshold: int,
           stages: _Stages, stage: str) -> set[int]:
    """Drop nodes with fewer than ``threshold`` neighbours left, until none has."""
    while True:
        short = {n for n in nodes if len(neighbours[n] & nodes) < threshold}
        if not short:
            return nodes
        for n in short:
            stages.failed.setdefault(n, (0, f"{stage}: fewer than threshold {threshold} of "
                                            "its neighbours are left"))
        nodes = nodes - short


def aggregate(grid: Grid, messages: list[Message], cfg: SecureConfig,
              round_no: int) -> SecureRound:
    """Run the four stages over the nodes ``messages`` are addressed to (their content is
    what each trains on); the weighted mean of their updates.

    Raises:
        SecureAggregationError: too few nodes are left at some stage to go on without
            revealing less than a sum, or to remove the masks (one line: how many, why).
    """
    fitins = {m.metadata.dst_node_id: m.content for m in messages}
    sampled = sorted(fitins)
    n = len(sampled)
    need = max(cfg.min_nodes, 3)
    if n < need:
        raise SecureAggregationError(f"round {round_no}: secure aggregation needs at least "
                                     f"{need} sampled nodes, {n} were")
    shares = round(cfg.shares * n) if cfg.shares <= 1 else int(cfg.shares)
    shares = min(max(shares | 1, 3), n)  # odd: the ring is centred on each node
    threshold = max(2, math.ceil(cfg.threshold * shares))
    if 2 * threshold <= shares:
        threshold = shares // 2 + 1
    order = list(sampled)
    random.SystemRandom().shuffle(order)
    neighbours = ring(order, shares)
    lv = levels(n)
    stages = _Stages(grid, round_no, cfg.timeout)

    def need_left(what: str, left: set[int]) -> None:
        if len(left) < max(need, threshold):
            why = "; ".join(f"node {k}: {v[1]}" for k, v in list(stages.failed.items())[:3])
            raise SecureAggregationError(
                f"round {round_no}: secure aggregation stops at {what}: {len(left)} of {n} "
                f"sampled nodes left, fewer than {max(need, threshold)}"
                + (f" ({why})" if why else ""), stages.failed)

    # setup: parameters out, public keys back
    setup = {nid: RecordDict({RECORD: ConfigRecord({
        "stage": SETUP, "round": round_no, "shares": shares, "threshold": threshold,
        "levels": lv, "sampled": n, "clip": float(cfg.clip),
        "max-weight": float(cfg.max_weight)})}) for nid in sampled}
    keys = {nid: (bytes(r.content[RECORD]["pk1"]), bytes(r.content[RECORD]["pk2"]))
            for nid, r in stages.ask(SETUP, setup).items()}
    keyed = _prune(set(keys), neighbours, threshold, stages, SETUP)
    need_left(SETUP, keyed)

    # share keys: neighbours' public keys out, encrypted shares back
    payloads = {}
    for nid in keyed:
        peers = sorted(neighbours[nid] & keyed)
        payloads[nid] = RecordDict({RECORD: ConfigRecord({
            "stage": SHARE, "round": round_no, "nids": peers,
            "pk1": [keys[p][0] for p in peers], "pk2": [keys[p][1] for p in peers]})})
    forward: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in keyed}
    replies = stages.ask(SHARE, payloads)
    for src, reply in replies.items():
        rec = reply.content[RECORD]
        for dst, ctxt in zip(rec["dsts"], rec["ctxts"], strict=True):
            if int(dst) in replies and int(dst) in neighbours[src]:
                forward[int(dst)].append((src, bytes(ctxt)))
    shared = set(replies)
    sending = _prune(shared, neighbours, threshold, stages, SHARE)
    need_left(SHARE, sending)

    # mask: the round's work out, masked vectors back
    payloads = {}
    for nid in sending:
        inbox = [(s, c) for s, c in forward[nid] if s in shared]
        content = RecordDict(dict(fitins[nid].items()))
        content[RECORD] = ConfigRecord({"stage": MASK, "round": round_no,
                                        "srcs": [s for s, _ in inbox],
                                        "ctxts": [c for _, c in inbox]})
        payloads[nid] = content
    template = next(iter(fitins.values()))["arrays"]
    names = sorted(template.keys())
    shapes = [tuple(template[k].shape) for k in names]
    size = sum(math.prod(s) for s in shapes) + 1
    total = np.zeros(size, np.uint32)
    masked: set[int] = set()
    metrics: dict[int, MetricRecord] = {}
    for nid, reply in stages.ask(MASK, payloads).items():
        vec = np.frombuffer(bytes(reply.content[RECORD]["masked"]), dtype="<u4")
        if vec.size != size or "metrics" not in reply.content.metric_records:
            stages.failed[nid] = (0, f"{MASK}: a masked vector of {vec.size} values, not "
                                     f"{size}")
            continue
        total += vec
        masked.add(nid)
        metrics[nid] = reply.content["metrics"]
    need_left(MASK, masked)  # before any unmask share is asked for
    dead = shared - masked

    # unmask: who is in the sum out, the shares that remove their masks back
    payloads = {nid: RecordDict({RECORD: ConfigRecord({
        "stage": UNMASK, "round": round_no,
        "active": sorted(neighbours[nid] & masked), "dead": sorted(neighbours[nid] & dead)})})
        for nid in masked}
    seed_shares: dict[int, list[bytes]] = {nid: [] for nid in masked}
    sk1_shares: dict[int, list[bytes]] = {nid: [] for nid in dead}
    answered = stages.ask(UNMASK, payloads)
    for nid, reply in answered.items():
        rec = reply.content[RECORD]
        asked_active, asked_dead = neighbours[nid] & masked, neighbours[nid] & dead
        for owner, share in zip(rec["nids"], rec["shares"], strict=True):
            owner = int(owner)
            if owner in asked_active:
                seed_shares[owner].append(bytes(share))
            elif owner in asked_dead:
                sk1_shares[owner].append(bytes(share))
    for owner, got in [*seed_shares.items(), *sk1_shares.items()]:
        if len(got) < threshold:
            raise SecureAggregationError(
                f"round {round_no}: secure aggregation cannot remove node {owner}'s masks: "
                f"{len(got)} of its neighbours answered the unmask stage, fewer than "
                f"threshold {threshold}", stages.failed)
    for got in seed_shares.values():
        total -= _mask(combine_shares(got), f"self:{round_no}", size)
    for owner, got in sk1_shares.items():
        sk1 = combine_shares(got)
        for other in neighbours[owner] & masked:
            m = _mask(_pair(sk1, keys[other][0]), f"pair:{round_no}", size)
            total = total - m if other > owner else total + m

    # what is left is the sum: dequantise
    q = total.astype(np.float64)
    weight = q[-1] / (lv - 1)
    if weight <= 0:
        raise SecureAggregationError(f"round {round_no}: the secure sum's weight is 0")
    sums = q[:-1] * (2 * cfg.clip / (lv - 1)) - len(masked) * cfg.clip
    flat = sums / weight
    mean: Arrays = {}
    at = 0
    for name, shape in zip(names, shapes, strict=True):
        k = math.prod(shape)
        mean[name] = flat[at:at + k].reshape(shape)
        at += k
    return SecureRound(
        mean=mean, weight=weight, sampled=sampled, keyed=sorted(keys), shared=sorted(shared),
        masked=sorted(masked), unmasked=sorted(answered), shares=shares, threshold=threshold,
        failed=stages.failed, metrics=metrics, bytes_up=stages.up, bytes_down=stages.down,
        saturated=sum(int(m.get("secagg-saturated", 0)) for m in metrics.values()))

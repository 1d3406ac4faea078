"""Flower's side of a federated run: the ``ServerApp`` and ``ClientApp`` (Message API).

This module runs only inside Flower's environment (``.venv-federated``: Flower 1.42 pins
its own FastAPI, Starlette, uvicorn, typer and cryptography, which the node's stack does
not share), started by :mod:`edgewise.federated.run`; nothing in the node imports it.

**Client** (:data:`client`, one per node, or per virtual node in a simulation): each
``train`` message carries the global adapter's trained tensors and the run's recipe.
The node loads its own data — the file its SuperNode's ``data-path`` names (deployment),
or its partition of the pooled file (simulation, :mod:`.partition`) — and trains
(:class:`~edgewise.federated.local.LocalTrainer`). What it sends back is only the
adapter: ``global + clip(update)`` plus, under differential privacy, its noise share
(:mod:`.privacy`). With ``aggregation: ffa`` only ``B`` travels (``A`` is the shared init,
checked by digest). A node whose data does not parse, or whose model does not match the
server's, answers with a one-line error (file and line; which tensor) and is dropped from
the run; anything else is reported by its exception's type only, since its text may
quote data.

**Server** (:data:`server`): a Flower strategy (FedAvg, FedProx, FedAdam, FedTrimmedAvg,
FedMedian, Krum, MultiKrum, FedAvgM from ``flwr.serverapp.strategy``) run by its own
``Strategy.start``, with :class:`_Edgewise` mixed in front of it to add what Flower lacks:

- sampling of live, not-dropped nodes (``fixed`` size, or ``poisson``: each node by a
  coin flip with ``q = per_round / nodes``, the sampling the accountant credits), after
  waiting at most ``timeout_s`` for ``clients.min`` nodes to connect;
- the privacy budget: before a round, ε if only ``clients.min`` of the sampled nodes
  answer (the least noise a released round can have); the run stops before a round that
  could exceed ``privacy.max_epsilon``. After it, ε is spent at the noise that really
  arrived (``z √(m / n)`` for ``m`` of ``n`` shares, :func:`effective_multiplier`);
- ``aggregation: product`` (:func:`edgewise.federated.lora.aggregate`) in place of
  averaging the factors;
- secure aggregation (``secure_aggregation``, :mod:`.secagg`): every train round runs
  SecAgg+ through :class:`_SecureGrid`, and the strategy averages the secure sum — one
  reply, the weighted mean — instead of the nodes' updates, which the server never sees;
- a round record (who was sampled, answered, failed and why; losses; bytes each way; ε)
  written to the run folder's ``status.json`` after every round (:mod:`.status`), and
  federated evaluation of the global adapter on every node's held-out data (round 0 is
  the base model).

At the end the server writes the global adapter as a peft adapter (``adapter/``) in the
run folder. :func:`simulate` runs both apps on Flower's simulation engine (Ray).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp import strategy as fls

from edgewise.errors import (
    AggregationError,
    DatasetError,
    EdgewiseError,
    FederatedError,
    PrivacyBudgetError,
)
from edgewise.federated import recipe as recipes
from edgewise.federated import secagg
from edgewise.federated.local import LocalTrainer
from edgewise.federated.lora import aggregate, join_adapter, split_adapter
from edgewise.federated.partition import NodeData, partition, split_holdout
from edgewise.federated.privacy import DpAccountant, clip, noise_share
from edgewise.federated.status import NodeRecord, RoundRecord, RunStatus
from edgewise.supply.data import Example, load_examples

__all__ = ["RUN_DIR_ENV", "client", "server", "simulate"]

log = logging.getLogger("edgewise.federated")

#: The run folder, for a ServerApp started without a run config (a simulation).
RUN_DIR_ENV = "EDGEWISE_FEDERATED_RUN"
PLAN = "plan.json"

#: Error codes a node answers with; the first two drop it from the run.
CODE_DATA, CODE_MISMATCH, CODE_OTHER = 4101, 4102, 4103
_DROP = {CODE_DATA, CODE_MISMATCH}
#: At most this many nodes evaluate each round (a fixed, seeded choice).
EVAL_NODES = 16

Arrays = dict[str, np.ndarray]


def _to_numpy(record: ArrayRecord) -> Arrays:
    return {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in record.items()}


def _to_record(arrays: Arrays) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32))
                        for k, v in sorted(arrays.items())})


def a_digest(adapter: Arrays) -> str:
    """sha256 of the ``lora_A`` tensors (float32), sorted by name: the shared init."""
    h = hashlib.sha256()
    for k in sorted(adapter):
        if ".lora_A." in k:
            h.update(k.encode() + b"\0")
            h.update(np.ascontiguousarray(adapter[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def trained_names(names: Iterable[str], aggregation: str) -> list[str]:
    """The tensors that train and travel: ``B`` only under FFA-LoRA, else both."""
    return sorted(n for n in names if aggregation != "ffa" or ".lora_B." in n)


# -- client ----------------------------------------------------------------------------------
_trainer_cache: dict[tuple[str, Any], LocalTrainer] = {}
_pool_cache: dict[tuple[Any, ...], list[list[Example]]] = {}


def _trainer(base: str, recipe: recipes.FederatedRecipe) -> LocalTrainer:
    key = (base, recipe.local_config())
    if key not in _trainer_cache:
        _trainer_cache.clear()  # one model per process
        _trainer_cache[key] = LocalTrainer(Path(base), recipe.local_config())
    return _trainer_cache[key]


def _node_data(recipe: recipes.FederatedRecipe, context: Context) -> NodeData:
    nc = context.node_config
    sim = recipe.simulation
    if sim is not None and "partition-id" in nc and "data-path" not in nc:
        pid, n = int(nc["partition-id"]), int(nc["num-partitions"])
        key = (sim.dataset.path, sim.dataset.format, n, sim.partition, sim.key, sim.alpha,
               recipe.seed)
        if key not in _pool_cache:
            _pool_cache.clear()
            _pool_cache[key] = partition(sim.dataset.path, sim.dataset.format, n,
                                         how=sim.partition, key=sim.key, alpha=sim.alpha,
                                         seed=recipe.seed)
        examples = _pool_cache[key][pid]
    else:
        path = str(nc.get("data-path") or recipe.data.path or "")
        if not path:
            raise DatasetError("this node has no data: the recipe's data.path is unset and "
                               "its SuperNode has no data-path in --node-config")
        examples = load_examples(path, str(nc.get("data-format") or recipe.data.format))
    return split_holdout(examples, recipe.data.holdout, recipe.seed)


def _setup(msg: Message, context: Context
           ) -> tuple[recipes.FederatedRecipe, LocalTrainer, NodeData, Arrays]:
    cfg = msg.content["config"]
    recipe = recipes.from_json(json.loads(str(cfg["recipe"])))
    nc = context.node_config
    digest = str(nc.get("base-sha256") or cfg["base-sha256"])
    if digest != cfg["base-sha256"]:
        raise AggregationError(f"this node's base model is {digest[:12]}, the run's is "
                               f"{str(cfg['base-sha256'])[:12]}: install the run's base "
                               "model on this node")
    trainer = _trainer(str(nc.get("base-path") or cfg["base-path"]), recipe)
    initial = trainer.initial()
    if a_digest(initial) != cfg["a-digest"]:
        raise AggregationError("this node's initial LoRA A differs from the server's (another "
                               "base model, LoRA targets, seed or library version)")
    data = _node_data(recipe, context)
    full = dict(initial)
    given = _to_numpy(msg.content["arrays"])
    unknown = sorted(set(given) - set(full))
    if unknown:
        raise AggregationError(f"the global adapter has {unknown[0]}, which this node's "
                               f"model does not ({len(unknown)} unknown tensors)")
    full.update(given)
    return recipe, trainer, data, full


def _error_reply(msg: Message, exc: BaseException) -> Message:
    if isinstance(exc, DatasetError):
        code, reason = CODE_DATA, str(exc)
    elif isinstance(exc, AggregationError):
        code, reason = CODE_MISMATCH, str(exc)
    elif isinstance(exc, EdgewiseError):
        code, reason = CODE_OTHER, str(exc)
    else:  # its text may quote the node's data: the type only leaves the node
        log.error("federated client failed:\n%s", traceback.format_exc())
        code, reason = CODE_OTHER, f"{type(exc).__name__} on the node (see its log)"
    return Message(Error(code=code, reason=reason.splitlines()[0][:500]), reply_to=msg)


client = ClientApp()


def _fit(msg: Message, context: Context) -> tuple[Arrays, Arrays, float, MetricRecord]:
    """Train on this node's data: the global adapter, the update (clipped, with its noise
    share under DP), its weight and the metrics that travel with it."""
    recipe, trainer, data, full = _setup(msg, context)
    cfg = msg.content["config"]
    sent = sorted(msg.content["arrays"].keys())
    result = trainer.fit(full, data.train, round_no=int(cfg["server-round"]))
    update = {k: result.adapter[k] - full[k] for k in sent}
    dp = recipe.dp_config()
    norm = math.sqrt(sum(float(np.sum(u * u)) for u in update.values()))
    if dp.enabled:
        update, norm = clip(update, dp.clip_norm)
        shares = 1 if recipe.privacy.noise == "client" else float(cfg["expected"])
        noise = noise_share(update, noise_multiplier=dp.noise_multiplier,
                            clip_norm=dp.clip_norm, clients=1, rng=np.random.default_rng())
        scale = 1.0 / math.sqrt(shares)  # noise_share's std is z·C/√clients
        update = {k: u + noise[k] * scale for k, u in update.items()}
    # under DP every update weighs the same (the sum's sensitivity is one clip)
    weight = 1 if dp.enabled else result.examples
    metrics = MetricRecord({
        "num-examples": weight, "examples": result.examples,
        "train-loss": result.train_loss, "update-norm": norm, "steps": result.steps})
    return {k: full[k] for k in sent}, update, float(weight), metrics


@client.train()
def _train(msg: Message, context: Context) -> Message:
    try:
        if secagg.RECORD in msg.content.config_records:  # a SecAgg+ stage
            return secagg.client_step(msg, context, lambda m, c: _fit(m, c)[1:])
        start, update, _weight, metrics = _fit(msg, context)
        out = {k: start[k] + update[k] for k in update}
        return Message(RecordDict({"arrays": _to_record(out), "metrics": metrics}),
                       reply_to=msg)
    except Exception as exc:
        return _error_reply(msg, exc)


@client.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    try:
        _recipe, trainer, data, full = _setup(msg, context)
        if data.holdout:
            loss, exact = trainer.score(full, data.holdout)
            metrics = MetricRecord({"num-examples": len(data.holdout), "eval-loss": loss,
                                    "eval-exact": exact})
        else:
            metrics = MetricRecord({"num-examples": 0, "eval-loss": 0.0, "eval-exact": 0.0})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
    except Exception as exc:
        return _error_reply(msg, exc)


# -- server ----------------------------------------------------------------------------------
class _BudgetStop(Exception):
    pass


class _SecureGrid:
    """The run's grid with every train round run as SecAgg+ (:mod:`.secagg`): the
    strategy's train messages become the protocol's four stages, ``Strategy.start``
    gets no replies back, and ``aggregate_train`` averages the secure sum instead."""

    def __init__(self, grid: Grid, strategy: Any) -> None:
        self._grid, self._strategy = grid, strategy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if messages and messages[0].metadata.message_type == MessageType.TRAIN:
            self._strategy.secure_round(self._grid, messages)
            return []
        return list(self._grid.send_and_receive(messages, timeout=timeout))


class _Edgewise:
    """Mixed in front of a Flower strategy (see the module docstring)."""

    def setup(self, *, recipe: recipes.FederatedRecipe, status: RunStatus, run_dir: Path,
              accountant: DpAccountant | None, initial: Arrays) -> None:
        self.ew_recipe = recipe
        self.ew_status = status
        self.ew_run_dir = run_dir
        self.ew_accountant = accountant
        self.ew_latest: ArrayRecord | None = None
        self.ew_round: RoundRecord | None = None
        self.ew_expected = 0.0
        self.ew_rng = random.SystemRandom()
        self.ew_eval_nodes: list[int] | None = None
        self.ew_started = 0.0
        self.ew_secure_cfg: secagg.SecureConfig | None = None
        self.ew_secure: tuple[Arrays, secagg.SecureRound] | None = None
        # a robust strategy's server step (FedAvgM's, on the robust aggregate)
        step = recipe.strategy_options if recipe.strategy in recipes.ROBUST else {}
        self.ew_server_lr = float(step.get("server_learning_rate", 1.0))
        self.ew_server_momentum = float(step.get("server_momentum", 0.0))
        self.ew_velocity: Arrays | None = None
        self.ew_current: Arrays | None = None

    # -- nodes -------------------------------------------------------------------------------
    def _live(self, grid: Grid) -> list[int]:
        need = self.ew_recipe.clients.min
        deadline = time.monotonic() + self.ew_recipe.clients.timeout_s
        while True:
            nodes = [n for n in grid.get_node_ids()
                     if self.ew_status.nodes.get(str(n), NodeRecord()).state != "dropped"]
            for n in nodes:
                self.ew_status.nodes.setdefault(str(n), NodeRecord())
            self.ew_status.nodes_total = max(self.ew_status.nodes_total, len(nodes))
            if len(nodes) >= need:
                return sorted(nodes)
            if time.monotonic() > deadline:
                dropped = sum(r.state == "dropped" for r in self.ew_status.nodes.values())
                raise FederatedError(
                    f"{len(nodes)} usable node(s) after {self.ew_recipe.clients.timeout_s:g} s"
                    f" ({dropped} dropped), fewer than clients.min {need}")
            time.sleep(0.5)

    def _sample(self, nodes: list[int]) -> list[int]:
        c = self.ew_recipe.clients
        k = min(c.per_round, len(nodes))
        if c.sampling == "poisson":
            q = min(1.0, c.per_round / len(nodes))
            self.ew_expected = q * len(nodes)
            return [n for n in nodes if self.ew_rng.random() < q]
        self.ew_expected = float(k)
        return sorted(self.ew_rng.sample(nodes, k))

    # -- the budget --------------------------------------------------------------------------
    def _multiplier(self, reported: int) -> float:
        z = self.ew_recipe.privacy.noise_multiplier
        if self.ew_recipe.privacy.noise == "client":
            return z * math.sqrt(max(reported, 1))  # the mean of m fully noised updates
        return z * math.sqrt(min(reported, self.ew_expected) / self.ew_expected)

    def _check_budget(self, server_round: int, sampled: int) -> None:
        acc, p = self.ew_accountant, self.ew_recipe.privacy
        if acc is None or p.max_epsilon is None:
            return
        worst = self._multiplier(min(sampled, self.ew_recipe.clients.min))
        if acc.epsilon_after(worst) > p.max_epsilon:
            raise _BudgetStop(
                f"round {server_round} could spend ε = {acc.epsilon_after(worst):.3f} (δ = "
                f"{p.delta:g}, if only clients.min {self.ew_recipe.clients.min} answer), over "
                f"privacy.max_epsilon {p.max_epsilon:g}: the run stops after "
                f"{server_round - 1} round(s) at ε = {acc.epsilon():.3f}")

    # -- Strategy hooks ----------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.ew_started = time.monotonic()
        nodes = self._live(grid)
        chosen = self._sample(nodes)
        self._check_budget(server_round, len(chosen))
        self.ew_round = RoundRecord(round=server_round, sampled=chosen)
        config["expected"] = self.ew_expected
        self.ew_current = _to_numpy(arrays)
        sa = self.ew_recipe.secure_aggregation
        if sa is not None:
            private = self.ew_recipe.privacy.noise_multiplier > 0
            self.ew_secure_cfg = secagg.SecureConfig(
                shares=sa.shares, threshold=sa.threshold,
                clip=self.ew_recipe.secure_clip(self.ew_expected),
                max_weight=1.0 if private else sa.max_weight,
                min_nodes=self.ew_recipe.clients.min, timeout=self.ew_recipe.clients.timeout_s)
        messages = super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]
        wanted = set(chosen)
        picked = [m for m in messages if m.metadata.dst_node_id in wanted]
        self.ew_round.bytes_down = arrays.count_bytes() * len(picked)
        self.ew_status.state = "running"
        self.ew_status.save(self.ew_run_dir)
        return picked

    def _failures(self, replies: list[Message], rec: RoundRecord) -> list[Message]:
        valid = []
        for m in replies:
            node = str(m.metadata.src_node_id)
            if m.has_error():
                reason = m.error.reason or f"error {m.error.code}"
                rec.failed[node] = reason
                if m.error.code in _DROP:
                    n = self.ew_status.nodes.setdefault(node, NodeRecord())
                    n.state, n.reason = "dropped", reason
                    log.warning("node %s drops out of the run: %s", node, reason)
            else:
                valid.append(m)
        answered = {m.metadata.src_node_id for m in replies}
        for missing in rec.sampled:
            if missing not in answered:
                rec.failed[str(missing)] = (f"no reply within clients.timeout_s "
                                      f"{self.ew_recipe.clients.timeout_s:g} s")
        return valid

    def secure_round(self, grid: Grid, messages: list[Message]) -> None:
        """This round's train messages as SecAgg+ (:class:`_SecureGrid`): the mean update
        is kept for :meth:`aggregate_train`."""
        rec, cfg = self.ew_round, self.ew_secure_cfg
        assert rec is not None and cfg is not None
        try:
            result = secagg.aggregate(grid, messages, cfg, rec.round)
        except secagg.SecureAggregationError as exc:
            self._secure_failures(exc.failed, rec)
            self._record(rec)
            raise
        self.ew_secure = (_to_numpy(messages[0].content["arrays"]), result)

    def _secure_failures(self, failed: dict[int, tuple[int, str]], rec: RoundRecord) -> None:
        for nid, (code, reason) in failed.items():
            node = str(nid)
            rec.failed[node] = reason
            if code in _DROP:
                n = self.ew_status.nodes.setdefault(node, NodeRecord())
                n.state, n.reason = "dropped", reason
                log.warning("node %s drops out of the run: %s", node, reason)

    def _secure_reply(self, rec: RoundRecord) -> tuple[list[Message], list[int]]:
        """The secure sum as the one reply the strategy averages (weight 1: it is the
        weighted mean already), and the nodes in it."""
        assert self.ew_secure is not None
        start, sec = self.ew_secure
        self.ew_secure = None
        self._secure_failures(sec.failed, rec)
        rec.bytes_up, rec.bytes_down = sec.bytes_up, sec.bytes_down
        rec.secure = {"keyed": len(sec.keyed), "shared": len(sec.shared),
                      "masked": len(sec.masked), "unmasked": len(sec.unmasked),
                      "shares": sec.shares, "threshold": sec.threshold,
                      "saturated": sec.saturated}
        examples = [int(sec.metrics[n]["examples"]) for n in sec.masked]
        rec.train_loss = float(np.average(
            [float(sec.metrics[n]["train-loss"]) for n in sec.masked], weights=examples))
        for nid, n_ex in zip(sec.masked, examples, strict=True):
            node = self.ew_status.nodes.setdefault(str(nid), NodeRecord())
            node.rounds += 1
            node.examples = n_ex
        mean = _to_record({k: start[k] + sec.mean[k] for k in start})
        reply = Message(RecordDict({"arrays": mean, "metrics": MetricRecord(
            {"num-examples": 1, "train-loss": rec.train_loss})}),
            dst_node_id=0, message_type=MessageType.TRAIN)
        return [reply], sec.masked

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rec = self.ew_round
        assert rec is not None
        if self.ew_secure is not None:
            summed, rec.replied = self._secure_reply(rec)
            mean, summary = super().aggregate_train(server_round, summed)  # type: ignore[misc]
            return self._finish(rec, len(rec.replied), mean, summary)
        valid = self._failures(list(replies), rec)
        rec.replied = sorted(m.metadata.src_node_id for m in valid)
        need = self.ew_recipe.clients.min
        if len(valid) < need:
            why = "; ".join(f"node {k}: {v}" for k, v in list(rec.failed.items())[:3])
            self._record(rec)
            raise FederatedError(f"round {server_round}: {len(valid)} of {len(rec.sampled)} "
                                 f"sampled nodes answered, fewer than clients.min {need}"
                                 + (f" ({why})" if why else ""))
        rec.bytes_up = sum(m.content["arrays"].count_bytes() for m in valid)
        weights = [float(m.content["metrics"]["num-examples"]) for m in valid]
        examples = [int(m.content["metrics"]["examples"]) for m in valid]
        rec.train_loss = float(np.average(
            [float(m.content["metrics"]["train-loss"]) for m in valid], weights=examples))
        for m, n_ex in zip(valid, examples, strict=True):
            node = self.ew_status.nodes.setdefault(str(m.metadata.src_node_id), NodeRecord())
            node.rounds += 1
            node.examples = n_ex
        if self.ew_recipe.aggregation == "product":
            arrays: ArrayRecord | None = self._product(valid, weights)
            metrics = MetricRecord({"train-loss": rec.train_loss})
        else:
            arrays, metrics = super().aggregate_train(server_round, valid)  # type: ignore[misc]
            if arrays is not None and (self.ew_server_lr != 1.0
                                       or self.ew_server_momentum != 0.0):
                arrays = self._server_step(arrays)
        return self._finish(rec, len(valid), arrays, metrics)

    def _server_step(self, aggregate: ArrayRecord) -> ArrayRecord:
        """``global + lr · v``, ``v = momentum · v + (aggregate − global)``: FedAvgM's
        step (``flwr.serverapp.strategy.FedAvgM``) after a robust strategy's aggregate."""
        current = self.ew_current
        assert current is not None
        new = _to_numpy(aggregate)
        step = {k: new[k] - current[k] for k in new}
        if self.ew_server_momentum > 0:
            if self.ew_velocity is not None:
                step = {k: self.ew_server_momentum * self.ew_velocity[k] + step[k]
                        for k in step}
            self.ew_velocity = step
        return _to_record({k: current[k] + self.ew_server_lr * step[k] for k in step})

    def _finish(self, rec: RoundRecord, summed: int, arrays: ArrayRecord | None,
                metrics: MetricRecord | None
                ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.ew_accountant is not None:
            z = self._multiplier(summed)
            rec.noise_multiplier = z
            rec.epsilon = self.ew_accountant.spend(z)
            self.ew_status.epsilon = rec.epsilon
        if arrays is not None:
            self.ew_latest = arrays
        self._record(rec)
        return arrays, metrics

    def _product(self, valid: list[Message], weights: list[float]) -> ArrayRecord:
        adapters = [split_adapter(_to_numpy(m.content["arrays"])) for m in valid]
        merged = join_adapter(aggregate("product", adapters, weights))
        names = {k.replace(".default.", "."): k for k in valid[0].content["arrays"]}
        return _to_record({names.get(k, k): v for k, v in merged.items()})

    def _record(self, rec: RoundRecord) -> None:
        rec.seconds = round(time.monotonic() - self.ew_started, 3)
        if not self.ew_status.rounds or self.ew_status.rounds[-1].round != rec.round:
            self.ew_status.rounds.append(rec)
        self.ew_status.save(self.ew_run_dir)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        nodes = [n for n in grid.get_node_ids()
                 if self.ew_status.nodes.get(str(n), NodeRecord()).state != "dropped"]
        if self.ew_eval_nodes is None:  # a fixed set, so the curve compares like with like
            rng = random.Random(self.ew_recipe.seed)
            self.ew_eval_nodes = sorted(rng.sample(sorted(nodes), min(EVAL_NODES, len(nodes))))
        wanted = set(self.ew_eval_nodes) & set(nodes)
        messages = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return [m for m in messages if m.metadata.dst_node_id in wanted]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        losses: dict[str, tuple[float, float, int]] = {}
        for m in replies:
            if m.has_error():
                log.warning("node %s could not evaluate: %s", m.metadata.src_node_id,
                            m.error.reason)
                continue
            n = int(m.content["metrics"]["num-examples"])
            if n:
                losses[str(m.metadata.src_node_id)] = (
                    float(m.content["metrics"]["eval-loss"]),
                    float(m.content["metrics"]["eval-exact"]), n)
        if not losses:
            return None
        weights = [v[2] for v in losses.values()]
        mean = float(np.average([v[0] for v in losses.values()], weights=weights))
        exact = float(np.average([v[1] for v in losses.values()], weights=weights))
        if server_round == 0:
            self.ew_status.initial_eval_loss = mean
            self.ew_status.initial_eval_exact = exact
        elif self.ew_status.rounds and self.ew_status.rounds[-1].round == server_round:
            rec = self.ew_status.rounds[-1]
            rec.eval_loss, rec.eval_exact = mean, exact
            rec.eval_by_node = {k: round(v[0], 6) for k, v in losses.items()}
        self.ew_status.save(self.ew_run_dir)
        return MetricRecord({"eval-loss": mean, "eval-exact": exact})


_STRATEGIES: dict[str, type[Any]] = {
    "fedavg": fls.FedAvg, "fedprox": fls.FedProx, "fedavgm": fls.FedAvgM,
    "fedadam": fls.FedAdam,
    "fedtrimmedavg": fls.FedTrimmedAvg, "fedmedian": fls.FedMedian, "krum": fls.Krum,
    "multikrum": fls.MultiKrum,
}


def make_strategy(recipe: recipes.FederatedRecipe) -> Any:
    """The recipe's Flower strategy with :class:`_Edgewise` in front of it."""
    base = _STRATEGIES[recipe.strategy]
    cls = type(f"Edgewise{base.__name__}", (_Edgewise, base), {})
    options: dict[str, Any] = {
        k: int(v) if k.startswith("num_") else float(v)
        for k, v in recipe.strategy_options.items()
        if recipe.strategy not in recipes.ROBUST or k not in recipes.SERVER_STEP}
    # Flower samples every node (we choose among them, :meth:`_Edgewise._sample`)
    # no held-out data: no evaluation round at all (not one that only sends 0 examples)
    evaluate = 1.0 if recipe.data.holdout > 0 else 0.0
    return cls(fraction_train=1.0, fraction_evaluate=evaluate, min_train_nodes=1,
               min_evaluate_nodes=1, min_available_nodes=1, **options)


def _run_dir(context: Context) -> Path:
    value = context.run_config.get("run-dir") or os.environ.get(RUN_DIR_ENV)
    if not value:
        raise FederatedError(f"the ServerApp needs the run folder: run config run-dir or "
                             f"${RUN_DIR_ENV}")
    return Path(str(value))


server = ServerApp()


@server.main()
def _main(grid: Grid, context: Context) -> None:
    run_dir = _run_dir(context)
    plan = json.loads((run_dir / PLAN).read_text(encoding="utf-8"))
    recipe = recipes.from_json(plan["recipe"])
    dp = recipe.dp_config()
    status = RunStatus(run=recipe.name, mode=plan["mode"], rounds_planned=recipe.rounds,
                       strategy=recipe.strategy, aggregation=recipe.aggregation,
                       clients_per_round=recipe.clients.per_round,
                       sampling=recipe.clients.sampling,
                       base={k: plan["base"].get(k) for k in ("name", "sha256", "format")},
                       privacy={"noise_multiplier": dp.noise_multiplier,
                                "clip_norm": dp.clip_norm, "delta": dp.delta,
                                "max_epsilon": dp.max_epsilon,
                                "noise": recipe.privacy.noise} if dp.enabled else {})
    sa = recipe.secure_aggregation
    if sa is not None:
        status.secure_aggregation = {
            "protocol": "SecAgg+", "shares": sa.shares, "threshold": sa.threshold,
            "clipping_range": "C + 10σ" if dp.enabled else recipe.secure_clip(1.0),
            "max_weight": 1.0 if dp.enabled else sa.max_weight}
    elif dp.enabled and recipe.privacy.noise == "distributed":
        log.warning("privacy.noise: distributed without secure_aggregation: ε holds for the "
                    "released adapter, but this server sees each update with only its "
                    "share of the noise")
    status.save(run_dir)
    strategy = None
    try:
        trainer = LocalTrainer(Path(plan["base"]["checkpoint"]), recipe.local_config())
        initial = trainer.initial()
        sent = trained_names(initial, recipe.aggregation)
        accountant = None
        if dp.enabled:
            # Poisson sampling is amplification the accountant may credit; a fixed-size
            # sample is accounted as if every node took part (q = 1: no credit).
            nodes = int(plan.get("nodes") or 0)
            q = (min(1.0, recipe.clients.per_round / nodes)
                 if recipe.clients.sampling == "poisson" and nodes else 1.0)
            accountant = DpAccountant(delta=dp.delta, sampling_rate=q)
            status.privacy["sampling_rate"] = q
        strategy = make_strategy(recipe)
        strategy.setup(recipe=recipe, status=status, run_dir=run_dir, accountant=accountant,
                       initial=initial)
        config = ConfigRecord({
            "recipe": json.dumps(plan["recipe"]), "base-path": plan["base"]["checkpoint"],
            "base-sha256": plan["base"]["sha256"], "a-digest": a_digest(initial)})
        start = _to_record({k: initial[k] for k in sent})
        if sa is not None:  # every train round as SecAgg+
            grid = _SecureGrid(grid, strategy)
        if recipe.data.holdout > 0:  # round 0: the base model on every node's held-out data
            strategy.aggregate_evaluate(0, grid.send_and_receive(
                strategy.configure_evaluate(0, start, ConfigRecord(dict(config)), grid),
                timeout=recipe.clients.timeout_s))
        result = strategy.start(grid=grid, initial_arrays=start, num_rounds=recipe.rounds,
                                timeout=recipe.clients.timeout_s, train_config=config,
                                evaluate_config=ConfigRecord(dict(config))
                                if recipe.data.holdout > 0 else None)
        final: ArrayRecord | None = result.arrays
        status.state = "completed"
    except _BudgetStop as stop:
        final = strategy.ew_latest if strategy is not None else None
        status.state, status.error = "stopped", str(stop)
    except (EdgewiseError, PrivacyBudgetError) as exc:
        final = None
        status.state, status.error = "failed", str(exc).splitlines()[0]
    except Exception as exc:  # a bug: say which, keep the traceback in the run's log
        log.error("federated server failed:\n%s", traceback.format_exc())
        final = None
        status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    if final is not None and status.rounds:
        full = dict(initial)
        full.update(_to_numpy(final))
        trainer.load(full)
        out = run_dir / "adapter"
        shutil.rmtree(out, ignore_errors=True)
        trainer.model.save_pretrained(str(out))
        status.adapter = "adapter"
    status.finished = time.time()
    status.save(run_dir)


# -- simulation --------------------------------------------------------------------------------
def simulate(run_dir: Path, nodes: int, client_cpus: float, client_app: Any = None) -> int:
    """Both apps on Flower's simulation engine (Ray), ``nodes`` virtual SuperNodes.
    ``client_app`` replaces :data:`client` (benchmarks: one that wraps it to play
    attackers or drop-outs)."""
    from flwr.simulation import run_simulation

    os.environ[RUN_DIR_ENV] = str(run_dir)
    ray_tmp = tempfile.mkdtemp(prefix="ew-ray-")  # short: Ray's socket paths have a limit
    cpus = max(1, os.cpu_count() or 1)
    backend = {"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False,
                             "_temp_dir": ray_tmp, "logging_level": "WARNING"}}
    try:
        run_simulation(server_app=server, client_app=client_app or client,
                       num_supernodes=nodes,
                       backend_config=backend)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    state = json.loads((run_dir / "status.json").read_text(encoding="utf-8")).get("state")
    return 0 if state in ("completed", "stopped") else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgewise.federated.flower")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sim = sub.add_parser("simulate")
    sim.add_argument("run_dir", type=Path)
    sim.add_argument("--nodes", type=int, required=True)
    sim.add_argument("--client-cpus", type=float, default=1.0)
    sim.add_argument("--client-app", default=None, help="module:attribute of another "
                                                        "ClientApp (benchmarks)")
    sub.add_parser("where")
    fab = sub.add_parser("fab")  # the sha256 of the bundle `flwr run APP` would submit
    fab.add_argument("app", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "fab":
        from flwr.cli.build import build_fab_from_disk

        print(hashlib.sha256(build_fab_from_disk(args.app)).hexdigest())
        return 0
    if args.cmd == "where":  # which edgewise this environment runs
        print(Path(__file__).resolve().parents[1])
        return 0
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    other = None
    if args.client_app:
        import importlib

        module, _, attr = args.client_app.partition(":")
        other = getattr(importlib.import_module(module), attr)
    return simulate(args.run_dir, args.nodes, args.client_cpus, other)


if __name__ == "__main__":
    sys.exit(main())

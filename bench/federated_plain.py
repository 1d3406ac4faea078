"""Plain Flower FedAvg for bench/federated.py's overhead comparison: what a user writes
with Flower alone — a ServerApp running ``FedAvg.start`` and a ClientApp that trains the
full LoRA adapter (A and B) with the same local trainer on the same partitions, and sends
all of it back. Runs inside Flower's environment:

    .venv-federated/bin/python bench/federated_plain.py PLAN.json OUT.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from edgewise.federated.local import LocalTrainer
from edgewise.federated.partition import partition, split_holdout
from edgewise.federated.recipe import from_json

PLAN = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else {}


def _store() -> dict[str, object]:
    """A per-process cache that survives between messages. This script's own globals do
    not: Ray ships its functions by value (it is ``__main__``), with a fresh copy each
    time, so the cache lives in a module the workers import instead."""
    from edgewise.federated import flower as ew

    return ew._pool_cache  # type: ignore[return-value]


def _trainer() -> LocalTrainer:
    _cache = _store()
    if "t" not in _cache:
        recipe = from_json(PLAN["recipe"])
        _cache["t"] = LocalTrainer(Path(PLAN["base"]["checkpoint"]), recipe.local_config())
    return _cache["t"]  # type: ignore[return-value]


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    recipe = from_json(PLAN["recipe"])
    sim = recipe.simulation
    assert sim is not None
    pid, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    key = f"parts-{n}"
    _cache = _store()
    if key not in _cache:
        _cache[key] = partition(sim.dataset.path, sim.dataset.format, n, how=sim.partition,
                                key=sim.key, alpha=sim.alpha, seed=recipe.seed)
    data = split_holdout(_cache[key][pid], recipe.data.holdout, recipe.seed)  # type: ignore[index]
    t = _trainer()
    start = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    res = t.fit(start, data.train, round_no=int(msg.content["config"]["server-round"]))
    arrays = ArrayRecord({k: Array(np.asarray(v, dtype=np.float32))
                          for k, v in sorted(res.adapter.items())})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(
        {"num-examples": res.examples, "train-loss": res.train_loss})}), reply_to=msg)


server = ServerApp()
RESULT: dict[str, float] = {}


@server.main()
def main(grid: Grid, context: Context) -> None:
    recipe = from_json(PLAN["recipe"])
    t0 = time.time()
    initial = _trainer().initial()
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                      min_train_nodes=recipe.clients.per_round,
                      min_available_nodes=recipe.clients.per_round)
    result = strategy.start(grid=grid, num_rounds=recipe.rounds,
                            initial_arrays=ArrayRecord({k: Array(np.asarray(v, np.float32))
                                                        for k, v in initial.items()}),
                            train_config=ConfigRecord({}))
    RESULT["server_s"] = time.time() - t0
    RESULT["bytes_per_node"] = float(result.arrays.count_bytes())


if __name__ == "__main__":
    from flwr.simulation import run_simulation

    ray_tmp = tempfile.mkdtemp(prefix="ew-ray-")
    t0 = time.time()
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=int(PLAN["nodes"]),
                       backend_config={"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": os.cpu_count() or 1,
                                                     "num_gpus": 0, "include_dashboard": False,
                                                     "_temp_dir": ray_tmp,
                                                     "logging_level": "WARNING"}})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    RESULT["wall_s"] = time.time() - t0
    Path(sys.argv[2]).write_text(json.dumps(RESULT))

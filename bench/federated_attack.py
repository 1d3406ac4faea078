"""A ClientApp for bench/federated.py: edgewise's own, with some virtual nodes playing
attackers or dropping out. Runs inside Flower's environment (``--client-app
federated_attack:client``); set by environment variables the bench passes:

``EW_BENCH_MALICIOUS``  partition ids that attack, e.g. ``0,5``
``EW_BENCH_ATTACK``     ``signflip`` (send ``global − s·update``) or ``scale``
                        (``global + s·update``), with ``s`` = ``EW_BENCH_SCALE`` (10)
``EW_BENCH_DROP``       share of the nodes that disappear each round (their reply is
                        lost: they answer nothing the server can use)
``EW_BENCH_DROP_STAGE`` under secure aggregation, the stage from which they disappear
                        (``unmask``: after sending their masked update); default: the
                        training itself
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from edgewise.federated import flower as ew
from edgewise.federated import secagg

client = ClientApp()

MALICIOUS = {int(x) for x in os.environ.get("EW_BENCH_MALICIOUS", "").split(",") if x}
ATTACK = os.environ.get("EW_BENCH_ATTACK", "signflip")
SCALE = float(os.environ.get("EW_BENCH_SCALE", "10"))
DROP = float(os.environ.get("EW_BENCH_DROP", "0"))
DROP_STAGE = os.environ.get("EW_BENCH_DROP_STAGE", "mask")


def _drops(pid: int, round_no: int, nodes: int) -> bool:
    """Exactly ``round(DROP · nodes)`` of the nodes each round, a different set each."""
    def rank(p: int) -> bytes:
        return hashlib.sha256(f"{p}:{round_no}".encode()).digest()
    return pid in sorted(range(nodes), key=rank)[:round(DROP * nodes)]


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    nodes = int(context.node_config["num-partitions"])
    stage = msg.content.config_records.get(secagg.RECORD)
    if stage is not None:  # secure aggregation: only the stage they disappear at
        if DROP and stage["stage"] == DROP_STAGE and _drops(pid, int(stage["round"]), nodes):
            return Message(Error(code=ew.CODE_OTHER, reason="disappeared (bench drop-out)"),
                           reply_to=msg)
        return ew._train(msg, context)
    round_no = int(msg.content["config"]["server-round"])
    if DROP and _drops(pid, round_no, nodes):
        return Message(Error(code=ew.CODE_OTHER, reason="disappeared (bench drop-out)"),
                       reply_to=msg)
    reply = ew._train(msg, context)
    if pid not in MALICIOUS or reply.has_error():
        return reply
    sent = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    start = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    sign = -SCALE if ATTACK == "signflip" else SCALE
    bad = {k: start[k] + sign * (sent[k] - start[k]) for k in sent}
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32))
                          for k, v in sorted(bad.items())})
    return Message(RecordDict({"arrays": arrays, "metrics": reply.content["metrics"]}),
                   reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return ew._evaluate(msg, context)

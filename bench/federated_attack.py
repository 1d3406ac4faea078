"""A ClientApp for bench/federated.py: edgewise's own, with some virtual nodes playing
attackers or dropping out. Runs inside Flower's environment (``--client-app
federated_attack:client``); set by environment variables the bench passes:

``EW_BENCH_MALICIOUS``  partition ids that attack, e.g. ``0,5``
``EW_BENCH_ATTACK``     ``signflip`` (send ``global − s·update``) or ``scale``
                        (``global + s·update``), with ``s`` = ``EW_BENCH_SCALE`` (10)
``EW_BENCH_DROP``       share of sampled nodes that disappear each round (their reply is
                        lost: they answer nothing the server can use)
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from edgewise.federated import flower as ew

client = ClientApp()

MALICIOUS = {int(x) for x in os.environ.get("EW_BENCH_MALICIOUS", "").split(",") if x}
ATTACK = os.environ.get("EW_BENCH_ATTACK", "signflip")
SCALE = float(os.environ.get("EW_BENCH_SCALE", "10"))
DROP = float(os.environ.get("EW_BENCH_DROP", "0"))


def _drops(pid: int, round_no: int) -> bool:
    h = hashlib.sha256(f"{pid}:{round_no}".encode()).digest()
    return int.from_bytes(h[:4], "big") / 2**32 < DROP


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    round_no = int(msg.content["config"]["server-round"])
    if DROP and _drops(pid, round_no):
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

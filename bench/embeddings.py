"""``POST /v1/embeddings`` on a real node: inputs/s batched vs one at a time, and
agreement with sentence-transformers on the same weights.

A node (``edgewise serve``, default model, privacy guard on, the embedding model on
``embeddings.threads`` torch threads) gets the same ``--n`` sentences as one request of
all of them, as requests of 32, and one request per sentence (sequentially, one
client: the cost of a request each); each way ``--reps`` times, alternating; inputs/s
from the median wall time. Then every returned vector is compared with
``SentenceTransformer.encode`` of the same text in this process (cosine).

    .venv/bin/python bench/embeddings.py          # ~3 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as serving_bench  # bench/serving.py: free_port, machine info
from batching import HOST, node_cmd, running  # bench/batching.py: the node subprocess

RESULTS = Path(__file__).resolve().parent / "results"
SUBJECTS = ["the clinic", "the pharmacy", "a train", "the harbour", "a recipe", "the weather",
            "a football match", "the library", "an invoice", "a delivery"]
VERBS = ["opens at eight", "is closed on Sunday", "was delayed", "needs a signature",
         "is on the first floor", "has a new manager", "costs twelve euros", "was cancelled"]


def sentences(n: int) -> list[str]:
    return [f"{SUBJECTS[i % len(SUBJECTS)].capitalize()} {VERBS[(i // 3) % len(VERBS)]} "
            f"(note {i})." for i in range(n)]


def run_batches(http: httpx.Client, texts: list[str], size: int) -> tuple[float, list[Any]]:
    t0 = time.perf_counter()
    vectors: list[Any] = []
    for i in range(0, len(texts), size):
        r = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2",
                                              "input": texts[i:i + size]})
        r.raise_for_status()
        vectors += [d["embedding"] for d in r.json()["data"]]
    return time.perf_counter() - t0, vectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from sentence_transformers import SentenceTransformer

    from edgewise.models import resolve_model
    from edgewise.routing.embed import model_dir

    texts = sentences(args.n)
    tmp = Path(tempfile.mkdtemp(prefix="ew-emb-"))
    cfg = {"node": {"name": "bench"}, "engine": {"n_threads": 1},
           "embeddings": {"threads": args.threads},
           "audit": {"path": str(tmp / "audit.sqlite")},
           "routing": {"jobs_path": str(tmp / "jobs.sqlite")}}
    (tmp / "node.yaml").write_text(yaml.safe_dump(cfg))
    port = serving_bench.free_port()
    url = f"http://{HOST}:{port}"
    cmd, env = node_cmd(tmp / "node.yaml", port, None)
    walls: dict[str, list[float]] = {"all in one": [], "32 per request": [],
                                     "one per request": []}
    with running(cmd, ready_url=url + "/readyz", log=tmp / "node.log", env=env, cwd=tmp), \
            httpx.Client(base_url=url, timeout=600) as http:
        run_batches(http, texts[:8], 8)  # warm-up: loads the embedding model
        got: list[Any] = []
        for _ in range(args.reps):
            for label, size in (("all in one", len(texts)), ("32 per request", 32),
                                ("one per request", 1)):
                wall, got = run_batches(http, texts, size)
                walls[label].append(wall)
    ref = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    ref.max_seq_length = 256
    want = ref.encode(texts, normalize_embeddings=True)
    cos = (np.asarray(got, dtype=np.float32) * want).sum(axis=1)
    result = {
        "settings": vars(args),
        "machine": serving_bench.machine_info(resolve_model("smollm2-135m-instruct")),
        "inputs_per_s": {k: args.n / statistics.median(v) for k, v in walls.items()},
        "walls": walls, "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embeddings.json").write_text(json.dumps(result, indent=1))
    one = result["inputs_per_s"]["one per request"]
    lines = [f"# /v1/embeddings: all-MiniLM-L6-v2, {args.n} sentences, {args.threads} torch "
             "thread(s), privacy guard on", "",
             "| requests | inputs/s | × one per request |", "|---|---:|---:|"]
    for k, v in result["inputs_per_s"].items():
        lines.append(f"| {k} | {v:.1f} | {v / one:.2f}× |")
    lines += ["", f"Cosine with sentence-transformers on the same weights: min "
              f"{result['cosine_min']:.6f}, mean {result['cosine_mean']:.6f}."]
    md = "\n".join(lines) + "\n"
    (RESULTS / "embeddings.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

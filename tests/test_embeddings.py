"""``POST /v1/embeddings`` on the local MiniLM: OpenAI's shape, the reference numbers,
batching, the privacy guard and the audit log, and clear errors."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest

from test_privacy_enforce import SECRET, VALUES, audit_rows, config, make_fleet

EMB = "/v1/embeddings"
TEXTS = ["The clinic opens at eight.", "Radiology is on the first floor.",
         "Bread rises with yeast.", "Parking is free for two hours."]


async def post(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(EMB, json={"model": "all-minilm-l6-v2", **body})


async def test_openai_shape_float_and_base64_and_the_reference_numbers(tmp_path: Any
                                                                       ) -> None:
    from sentence_transformers import SentenceTransformer

    from edgewise.routing.embed import model_dir

    async for f in make_fleet(config(tmp_path, "redact")):
        r = await post(f.client, input=TEXTS)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == "all-minilm-l6-v2"
        assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert got.shape == (4, 384)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4 * 5
        # the reference: sentence-transformers on the same weights, its own settings
        ref = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
        want = ref.encode(TEXTS, normalize_embeddings=True)
        assert (got * want).sum(axis=1).min() >= 0.999
        # base64: little-endian float32, the same numbers
        b = (await post(f.client, input=TEXTS[0], encoding_format="base64")).json()
        raw = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
        assert np.allclose(raw, got[0], atol=1e-6)
        # one at a time = batched
        one = [(await post(f.client, input=t)).json()["data"][0]["embedding"] for t in TEXTS]
        assert np.allclose(np.array(one, dtype=np.float32), got, atol=1e-5)
        models = (await f.client.get("/v1/models")).json()["data"]
        card = next(m for m in models if m["id"] == "all-minilm-l6-v2")
        assert card["edgewise"]["kind"] == "embedding" and card["edgewise"]["dimensions"] == 384
        rows = audit_rows(f)
        assert rows[-1].route == "embeddings" and rows[-1].outcome == "answered"
        assert rows[-1].tier == "device"


async def test_the_guard_refuses_data_above_the_nodes_clearance_and_audits(tmp_path: Any
                                                                           ) -> None:
    cfg = config(tmp_path, "redact")
    cfg.tiers[0].clearance = "pii"
    async for f in make_fleet(cfg):
        r = await post(f.client, input=["A public sentence.", SECRET])
        assert r.status_code == 403
        message = r.json()["error"]["message"]
        assert "/v1/embeddings is answered by this node only" in message
        assert not any(v in r.text for v in VALUES)
        row = audit_rows(f)[-1]
        assert row.route == "embeddings" and row.outcome.startswith("refused")
        assert not any(v in str(row) for v in VALUES)
        assert (await post(f.client, input="A public sentence.")).status_code == 200


@pytest.mark.parametrize(("body", "param", "fragment"), [
    ({"input": [1, 2, 3]}, "input", "token-id inputs are not supported"),
    ({"input": ["ok", " "]}, "input[1]", "is empty"),
    ({"input": "x", "dimensions": 128}, "dimensions", "cannot be shortened"),
    ({"input": "x" * 70_000}, "input[0]", "longer than 65536 characters"),
    ({"input": "x", "model": "text-embedding-3-small"}, "model", "'all-minilm-l6-v2'"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", ""),
])
async def test_bad_requests_are_400_or_404_naming_the_field(tmp_path: Any, body: Any,
                                                             param: str, fragment: str
                                                             ) -> None:
    async for f in make_fleet(config(tmp_path, "redact")):
        r = await f.client.post(EMB, json={"model": "all-minilm-l6-v2", **body})
        assert r.status_code in (400, 404, 422), r.text
        err = r.json()["error"]
        assert err["param"] == param and fragment in err["message"]
        assert "x" * 100 not in r.text  # never quotes the input


async def test_too_many_inputs_and_a_node_without_embeddings(tmp_path: Any) -> None:
    cfg = config(tmp_path, "redact")
    cfg.embeddings.max_inputs = 3
    async for f in make_fleet(cfg):
        r = await post(f.client, input=TEXTS)
        assert r.status_code == 400 and "at most 3 inputs" in r.json()["error"]["message"]
    cfg = config(tmp_path / "b", "redact")
    cfg.embeddings.model = None
    async for f in make_fleet(cfg):
        r = await post(f.client, input="x")
        assert r.status_code == 404 and "embeddings.model is null" in r.json()["error"]["message"]
        ids = [m["id"] for m in (await f.client.get("/v1/models")).json()["data"]]
        assert "all-minilm-l6-v2" not in ids
